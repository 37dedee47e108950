//! The `EnvoyFilter` kind as Istio 1.4 defines it: `configPatches`, plus the
//! deprecated `workloadLabels` and `filters` of Istio 1.0–1.2.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Errors, WorkloadSelector};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFilter {
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub config_patches: Vec<ConfigPatch>,
    /// Deprecated: `workloadSelector.labels`.
    #[serde(default)]
    pub workload_labels: BTreeMap<String, String>,
    /// Deprecated: `configPatches`.
    #[serde(default)]
    pub filters: Vec<DeprecatedFilter>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigPatch {
    #[serde(default)]
    pub apply_to: Option<ApplyTo>,
    #[serde(default, rename = "match")]
    pub matches: Option<ObjectMatch>,
    #[serde(default)]
    pub patch: Option<Patch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplyTo {
    Listener,
    FilterChain,
    NetworkFilter,
    HttpFilter,
    RouteConfiguration,
    VirtualHost,
    HttpRoute,
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMatch {
    #[serde(default)]
    pub context: Option<PatchContext>,
    #[serde(default)]
    pub proxy: Option<ProxyMatch>,
    #[serde(default)]
    pub listener: Option<ListenerMatch>,
    #[serde(default)]
    pub route_configuration: Option<RouteConfigurationMatch>,
    #[serde(default)]
    pub cluster: Option<ClusterMatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatchContext {
    Any,
    SidecarInbound,
    SidecarOutbound,
    Gateway,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyMatch {
    /// A regex on the proxy's `ISTIO_VERSION`.
    #[serde(default)]
    pub proxy_version: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerMatch {
    #[serde(default)]
    pub port_number: Option<u32>,
    #[serde(default)]
    pub port_name: String,
    #[serde(default)]
    pub filter_chain: Option<FilterChainMatch>,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterChainMatch {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sni: String,
    #[serde(default)]
    pub transport_protocol: String,
    /// Comma-separated, as Istio 1.4 wrote it.
    #[serde(default)]
    pub application_protocols: String,
    #[serde(default)]
    pub filter: Option<FilterMatch>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterMatch {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sub_filter: Option<SubFilterMatch>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubFilterMatch {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfigurationMatch {
    #[serde(default)]
    pub port_number: Option<u32>,
    #[serde(default)]
    pub port_name: String,
    #[serde(default)]
    pub gateway: String,
    #[serde(default)]
    pub vhost: Option<VirtualHostMatch>,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHostMatch {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub route: Option<RouteMatch>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub action: Option<RouteAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RouteAction {
    Any,
    Route,
    Redirect,
    DirectResponse,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterMatch {
    #[serde(default)]
    pub port_number: Option<u32>,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub subset: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patch {
    #[serde(default)]
    pub operation: Option<Operation>,
    /// The Envoy object (or the part of it) to merge, add or insert, in
    /// Envoy's own field names; kept as written.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    Merge,
    Add,
    Remove,
    InsertBefore,
    InsertAfter,
}

/// One filter of the deprecated `filters` list.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeprecatedFilter {
    #[serde(default)]
    pub listener_match: Option<DeprecatedListenerMatch>,
    #[serde(default)]
    pub insert_position: Option<InsertPosition>,
    #[serde(default)]
    pub filter_type: Option<FilterType>,
    #[serde(default)]
    pub filter_name: String,
    #[serde(default)]
    pub filter_config: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeprecatedListenerMatch {
    #[serde(default)]
    pub port_number: Option<u32>,
    #[serde(default)]
    pub port_name_prefix: String,
    #[serde(default)]
    pub listener_type: Option<ListenerType>,
    #[serde(default)]
    pub listener_protocol: Option<ListenerProtocol>,
    #[serde(default)]
    pub address: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ListenerType {
    Any,
    SidecarInbound,
    SidecarOutbound,
    Gateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ListenerProtocol {
    All,
    Http,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InsertPosition {
    #[serde(default)]
    pub index: Option<InsertIndex>,
    #[serde(default)]
    pub relative_to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InsertIndex {
    First,
    Last,
    Before,
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FilterType {
    Http,
    Network,
}

/// The HTTP connection manager's name in Istio 1.4's Envoy: the only
/// network filter a sub-filter match can look inside.
pub const HTTP_CONNECTION_MANAGER: &str = "envoy.http_connection_manager";
/// Its newer, typed name, which later proxies report.
pub const HTTP_CONNECTION_MANAGER_TYPED: &str = "envoy.filters.network.http_connection_manager";

impl EnvoyFilter {
    pub fn validate(&self) -> Errors {
        let mut errors = Errors::default();
        if let Some(selector) = &self.workload_selector
            && selector.labels.is_empty()
        {
            errors.push(
                "spec.workloadSelector.labels",
                "a workloadSelector needs labels; leave it out to select every workload of the namespace",
            );
        }
        for (i, filter) in self.filters.iter().enumerate() {
            filter.validate(&format!("spec.filters[{i}]"), &mut errors);
        }
        for (i, patch) in self.config_patches.iter().enumerate() {
            patch.validate(&format!("spec.configPatches[{i}]"), &mut errors);
        }
        errors
    }
}

impl DeprecatedFilter {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if let Some(p) = &self.insert_position
            && matches!(p.index, Some(InsertIndex::Before | InsertIndex::After))
            && p.relative_to.is_empty()
        {
            errors.push(
                format!("{path}.insertPosition.relativeTo"),
                "BEFORE and AFTER need the filter to insert relative to",
            );
        }
        if self.filter_type.is_none() {
            errors.push(
                format!("{path}.filterType"),
                "filterType (HTTP or NETWORK) is required",
            );
        }
        if self.filter_name.is_empty() {
            errors.push(format!("{path}.filterName"), "filterName is required");
        }
        if self.filter_config.is_none() {
            errors.push(format!("{path}.filterConfig"), "filterConfig is required");
        }
    }
}

impl ConfigPatch {
    /// As Istio 1.4: a patch's first problem hides the rest of its checks,
    /// as they would only repeat it.
    fn validate(&self, path: &str, errors: &mut Errors) {
        let Some(apply_to) = self.apply_to else {
            errors.push(format!("{path}.applyTo"), "applyTo is required");
            return;
        };
        let Some(patch) = &self.patch else {
            errors.push(format!("{path}.patch"), "patch is required");
            return;
        };
        let Some(operation) = patch.operation else {
            errors.push(
                format!("{path}.patch.operation"),
                "patch operation is required",
            );
            return;
        };
        match &patch.value {
            // A YAML `value:` with nothing after it is `None` too.
            None if operation != Operation::Remove => {
                errors.push(
                    format!("{path}.patch.value"),
                    "a patch value is required unless the operation is REMOVE",
                );
                return;
            }
            Some(v) if !v.is_object() => {
                errors.push(
                    format!("{path}.patch.value"),
                    "a patch value is an object: the Envoy config to apply",
                );
                return;
            }
            _ => {}
        }
        let Some(m) = &self.matches else {
            return;
        };
        if let Some(proxy) = &m.proxy
            && !proxy.proxy_version.is_empty()
            && let Err(message) = crate::re2::check_syntax(&proxy.proxy_version)
        {
            errors.push(format!("{path}.match.proxy.proxyVersion"), message);
            return;
        }
        let set = [
            m.listener.is_some(),
            m.route_configuration.is_some(),
            m.cluster.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            errors.push(
                format!("{path}.match"),
                "at most one of listener, routeConfiguration and cluster may be set",
            );
            return;
        }
        let typed = set.contains(&true);
        match apply_to {
            ApplyTo::Listener
            | ApplyTo::FilterChain
            | ApplyTo::NetworkFilter
            | ApplyTo::HttpFilter => match &m.listener {
                Some(l) => {
                    validate_listener_match(l, apply_to, &format!("{path}.match.listener"), errors)
                }
                None if typed => errors.push(
                    format!("{path}.match"),
                    format!(
                        "applyTo {} matches a listener: use match.listener",
                        apply_to.name()
                    ),
                ),
                None => {}
            },
            ApplyTo::RouteConfiguration | ApplyTo::VirtualHost | ApplyTo::HttpRoute => {
                if typed && m.route_configuration.is_none() {
                    errors.push(
                        format!("{path}.match"),
                        format!(
                            "applyTo {} matches a route configuration: use match.routeConfiguration",
                            apply_to.name()
                        ),
                    );
                }
            }
            ApplyTo::Cluster => {
                if typed && m.cluster.is_none() {
                    errors.push(
                        format!("{path}.match"),
                        "applyTo CLUSTER matches a cluster: use match.cluster",
                    );
                }
            }
        }
    }
}

fn validate_listener_match(l: &ListenerMatch, apply_to: ApplyTo, path: &str, errors: &mut Errors) {
    let Some(filter) = l.filter_chain.as_ref().and_then(|c| c.filter.as_ref()) else {
        return;
    };
    let path = format!("{path}.filterChain.filter");
    if filter.name.is_empty() {
        errors.push(
            format!("{path}.name"),
            "a filter match needs the filter's name",
        );
        return;
    }
    let Some(sub) = &filter.sub_filter else {
        return;
    };
    if apply_to != ApplyTo::HttpFilter {
        errors.push(
            format!("{path}.subFilter"),
            "a subFilter match is only for applyTo HTTP_FILTER",
        );
    } else if filter.name != HTTP_CONNECTION_MANAGER && filter.name != HTTP_CONNECTION_MANAGER_TYPED
    {
        errors.push(
            format!("{path}.name"),
            format!("a subFilter match needs the filter {HTTP_CONNECTION_MANAGER}"),
        );
    } else if sub.name.is_empty() {
        errors.push(
            format!("{path}.subFilter.name"),
            "a subFilter match needs the HTTP filter's name",
        );
    }
}

impl ApplyTo {
    pub fn name(self) -> &'static str {
        match self {
            ApplyTo::Listener => "LISTENER",
            ApplyTo::FilterChain => "FILTER_CHAIN",
            ApplyTo::NetworkFilter => "NETWORK_FILTER",
            ApplyTo::HttpFilter => "HTTP_FILTER",
            ApplyTo::RouteConfiguration => "ROUTE_CONFIGURATION",
            ApplyTo::VirtualHost => "VIRTUAL_HOST",
            ApplyTo::HttpRoute => "HTTP_ROUTE",
            ApplyTo::Cluster => "CLUSTER",
        }
    }
}
