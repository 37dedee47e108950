use serde::{Deserialize, Serialize};

use crate::networking::Errors;

/// The spec of `Policy` and of `MeshPolicy`. A namespace's `Policy` named
/// `default` without targets covers the namespace; one with targets covers
/// those services (or their ports); the `MeshPolicy` named `default` covers
/// the rest of the mesh.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthenticationPolicy {
    #[serde(default)]
    pub targets: Vec<TargetSelector>,
    #[serde(default)]
    pub peers: Vec<PeerAuthenticationMethod>,
    #[serde(default)]
    pub peer_is_optional: bool,
    /// End-user JWT, which Trireme does not verify yet: the ports such a
    /// policy covers admit no HTTP request (fail closed).
    #[serde(default)]
    pub origins: Vec<serde_json::Value>,
    #[serde(default)]
    pub origin_is_optional: bool,
    #[serde(default)]
    pub principal_binding: Option<PrincipalBinding>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSelector {
    /// A service's short name in the policy's namespace.
    pub name: String,
    #[serde(default)]
    pub ports: Vec<PortSelector>,
}

/// A service port by number or by name (one of the two).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default)]
    pub number: Option<u32>,
    #[serde(default)]
    pub name: Option<String>,
}

/// One of `mtls` and `jwt`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationMethod {
    /// `mtls: {}` and `mtls:` alike mean STRICT, as in Istio.
    #[serde(default, deserialize_with = "present")]
    pub mtls: Option<MutualTls>,
    /// Istio never implemented peer JWT either; refused by validation.
    #[serde(default)]
    pub jwt: Option<serde_json::Value>,
}

/// A key that is present counts, even with a null value.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<MutualTls>, D::Error> {
    Option::<MutualTls>::deserialize(d).map(|m| Some(m.unwrap_or_default()))
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
    /// Deprecated in Istio 1.x, and without effect there.
    #[serde(default)]
    pub allow_tls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    #[default]
    Strict,
    Permissive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PrincipalBinding {
    UsePeer,
    UseOrigin,
}

impl AuthenticationPolicy {
    /// The peer mutual-TLS mode this policy asks for; `None` when it asks
    /// for none (plaintext only).
    pub fn mtls(&self) -> Option<MtlsMode> {
        // `peerIsOptional` did not change Istio 1.4's listeners either.
        Some(self.peers.iter().find_map(|p| p.mtls.as_ref())?.mode)
    }

    /// Whether requests must carry a verified end-user JWT.
    pub fn needs_jwt(&self) -> bool {
        !self.origins.is_empty()
    }

    pub fn validate(&self) -> Errors {
        let mut errors = Errors::default();
        for (i, t) in self.targets.iter().enumerate() {
            if t.name.is_empty() {
                errors.push(
                    format!("spec.targets[{i}].name"),
                    "a target names a service",
                );
            }
            for (j, p) in t.ports.iter().enumerate() {
                let path = format!("spec.targets[{i}].ports[{j}]");
                match (p.number, &p.name) {
                    (Some(n), None) if n == 0 || n > 65535 => {
                        errors.push(format!("{path}.number"), format!("{n} is not in 1..65535"))
                    }
                    (Some(_), None) | (None, Some(_)) => {}
                    _ => errors.push(path, "exactly one of number and name must be set"),
                }
            }
        }
        for (i, p) in self.peers.iter().enumerate() {
            if p.jwt.is_some() {
                errors.push(
                    format!("spec.peers[{i}].jwt"),
                    "peer JWT authentication is not implemented (it was not in Istio either); use mtls",
                );
            } else if p.mtls.is_none() {
                errors.push(format!("spec.peers[{i}]"), "a peer method is mtls");
            }
        }
        errors
    }

    /// A namespace's `Policy` without targets covers the whole namespace,
    /// and Istio reads only the one named `default` as such.
    pub fn validate_namespaced(&self, name: &str) -> Errors {
        let mut errors = self.validate();
        if self.targets.is_empty() && name != "default" {
            errors.push(
                "spec.targets",
                format!("a namespace-wide Policy must be named default, not {name:?}; name targets to cover some services"),
            );
        }
        errors
    }

    /// What makes a `MeshPolicy` valid beyond its spec: Istio reads only the
    /// one named `default`, and it has no targets.
    pub fn validate_mesh(&self, name: &str) -> Errors {
        let mut errors = self.validate();
        if name != "default" {
            errors.push(
                "metadata.name",
                format!("a MeshPolicy must be named default, not {name:?}: Istio reads no other"),
            );
        }
        if !self.targets.is_empty() {
            errors.push(
                "spec.targets",
                "a MeshPolicy covers the whole mesh and takes no targets",
            );
        }
        errors
    }
}
