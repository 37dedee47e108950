use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::names::{check_wildcard_domain, is_dns1123_label};
use super::{Errors, Port, Protocol};

/// The `Gateway` kind: the ports, hosts and TLS settings of a load balancer
/// at the edge of the mesh, on the workloads its selector names.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Workload labels, matched in every namespace (Istio 1.4).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    #[serde(default)]
    pub port: Option<Port>,
    #[serde(default)]
    pub bind: String,
    /// `host`, `namespace/host`, `./host` or `*/host`; the host may be `*`
    /// or start with a wildcard label.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default)]
    pub default_endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    #[serde(default)]
    pub https_redirect: bool,
    /// `PASSTHROUGH` when not given, as Istio 1.4's enum defaults.
    #[serde(default)]
    pub mode: Option<ServerTlsMode>,
    #[serde(default)]
    pub server_certificate: String,
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub ca_certificates: String,
    /// The Secret an SDS server on the gateway serves the certificate from.
    #[serde(default)]
    pub credential_name: String,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    #[serde(default)]
    pub min_protocol_version: Option<TlsProtocol>,
    #[serde(default)]
    pub max_protocol_version: Option<TlsProtocol>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    #[default]
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsProtocol {
    #[serde(rename = "TLS_AUTO")]
    Auto,
    #[serde(rename = "TLSV1_0")]
    V1_0,
    #[serde(rename = "TLSV1_1")]
    V1_1,
    #[serde(rename = "TLSV1_2")]
    V1_2,
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

impl ServerTlsSettings {
    pub fn mode(&self) -> ServerTlsMode {
        self.mode.unwrap_or_default()
    }

    fn has_files(&self) -> bool {
        !(self.server_certificate.is_empty()
            && self.private_key.is_empty()
            && self.ca_certificates.is_empty())
    }
}

impl Gateway {
    /// `name` is the object's: Istio 1.4 names a Gateway's routes after it,
    /// so it must be a DNS-1123 label.
    pub fn validate(&self, name: &str) -> Errors {
        let mut errors = Errors::default();
        if !is_dns1123_label(name) {
            errors.push(
                "metadata.name",
                format!("a Gateway's name must be a DNS-1123 label (no dots), not {name:?}"),
            );
        }
        if self.servers.is_empty() {
            errors.push("spec.servers", "at least one server is required");
        }
        let mut port_names = BTreeSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            let path = format!("spec.servers[{i}]");
            server.validate(&path, &mut errors);
            if let Some(port) = &server.port
                && !port.name.is_empty()
                && !port_names.insert(&port.name)
            {
                errors.push(
                    format!("{path}.port.name"),
                    format!(
                        "duplicate port name {:?}: server port names are unique in a Gateway",
                        port.name
                    ),
                );
            }
        }
        errors
    }
}

impl Server {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.hosts.is_empty() {
            errors.push(format!("{path}.hosts"), "at least one host is required");
        }
        for (i, host) in self.hosts.iter().enumerate() {
            validate_server_host(host, &format!("{path}.hosts[{i}]"), errors);
        }
        let protocol = match &self.port {
            None => {
                errors.push(format!("{path}.port"), "port is required");
                None
            }
            Some(port) => validate_server_port(port, &format!("{path}.port"), errors),
        };
        if let Some(tls) = &self.tls {
            validate_tls(tls, &format!("{path}.tls"), errors);
        }
        let Some(protocol) = protocol else {
            return;
        };
        let is_tls = matches!(protocol, Protocol::Https | Protocol::Tls);
        match &self.tls {
            None if is_tls => errors.push(
                format!("{path}.tls"),
                "an HTTPS or TLS server needs TLS settings",
            ),
            Some(tls) if !is_tls && protocol.is_http() => {
                // A plain-text HTTP server may only redirect to HTTPS.
                let passthrough = matches!(
                    tls.mode(),
                    ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                );
                if !passthrough || tls.has_files() {
                    errors.push(
                        format!("{path}.tls"),
                        "a plain-text HTTP server takes no TLS settings but httpsRedirect",
                    );
                }
            }
            Some(_) if !is_tls => errors.push(
                format!("{path}.tls"),
                "only HTTPS and TLS servers take TLS settings",
            ),
            _ => {}
        }
    }
}

/// The port's protocol when the port is valid enough to judge the TLS settings by.
fn validate_server_port(port: &Port, path: &str, errors: &mut Errors) -> Option<Protocol> {
    let before = errors.0.len();
    if port.number == 0 || port.number > 65535 {
        errors.push(
            format!("{path}.number"),
            format!("port number {} is not in 1..65535", port.number),
        );
    }
    let protocol = Protocol::parse(&port.protocol);
    if protocol.is_none() {
        errors.push(
            format!("{path}.protocol"),
            format!(
                "unknown protocol {:?}; one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL",
                port.protocol
            ),
        );
    }
    if port.name.is_empty() {
        errors.push(format!("{path}.name"), "port name is required");
    }
    protocol.filter(|_| errors.0.len() == before)
}

fn validate_tls(tls: &ServerTlsSettings, path: &str, errors: &mut Errors) {
    let mode = tls.mode();
    let files = [
        ("serverCertificate", &tls.server_certificate),
        ("privateKey", &tls.private_key),
        ("caCertificates", &tls.ca_certificates),
    ];
    match mode {
        ServerTlsMode::IstioMutual => {
            for (field, value) in files {
                if !value.is_empty() {
                    errors.push(
                        format!("{path}.{field}"),
                        "ISTIO_MUTUAL uses the workload's Istio certificate; set no files",
                    );
                }
            }
        }
        // With a credentialName the gateway's SDS server provides them.
        ServerTlsMode::Simple | ServerTlsMode::Mutual if tls.credential_name.is_empty() => {
            let needed = if mode == ServerTlsMode::Mutual { 3 } else { 2 };
            let name = if mode == ServerTlsMode::Mutual {
                "MUTUAL"
            } else {
                "SIMPLE"
            };
            for (field, value) in &files[..needed] {
                if value.is_empty() {
                    errors.push(
                        format!("{path}.{field}"),
                        format!("{name} needs {field} (or a credentialName)"),
                    );
                }
            }
        }
        _ => {}
    }
}

/// A server's host: `host`, or `namespace/host` where the namespace is a
/// name, `*` or `.`; the host is `*`, a fully qualified name that may start
/// with a wildcard label, or an IP address.
pub fn validate_server_host(host: &str, path: &str, errors: &mut Errors) {
    let dns = match host.split_once('/') {
        None => host,
        Some((namespace, dns)) => {
            if namespace.is_empty() || dns.is_empty() {
                errors.push(
                    path,
                    format!("{host:?}: namespace/host needs both the namespace and the host"),
                );
            } else if !matches!(namespace, "*" | ".") && !is_dns1123_label(namespace) {
                errors.push(
                    path,
                    format!("{host:?}: {namespace:?} is neither a namespace nor `*` or `.`"),
                );
            }
            dns
        }
    };
    if dns.is_empty() {
        if !host.contains('/') {
            errors.push(path, "host must not be empty");
        }
        return;
    }
    if dns.parse::<std::net::IpAddr>().is_ok() {
        return;
    }
    if dns != "*" && !dns.contains('.') {
        errors.push(
            path,
            format!("{host:?}: a short name is not allowed; write the fully qualified name"),
        );
    }
    if let Err(message) = check_wildcard_domain(dns) {
        errors.push(path, message);
    }
}
