//! Mixer policy on inbound HTTP ports: Envoy's ext_authz filter pointed at the
//! mesh config's `mixerCheckServer`, with the destination's service and
//! workload as `context_extensions`, so an unmodified Envoy asks mixer-policy.
//!
//! The filter is left out entirely (Istio's Mixer cost every request even
//! where no policy existed) when checks are off, when the Pod's
//! `policy.istio.io/check` annotation says `disable`, when no Mixer rule or
//! quota binding can apply to the proxy's namespace, and when the check
//! server's cluster is not in the push (a filter must never name a cluster
//! that is not sent).

use envoy_types::pb::envoy::config::core::v3::{ApiVersion, GrpcService, grpc_service};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    CheckSettings, ExtAuthz, ExtAuthzPerRoute, ext_authz, ext_authz_per_route,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;

use super::{Direction, ListenerContext, Plugin, server_cluster};
use crate::config::policy::MIXER_DEFAULT_NAMESPACE;
use crate::xds::generate::lds::InboundPort;
use crate::xds::names::{any, duration};
use crate::xds::proxy::Proxy;
use crate::xds::push::PushContext;

pub const FILTER: &str = "envoy.filters.http.ext_authz";

/// How long Envoy waits for a check before the failure mode decides.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Mixer;

/// What the mesh and the Pod say about one proxy's checks.
struct Checks {
    cluster: String,
    authority: String,
    fail_open: bool,
}

/// `port`'s service may live in another namespace than the proxy: rules of
/// either can apply (Mixer scopes rules by the destination service).
fn checks(push: &PushContext, proxy: &Proxy, port: Option<&InboundPort>) -> Option<Checks> {
    let mesh = &push.mesh;
    if mesh.disable_policy_checks || mesh.mixer_check_server.is_empty() {
        return None;
    }
    let annotation = push
        .model
        .workloads
        .get(&proxy.ip)
        .and_then(|w| w.policy_check.as_deref());
    let fail_open = match annotation {
        Some("disable") => return None,
        Some("allow-on-error") => true,
        Some("enable") => false,
        _ => mesh.policy_check_fail_open,
    };
    let scopes = &push.config.policy_namespaces;
    let in_scope = scopes.contains(MIXER_DEFAULT_NAMESPACE)
        || scopes.contains(&proxy.namespace)
        || port.is_some_and(|p| scopes.contains(&p.service_namespace));
    if !in_scope {
        return None;
    }
    let cluster = server_cluster(push, &mesh.mixer_check_server)?;
    Some(Checks {
        cluster,
        authority: mesh.mixer_check_server.clone(),
        fail_open,
    })
}

impl Plugin for Mixer {
    fn name(&self) -> &'static str {
        "mixer"
    }

    fn http_filters(&self, ctx: &ListenerContext) -> Vec<HttpFilter> {
        if ctx.direction != Direction::Inbound {
            return Vec::new();
        }
        let Some(checks) = checks(ctx.push, ctx.proxy, ctx.port) else {
            return Vec::new();
        };
        let config = ExtAuthz {
            services: Some(ext_authz::Services::GrpcService(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: checks.cluster,
                        // Envoy would send the cluster name, whose `|` no
                        // HTTP/2 server takes as an authority.
                        authority: checks.authority,
                        ..Default::default()
                    },
                )),
                timeout: Some(duration(CHECK_TIMEOUT)),
                ..Default::default()
            })),
            failure_mode_allow: checks.fail_open,
            // An unreachable policy server is an outage, not a denial.
            status_on_error: Some(HttpStatus { code: 503 }),
            transport_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        };
        vec![HttpFilter {
            name: FILTER.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(&config))),
            ..Default::default()
        }]
    }

    fn on_inbound_routes(&self, ctx: &ListenerContext, routes: &mut RouteConfiguration) {
        let Some(port) = ctx.port else { return };
        if checks(ctx.push, ctx.proxy, Some(port)).is_none() {
            return;
        }
        let proxy = ctx.proxy;
        let (pod_name, _) = proxy.pod.rsplit_once('.').unwrap_or((&proxy.pod, ""));
        let workload = proxy
            .metadata
            .get("WORKLOAD_NAME")
            .map(String::as_str)
            .unwrap_or(pod_name);
        let service_name = port.hostname.split('.').next().unwrap_or(&port.hostname);
        let mut extensions = std::collections::HashMap::from([
            (
                "destination.service.host".to_string(),
                port.hostname.clone(),
            ),
            (
                "destination.service.name".to_string(),
                service_name.to_string(),
            ),
            (
                "destination.service.namespace".to_string(),
                port.service_namespace.clone(),
            ),
            (
                "destination.workload.name".to_string(),
                workload.to_string(),
            ),
            (
                "destination.workload.namespace".to_string(),
                proxy.namespace.clone(),
            ),
            ("destination.namespace".to_string(), proxy.namespace.clone()),
            (
                "destination.uid".to_string(),
                format!("kubernetes://{}", proxy.pod),
            ),
        ]);
        if let Ok(labels) = serde_json::to_string(&proxy.labels) {
            extensions.insert("destination.labels".to_string(), labels);
        }
        let per_route = ExtAuthzPerRoute {
            r#override: Some(ext_authz_per_route::Override::CheckSettings(
                CheckSettings {
                    context_extensions: extensions,
                    ..Default::default()
                },
            )),
        };
        for vh in &mut routes.virtual_hosts {
            vh.typed_per_filter_config
                .insert(FILTER.into(), any(&per_route));
        }
    }
}

#[cfg(test)]
mod tests {
    use api::mesh::MeshConfig;
    use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    use prost::Message;

    use super::*;
    use crate::xds::fixtures::{push_from_yaml, sidecar_node};
    use crate::xds::generate::lds;

    const POLICY_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: istio-policy, namespace: istio-system}\nspec:\n  clusterIP: 10.99.0.1\n  ports: [{name: grpc-mixer, port: 9091}]\n---\n";
    const SERVER: &str = "istio-policy.istio-system.svc.cluster.local:9091";

    fn workload(annotation: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: ratings, namespace: default}}\nspec:\n  clusterIP: 10.98.0.1\n  ports: [{{name: http, port: 9080}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: ratings, namespace: default}}\nsubsets:\n- ports: [{{name: http, port: 9080}}]\n  addresses:\n  - ip: 10.1.0.2\n    targetRef: {{kind: Pod, name: ratings-v1, namespace: default}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: ratings-v1, namespace: default, labels: {{app: ratings}}, annotations: {{{annotation}}}}}\nspec: {{containers: [{{name: app}}]}}\nstatus: {{podIP: 10.1.0.2}}\n---\n"
        )
    }

    fn rule(namespace: &str) -> String {
        format!(
            "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {{name: r, namespace: {namespace}}}\nspec:\n  actions: [{{handler: denyall.denier, instances: [deny.checknothing]}}]\n---\napiVersion: config.istio.io/v1alpha2\nkind: checknothing\nmetadata: {{name: deny, namespace: {namespace}}}\nspec: {{}}\n---\n"
        )
    }

    fn mesh(fail_open: bool) -> MeshConfig {
        MeshConfig {
            mixer_check_server: SERVER.into(),
            policy_check_fail_open: fail_open,
            ..Default::default()
        }
    }

    /// The ext_authz filters on the proxy's inbound listener, and the
    /// context extensions of its inbound routes.
    fn inbound_checks(yaml: &str, mesh: MeshConfig) -> (Vec<ExtAuthz>, Vec<ExtAuthzPerRoute>) {
        let push = push_from_yaml(1, yaml, mesh);
        let proxy =
            Proxy::from_node(&sidecar_node("10.1.0.2", "ratings-v1", false), &push.model).unwrap();
        let (mut filters, mut routes) = (Vec::new(), Vec::new());
        for resource in lds::build(&push, &proxy) {
            let listener = Listener::decode(resource.body).unwrap();
            if listener.name != lds::VIRTUAL_INBOUND {
                continue;
            }
            for f in listener.filter_chains.iter().flat_map(|c| &c.filters) {
                let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                    continue;
                };
                for h in &hcm.http_filters {
                    if let Some(http_filter::ConfigType::TypedConfig(c)) = &h.config_type
                        && h.name == FILTER
                    {
                        filters.push(ExtAuthz::decode(c.value.as_slice()).unwrap());
                    }
                }
                if let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier {
                    for vh in &rc.virtual_hosts {
                        if let Some(c) = vh.typed_per_filter_config.get(FILTER) {
                            routes.push(ExtAuthzPerRoute::decode(c.value.as_slice()).unwrap());
                        }
                    }
                }
            }
        }
        (filters, routes)
    }

    #[test]
    fn a_mesh_wide_rule_puts_the_check_on_inbound_ports() {
        let yaml = format!("{POLICY_SERVICE}{}{}", workload(""), rule("istio-system"));
        let (filters, routes) = inbound_checks(&yaml, mesh(false));
        assert_eq!(filters.len(), 1);
        let f = &filters[0];
        assert!(!f.failure_mode_allow);
        assert_eq!(f.status_on_error.as_ref().map(|s| s.code), Some(503));
        let Some(ext_authz::Services::GrpcService(g)) = &f.services else {
            panic!("a gRPC service")
        };
        let Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) = &g.target_specifier else {
            panic!("Envoy's gRPC client")
        };
        assert_eq!(
            e.cluster_name,
            "outbound|9091||istio-policy.istio-system.svc.cluster.local"
        );
        assert_eq!(e.authority, SERVER);
        let Some(ext_authz_per_route::Override::CheckSettings(s)) = &routes[0].r#override else {
            panic!("check settings")
        };
        let ext = &s.context_extensions;
        assert_eq!(
            ext["destination.service.host"],
            "ratings.default.svc.cluster.local"
        );
        assert_eq!(ext["destination.service.name"], "ratings");
        assert_eq!(ext["destination.service.namespace"], "default");
        assert_eq!(ext["destination.uid"], "kubernetes://ratings-v1.default");
        assert_eq!(ext["destination.labels"], r#"{"app":"ratings"}"#);
    }

    #[test]
    fn no_check_where_no_rule_applies_or_no_cluster_exists() {
        let no_rule = format!("{POLICY_SERVICE}{}", workload(""));
        assert!(inbound_checks(&no_rule, mesh(false)).0.is_empty());
        let elsewhere = format!("{POLICY_SERVICE}{}{}", workload(""), rule("shop"));
        assert!(inbound_checks(&elsewhere, mesh(false)).0.is_empty());
        let here = format!("{POLICY_SERVICE}{}{}", workload(""), rule("default"));
        assert_eq!(inbound_checks(&here, mesh(false)).0.len(), 1);
        // No istio-policy Service, so no cluster: the filter would name nothing.
        let no_server = format!("{}{}", workload(""), rule("istio-system"));
        let (filters, routes) = inbound_checks(&no_server, mesh(false));
        assert!(filters.is_empty() && routes.is_empty());
    }

    #[test]
    fn mesh_switches_and_the_pod_annotation() {
        let yaml = |a: &str| format!("{POLICY_SERVICE}{}{}", workload(a), rule("istio-system"));
        let off = MeshConfig {
            disable_policy_checks: true,
            ..mesh(false)
        };
        assert!(inbound_checks(&yaml(""), off).0.is_empty());
        assert!(
            inbound_checks(&yaml(""), MeshConfig::default())
                .0
                .is_empty()
        );
        assert!(inbound_checks(&yaml(""), mesh(true)).0[0].failure_mode_allow);
        let annotated = |value: &str| yaml(&format!("policy.istio.io/check: {value}"));
        assert!(
            inbound_checks(&annotated("disable"), mesh(false))
                .0
                .is_empty()
        );
        assert!(inbound_checks(&annotated("allow-on-error"), mesh(false)).0[0].failure_mode_allow);
        assert!(!inbound_checks(&annotated("enable"), mesh(true)).0[0].failure_mode_allow);
    }
}
