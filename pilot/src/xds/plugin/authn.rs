//! Peer authentication (Istio's `authn` plug-in): the `Policy` or
//! `MeshPolicy` that covers an inbound port decides its filter chains.
//! STRICT: one chain that requires a client certificate from the mesh's
//! roots. PERMISSIVE: that chain for connections that offer the sidecars'
//! ALPN, told apart by Envoy's TLS inspector, and a plaintext chain for the
//! rest. No policy, or one without `mtls`: plaintext only. `peerIsOptional`
//! changes no chain, as in Istio 1.4.

use api::security::{AuthenticationPolicy, MtlsMode};
use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;

use crate::xds::generate::lds::InboundPort;
use crate::xds::plugin::{ChainTemplate, Direction, ListenerContext, Plugin};
use crate::xds::push::PushContext;
use crate::xds::tls;

pub struct Authn;

impl Plugin for Authn {
    fn name(&self) -> &'static str {
        "authn"
    }

    /// A policy that asks for end-user JWT, which Trireme does not verify
    /// yet, admits no request: fail closed rather than let every caller in.
    fn http_filters(&self, ctx: &ListenerContext) -> Vec<HttpFilter> {
        let needs_jwt = ctx
            .port
            .filter(|_| ctx.direction == Direction::Inbound)
            .and_then(|port| covering_policy(ctx.push, port))
            .is_some_and(AuthenticationPolicy::needs_jwt);
        if needs_jwt {
            vec![super::authz::deny_all()]
        } else {
            Vec::new()
        }
    }

    fn inbound_chains(&self, ctx: &ListenerContext) -> Option<Vec<ChainTemplate>> {
        let port = ctx.port?;
        let mode = covering_policy(ctx.push, port)?.mtls()?;
        let mtls = ChainTemplate {
            suffix: String::new(),
            filter_chain_match: FilterChainMatch::default(),
            transport_socket: Some(tls::downstream(&ctx.push.mesh, port.protocol.is_http())),
        };
        Some(match mode {
            MtlsMode::Strict => vec![mtls],
            MtlsMode::Permissive => vec![
                ChainTemplate {
                    suffix: "-mtls".into(),
                    filter_chain_match: FilterChainMatch {
                        transport_protocol: "tls".into(),
                        application_protocols: vec![tls::ALPN_ISTIO.into()],
                        ..Default::default()
                    },
                    ..mtls
                },
                ChainTemplate::default(),
            ],
        })
    }
}

/// The most specific policy covering `port`: one whose target names the
/// service and this port, then one naming the service, then the
/// namespace's `default`, then the mesh's.
pub fn covering_policy<'a>(
    push: &'a PushContext,
    port: &InboundPort,
) -> Option<&'a AuthenticationPolicy> {
    let short = port.hostname.split('.').next().unwrap_or_default();
    let rank = |namespace: &str, policy: &AuthenticationPolicy, mesh: bool| -> Option<u8> {
        if mesh {
            return Some(0);
        }
        if namespace != port.service_namespace {
            return None;
        }
        if policy.targets.is_empty() {
            return Some(1);
        }
        policy
            .targets
            .iter()
            .filter(|t| t.name == short)
            .filter_map(|t| {
                if t.ports.is_empty() {
                    return Some(2);
                }
                t.ports
                    .iter()
                    .any(|p| {
                        p.number == Some(port.service_port)
                            || p.name.as_deref() == Some(port.port_name.as_str())
                    })
                    .then_some(3)
            })
            .max()
    };
    let mut best: Option<(u8, &AuthenticationPolicy)> = None;
    for (obj, policy) in push.config.authentication_policies() {
        let mesh = !obj.kind.is_namespaced();
        if let Some(r) = rank(&obj.meta.namespace, policy, mesh)
            && best.is_none_or(|(b, _)| r > b)
        {
            best = Some((r, policy));
        }
    }
    best.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use api::mesh::MeshConfig;
    use api::networking::Protocol;

    use super::*;
    use crate::xds::fixtures::{mesh_yaml, push_from_yaml};

    const POLICIES: &str = "apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata: {name: default}
spec: {peers: [{mtls: {}}]}
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: default, namespace: default}
spec: {peers: [{mtls: {mode: PERMISSIVE}}]}
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: svc-0-plain, namespace: default}
spec:
  targets: [{name: svc-0, ports: [{number: 8080}]}]
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: svc-1-strict, namespace: default}
spec:
  targets: [{name: svc-1}]
  peers: [{mtls: {}}]
";

    fn port(host: &str, namespace: &str, number: u32) -> InboundPort {
        InboundPort {
            cluster: String::new(),
            hostname: format!("{host}.{namespace}.svc.cluster.local"),
            service_namespace: namespace.into(),
            port: number,
            service_port: number,
            port_name: "http".into(),
            protocol: Protocol::Http,
            app_endpoint: String::new(),
        }
    }

    #[test]
    fn the_most_specific_policy_decides() {
        let push = push_from_yaml(
            1,
            &format!("{}---\n{POLICIES}", mesh_yaml(3, 1)),
            MeshConfig::default(),
        );
        let mode = |host, namespace, number| {
            covering_policy(&push, &port(host, namespace, number)).and_then(|p| p.mtls())
        };
        // A target with the port, even without peers, beats the namespace's default.
        assert_eq!(mode("svc-0", "default", 8080), None);
        // The same service on another port falls back to the namespace.
        assert_eq!(mode("svc-0", "default", 9090), Some(MtlsMode::Permissive));
        assert_eq!(mode("svc-1", "default", 8080), Some(MtlsMode::Strict));
        assert_eq!(mode("svc-2", "default", 8080), Some(MtlsMode::Permissive));
        // Another namespace has only the mesh's.
        assert_eq!(mode("svc-0", "other", 8080), Some(MtlsMode::Strict));
    }
}
