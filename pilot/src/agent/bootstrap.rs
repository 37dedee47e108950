//! Envoy's bootstrap: the node identity, the admin endpoint, ADS towards Pilot
//! over the static `xds-grpc` cluster, the static Prometheus listener, and
//! the statsd sink when there is a bridge.

use serde_json::{Value, json};

use super::{ControlPlaneAuthPolicy, Identity, ProxyArgs};
use crate::xds::tls::{CERT_DIR, SDS_CLUSTER, SDS_DEFAULT, SDS_ROOT};

pub fn render(
    args: &ProxyArgs,
    id: &Identity,
    statsd: Option<std::net::SocketAddr>,
) -> anyhow::Result<Value> {
    let (host, port) = args
        .discovery_address
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--discoveryAddress {:?} is not host:port",
                args.discovery_address
            )
        })?;
    let discovery_is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let mut bootstrap = json!({
        "node": {
            "id": id.node_id,
            "cluster": args.service_cluster,
            "metadata": id.metadata,
        },
        "admin": {
            "address": socket(&id.local_bind, args.proxy_admin_port),
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": { "cluster_name": "xds-grpc" } }],
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" },
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": if discovery_is_ip { "STATIC" } else { "STRICT_DNS" },
                    "connect_timeout": format!("{}s", args.connect_timeout.as_secs_f64()),
                    "lb_policy": "ROUND_ROBIN",
                    "load_assignment": endpoint("xds-grpc", &host, port),
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": { "http2_protocol_options": {} },
                        },
                    },
                    "upstream_connection_options": {
                        "tcp_keepalive": { "keepalive_time": 300 },
                    },
                },
                {
                    "name": "prometheus_stats",
                    "type": "STATIC",
                    "connect_timeout": "0.25s",
                    "load_assignment": endpoint("prometheus_stats", &id.local_bind, args.proxy_admin_port),
                },
            ],
            "listeners": [{
                "name": "prometheus_stats",
                "address": socket(&id.status_bind, args.stats_port),
                "filter_chains": [{
                    "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "stats",
                            "route_config": {
                                "virtual_hosts": [{
                                    "name": "backend",
                                    "domains": ["*"],
                                    "routes": [{
                                        "match": { "prefix": "/stats/prometheus" },
                                        "route": { "cluster": "prometheus_stats" },
                                    }],
                                }],
                            },
                            "http_filters": [{
                                "name": "envoy.filters.http.router",
                                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
                            }],
                        },
                    }],
                }],
            }],
        },
    });
    // In local mode every "pod" shares the loopback: connections leave from
    // the pod's own address, so peers (and policy on `source.ip`) see who
    // is calling, as they would between pods.
    if id.local_bind != "127.0.0.1" {
        bootstrap["cluster_manager"] = json!({
            "upstream_bind_config": {
                "source_address": { "address": id.local_bind, "port_value": 0 },
            },
        });
    }
    // The node agent's SDS, for the transport sockets Pilot sends that name
    // `default` and `ROOTCA` (the cluster name Istio's later bootstraps use).
    if let Some(path) = args.sds.socket() {
        let sds = json!({
            "name": SDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": SDS_CLUSTER,
                "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                    "pipe": { "path": path.display().to_string() },
                } } }] }],
            },
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": { "http2_protocol_options": {} },
                },
            },
        });
        if let Some(clusters) = bootstrap["static_resources"]["clusters"].as_array_mut() {
            clusters.push(sds);
        }
    }
    if args.control_plane_auth_policy == ControlPlaneAuthPolicy::MutualTls {
        let pilot = format!(
            "spiffe://{}/ns/istio-system/sa/{}",
            args.sds.trust_domain, args.pilot_identity
        );
        bootstrap["static_resources"]["clusters"][0]["transport_socket"] =
            xds_tls(args.sds.socket().is_some(), &pilot);
    }
    if let Some(sink) = statsd {
        bootstrap["stats_sinks"] = json!([{
            "name": "envoy.stat_sinks.statsd",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.metrics.v3.StatsdSink",
                "address": { "socket_address": {
                    "protocol": "UDP",
                    "address": sink.ip().to_string(),
                    "port_value": sink.port(),
                } },
            },
        }]);
    }
    Ok(bootstrap)
}

/// Mutual TLS towards Pilot: this proxy's certificate from the node agent
/// (or `/etc/certs` without one), Pilot's checked against `pilot`.
fn xds_tls(sds: bool, pilot: &str) -> Value {
    let secret = |name: &str| {
        json!({
            "name": name,
            "sds_config": {
                "api_config_source": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{ "envoy_grpc": { "cluster_name": SDS_CLUSTER } }],
                },
                "resource_api_version": "V3",
            },
        })
    };
    let san = json!([{ "san_type": "URI", "matcher": { "exact": pilot } }]);
    let common = if sds {
        json!({
            "tls_certificate_sds_secret_configs": [secret(SDS_DEFAULT)],
            "combined_validation_context": {
                "default_validation_context": { "match_typed_subject_alt_names": san },
                "validation_context_sds_secret_config": secret(SDS_ROOT),
            },
            "alpn_protocols": ["h2"],
        })
    } else {
        json!({
            "tls_certificates": [{
                "certificate_chain": { "filename": format!("{CERT_DIR}/cert-chain.pem") },
                "private_key": { "filename": format!("{CERT_DIR}/key.pem") },
            }],
            "validation_context": {
                "trusted_ca": { "filename": format!("{CERT_DIR}/root-cert.pem") },
                "match_typed_subject_alt_names": san,
            },
            "alpn_protocols": ["h2"],
        })
    };
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
        },
    })
}

fn socket(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

fn endpoint(cluster: &str, host: &str, port: u16) -> Value {
    json!({
        "cluster_name": cluster,
        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket(host, port) } }] }],
    })
}
