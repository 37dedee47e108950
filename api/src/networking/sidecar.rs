use serde::{Deserialize, Serialize};

use super::{Errors, Port, WorkloadSelector};

/// The `Sidecar` kind. Trireme reads its ingress listeners, which is how an
/// operator tells Pilot where an application listens when no iptables redirect
/// exists (see docs/local-mode.md); egress host scoping arrives later.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub ingress: Vec<IstioIngressListener>,
    #[serde(default)]
    pub egress: Vec<IstioEgressListener>,
    #[serde(default)]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    pub port: Port,
    #[serde(default)]
    pub bind: String,
    #[serde(default)]
    pub capture_mode: Option<CaptureMode>,
    pub default_endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    #[serde(default)]
    pub port: Option<Port>,
    #[serde(default)]
    pub bind: String,
    #[serde(default)]
    pub capture_mode: Option<CaptureMode>,
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    Default,
    Iptables,
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// REGISTRY_ONLY is the proto's zero value: MCP leaves it out.
    #[serde(default = "registry_only")]
    pub mode: String,
}

fn registry_only() -> String {
    "REGISTRY_ONLY".into()
}

impl Sidecar {
    pub fn validate(&self) -> Errors {
        let mut errors = Errors::default();
        for (i, l) in self.ingress.iter().enumerate() {
            let path = format!("spec.ingress[{i}]");
            l.port.validate(&format!("{path}.port"), &mut errors);
            let ep = &l.default_endpoint;
            let ok = ep.starts_with("unix://") || ep.parse::<std::net::SocketAddr>().is_ok();
            if !ok {
                errors.push(
                    format!("{path}.defaultEndpoint"),
                    format!("{ep:?} is neither IP:port nor unix:///path"),
                );
            }
        }
        for (i, l) in self.egress.iter().enumerate() {
            let path = format!("spec.egress[{i}]");
            if let Some(p) = &l.port {
                p.validate(&format!("{path}.port"), &mut errors);
            }
            if l.hosts.is_empty() {
                errors.push(format!("{path}.hosts"), "at least one host is required");
            }
            for (j, h) in l.hosts.iter().enumerate() {
                if h.split_once('/').is_none() {
                    errors.push(
                        format!("{path}.hosts[{j}]"),
                        format!("{h:?} is not namespace/dnsName"),
                    );
                }
            }
        }
        if let Some(p) = &self.outbound_traffic_policy
            && !matches!(p.mode.as_str(), "REGISTRY_ONLY" | "ALLOW_ANY")
        {
            errors.push(
                "spec.outboundTrafficPolicy.mode",
                format!("unknown mode {:?}", p.mode),
            );
        }
        errors
    }
}
