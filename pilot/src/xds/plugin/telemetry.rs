//! Mixer telemetry: Envoy's gRPC access loggers on every HTTP connection
//! manager and TCP proxy, streaming to the mesh config's `mixerReportServer`
//! (mixer-telemetry serves Envoy's access log service), so an unmodified
//! Envoy reports. The loggers are named after the direction (`inbound`,
//! `outbound`), which mixer-telemetry reads as the reporter's kind.
//!
//! None when no report server is set, when `disableMixerHttpReports` is on,
//! or when the server's cluster is not in the push: turning telemetry off
//! never leaves a proxy pointing at a cluster that is gone.

use std::time::Duration;

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::core::v3::{ApiVersion, GrpcService, grpc_service};
use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3::{
    CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig, TcpGrpcAccessLogConfig,
};

use super::{Direction, ListenerContext, Plugin, Traffic, server_cluster};
use crate::xds::names::{any, duration};

pub const HTTP_LOGGER: &str = "envoy.access_loggers.http_grpc";
pub const TCP_LOGGER: &str = "envoy.access_loggers.tcp_grpc";

/// Envoy batches entries and sends them at least this often, as Istio's
/// proxies batched reports for a second.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Request headers logged beyond Envoy's own fields: the content type tells
/// gRPC from HTTP; B3's carry the trace a `tracespan` instance reads; the
/// others are in Istio's access log.
const REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "x-forwarded-for",
    "x-client-trace-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

pub struct Telemetry;

impl Plugin for Telemetry {
    fn name(&self) -> &'static str {
        "telemetry"
    }

    fn access_logs(&self, ctx: &ListenerContext, traffic: Traffic) -> Vec<AccessLog> {
        let mesh = &ctx.push.mesh;
        if mesh.disable_mixer_http_reports || mesh.mixer_report_server.is_empty() {
            return Vec::new();
        }
        let Some(cluster) = server_cluster(ctx.push, &mesh.mixer_report_server) else {
            return Vec::new();
        };
        let common = CommonGrpcAccessLogConfig {
            log_name: match ctx.direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            }
            .into(),
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: cluster,
                        // The cluster name's `|` is no HTTP/2 authority.
                        authority: mesh.mixer_report_server.clone(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
            buffer_flush_interval: Some(duration(FLUSH_INTERVAL)),
            ..Default::default()
        };
        let (name, config) = match traffic {
            Traffic::Http => (
                HTTP_LOGGER,
                any(&HttpGrpcAccessLogConfig {
                    common_config: Some(common),
                    additional_request_headers_to_log: REQUEST_HEADERS
                        .iter()
                        .map(|h| h.to_string())
                        .collect(),
                    ..Default::default()
                }),
            ),
            Traffic::Tcp => (
                TCP_LOGGER,
                any(&TcpGrpcAccessLogConfig {
                    common_config: Some(common),
                }),
            ),
        };
        vec![AccessLog {
            name: name.into(),
            config_type: Some(access_log::ConfigType::TypedConfig(config)),
            ..Default::default()
        }]
    }
}

#[cfg(test)]
mod tests {
    use api::mesh::MeshConfig;
    use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
    use prost::Message;

    use super::*;
    use crate::xds::fixtures::{push_from_yaml, sidecar_node};
    use crate::xds::generate::lds;
    use crate::xds::proxy::Proxy;

    const TELEMETRY_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: istio-telemetry, namespace: istio-system}\nspec:\n  clusterIP: 10.99.0.2\n  ports: [{name: grpc-mixer, port: 9091}]\n---\n";
    const SERVER: &str = "istio-telemetry.istio-system.svc.cluster.local:9091";
    const WORKLOADS: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: default}\nspec:\n  clusterIP: 10.98.0.1\n  ports: [{name: http, port: 9080}, {name: tcp-db, port: 3306}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: ratings, namespace: default}\nsubsets:\n- ports: [{name: http, port: 9080}, {name: tcp-db, port: 3306}]\n  addresses:\n  - ip: 10.1.0.2\n    targetRef: {kind: Pod, name: ratings-v1, namespace: default}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: ratings-v1, namespace: default, labels: {app: ratings}}\nstatus: {podIP: 10.1.0.2}\n---\n";

    /// (listener, logger, log name, cluster) of every access logger the
    /// proxy's listeners carry.
    fn loggers(yaml: &str, mesh: MeshConfig) -> Vec<(String, String, String, String)> {
        let push = push_from_yaml(1, yaml, mesh);
        let proxy =
            Proxy::from_node(&sidecar_node("10.1.0.2", "ratings-v1", false), &push.model).unwrap();
        let mut out = Vec::new();
        for resource in lds::build(&push, &proxy) {
            let listener = Listener::decode(resource.body).unwrap();
            for f in listener.filter_chains.iter().flat_map(|c| &c.filters) {
                let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                let logs = match f.name.as_str() {
                    "envoy.filters.network.http_connection_manager" => {
                        HttpConnectionManager::decode(any.value.as_slice())
                            .unwrap()
                            .access_log
                    }
                    "envoy.filters.network.tcp_proxy" => {
                        TcpProxy::decode(any.value.as_slice()).unwrap().access_log
                    }
                    _ => continue,
                };
                for log in logs {
                    let Some(access_log::ConfigType::TypedConfig(c)) = &log.config_type else {
                        panic!("typed config")
                    };
                    let common = if log.name == HTTP_LOGGER {
                        HttpGrpcAccessLogConfig::decode(c.value.as_slice())
                            .unwrap()
                            .common_config
                    } else {
                        TcpGrpcAccessLogConfig::decode(c.value.as_slice())
                            .unwrap()
                            .common_config
                    }
                    .unwrap();
                    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(g)) =
                        common.grpc_service.unwrap().target_specifier
                    else {
                        panic!("Envoy's gRPC client")
                    };
                    assert_eq!(g.authority, SERVER);
                    out.push((
                        listener.name.clone(),
                        log.name,
                        common.log_name,
                        g.cluster_name,
                    ));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_proxied_port_reports_by_direction() {
        let mesh = MeshConfig {
            mixer_report_server: SERVER.into(),
            ..Default::default()
        };
        let found = loggers(&format!("{TELEMETRY_SERVICE}{WORKLOADS}"), mesh);
        let cluster = "outbound|9091||istio-telemetry.istio-system.svc.cluster.local";
        let has = |listener: &str, logger: &str, name: &str| {
            found
                .iter()
                .any(|(l, g, n, c)| l == listener && g == logger && n == name && c == cluster)
        };
        assert!(
            has(lds::VIRTUAL_INBOUND, HTTP_LOGGER, "inbound"),
            "{found:#?}"
        );
        assert!(
            has(lds::VIRTUAL_INBOUND, TCP_LOGGER, "inbound"),
            "{found:#?}"
        );
        assert!(has("0.0.0.0_9080", HTTP_LOGGER, "outbound"), "{found:#?}");
        assert!(has("10.98.0.1_3306", TCP_LOGGER, "outbound"), "{found:#?}");
    }

    #[test]
    fn no_reports_without_a_server_its_cluster_or_with_reports_off() {
        let on = MeshConfig {
            mixer_report_server: SERVER.into(),
            ..Default::default()
        };
        assert!(
            loggers(WORKLOADS, on.clone()).is_empty(),
            "no istio-telemetry Service"
        );
        let yaml = format!("{TELEMETRY_SERVICE}{WORKLOADS}");
        assert!(loggers(&yaml, MeshConfig::default()).is_empty());
        let off = MeshConfig {
            disable_mixer_http_reports: true,
            ..on
        };
        assert!(loggers(&yaml, off).is_empty());
    }
}
