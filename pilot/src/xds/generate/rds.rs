//! RDS: VirtualService HTTP routes as Envoy routes, per outbound port (`9080`)
//! and for the HTTP proxy listener (`http_proxy`).

use std::time::Duration;

use api::networking::{self as istio, HeaderOperations, HttpMatchRequest, HttpRoute};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, RedirectResponseCode,
};
use envoy_types::pb::envoy::config::route::v3::retry_policy::{
    RetryHostPredicate, retry_host_predicate,
};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HostRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};

use crate::model::{Service, labels_match};
use crate::xds::names::{
    HTTP_PROXY_ROUTE, PASSTHROUGH, any, bool_value, duration, outbound_cluster_name, u32_value,
};
use crate::xds::plugin::RouteContext;
use crate::xds::proxy::Proxy;
use crate::xds::push::{PushContext, RouteKey};
use crate::xds::resource::Resource;

/// The outbound route table `name` (a port number or `http_proxy`) for `proxy`.
pub fn outbound(push: &PushContext, proxy: &Proxy, name: &str) -> Option<Resource> {
    let port = if name == HTTP_PROXY_ROUTE {
        None
    } else {
        Some(name.parse::<u32>().ok()?)
    };
    let key = RouteKey {
        name: name.to_string(),
        namespace: proxy.namespace.clone(),
        labels: push.uses_source_labels().then(|| proxy.labels.clone()),
    };
    Some(push.route(key, || {
        let mut vhosts = Vec::new();
        // Envoy rejects a whole route table in which two virtual hosts share a
        // domain (a ServiceEntry host `reviews.default`, or an address reused
        // by two services): the first service by hostname keeps the domain.
        let mut taken = std::collections::HashSet::new();
        for service in push.model.services.values() {
            for sp in service.ports.iter().filter(|p| p.protocol.is_http()) {
                if port.is_some_and(|p| p != sp.port) {
                    continue;
                }
                let mut names = domains(service, sp.port, &proxy.namespace, port.is_none());
                names.retain(|d| {
                    let fresh = taken.insert(d.clone());
                    if !fresh {
                        tracing::debug!(domain = %d, service = %service.hostname, route = name, "domain already routed to another service; left out");
                    }
                    fresh
                });
                if names.is_empty() {
                    continue;
                }
                vhosts.push(VirtualHost {
                    name: format!("{}:{}", service.hostname, sp.port),
                    domains: names,
                    routes: routes_for(push, proxy, service, sp.port),
                    ..Default::default()
                });
            }
        }
        if port.is_some() && push.mesh.outbound_traffic_policy.allow_any() && taken.insert("*".into()) {
            vhosts.push(VirtualHost {
                name: "allow_any".into(),
                domains: vec!["*".into()],
                routes: vec![everything_to(PASSTHROUGH)],
                ..Default::default()
            });
        }
        let config = RouteConfiguration {
            name: name.to_string(),
            virtual_hosts: vhosts,
            validate_clusters: Some(bool_value(false)),
            ..Default::default()
        };
        Resource::encode(name, &config)
    }))
}

/// The names a caller may use for a service: the FQDN everywhere, the short
/// forms only inside its namespace (where they cannot collide), each with and
/// without the port. Through the HTTP proxy the port is always in the Host
/// header unless it is 80.
fn domains(service: &Service, port: u32, proxy_namespace: &str, via_proxy: bool) -> Vec<String> {
    let host = &service.hostname;
    let mut names = vec![host.clone()];
    if let Some(stem) = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.find(".svc.").map(|i| &host[..i]))
    {
        names.push(format!("{stem}.svc"));
        names.push(stem.to_string());
        if service.namespace == proxy_namespace
            && let Some((short, _)) = stem.split_once('.')
        {
            names.push(short.to_string());
        }
    }
    if let Some(addr) = &service.address {
        names.push(addr.clone());
    }
    let mut out = Vec::new();
    for n in names {
        if !via_proxy || port == 80 {
            out.push(n.clone());
        }
        out.push(format!("{n}:{port}"));
    }
    out
}

fn routes_for(push: &PushContext, proxy: &Proxy, service: &Service, port: u32) -> Vec<Route> {
    let Some((vs_namespace, vs)) = push.virtual_service(&service.hostname) else {
        return vec![Route {
            // Envoy logs a route's name: mixer-telemetry reads the
            // destination service from it when there is no cluster.
            name: service.hostname.clone(),
            r#match: Some(prefix_match("/")),
            action: Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(outbound_cluster_name(
                    port,
                    "",
                    &service.hostname,
                ))),
                timeout: Some(duration(Duration::ZERO)),
                retry_policy: Some(default_retry_policy()),
                ..Default::default()
            })),
            ..Default::default()
        }];
    };
    let mut routes = Vec::new();
    for http in &vs.http {
        let matches: Vec<Option<&HttpMatchRequest>> = if http.matches.is_empty() {
            vec![None]
        } else {
            http.matches.iter().map(Some).collect()
        };
        for m in matches {
            if let Some(m) = m
                && (m.port.is_some_and(|p| p != port)
                    || !(m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
                    || !labels_match(&m.source_labels, &proxy.labels))
            {
                continue;
            }
            routes.push(translate(push, proxy, vs_namespace, http, m, port));
        }
    }
    routes
}

fn translate(
    push: &PushContext,
    proxy: &Proxy,
    vs_namespace: &str,
    http: &HttpRoute,
    m: Option<&HttpMatchRequest>,
    port: u32,
) -> Route {
    let mut route = Route {
        name: http.name.clone(),
        r#match: Some(m.map(route_match).unwrap_or_else(|| prefix_match("/"))),
        ..Default::default()
    };
    if let Some(redirect) = &http.redirect {
        route.action = Some(Action::Redirect(RedirectAction {
            host_redirect: redirect.authority.clone(),
            path_rewrite_specifier: (!redirect.uri.is_empty())
                .then(|| PathRewriteSpecifier::PathRedirect(redirect.uri.clone())),
            response_code: match redirect.redirect_code.unwrap_or(301) {
                302 => RedirectResponseCode::Found,
                303 => RedirectResponseCode::SeeOther,
                307 => RedirectResponseCode::TemporaryRedirect,
                308 => RedirectResponseCode::PermanentRedirect,
                _ => RedirectResponseCode::MovedPermanently,
            } as i32,
            ..Default::default()
        }));
    } else {
        let cluster_of = |d: &istio::Destination| push.destination_cluster(d, vs_namespace, port);
        let weighted: Vec<_> = http
            .route
            .iter()
            .filter(|d| d.weight != Some(0) || http.route.len() == 1)
            .collect();
        // Named after the (first) destination service, as the default route
        // is, for telemetry of requests that never reach a cluster.
        if let Some(first) = weighted.first() {
            let cluster = cluster_of(&first.destination);
            route.name = cluster.rsplit('|').next().unwrap_or_default().to_string();
        }
        let cluster_specifier = if weighted.len() == 1 {
            ClusterSpecifier::Cluster(cluster_of(&weighted[0].destination))
        } else {
            ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters: weighted
                    .iter()
                    .map(|d| {
                        let (add, remove) =
                            header_ops(d.headers.as_ref().and_then(|h| h.request.as_ref()));
                        let (radd, rremove) =
                            header_ops(d.headers.as_ref().and_then(|h| h.response.as_ref()));
                        ClusterWeight {
                            name: cluster_of(&d.destination),
                            weight: Some(u32_value(d.weight.unwrap_or(0) as u32)),
                            request_headers_to_add: add,
                            request_headers_to_remove: remove,
                            response_headers_to_add: radd,
                            response_headers_to_remove: rremove,
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            })
        };
        if weighted.len() == 1
            && let Some(h) = &weighted[0].headers
        {
            add_header_ops(&mut route, h.request.as_ref(), h.response.as_ref());
        }
        let mut action = RouteAction {
            cluster_specifier: Some(cluster_specifier),
            timeout: Some(duration(
                http.timeout.map(|t| t.0).unwrap_or(Duration::ZERO),
            )),
            retry_policy: Some(match &http.retries {
                Some(r) => retry_policy(r),
                None => default_retry_policy(),
            }),
            ..Default::default()
        };
        if let Some(mirror) = &http.mirror {
            let share = match (http.mirror_percentage, http.mirror_percent) {
                (Some(p), _) => p.value,
                (None, Some(p)) => p as f64,
                (None, None) => 100.0,
            };
            action.request_mirror_policies = vec![RequestMirrorPolicy {
                cluster: cluster_of(mirror),
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(per_million(share)),
                    ..Default::default()
                }),
                ..Default::default()
            }];
        }
        if let Some(rw) = &http.rewrite {
            if !rw.uri.is_empty() {
                action.prefix_rewrite = rw.uri.clone();
            }
            if !rw.authority.is_empty() {
                action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(
                    rw.authority.clone(),
                ));
            }
        }
        route.action = Some(Action::Route(action));
    }
    if let Some(h) = &http.headers {
        add_header_ops(&mut route, h.request.as_ref(), h.response.as_ref());
    }
    let legacy_request = HeaderOperations {
        add: http
            .append_headers
            .iter()
            .chain(&http.append_request_headers)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        remove: http.remove_request_headers.clone(),
        ..Default::default()
    };
    let legacy_response = HeaderOperations {
        add: http.append_response_headers.clone(),
        remove: http.remove_response_headers.clone(),
        ..Default::default()
    };
    add_header_ops(&mut route, Some(&legacy_request), Some(&legacy_response));
    let ctx = RouteContext {
        push,
        proxy,
        route: http,
    };
    for plugin in push.plugins.iter() {
        plugin.on_http_route(&ctx, &mut route);
    }
    route
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let path_specifier = match &m.uri {
        Some(u) => match (&u.exact, &u.prefix, &u.regex) {
            (Some(e), _, _) => PathSpecifier::Path(e.clone()),
            (_, Some(p), _) => PathSpecifier::Prefix(p.clone()),
            (_, _, Some(r)) => PathSpecifier::SafeRegex(regex(r)),
            _ => PathSpecifier::Prefix("/".into()),
        },
        None => PathSpecifier::Prefix("/".into()),
    };
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|(name, sm)| header_matcher(name, sm))
        .collect();
    for (pseudo, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            headers.push(header_matcher(pseudo, sm));
        }
    }
    RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: m.ignore_uri_case.then(|| bool_value(false)),
        headers,
        query_parameters: m
            .query_params
            .iter()
            .map(|(name, sm)| QueryParameterMatcher {
                name: name.clone(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                    string_matcher(sm),
                )),
            })
            .collect(),
        ..Default::default()
    }
}

fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
        ..Default::default()
    }
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    }
}

pub(crate) fn string_matcher(sm: &istio::StringMatch) -> StringMatcher {
    let pattern = match (&sm.exact, &sm.prefix, &sm.regex) {
        (Some(e), _, _) => MatchPattern::Exact(e.clone()),
        (_, Some(p), _) => MatchPattern::Prefix(p.clone()),
        (_, _, Some(r)) => MatchPattern::SafeRegex(regex(r)),
        _ => MatchPattern::Prefix(String::new()),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

fn header_matcher(name: &str, sm: &istio::StringMatch) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(sm))),
        ..Default::default()
    }
}

type HeaderOps = (Vec<HeaderValueOption>, Vec<String>);

fn header_ops(ops: Option<&HeaderOperations>) -> HeaderOps {
    let Some(ops) = ops else {
        return Default::default();
    };
    let option = |(k, v): (&String, &String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    let mut add: Vec<_> = ops
        .set
        .iter()
        .map(|kv| option(kv, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    add.extend(
        ops.add
            .iter()
            .map(|kv| option(kv, HeaderAppendAction::AppendIfExistsOrAdd)),
    );
    (add, ops.remove.clone())
}

fn add_header_ops(
    route: &mut Route,
    request: Option<&HeaderOperations>,
    response: Option<&HeaderOperations>,
) {
    let (add, remove) = header_ops(request);
    route.request_headers_to_add.extend(add);
    route.request_headers_to_remove.extend(remove);
    let (add, remove) = header_ops(response);
    route.response_headers_to_add.extend(add);
    route.response_headers_to_remove.extend(remove);
}

/// Istio's default when a route sets no retries: two attempts on connection
/// failures, on another host each time.
fn default_retry_policy() -> RetryPolicy {
    retry_policy(&istio::HttpRetry {
        attempts: 2,
        per_try_timeout: None,
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
            .into(),
    })
}

fn retry_policy(r: &istio::HttpRetry) -> RetryPolicy {
    let retry_on = if r.retry_on.is_empty() {
        "gateway-error,connect-failure,refused-stream"
    } else {
        &r.retry_on
    };
    let mut conditions = Vec::new();
    let mut codes = Vec::new();
    for c in retry_on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match c.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => conditions.push(c),
        }
    }
    if !codes.is_empty() && !conditions.contains(&"retriable-status-codes") {
        conditions.push("retriable-status-codes");
    }
    RetryPolicy {
        retry_on: conditions.join(","),
        num_retries: Some(u32_value(r.attempts.max(0) as u32)),
        per_try_timeout: r.per_try_timeout.map(|d| duration(d.0)),
        retriable_status_codes: codes,
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_host_predicate::ConfigType::TypedConfig(any(
                &PreviousHostsPredicate::default(),
            ))),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

/// Istio percentages have fractions; Envoy's are numerators over a million.
pub(crate) fn per_million(percent: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (percent * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// Every request to `cluster`, with no timeout.
fn everything_to(cluster: &str) -> Route {
    Route {
        r#match: Some(prefix_match("/")),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            timeout: Some(duration(Duration::ZERO)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The inline route of an inbound HTTP listener: everything to the local app.
pub fn inbound(cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{cluster}"),
            domains: vec!["*".into()],
            routes: vec![everything_to(cluster)],
            ..Default::default()
        }],
        validate_clusters: Some(bool_value(false)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use api::mesh::MeshConfig;
    use prost::Message;

    use super::*;
    use crate::xds::fixtures::{mesh_yaml, push_from_yaml, sidecar_node};

    /// A ServiceEntry named like a Kubernetes service's short form, on that
    /// service's address: unguarded, both virtual hosts would claim the same
    /// domains and Envoy would reject the whole table for every proxy.
    #[test]
    fn no_domain_is_routed_twice_in_one_table() {
        let yaml = format!(
            "{}apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {{name: clash, namespace: other}}\nspec:\n  hosts: [svc-0.default]\n  addresses: [10.0.0.1]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 10.9.9.9}}]\n",
            mesh_yaml(2, 2)
        );
        let push = push_from_yaml(1, &yaml, MeshConfig::default());
        let proxy =
            Proxy::from_node(&sidecar_node("10.100.0.2", "svc-0-0", false), &push.model).unwrap();
        let table = outbound(&push, &proxy, "8080").unwrap();
        let table = RouteConfiguration::decode(table.body).unwrap();
        let mut seen = std::collections::HashSet::new();
        for vh in &table.virtual_hosts {
            for d in &vh.domains {
                assert!(seen.insert(d.clone()), "{d} routed twice");
            }
        }
        let names: Vec<&str> = table
            .virtual_hosts
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert!(names.contains(&"svc-0.default:8080"), "{names:?}");
        assert!(
            names.contains(&"svc-0.default.svc.cluster.local:8080"),
            "{names:?}"
        );
    }
}
