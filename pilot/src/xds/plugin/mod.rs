//! Plug-ins: how a feature (CORS, fault injection, Mixer's policy check and
//! telemetry, peer authentication, authorization) adds to what the generators
//! build without editing them, as Istio 1.4's `plugin.Plugin` did. The
//! generators call every registered plug-in at fixed points: the HTTP filters
//! of each connection manager, the network filters and filter chains of each
//! listener, each Istio HTTP route, and each cluster; a plug-in may also add
//! clusters of its own.

mod authn;
mod authz;
mod cors;
mod fault;
mod mixer;
mod telemetry;

use std::sync::{Arc, LazyLock};

use api::networking::HttpRoute;
use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChainMatch};
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use prost::{Message, Name};

pub use authn::Authn;
pub use authz::Authz;
pub use cors::Cors;
pub use fault::Fault;
pub use mixer::Mixer;
pub use telemetry::Telemetry;

use crate::model::{Service, ServicePort};
use crate::xds::generate::lds::InboundPort;
use crate::xds::names::{any, outbound_cluster_name};
use crate::xds::proxy::Proxy;
use crate::xds::push::PushContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Traffic from this proxy's application to the mesh.
    Outbound,
    /// Traffic from the mesh to this proxy's application.
    Inbound,
}

/// What a filter chain proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// An HTTP connection manager.
    Http,
    /// A TCP proxy.
    Tcp,
}

/// A listener, or one inbound port of it, being built for `proxy`.
pub struct ListenerContext<'a> {
    pub push: &'a PushContext,
    pub proxy: &'a Proxy,
    pub direction: Direction,
    /// The inbound port, for inbound chains.
    pub port: Option<&'a InboundPort>,
}

/// One Istio HTTP route being translated into Envoy routes. Route tables are
/// built once per namespace (and per label set when some VirtualService
/// matches `sourceLabels`) and shared by its proxies: a plug-in may read the
/// proxy's namespace and labels, nothing else of it.
pub struct RouteContext<'a> {
    pub push: &'a PushContext,
    pub proxy: &'a Proxy,
    pub route: &'a HttpRoute,
}

/// A cluster being built. Outbound clusters are shared by every proxy of a
/// push, so they know no proxy; inbound clusters are one proxy's.
pub struct ClusterContext<'a> {
    pub push: &'a PushContext,
    pub proxy: Option<&'a Proxy>,
    pub service: Option<&'a Service>,
    pub port: Option<&'a ServicePort>,
    pub direction: Direction,
}

/// One filter chain a plug-in wants in place of an inbound port's single
/// chain: PERMISSIVE mutual TLS needs a TLS chain and a plaintext one. Every
/// chain gets the port's filters.
#[derive(Debug, Clone, Default)]
pub struct ChainTemplate {
    /// Added to the chain's name, to tell the chains of one port apart.
    pub suffix: String,
    /// Merged over the port's own match (its destination port).
    pub filter_chain_match: FilterChainMatch,
    pub transport_socket: Option<TransportSocket>,
}

/// Every hook has a default that adds nothing, so a plug-in implements only
/// the points it cares about.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// HTTP filters for a connection manager, placed before the router in
    /// plug-in order.
    fn http_filters(&self, _ctx: &ListenerContext) -> Vec<HttpFilter> {
        Vec::new()
    }

    /// Network filters placed before the connection manager or TCP proxy.
    fn network_filters(&self, _ctx: &ListenerContext) -> Vec<Filter> {
        Vec::new()
    }

    /// Several filter chains for an inbound port instead of one; the first
    /// plug-in to ask decides.
    fn inbound_chains(&self, _ctx: &ListenerContext) -> Option<Vec<ChainTemplate>> {
        None
    }

    /// Access loggers for a connection manager or TCP proxy.
    fn access_logs(&self, _ctx: &ListenerContext, _traffic: Traffic) -> Vec<AccessLog> {
        Vec::new()
    }

    /// Adjusts an Envoy route made from an Istio HTTP route (per-filter config).
    fn on_http_route(&self, _ctx: &RouteContext, _route: &mut Route) {}

    /// Adjusts the inline route table of an inbound HTTP port (`ctx.port`).
    fn on_inbound_routes(&self, _ctx: &ListenerContext, _routes: &mut RouteConfiguration) {}

    /// Adjusts a cluster (a transport socket for mutual TLS, say).
    fn on_cluster(&self, _ctx: &ClusterContext, _cluster: &mut Cluster) {}

    /// Clusters of the plug-in's own (a policy server's, say) for `proxy`.
    fn clusters(&self, _push: &PushContext, _proxy: &Proxy) -> Vec<Cluster> {
        Vec::new()
    }
}

/// An HTTP filter with its default config on outbound connection managers
/// only, configured per route: the shape of the VirtualService features.
fn outbound_filter<M: Message + Name>(
    ctx: &ListenerContext,
    name: &str,
    config: &M,
) -> Vec<HttpFilter> {
    if ctx.direction != Direction::Outbound {
        return Vec::new();
    }
    vec![HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(config))),
        ..Default::default()
    }]
}

/// The outbound cluster of a Mixer server the mesh config names
/// (`istio-policy.istio-system.svc.cluster.local:9091` →
/// `outbound|9091||istio-policy.istio-system.svc.cluster.local`), when the
/// push has it: a filter must never name a cluster that is not sent.
fn server_cluster(push: &PushContext, server: &str) -> Option<String> {
    let (host, port) = server.rsplit_once(':')?;
    let cluster = outbound_cluster_name(port.parse().ok()?, "", host);
    push.outbound_clusters
        .iter()
        .any(|c| c.name == cluster)
        .then_some(cluster)
}

/// The plug-ins the generators call, in order.
#[derive(Clone)]
pub struct Plugins(Arc<Vec<Arc<dyn Plugin>>>);

impl Plugins {
    pub fn new(plugins: Vec<Arc<dyn Plugin>>) -> Plugins {
        Plugins(Arc::new(plugins))
    }

    /// What every Pilot runs, in Istio's order: peer authentication and
    /// authorization before anything else sees a request; CORS before fault
    /// injection, so a preflight is answered rather than faulted; Mixer's
    /// policy check on inbound ports and its reports from every port when the
    /// mesh config turns them on.
    pub fn standard() -> Plugins {
        static STANDARD: LazyLock<Plugins> = LazyLock::new(|| {
            Plugins::new(vec![
                Arc::new(Authn),
                Arc::new(Authz),
                Arc::new(Cors),
                Arc::new(Fault),
                Arc::new(Mixer),
                Arc::new(Telemetry),
            ])
        });
        STANDARD.clone()
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Plugin> {
        self.0.iter().map(|p| p.as_ref())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.iter().map(Plugin::name).collect()
    }
}

impl Default for Plugins {
    fn default() -> Plugins {
        Plugins::standard()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use api::mesh::MeshConfig;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener};
    use prost::Message;

    use super::*;
    use crate::xds::fixtures::{mesh_yaml, push_from_yaml, sidecar_node};
    use crate::xds::generate::{cds, generate};
    use crate::xds::resource::XdsType;

    /// What the mutual TLS feature will need, done without touching a generator.
    struct TwoChains;

    impl Plugin for TwoChains {
        fn name(&self) -> &'static str {
            "two-chains"
        }
        fn network_filters(&self, ctx: &ListenerContext) -> Vec<Filter> {
            (ctx.direction == Direction::Inbound)
                .then(|| Filter {
                    name: "test.network".into(),
                    config_type: None,
                })
                .into_iter()
                .collect()
        }
        fn inbound_chains(&self, _: &ListenerContext) -> Option<Vec<ChainTemplate>> {
            let tls = ChainTemplate {
                suffix: "-tls".into(),
                filter_chain_match: FilterChainMatch {
                    transport_protocol: "tls".into(),
                    ..Default::default()
                },
                transport_socket: None,
            };
            Some(vec![tls, ChainTemplate::default()])
        }
        fn on_cluster(&self, ctx: &ClusterContext, cluster: &mut Cluster) {
            if ctx.direction == Direction::Outbound {
                cluster.alt_stat_name = "plugged".into();
            }
        }
        fn clusters(&self, _: &PushContext, _: &Proxy) -> Vec<Cluster> {
            vec![Cluster {
                name: "plugin-cluster".into(),
                ..Default::default()
            }]
        }
    }

    #[test]
    fn a_plugin_adds_chains_filters_and_clusters() {
        let base = push_from_yaml(1, &mesh_yaml(2, 2), MeshConfig::default());
        let mut push = PushContext::new(
            1,
            &base.model,
            base.config.clone(),
            base.mesh.clone(),
            &base.domain,
            std::time::Instant::now(),
        );
        push.plugins = Plugins::new(vec![Arc::new(TwoChains), Arc::new(Cors), Arc::new(Fault)]);
        push.outbound_clusters = Arc::new(cds::outbound(&push));
        let proxy =
            Proxy::from_node(&sidecar_node("10.100.0.2", "svc-0-0", false), &push.model).unwrap();

        let listeners = generate(&push, &proxy, XdsType::Listener, &[]);
        let inbound = listeners
            .iter()
            .find(|r| r.name == "virtualInbound")
            .unwrap();
        let inbound = Listener::decode(inbound.body.clone()).unwrap();
        let names: Vec<&str> = inbound
            .filter_chains
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "inbound|8080|http|svc-0.default.svc.cluster.local-tls",
                "inbound|8080|http|svc-0.default.svc.cluster.local",
                "InboundPassthroughClusterIpv4"
            ]
        );
        let first = &inbound.filter_chains[0];
        assert_eq!(first.filters[0].name, "test.network");
        let port = first.filter_chain_match.as_ref().unwrap();
        assert_eq!(
            (
                port.transport_protocol.as_str(),
                port.destination_port.map(|p| p.value)
            ),
            ("tls", Some(8080))
        );

        let clusters = generate(&push, &proxy, XdsType::Cluster, &[]);
        assert!(clusters.iter().any(|c| c.name == "plugin-cluster"));
        let outbound = clusters
            .iter()
            .find(|c| c.name == "outbound|8080||svc-1.default.svc.cluster.local")
            .unwrap();
        assert_eq!(
            Cluster::decode(outbound.body.clone())
                .unwrap()
                .alt_stat_name,
            "plugged"
        );
    }
}
