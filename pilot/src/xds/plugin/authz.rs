//! Authorization (Istio 1.4's `authz` plug-in for `AuthorizationPolicy`
//! v1beta1): the policies that select a proxy's workload (in its namespace,
//! or in the mesh's root namespace) become one Envoy RBAC filter that allows
//! what some rule matches and denies the rest, over HTTP with 403 and over TCP
//! by closing the connection. A rule that needs HTTP (methods, paths, hosts,
//! headers) is left out of a TCP port's filter, so it allows nothing there.

use std::collections::BTreeMap;
use std::net::IpAddr;

use api::security::{AuthorizationPolicy, ConditionKey, Rule, Source};
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::rbac::v3::permission::{
    Rule as PermissionRule, Set as Permissions,
};
use envoy_types::pb::envoy::config::rbac::v3::principal::{
    Authenticated, Identifier, Set as Principals,
};
use envoy_types::pb::envoy::config::rbac::v3::{Permission, Policy, Principal};
use envoy_types::pb::envoy::config::route::v3::HeaderMatcher;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, RegexMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
};

use crate::xds::names::{any, u32_value};
use crate::xds::plugin::{Direction, ListenerContext, Plugin};
use crate::xds::proxy::Proxy;
use crate::xds::push::PushContext;

pub struct Authz;

impl Plugin for Authz {
    fn name(&self) -> &'static str {
        "authz"
    }

    fn http_filters(&self, ctx: &ListenerContext) -> Vec<HttpFilter> {
        if ctx.direction != Direction::Inbound {
            return Vec::new();
        }
        rbac(ctx.push, ctx.proxy, true)
            .map(http_rbac)
            .into_iter()
            .collect()
    }

    fn network_filters(&self, ctx: &ListenerContext) -> Vec<Filter> {
        let Some(port) = ctx.port.filter(|p| !p.protocol.is_http()) else {
            return Vec::new();
        };
        let Some(rules) = rbac(ctx.push, ctx.proxy, false) else {
            return Vec::new();
        };
        vec![Filter {
            name: "envoy.filters.network.rbac".into(),
            config_type: Some(ConfigType::TypedConfig(any(&NetworkRbac {
                rules: Some(rules),
                stat_prefix: format!("tcp.inbound_{}.", port.port),
            }))),
        }]
    }
}

/// Envoy's HTTP RBAC filter enforcing `rules`.
pub fn http_rbac(rules: SortedRbac) -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&HttpRbac {
            rules: Some(rules),
        }))),
        ..Default::default()
    }
}

/// An RBAC filter that admits nothing (403 to every request).
pub fn deny_all() -> HttpFilter {
    http_rbac(SortedRbac {
        action: 0, // ALLOW, of no policy
        policies: BTreeMap::new(),
    })
}

/// The policies that apply to `proxy`, by `namespace/name`.
pub fn applicable<'a>(
    push: &'a PushContext,
    proxy: &Proxy,
) -> Vec<(String, &'a AuthorizationPolicy)> {
    push.config
        .authorization_policies()
        .filter(|(obj, _)| {
            obj.meta.namespace == proxy.namespace || obj.meta.namespace == push.mesh.root_namespace
        })
        .filter(|(_, p)| p.selector.as_ref().is_none_or(|s| s.matches(&proxy.labels)))
        .map(|(obj, p)| (format!("{}/{}", obj.meta.namespace, obj.meta.name), p))
        .collect()
}

/// Envoy's RBAC rules for `proxy`; `None` when no policy selects it.
fn rbac(push: &PushContext, proxy: &Proxy, http: bool) -> Option<SortedRbac> {
    let policies = applicable(push, proxy);
    if policies.is_empty() {
        return None;
    }
    let mut out = BTreeMap::new();
    for (name, policy) in policies {
        for (i, rule) in policy.rules.iter().enumerate() {
            // A rule that needs end-user JWT, which Trireme does not verify
            // yet, never matches: it admits nothing rather than everyone.
            if (!http && rule.is_http_only()) || rule.needs_jwt() {
                continue;
            }
            out.insert(format!("{name}[{i}]"), envoy_policy(rule));
        }
    }
    Some(SortedRbac {
        action: 0, // ALLOW
        policies: out,
    })
}

fn envoy_policy(rule: &Rule) -> Policy {
    let mut principals: Vec<Principal> = Vec::new();
    if !rule.from.is_empty() {
        principals.push(or_ids(
            rule.from.iter().map(|f| source(&f.source)).collect(),
        ));
    }
    let mut permissions: Vec<Permission> = Vec::new();
    if !rule.to.is_empty() {
        permissions.push(or_rules(
            rule.to.iter().map(|t| operation(&t.operation)).collect(),
        ));
    }
    for condition in &rule.when {
        // Validation lets only known keys in; were another to slip by, the
        // rule would match nothing.
        let Ok(key) = ConditionKey::parse(&condition.key) else {
            principals.push(nobody());
            continue;
        };
        let values = &condition.values;
        match key {
            ConditionKey::RequestHeader(name) => principals.push(or_ids(
                values
                    .iter()
                    .map(|v| id(Identifier::Header(header(&name, v, false))))
                    .collect(),
            )),
            ConditionKey::SourceIp => principals.push(or_ids(
                values
                    .iter()
                    .map(|v| cidr(v).map_or_else(nobody, |c| id(Identifier::DirectRemoteIp(c))))
                    .collect(),
            )),
            ConditionKey::SourceNamespace => {
                principals.push(or_ids(values.iter().map(|v| namespace(v)).collect()))
            }
            ConditionKey::SourcePrincipal => {
                principals.push(or_ids(values.iter().map(|v| principal(v)).collect()))
            }
            ConditionKey::DestinationIp => permissions.push(or_rules(
                values
                    .iter()
                    .map(|v| {
                        cidr(v).map_or_else(never, |c| rule_of(PermissionRule::DestinationIp(c)))
                    })
                    .collect(),
            )),
            ConditionKey::DestinationPort => {
                permissions.push(or_rules(values.iter().map(|v| port(v)).collect()))
            }
            // Filtered out with the rule above.
            ConditionKey::RequestAuth(_) => principals.push(nobody()),
            ConditionKey::ConnectionSni => permissions.push(or_rules(
                values
                    .iter()
                    .map(|v| rule_of(PermissionRule::RequestedServerName(pattern(v, false))))
                    .collect(),
            )),
        }
    }
    Policy {
        permissions: vec![and_rules(permissions)],
        principals: vec![and_ids(principals)],
        ..Default::default()
    }
}

/// Every field set must match; within one, any of its values.
fn source(s: &Source) -> Principal {
    let mut all = Vec::new();
    if !s.principals.is_empty() {
        all.push(or_ids(s.principals.iter().map(|p| principal(p)).collect()));
    }
    if !s.namespaces.is_empty() {
        all.push(or_ids(s.namespaces.iter().map(|n| namespace(n)).collect()));
    }
    if !s.ip_blocks.is_empty() {
        all.push(or_ids(
            s.ip_blocks
                .iter()
                .map(|b| cidr(b).map_or_else(nobody, |c| id(Identifier::DirectRemoteIp(c))))
                .collect(),
        ));
    }
    and_ids(all)
}

fn operation(op: &api::security::Operation) -> Permission {
    let mut all = Vec::new();
    let mut any_of = |rules: Vec<Permission>| {
        if !rules.is_empty() {
            all.push(or_rules(rules));
        }
    };
    any_of(
        op.hosts
            .iter()
            .map(|h| rule_of(PermissionRule::Header(header(":authority", h, true))))
            .collect(),
    );
    any_of(
        op.methods
            .iter()
            .map(|m| rule_of(PermissionRule::Header(header(":method", m, false))))
            .collect(),
    );
    any_of(
        op.paths
            .iter()
            .map(|p| {
                rule_of(PermissionRule::UrlPath(PathMatcher {
                    rule: Some(path_matcher::Rule::Path(pattern(p, false))),
                }))
            })
            .collect(),
    );
    any_of(op.ports.iter().map(|p| port(p)).collect());
    and_rules(all)
}

/// A peer identity as Istio writes it (`cluster.local/ns/foo/sa/bar`, with
/// `*` as the whole value, a prefix or a suffix): `*` is any peer with a
/// mesh certificate, never a plaintext one.
fn principal(value: &str) -> Principal {
    if value == "*" {
        return id(Identifier::Authenticated(Authenticated {
            principal_name: None,
        }));
    }
    let spiffe = if value.starts_with('*') {
        value.to_string()
    } else {
        format!("spiffe://{value}")
    };
    id(Identifier::Authenticated(Authenticated {
        principal_name: Some(pattern(&spiffe, false)),
    }))
}

/// A peer from `namespace` (a pattern): its SPIFFE ID's `/ns/<namespace>/`,
/// in any trust domain as in Istio (Citadel signs only `/ns/<ns>/sa/<sa>`
/// IDs, and names hold no `/`).
fn namespace(value: &str) -> Principal {
    let ns = regex::escape(value.trim_matches('*'));
    let ns = match (value.starts_with('*'), value.ends_with('*') && value != "*") {
        _ if value == "*" => "[^/]+".to_string(),
        (true, _) => format!("[^/]*{ns}"),
        (_, true) => format!("{ns}[^/]*"),
        _ => ns,
    };
    id(Identifier::Authenticated(Authenticated {
        principal_name: Some(StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                regex: format!(".*/ns/{ns}/.*"),
                ..Default::default()
            })),
            ..Default::default()
        }),
    }))
}

/// Istio's string match: `*`, `prefix*`, `*suffix` or exact. Envoy takes
/// no empty prefix: `*` is any non-empty value.
fn pattern(value: &str, ignore_case: bool) -> StringMatcher {
    let p = if value == "*" {
        MatchPattern::SafeRegex(RegexMatcher {
            regex: ".+".into(),
            ..Default::default()
        })
    } else if let Some(prefix) = value.strip_suffix('*') {
        MatchPattern::Prefix(prefix.to_string())
    } else if let Some(suffix) = value.strip_prefix('*') {
        MatchPattern::Suffix(suffix.to_string())
    } else {
        MatchPattern::Exact(value.to_string())
    };
    StringMatcher {
        match_pattern: Some(p),
        ignore_case,
    }
}

fn header(name: &str, value: &str, ignore_case: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(pattern(
            value,
            ignore_case,
        ))),
        ..Default::default()
    }
}

/// An address or block; `None` for what is neither (validation keeps
/// those out, and a caller then matches nothing rather than every address).
fn cidr(value: &str) -> Option<CidrRange> {
    let (ip, len) = match value.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, Some(len.parse().ok()?)),
        None => (value.parse::<IpAddr>().ok()?, None),
    };
    let full = if ip.is_ipv6() { 128 } else { 32 };
    Some(CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(u32_value(len.unwrap_or(full))),
    })
}

/// A destination port, or nothing for what is not one.
fn port(value: &str) -> Permission {
    value
        .parse()
        .map_or_else(|_| never(), |p| rule_of(PermissionRule::DestinationPort(p)))
}

fn never() -> Permission {
    rule_of(PermissionRule::NotRule(Box::new(rule_of(
        PermissionRule::Any(true),
    ))))
}

fn nobody() -> Principal {
    id(Identifier::NotId(Box::new(id(Identifier::Any(true)))))
}

fn id(identifier: Identifier) -> Principal {
    Principal {
        identifier: Some(identifier),
    }
}

fn rule_of(rule: PermissionRule) -> Permission {
    Permission { rule: Some(rule) }
}

/// All of `ids`; none is any.
fn and_ids(mut ids: Vec<Principal>) -> Principal {
    match ids.len() {
        0 => id(Identifier::Any(true)),
        1 => ids.remove(0),
        _ => id(Identifier::AndIds(Principals { ids })),
    }
}

fn or_ids(mut ids: Vec<Principal>) -> Principal {
    match ids.len() {
        1 => ids.remove(0),
        _ => id(Identifier::OrIds(Principals { ids })),
    }
}

fn and_rules(mut rules: Vec<Permission>) -> Permission {
    match rules.len() {
        0 => rule_of(PermissionRule::Any(true)),
        1 => rules.remove(0),
        _ => rule_of(PermissionRule::AndRules(Permissions { rules })),
    }
}

fn or_rules(mut rules: Vec<Permission>) -> Permission {
    match rules.len() {
        1 => rules.remove(0),
        _ => rule_of(PermissionRule::OrRules(Permissions { rules })),
    }
}

/// `envoy.config.rbac.v3.RBAC` with its policies in a sorted map: the
/// generated type's `HashMap` would encode them in a different order each
/// time, and Pilot versions resources by their bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SortedRbac {
    #[prost(int32, tag = "1")]
    pub action: i32,
    #[prost(btree_map = "string, message", tag = "2")]
    pub policies: BTreeMap<String, Policy>,
}

/// `envoy.extensions.filters.http.rbac.v3.RBAC`, its rules sorted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRbac {
    #[prost(message, optional, tag = "1")]
    pub rules: Option<SortedRbac>,
}

impl prost::Name for HttpRbac {
    const NAME: &'static str = "RBAC";
    const PACKAGE: &'static str = "envoy.extensions.filters.http.rbac.v3";

    fn type_url() -> String {
        format!("type.googleapis.com/{}", Self::full_name())
    }
}

/// `envoy.extensions.filters.network.rbac.v3.RBAC`, its rules sorted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NetworkRbac {
    #[prost(message, optional, tag = "1")]
    pub rules: Option<SortedRbac>,
    #[prost(string, tag = "3")]
    pub stat_prefix: String,
}

impl prost::Name for NetworkRbac {
    const NAME: &'static str = "RBAC";
    const PACKAGE: &'static str = "envoy.extensions.filters.network.rbac.v3";

    fn type_url() -> String {
        format!("type.googleapis.com/{}", Self::full_name())
    }
}

#[cfg(test)]
mod tests {
    use api::mesh::MeshConfig;

    use super::*;
    use crate::xds::fixtures::{mesh_yaml, push_from_yaml, sidecar_node};

    const POLICIES: &str = "apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: svc-0}}
  rules:
  - to: [{operation: {methods: [GET]}}]
  - from: [{source: {namespaces: [ops]}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: mesh-scrapers, namespace: istio-system}
spec:
  rules:
  - from: [{source: {ipBlocks: [10.9.0.0/16]}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: other, namespace: default}
spec:
  selector: {matchLabels: {app: svc-1}}
";

    #[test]
    fn policies_select_workloads_and_http_rules_stay_off_tcp() {
        let push = push_from_yaml(
            1,
            &format!("{}---\n{POLICIES}", mesh_yaml(2, 1)),
            MeshConfig::default(),
        );
        let node = sidecar_node("10.100.0.2", "svc-0-0", false);
        let proxy = Proxy::from_node(&node, &push.model).unwrap();
        let names: Vec<String> = applicable(&push, &proxy)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["default/web", "istio-system/mesh-scrapers"]);

        let http = rbac(&push, &proxy, true).unwrap();
        let keys: Vec<&str> = http.policies.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "default/web[0]",
                "default/web[1]",
                "istio-system/mesh-scrapers[0]"
            ]
        );
        let tcp = rbac(&push, &proxy, false).unwrap();
        assert!(
            !tcp.policies.contains_key("default/web[0]"),
            "GET needs HTTP"
        );
        assert_eq!(tcp.policies.len(), 2);
        // The same bytes every time, so the resource version only moves with the config.
        assert_eq!(
            prost::Message::encode_to_vec(&http),
            prost::Message::encode_to_vec(&rbac(&push, &proxy, true).unwrap())
        );
    }
}
