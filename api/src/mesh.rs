//! The part of Istio's `MeshConfig` (`--meshConfig`, the `mesh` key of the
//! `istio` ConfigMap) that Trireme reads. Fields Trireme does not use yet are
//! accepted, so an operator's existing file loads unchanged.

use serde::{Deserialize, Serialize};

use crate::duration::IstioDuration;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// When set, sidecars listen for HTTP proxy (`HTTP_PROXY`) requests on this port.
    #[serde(default)]
    pub proxy_http_port: u32,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: IstioDuration,
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    #[serde(default)]
    pub default_config: ProxyConfig,
    /// Where sidecars send policy checks: `istio-policy.istio-system.svc.cluster.local:9091`.
    #[serde(default)]
    pub mixer_check_server: String,
    /// Where sidecars send telemetry reports.
    #[serde(default)]
    pub mixer_report_server: String,
    /// Turns the proxies' reports off mesh-wide even when a report server is set.
    #[serde(default)]
    pub disable_mixer_http_reports: bool,
    /// Turns policy checks off mesh-wide even when a check server is set.
    #[serde(default)]
    pub disable_policy_checks: bool,
    /// Admit requests when the check server cannot be reached.
    #[serde(default)]
    pub policy_check_fail_open: bool,
    /// Where each proxy's node agent serves SDS (`unix:/var/run/sds/uds_path`):
    /// when set, mutual TLS takes its certificates over SDS, else from the
    /// files of `/etc/certs`.
    #[serde(default)]
    pub sds_uds_path: String,
    /// The trust domain of SPIFFE identities; `cluster.local` when empty.
    #[serde(default)]
    pub trust_domain: String,
    /// Where AuthorizationPolicies apply to the whole mesh.
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    /// MCP servers (Galley) Pilot reads its config from, instead of a
    /// directory or the Kubernetes API server.
    #[serde(default)]
    pub config_sources: Vec<ConfigSourceAddress>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSourceAddress {
    /// `istio-galley.istio-system.svc:9901`.
    pub address: String,
    /// `mode: ISTIO_MUTUAL` dials it over mutual TLS with Pilot's own
    /// certificates (`--certDir`); plaintext when absent or `DISABLE`.
    #[serde(default)]
    pub tls_settings: Option<ConfigSourceTls>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSourceTls {
    #[serde(default)]
    pub mode: String,
}

impl ConfigSourceAddress {
    pub fn mutual_tls(&self) -> bool {
        self.tls_settings
            .as_ref()
            .is_some_and(|t| t.mode == "ISTIO_MUTUAL")
    }
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            proxy_http_port: 0,
            connect_timeout: default_connect_timeout(),
            outbound_traffic_policy: OutboundTrafficPolicy::default(),
            default_config: ProxyConfig::default(),
            mixer_check_server: String::new(),
            mixer_report_server: String::new(),
            disable_mixer_http_reports: false,
            disable_policy_checks: false,
            policy_check_fail_open: false,
            sds_uds_path: String::new(),
            trust_domain: String::new(),
            root_namespace: default_root_namespace(),
            config_sources: Vec::new(),
        }
    }
}

fn default_root_namespace() -> String {
    "istio-system".into()
}

fn default_connect_timeout() -> IstioDuration {
    IstioDuration(std::time::Duration::from_secs(10))
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    /// `ALLOW_ANY` (the 1.3+ default) or `REGISTRY_ONLY`.
    #[serde(default)]
    pub mode: String,
}

impl OutboundTrafficPolicy {
    pub fn allow_any(&self) -> bool {
        self.mode != "REGISTRY_ONLY"
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    #[serde(default)]
    pub discovery_address: String,
}

impl MeshConfig {
    pub fn trust_domain(&self) -> &str {
        if self.trust_domain.is_empty() {
            "cluster.local"
        } else {
            &self.trust_domain
        }
    }

    pub fn parse(text: &str) -> Result<MeshConfig, String> {
        if text.trim().is_empty() {
            return Ok(MeshConfig::default());
        }
        let mesh: MeshConfig =
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
                .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
        for (i, source) in mesh.config_sources.iter().enumerate() {
            if source.address.is_empty() {
                return Err(format!("configSources[{i}].address: required (host:port)"));
            }
            let mode = source.tls_settings.as_ref().map_or("", |t| t.mode.as_str());
            if !matches!(mode, "" | "DISABLE" | "ISTIO_MUTUAL") {
                return Err(format!(
                    "configSources[{i}].tlsSettings.mode: {mode:?} is not supported (DISABLE or ISTIO_MUTUAL)"
                ));
            }
        }
        if mesh.proxy_http_port > 65535 {
            return Err(format!(
                "proxyHttpPort: {} is not a port (0 to turn it off, else 1..65535)",
                mesh.proxy_http_port
            ));
        }
        Ok(mesh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sources_and_their_tls() {
        let mesh = MeshConfig::parse(
            "configSources:\n- address: istio-galley.istio-system.svc:9901\n  tlsSettings: {mode: ISTIO_MUTUAL}\n- address: other:9901\n",
        )
        .unwrap();
        assert!(mesh.config_sources[0].mutual_tls());
        assert!(!mesh.config_sources[1].mutual_tls());
        let e =
            MeshConfig::parse("configSources:\n- address: g:9901\n  tlsSettings: {mode: MUTUAL}\n")
                .unwrap_err();
        assert_eq!(
            e,
            "configSources[0].tlsSettings.mode: \"MUTUAL\" is not supported (DISABLE or ISTIO_MUTUAL)"
        );
        let e = MeshConfig::parse("configSources:\n- address: \"\"\n").unwrap_err();
        assert!(e.starts_with("configSources[0].address"), "{e}");
    }
}
