//! The TLS contexts Pilot sends: where a proxy's own certificate and the
//! mesh's roots come from (the node agent's SDS when the mesh config names
//! `sdsUdsPath`, else the files of the `istio.<sa>` Secret at `/etc/certs`, as
//! in Istio 1.x, read when Envoy takes the config), the client side of a DestinationRule's `tls`, and the server
//! side of peer mutual TLS. Every proxy names the same secrets (`default`,
//! `ROOTCA`), each served by its own agent, so shared clusters stay shared.

use api::mesh::MeshConfig;
use api::networking::TlsSettings;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, DataSource, GrpcService, TransportSocket,
    api_config_source::ApiType,
    config_source::ConfigSourceSpecifier,
    data_source::Specifier,
    grpc_service::{EnvoyGrpc, TargetSpecifier},
    transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};

use crate::model::Service;
use crate::xds::names::{any, bool_value};
use crate::xds::push::PushContext;

/// The bootstrap's cluster for the node agent's socket.
pub const SDS_CLUSTER: &str = "sds-grpc";
/// The proxy's own key and certificate.
pub const SDS_DEFAULT: &str = "default";
/// The mesh's roots.
pub const SDS_ROOT: &str = "ROOTCA";
/// Where Istio 1.x mounted the `istio.<sa>` Secret.
pub const CERT_DIR: &str = "/etc/certs";
/// The ALPN a sidecar offers on mutual TLS, which PERMISSIVE servers tell
/// from an application's own TLS by.
pub const ALPN_ISTIO: &str = "istio";
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// `spiffe://<trust domain>/ns/<namespace>/sa/<account>`
pub fn spiffe_id(mesh: &MeshConfig, namespace: &str, account: &str) -> String {
    format!(
        "spiffe://{}/ns/{namespace}/sa/{account}",
        mesh.trust_domain()
    )
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                            cluster_name: SDS_CLUSTER.into(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::Filename(path.to_string())),
        ..Default::default()
    })
}

fn exact(value: &str) -> Option<StringMatcher> {
    Some(StringMatcher {
        match_pattern: Some(MatchPattern::Exact(value.to_string())),
        ..Default::default()
    })
}

fn uri_sans(sans: &[String]) -> Vec<SubjectAltNameMatcher> {
    sans.iter()
        .map(|s| SubjectAltNameMatcher {
            san_type: SanType::Uri as i32,
            matcher: exact(s),
            ..Default::default()
        })
        .collect()
}

/// The proxy's identity and the mesh's roots, peers' names checked against
/// `sans` when there are any.
fn mesh_context(mesh: &MeshConfig, sans: &[String], alpn: Vec<String>) -> CommonTlsContext {
    let checks = CertificateValidationContext {
        match_typed_subject_alt_names: uri_sans(sans),
        ..Default::default()
    };
    if mesh.sds_uds_path.is_empty() {
        CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: file(&format!("{CERT_DIR}/cert-chain.pem")),
                private_key: file(&format!("{CERT_DIR}/key.pem")),
                ..Default::default()
            }],
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: file(&format!("{CERT_DIR}/root-cert.pem")),
                    ..checks
                },
            )),
            alpn_protocols: alpn,
            ..Default::default()
        }
    } else {
        CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(SDS_DEFAULT)],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(checks),
                    validation_context_sds_secret_config: Some(sds(SDS_ROOT)),
                    ..Default::default()
                },
            )),
            alpn_protocols: alpn,
            ..Default::default()
        }
    }
}

fn socket<M: prost::Message + prost::Name>(context: &M) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(context))),
    }
}

/// The identities of a service's workloads: what a client of it expects
/// the server's certificate to name.
pub fn service_identities(push: &PushContext, service: &Service) -> Vec<String> {
    let mut ids: Vec<String> = push
        .model
        .instances
        .get(&service.hostname)
        .iter()
        .flat_map(|l| l.iter())
        .filter(|i| !i.service_account.is_empty())
        .map(|i| spiffe_id(&push.mesh, &service.namespace, &i.service_account))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The client side of a DestinationRule's `tls` for `cluster` to `service`;
/// `None` for `DISABLE`.
pub fn upstream(
    push: &PushContext,
    cluster: &str,
    service: &Service,
    settings: &TlsSettings,
    http2: bool,
) -> Option<TransportSocket> {
    let mut sni = settings.sni.clone();
    let common = match settings.mode.as_str() {
        "ISTIO_MUTUAL" => {
            let sans = if settings.subject_alt_names.is_empty() {
                service_identities(push, service)
            } else {
                settings.subject_alt_names.clone()
            };
            if sni.is_empty() {
                // Istio's: `outbound_.9080_.v1_.reviews.default.svc.cluster.local`.
                sni = cluster.replace('|', "_.");
            }
            let mut alpn = vec![ALPN_ISTIO.to_string()];
            if http2 {
                alpn.push("h2".into());
            }
            mesh_context(&push.mesh, &sans, alpn)
        }
        mode @ ("SIMPLE" | "MUTUAL") => {
            let validation = (!settings.ca_certificates.is_empty()).then(|| {
                ValidationContextType::ValidationContext(CertificateValidationContext {
                    trusted_ca: file(&settings.ca_certificates),
                    match_typed_subject_alt_names: uri_or_dns_sans(&settings.subject_alt_names),
                    ..Default::default()
                })
            });
            let certificates = if mode == "MUTUAL" {
                vec![TlsCertificate {
                    certificate_chain: file(&settings.client_certificate),
                    private_key: file(&settings.private_key),
                    ..Default::default()
                }]
            } else {
                Vec::new()
            };
            CommonTlsContext {
                tls_certificates: certificates,
                validation_context_type: validation,
                alpn_protocols: if http2 { vec!["h2".into()] } else { Vec::new() },
                ..Default::default()
            }
        }
        _ => return None,
    };
    Some(socket(&UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    }))
}

/// A DestinationRule's `subjectAltNames` for TLS origination: SPIFFE IDs
/// are URIs, the rest DNS names.
fn uri_or_dns_sans(sans: &[String]) -> Vec<SubjectAltNameMatcher> {
    sans.iter()
        .map(|s| SubjectAltNameMatcher {
            san_type: if s.contains("://") {
                SanType::Uri
            } else {
                SanType::Dns
            } as i32,
            matcher: exact(s),
            ..Default::default()
        })
        .collect()
}

/// The server side of peer mutual TLS: the proxy's identity, a client
/// certificate from the mesh's roots required. Which client may do what is
/// authorization's to decide.
pub fn downstream(mesh: &MeshConfig, http: bool) -> TransportSocket {
    let alpn = if http {
        vec!["h2".into(), "http/1.1".into()]
    } else {
        Vec::new()
    };
    socket(&DownstreamTlsContext {
        common_tls_context: Some(mesh_context(mesh, &[], alpn)),
        require_client_certificate: Some(bool_value(true)),
        ..Default::default()
    })
}
