//! CDS: outbound clusters per service port and DestinationRule subset (shared by
//! every proxy), inbound clusters per proxy, and Istio's fixed clusters.

use api::networking::{
    ConnectionPoolSettings, OutlierDetection as IstioOutlier, SimpleLb, TrafficPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::cluster::CommonLbConfig;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, Cluster, OutlierDetection};
use envoy_types::pb::envoy::config::core::v3::{
    Http2ProtocolOptions, HttpProtocolOptions, SocketAddress,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions as UpstreamHttpOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::envoy::r#type::v3::Percent;

use crate::model::{Resolution, ServicePort};
use crate::xds::generate::eds::{load_assignment, load_assignment_at};
use crate::xds::names::{
    BLACKHOLE, INBOUND_PASSTHROUGH, PASSTHROUGH, ads_source, any, duration, outbound_cluster_name,
    u32_value,
};
use crate::xds::plugin::{ClusterContext, Direction};
use crate::xds::proxy::Proxy;
use crate::xds::push::PushContext;
use crate::xds::resource::Resource;
use crate::xds::tls;

const UPSTREAM_HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Every outbound cluster of the mesh, sorted by name.
pub fn outbound(push: &PushContext) -> Vec<Resource> {
    let mut out = Vec::new();
    for service in push.model.services.values() {
        let dr = push.destination_rule(&service.hostname);
        for port in &service.ports {
            let policy = dr
                .and_then(|d| d.traffic_policy.as_ref())
                .map(|p| p.for_port(port.port));
            let name = outbound_cluster_name(port.port, "", &service.hostname);
            out.push(outbound_cluster(
                push,
                &name,
                service,
                port,
                policy.as_ref(),
            ));
            for subset in dr.map(|d| d.subsets.as_slice()).unwrap_or_default() {
                // A subset's own settings win over the rule's, field by field.
                let subset_policy = match (&policy, &subset.traffic_policy) {
                    (Some(rule), Some(own)) => Some(rule.overlay(&own.for_port(port.port))),
                    (None, Some(own)) => Some(own.for_port(port.port)),
                    (rule, None) => rule.clone(),
                };
                let name = outbound_cluster_name(port.port, &subset.name, &service.hostname);
                out.push(outbound_cluster(
                    push,
                    &name,
                    service,
                    port,
                    subset_policy.as_ref(),
                ));
            }
        }
    }
    out.push(Resource::encode(
        BLACKHOLE,
        &static_cluster(BLACKHOLE, push),
    ));
    out.push(Resource::encode(
        PASSTHROUGH,
        &original_dst_cluster(PASSTHROUGH, push),
    ));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn outbound_cluster(
    push: &PushContext,
    name: &str,
    service: &crate::model::Service,
    port: &ServicePort,
    policy: Option<&TrafficPolicy>,
) -> Resource {
    let mut cluster = match service.resolution {
        Resolution::ClientSideLb => Cluster {
            name: name.to_string(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(ads_source()),
                service_name: name.to_string(),
            }),
            ..base(push, name)
        },
        Resolution::Dns => {
            let instances = push.model.instances.get(&service.hostname);
            let endpoints: Vec<(&str, u32)> = instances
                .iter()
                .flat_map(|l| l.iter())
                .filter(|i| i.service_port == port.port)
                .map(|i| (i.address.as_str(), i.port))
                .collect();
            Cluster {
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::StrictDns as i32,
                )),
                load_assignment: Some(load_assignment(name, endpoints)),
                ..base(push, name)
            }
        }
        Resolution::Passthrough => original_dst_cluster(name, push),
    };
    let common = policy
        .and_then(|p| p.connection_pool.as_ref())
        .and_then(|p| p.http.as_ref())
        .filter(|h| h.max_requests_per_connection.is_some() || h.idle_timeout.is_some())
        .map(|h| HttpProtocolOptions {
            max_requests_per_connection: h.max_requests_per_connection.map(u32_value),
            idle_timeout: h.idle_timeout.map(|d| duration(d.0)),
            ..Default::default()
        });
    if port.protocol.is_http2() || common.is_some() {
        set_upstream_http(&mut cluster, port.protocol.is_http2(), common);
    }
    if let Some(policy) = policy {
        apply_policy(&mut cluster, policy);
        if let Some(settings) = &policy.tls {
            cluster.transport_socket =
                tls::upstream(push, name, service, settings, port.protocol.is_http2());
        }
    }
    let ctx = ClusterContext {
        push,
        proxy: None,
        service: Some(service),
        port: Some(port),
        direction: Direction::Outbound,
    };
    for plugin in push.plugins.iter() {
        plugin.on_cluster(&ctx, &mut cluster);
    }
    Resource::encode(name, &cluster)
}

/// The clusters plug-ins add for `proxy`.
pub fn from_plugins(push: &PushContext, proxy: &Proxy) -> Vec<Resource> {
    push.plugins
        .iter()
        .flat_map(|p| p.clusters(push, proxy))
        .map(|c| Resource::encode(&c.name, &c))
        .collect()
}

/// Pins the upstream protocol (HTTP/2 for `http2`/`grpc` ports) and sets the
/// connection pool's per-connection HTTP limits.
fn set_upstream_http(cluster: &mut Cluster, http2: bool, common: Option<HttpProtocolOptions>) {
    let protocol = if http2 {
        ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())
    } else {
        ProtocolConfig::HttpProtocolOptions(Default::default())
    };
    let options = UpstreamHttpOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(protocol),
            },
        )),
        ..Default::default()
    };
    cluster
        .typed_extension_protocol_options
        .insert(UPSTREAM_HTTP_OPTIONS.into(), any(&options));
}

fn apply_policy(cluster: &mut Cluster, policy: &TrafficPolicy) {
    if let Some(lb) = &policy.load_balancer {
        match (lb.simple, &lb.consistent_hash) {
            (Some(SimpleLb::RoundRobin), _) => cluster.lb_policy = LbPolicy::RoundRobin as i32,
            (Some(SimpleLb::LeastConn), _) => cluster.lb_policy = LbPolicy::LeastRequest as i32,
            (Some(SimpleLb::Random), _) => cluster.lb_policy = LbPolicy::Random as i32,
            (Some(SimpleLb::Passthrough), _) => {
                cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                    DiscoveryType::OriginalDst as i32,
                ));
                cluster.lb_policy = LbPolicy::ClusterProvided as i32;
                cluster.eds_cluster_config = None;
                cluster.load_assignment = None;
            }
            (None, Some(_)) => cluster.lb_policy = LbPolicy::RingHash as i32,
            (None, None) => {}
        }
    }
    if let Some(pool) = &policy.connection_pool {
        apply_connection_pool(cluster, pool);
    }
    if let Some(od) = &policy.outlier_detection {
        cluster.outlier_detection = Some(outlier_detection(od));
        // Below this share of healthy hosts Envoy ignores ejections, which is what
        // Istio's minHealthPercent promises.
        if let Some(min) = od.min_health_percent {
            cluster.common_lb_config = Some(CommonLbConfig {
                healthy_panic_threshold: Some(Percent { value: min as f64 }),
                ..Default::default()
            });
        }
    }
}

fn apply_connection_pool(cluster: &mut Cluster, pool: &ConnectionPoolSettings) {
    let mut t = Thresholds::default();
    if let Some(tcp) = &pool.tcp {
        t.max_connections = tcp.max_connections.map(u32_value);
        if let Some(ct) = tcp.connect_timeout {
            cluster.connect_timeout = Some(duration(ct.0));
        }
    }
    if let Some(http) = &pool.http {
        t.max_pending_requests = http.http1_max_pending_requests.map(u32_value);
        t.max_requests = http.http2_max_requests.map(u32_value);
        t.max_retries = http.max_retries.map(u32_value);
    }
    if t != Thresholds::default() {
        cluster.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![t],
            ..Default::default()
        });
    }
}

fn outlier_detection(od: &IstioOutlier) -> OutlierDetection {
    let mut out = OutlierDetection {
        interval: od.interval.map(|d| duration(d.0)),
        base_ejection_time: od.base_ejection_time.map(|d| duration(d.0)),
        max_ejection_percent: od.max_ejection_percent.map(u32_value),
        ..Default::default()
    };
    // Istio 1.x: consecutiveErrors counts 5xx responses; the newer split fields win when set.
    let five_xx = od.consecutive_5xx_errors.or(od.consecutive_errors);
    out.consecutive_5xx = five_xx.map(u32_value);
    if let Some(gw) = od.consecutive_gateway_errors {
        out.consecutive_gateway_failure = Some(u32_value(gw));
        out.enforcing_consecutive_gateway_failure = Some(u32_value(100));
    }
    out
}

/// Clusters for the services whose instances this proxy is.
pub fn inbound(push: &PushContext, proxy: &Proxy) -> Vec<Resource> {
    let mut out: Vec<Resource> = crate::xds::generate::lds::inbound_ports(push, proxy)
        .into_iter()
        .map(|ib| {
            let mut c = Cluster {
                cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                    DiscoveryType::Static as i32,
                )),
                load_assignment: Some(load_assignment_at(&ib.cluster, vec![ib.app_address()])),
                ..base(push, &ib.cluster)
            };
            if ib.protocol.is_http2() {
                set_upstream_http(&mut c, true, None);
            }
            let ctx = ClusterContext {
                push,
                proxy: Some(proxy),
                service: None,
                port: None,
                direction: Direction::Inbound,
            };
            for plugin in push.plugins.iter() {
                plugin.on_cluster(&ctx, &mut c);
            }
            Resource::encode(&ib.cluster, &c)
        })
        .collect();
    if proxy.interception == crate::xds::proxy::InterceptionMode::Redirect {
        let mut c = original_dst_cluster(INBOUND_PASSTHROUGH, push);
        c.upstream_bind_config = Some(envoy_types::pb::envoy::config::core::v3::BindConfig {
            source_address: Some(SocketAddress {
                address: "127.0.0.6".into(),
                port_specifier: Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            }),
            ..Default::default()
        });
        out.push(Resource::encode(INBOUND_PASSTHROUGH, &c));
    }
    out
}

fn base(push: &PushContext, name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(duration(push.mesh.connect_timeout.0)),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

fn static_cluster(name: &str, push: &PushContext) -> Cluster {
    Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(load_assignment(name, Vec::new())),
        ..base(push, name)
    }
}

fn original_dst_cluster(name: &str, push: &PushContext) -> Cluster {
    Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        ..base(push, name)
    }
}
