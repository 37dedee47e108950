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

use super::{Direction, ListenerContext, Plugin};
use crate::config::policy::MIXER_DEFAULT_NAMESPACE;
use crate::xds::names::{any, duration, outbound_cluster_name};
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

fn checks(push: &PushContext, proxy: &Proxy) -> Option<Checks> {
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
    if !scopes.contains(MIXER_DEFAULT_NAMESPACE) && !scopes.contains(&proxy.namespace) {
        return None;
    }
    let cluster = check_cluster(&mesh.mixer_check_server)?;
    let sent = push.outbound_clusters.iter().any(|c| c.name == cluster);
    sent.then(|| Checks {
        cluster,
        authority: mesh.mixer_check_server.clone(),
        fail_open,
    })
}

/// `istio-policy.istio-system.svc.cluster.local:9091` →
/// `outbound|9091||istio-policy.istio-system.svc.cluster.local`.
fn check_cluster(server: &str) -> Option<String> {
    let (host, port) = server.rsplit_once(':')?;
    Some(outbound_cluster_name(port.parse().ok()?, "", host))
}

impl Plugin for Mixer {
    fn name(&self) -> &'static str {
        "mixer"
    }

    fn http_filters(&self, ctx: &ListenerContext) -> Vec<HttpFilter> {
        if ctx.direction != Direction::Inbound {
            return Vec::new();
        }
        let Some(checks) = checks(ctx.push, ctx.proxy) else {
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
        if checks(ctx.push, ctx.proxy).is_none() {
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
