use serde_json::json;

/// Build information served on `/version` and logged at startup.
#[derive(Debug, Clone, Copy)]
pub struct Info {
    pub component: &'static str,
    pub version: &'static str,
    pub git_revision: &'static str,
}

impl Info {
    pub const fn new(component: &'static str, version: &'static str) -> Info {
        Info {
            component,
            version,
            git_revision: match option_env!("TRIREME_GIT_REVISION") {
                Some(r) => r,
                None => "unknown",
            },
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "component": self.component,
            "version": self.version,
            "gitRevision": self.git_revision,
            "rustVersion": env!("CARGO_PKG_RUST_VERSION"),
        })
    }
}
