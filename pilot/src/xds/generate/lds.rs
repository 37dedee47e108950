//! LDS. With iptables capture (`REDIRECT`): `virtualOutbound` on 15001,
//! `virtualInbound` on 15006 and the per-port outbound listeners Istio names
//! `0.0.0.0_9080`. Without capture (`NONE`, local mode): inbound listeners bound
//! on the proxy's own address and, when the mesh sets `proxyHttpPort`, an HTTP
//! proxy listener the application sends its outbound requests to.

use std::collections::BTreeMap;
use std::time::Duration;

use api::networking::{L4MatchAttributes, Protocol};
use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::core::v3::{Address, Pipe, TrafficDirection, address};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter::ConfigType,
    listener_filter::ConfigType as ListenerFilterConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
    http_connection_manager::{
        ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails,
    },
    http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use crate::model::{Service, labels_match};
use crate::xds::generate::rds;
use crate::xds::names::{
    BLACKHOLE, HTTP_PROXY_ROUTE, INBOUND_PASSTHROUGH, PASSTHROUGH, ads_source, any, bool_value,
    duration, inbound_cluster_name, outbound_cluster_name, port_route_name, socket_address,
    u32_value,
};
use crate::xds::plugin::{Direction, ListenerContext, Traffic};
use crate::xds::proxy::{InterceptionMode, Proxy, ProxyKind};
use crate::xds::push::PushContext;
use crate::xds::resource::Resource;

pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
const VIRTUAL_OUTBOUND_PORT: u32 = 15001;
const VIRTUAL_INBOUND_PORT: u32 = 15006;

/// One port this proxy receives traffic on for its application.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundPort {
    pub cluster: String,
    /// The service this port serves (the first one, when several share it).
    pub hostname: String,
    pub service_namespace: String,
    /// The endpoint port other proxies dial (the Service's targetPort).
    pub port: u32,
    /// The Service's own port and its name, which policies name.
    pub service_port: u32,
    pub port_name: String,
    pub protocol: Protocol,
    /// Where the application listens: a Sidecar ingress `defaultEndpoint`, else `127.0.0.1:<port>`.
    pub app_endpoint: String,
}

impl InboundPort {
    pub fn app_address(&self) -> Address {
        if let Some(path) = self.app_endpoint.strip_prefix("unix://") {
            return Address {
                address: Some(address::Address::Pipe(Pipe {
                    path: path.to_string(),
                    mode: 0,
                })),
            };
        }
        match self.app_endpoint.rsplit_once(':') {
            Some((host, port)) => socket_address(host, port.parse().unwrap_or(self.port)),
            None => socket_address("127.0.0.1", self.port),
        }
    }
}

/// The inbound ports of `proxy`, one per endpoint port, first service wins.
pub fn inbound_ports(push: &PushContext, proxy: &Proxy) -> Vec<InboundPort> {
    if proxy.kind != ProxyKind::Sidecar {
        return Vec::new();
    }
    let sidecar = push
        .config
        .sidecars()
        .filter(|(obj, _)| obj.meta.namespace == proxy.namespace)
        .find(|(_, s)| {
            s.workload_selector
                .as_ref()
                .is_some_and(|w| w.matches(&proxy.labels))
        })
        .or_else(|| {
            push.config.sidecars().find(|(obj, s)| {
                obj.meta.namespace == proxy.namespace && s.workload_selector.is_none()
            })
        })
        .map(|(_, s)| s);
    let mut by_port: BTreeMap<u32, InboundPort> = BTreeMap::new();
    for (service, instance) in push.model.instances_at(&proxy.ip) {
        let Some(sp) = service.port(instance.service_port) else {
            continue;
        };
        by_port.entry(instance.port).or_insert_with(|| {
            let app_endpoint = sidecar
                .and_then(|s| s.ingress.iter().find(|i| i.port.number == instance.port))
                .map(|i| i.default_endpoint.clone())
                .unwrap_or_else(|| format!("127.0.0.1:{}", instance.port));
            InboundPort {
                cluster: inbound_cluster_name(instance.port, &sp.name, &service.hostname),
                hostname: service.hostname.clone(),
                service_namespace: service.namespace.clone(),
                port: instance.port,
                service_port: sp.port,
                port_name: sp.name.clone(),
                protocol: sp.protocol,
                app_endpoint,
            }
        });
    }
    by_port.into_values().collect()
}

pub fn build(push: &PushContext, proxy: &Proxy) -> Vec<Resource> {
    let mut listeners = Vec::new();
    if proxy.kind == ProxyKind::Sidecar {
        let inbound = inbound_ports(push, proxy);
        match proxy.interception {
            InterceptionMode::None => {
                for ib in &inbound {
                    listeners.push(inspect_tls(Listener {
                        name: format!("{}_{}", proxy.ip, ib.port),
                        address: Some(socket_address(&proxy.ip, ib.port)),
                        filter_chains: inbound_chains(push, proxy, ib, None),
                        traffic_direction: TrafficDirection::Inbound as i32,
                        ..Default::default()
                    }));
                }
            }
            InterceptionMode::Redirect => {
                listeners.push(virtual_outbound(push));
                listeners.push(virtual_inbound(push, proxy, &inbound));
                listeners.extend(outbound_port_listeners(push, proxy));
            }
        }
        if push.mesh.proxy_http_port != 0 {
            // Without a pod network namespace the proxy's own address is private to the pod.
            let bind = match proxy.interception {
                InterceptionMode::None => proxy.ip.as_str(),
                InterceptionMode::Redirect => "127.0.0.1",
            };
            let port = push.mesh.proxy_http_port;
            listeners.push(Listener {
                name: format!("{bind}_{port}"),
                address: Some(socket_address(bind, port)),
                filter_chains: vec![FilterChain {
                    filters: hcm_rds(
                        &outbound(push, proxy),
                        &format!("outbound_{port}"),
                        HTTP_PROXY_ROUTE,
                    ),
                    ..Default::default()
                }],
                traffic_direction: TrafficDirection::Outbound as i32,
                ..Default::default()
            });
        }
    }
    let mut out: Vec<Resource> = listeners
        .iter()
        .map(|l| Resource::encode(&l.name, l))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The route names the listeners of `proxy` ask RDS for.
pub fn route_names(push: &PushContext, proxy: &Proxy) -> Vec<String> {
    let mut names = Vec::new();
    if proxy.kind == ProxyKind::Sidecar {
        if proxy.interception == InterceptionMode::Redirect {
            names.extend(http_ports(push).into_iter().map(port_route_name));
        }
        if push.mesh.proxy_http_port != 0 {
            names.push(HTTP_PROXY_ROUTE.to_string());
        }
    }
    names
}

fn http_ports(push: &PushContext) -> std::collections::BTreeSet<u32> {
    push.model
        .services
        .values()
        .flat_map(|s| s.ports.iter())
        .filter(|p| p.protocol.is_http())
        .map(|p| p.port)
        .collect()
}

fn outbound<'a>(push: &'a PushContext, proxy: &'a Proxy) -> ListenerContext<'a> {
    ListenerContext {
        push,
        proxy,
        direction: Direction::Outbound,
        port: None,
    }
}

/// The filter chains of one inbound port: one, or as many as a plug-in asks
/// for (a TLS and a plaintext chain for PERMISSIVE mutual TLS), each with the
/// port's filters.
fn inbound_chains(
    push: &PushContext,
    proxy: &Proxy,
    ib: &InboundPort,
    port_match: Option<u32>,
) -> Vec<FilterChain> {
    let ctx = ListenerContext {
        push,
        proxy,
        direction: Direction::Inbound,
        port: Some(ib),
    };
    let stat_prefix = format!("inbound_{}", ib.port);
    let filters = if ib.protocol.is_http() {
        let mut routes = rds::inbound(&ib.cluster);
        for p in push.plugins.iter() {
            p.on_inbound_routes(&ctx, &mut routes);
        }
        hcm(&ctx, &stat_prefix, RouteSpecifier::RouteConfig(routes))
    } else {
        with_network_filters(
            &ctx,
            tcp_proxy_to(
                &stat_prefix,
                &[(ib.cluster.clone(), 100)],
                access_logs(&ctx, Traffic::Tcp),
            ),
        )
    };
    let port_only = FilterChainMatch {
        destination_port: port_match.map(u32_value),
        ..Default::default()
    };
    let Some(templates) = push.plugins.iter().find_map(|p| p.inbound_chains(&ctx)) else {
        return vec![FilterChain {
            filter_chain_match: port_match.map(|_| port_only),
            filters,
            name: ib.cluster.clone(),
            ..Default::default()
        }];
    };
    templates
        .into_iter()
        .map(|t| FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                destination_port: port_only.destination_port,
                ..t.filter_chain_match
            }),
            filters: filters.clone(),
            transport_socket: t.transport_socket,
            name: format!("{}{}", ib.cluster, t.suffix),
            ..Default::default()
        })
        .collect()
}

/// Adds Envoy's TLS inspector when some chain is chosen by what it reads (a
/// PERMISSIVE port's mutual-TLS chain). A client that waits for the server
/// to speak first (MySQL, say) sends no ClientHello: after 100 ms, Istio's
/// protocol detection timeout, the connection goes on as plaintext rather
/// than being closed.
fn inspect_tls(mut listener: Listener) -> Listener {
    let needed = listener
        .filter_chains
        .iter()
        .filter_map(|c| c.filter_chain_match.as_ref())
        .any(|m| !m.transport_protocol.is_empty() || !m.application_protocols.is_empty());
    if needed {
        listener.listener_filters.push(ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(ListenerFilterConfig::TypedConfig(any(
                &TlsInspector::default(),
            ))),
            ..Default::default()
        });
        listener.listener_filters_timeout = Some(duration(Duration::from_millis(100)));
        listener.continue_on_listener_filters_timeout = true;
    }
    listener
}

/// The plug-ins' network filters, then `last` (the connection manager or TCP proxy).
fn with_network_filters(ctx: &ListenerContext, last: Filter) -> Vec<Filter> {
    let mut filters: Vec<Filter> = ctx
        .push
        .plugins
        .iter()
        .flat_map(|p| p.network_filters(ctx))
        .collect();
    filters.push(last);
    filters
}

fn virtual_outbound(push: &PushContext) -> Listener {
    let fallback = if push.mesh.outbound_traffic_policy.allow_any() {
        PASSTHROUGH
    } else {
        BLACKHOLE
    };
    Listener {
        name: VIRTUAL_OUTBOUND.into(),
        address: Some(socket_address("0.0.0.0", VIRTUAL_OUTBOUND_PORT)),
        use_original_dst: Some(bool_value(true)),
        filter_chains: vec![FilterChain {
            filters: vec![tcp_proxy(fallback, fallback)],
            name: fallback.into(),
            ..Default::default()
        }],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn virtual_inbound(push: &PushContext, proxy: &Proxy, inbound: &[InboundPort]) -> Listener {
    let mut chains: Vec<FilterChain> = inbound
        .iter()
        .flat_map(|ib| inbound_chains(push, proxy, ib, Some(ib.port)))
        .collect();
    chains.push(FilterChain {
        filters: vec![tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH)],
        name: INBOUND_PASSTHROUGH.into(),
        ..Default::default()
    });
    inspect_tls(Listener {
        name: VIRTUAL_INBOUND.into(),
        address: Some(socket_address("0.0.0.0", VIRTUAL_INBOUND_PORT)),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.original_dst".into(),
            config_type: Some(ListenerFilterConfig::TypedConfig(any(
                &OriginalDst::default(),
            ))),
            ..Default::default()
        }],
        filter_chains: chains,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    })
}

/// `0.0.0.0_<port>` for HTTP ports (RDS by port) and `<VIP>_<port>` for TCP ports,
/// never bound themselves: virtualOutbound hands connections to them.
fn outbound_port_listeners(push: &PushContext, proxy: &Proxy) -> Vec<Listener> {
    let mut by_name: BTreeMap<String, Listener> = BTreeMap::new();
    for port in http_ports(push) {
        let name = format!("0.0.0.0_{port}");
        by_name.insert(
            name.clone(),
            Listener {
                name,
                address: Some(socket_address("0.0.0.0", port)),
                bind_to_port: Some(bool_value(false)),
                filter_chains: vec![FilterChain {
                    filters: hcm_rds(
                        &outbound(push, proxy),
                        &format!("outbound_0.0.0.0_{port}"),
                        &port_route_name(port),
                    ),
                    ..Default::default()
                }],
                traffic_direction: TrafficDirection::Outbound as i32,
                ..Default::default()
            },
        );
    }
    for service in push.model.services.values() {
        for sp in service.ports.iter().filter(|p| !p.protocol.is_http()) {
            let ip = service.address.as_deref().unwrap_or("0.0.0.0");
            let name = format!("{ip}_{}", sp.port);
            let clusters = tcp_destinations(push, proxy, service, sp.port);
            by_name.entry(name.clone()).or_insert_with(|| Listener {
                name: name.clone(),
                address: Some(socket_address(ip, sp.port)),
                bind_to_port: Some(bool_value(false)),
                filter_chains: vec![FilterChain {
                    filters: with_network_filters(
                        &outbound(push, proxy),
                        tcp_proxy_to(
                            &format!("outbound|{}||{}", sp.port, service.hostname),
                            &clusters,
                            access_logs(&outbound(push, proxy), Traffic::Tcp),
                        ),
                    ),
                    ..Default::default()
                }],
                traffic_direction: TrafficDirection::Outbound as i32,
                ..Default::default()
            });
        }
    }
    by_name.into_values().collect()
}

fn hcm_rds(ctx: &ListenerContext, stat_prefix: &str, route_name: &str) -> Vec<Filter> {
    hcm(
        ctx,
        stat_prefix,
        RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route_name.to_string(),
        }),
    )
}

/// An HTTP connection manager with the plug-ins' HTTP filters before the
/// router, behind the plug-ins' network filters.
fn hcm(ctx: &ListenerContext, stat_prefix: &str, routes: RouteSpecifier) -> Vec<Filter> {
    let mut http_filters: Vec<HttpFilter> = ctx
        .push
        .plugins
        .iter()
        .flat_map(|p| p.http_filters(ctx))
        .collect();
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    });
    let mut manager = HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        route_specifier: Some(routes),
        http_filters,
        access_log: access_logs(ctx, Traffic::Http),
        generate_request_id: Some(bool_value(true)),
        // `/reviews/../admin` is `/admin` to routes and RBAC alike, as Istio
        // has made it since 1.1.2 (CVE-2019-9901).
        normalize_path: Some(bool_value(true)),
        merge_slashes: true,
        ..Default::default()
    };
    if ctx.direction == Direction::Inbound {
        // The application learns its caller's identity from the XFCC header,
        // set from the verified peer certificate alone: what a client sent
        // is dropped, where Istio's APPEND_FORWARD kept a mesh caller's own
        // entries before the proxy's.
        manager.forward_client_cert_details = ForwardClientCertDetails::SanitizeSet as i32;
        manager.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
            subject: Some(bool_value(true)),
            uri: true,
            dns: true,
            ..Default::default()
        });
    }
    let manager = Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(ConfigType::TypedConfig(any(&manager))),
    };
    with_network_filters(ctx, manager)
}

/// Where a TCP service port's connections go: the first `tcp` route of its
/// VirtualService that applies to this port and proxy, weights kept; else the
/// service itself.
fn tcp_destinations(
    push: &PushContext,
    proxy: &Proxy,
    service: &Service,
    port: u32,
) -> Vec<(String, u32)> {
    let plain = || vec![(outbound_cluster_name(port, "", &service.hostname), 100)];
    let Some((namespace, vs)) = push.virtual_service(&service.hostname) else {
        return plain();
    };
    let applies = |m: &L4MatchAttributes| {
        m.port.is_none_or(|p| p == port)
            && (m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
            && labels_match(&m.source_labels, &proxy.labels)
    };
    let Some(route) = vs
        .tcp
        .iter()
        .find(|r| r.matches.is_empty() || r.matches.iter().any(applies))
    else {
        return plain();
    };
    route
        .route
        .iter()
        .filter(|d| d.weight != Some(0) || route.route.len() == 1)
        .map(|d| {
            (
                push.destination_cluster(&d.destination, namespace, port),
                d.weight.unwrap_or(100) as u32,
            )
        })
        .collect()
}

/// The plug-ins' access loggers, in plug-in order.
fn access_logs(ctx: &ListenerContext, traffic: Traffic) -> Vec<AccessLog> {
    ctx.push
        .plugins
        .iter()
        .flat_map(|p| p.access_logs(ctx, traffic))
        .collect()
}

/// A TCP proxy of Envoy's own (passthrough, blackhole): nothing to report.
fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Filter {
    tcp_proxy_to(stat_prefix, &[(cluster.to_string(), 100)], Vec::new())
}

fn tcp_proxy_to(
    stat_prefix: &str,
    clusters: &[(String, u32)],
    access_log: Vec<AccessLog>,
) -> Filter {
    let cluster_specifier = match clusters {
        [(only, _)] => tcp_proxy::ClusterSpecifier::Cluster(only.clone()),
        many => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: many
                .iter()
                .map(
                    |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                        name: name.clone(),
                        weight: *weight,
                        ..Default::default()
                    },
                )
                .collect(),
        }),
    };
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(cluster_specifier),
        access_log,
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(ConfigType::TypedConfig(any(&proxy))),
    }
}
