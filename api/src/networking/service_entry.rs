use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Errors, Port, validate_host};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub location: Option<Location>,
    #[serde(default)]
    pub resolution: Option<Resolution>,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    MeshExternal,
    MeshInternal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    #[default]
    None,
    Static,
    Dns,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    pub address: String,
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub locality: String,
    #[serde(default)]
    pub weight: Option<u32>,
}

impl ServiceEntry {
    pub fn validate(&self) -> Errors {
        let mut errors = Errors::default();
        if self.hosts.is_empty() {
            errors.push("spec.hosts", "at least one host is required");
        }
        for (i, h) in self.hosts.iter().enumerate() {
            validate_host(h, &format!("spec.hosts[{i}]"), &mut errors);
            if h == "*" {
                // As Istio: a ServiceEntry for every host would take over all traffic.
                errors.push(
                    format!("spec.hosts[{i}]"),
                    "a ServiceEntry host cannot be \"*\"",
                );
            }
        }
        if self.ports.is_empty() {
            errors.push("spec.ports", "at least one port is required");
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            p.validate(&format!("spec.ports[{i}]"), &mut errors);
            if p.name.is_empty() {
                errors.push(format!("spec.ports[{i}].name"), "port name is required");
            } else if !names.insert(&p.name) {
                errors.push(
                    format!("spec.ports[{i}].name"),
                    format!("duplicate port name {:?}", p.name),
                );
            }
        }
        let resolution = self.resolution.unwrap_or_default();
        if resolution == Resolution::Static && self.endpoints.is_empty() {
            errors.push(
                "spec.endpoints",
                "resolution STATIC needs at least one endpoint",
            );
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let path = format!("spec.endpoints[{i}]");
            if resolution == Resolution::Static && e.address.parse::<std::net::IpAddr>().is_err() {
                errors.push(
                    format!("{path}.address"),
                    format!(
                        "{:?} is not an IP address, as resolution STATIC needs",
                        e.address
                    ),
                );
            }
            for name in e.ports.keys() {
                if !names.contains(name) {
                    errors.push(
                        format!("{path}.ports.{name}"),
                        "names no port of the service entry",
                    );
                }
            }
        }
        errors
    }
}
