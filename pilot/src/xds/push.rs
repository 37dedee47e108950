//! The push context: one consistent view of services, endpoints and config,
//! and the slots where the generators keep what every proxy shares (outbound
//! clusters, endpoints, routes), marshalled once per push. It is data: it
//! never calls a generator; [`crate::xds::generate::build_push`] and
//! [`crate::xds::generate::endpoint_push`] fill it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use api::config::{ConfigError, ConfigObject, Kind, Spec};
use api::mesh::MeshConfig;
use api::networking::{DestinationRule, Protocol, Resolution as SeResolution, VirtualService};

use crate::config::ConfigSnapshot;
use crate::model::{
    Instance, Labels, Resolution, Service, ServiceModel, ServicePort, host_matches, resolve_host,
};
use crate::xds::names::outbound_cluster_name;
use crate::xds::plugin::Plugins;
use crate::xds::resource::Resource;

/// Config looked up by host, built once per push: every generator asks "which
/// VirtualService / DestinationRule covers this service?" thousands of times.
#[derive(Default)]
struct ConfigIndex {
    /// Resolved host → (position by namespace/name, object); the first VirtualService wins.
    vs_exact: HashMap<String, (usize, Arc<ConfigObject>)>,
    vs_wildcard: Vec<(String, usize, Arc<ConfigObject>)>,
    dr_exact: HashMap<String, Arc<ConfigObject>>,
    /// Longest pattern first.
    dr_wildcard: Vec<(String, Arc<ConfigObject>)>,
    source_labels: bool,
    /// Objects that lost a host to another, as Istio 1.x would have NACKed
    /// them (two virtual hosts with one domain) and Pilot instead ignores.
    conflicts: Vec<ConfigError>,
}

impl ConfigIndex {
    fn build(config: &ConfigSnapshot, domain: &str) -> ConfigIndex {
        let mut index = ConfigIndex::default();
        let of = |kind| {
            config
                .objects
                .get(&kind)
                .into_iter()
                .flat_map(|m| m.values())
        };
        for (order, obj) in of(Kind::VirtualService).enumerate() {
            let Spec::VirtualService(vs) = &obj.spec else {
                continue;
            };
            index.source_labels |= vs
                .http
                .iter()
                .any(|r| r.matches.iter().any(|m| !m.source_labels.is_empty()));
            if !(vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")) {
                continue;
            }
            for (i, host) in vs.hosts.iter().enumerate() {
                let host = resolve_host(host, &obj.meta.namespace, domain);
                if host.starts_with('*') {
                    index.vs_wildcard.push((host, order, obj.clone()));
                    continue;
                }
                match index.vs_exact.entry(host) {
                    Entry::Vacant(e) => {
                        e.insert((order, obj.clone()));
                    }
                    Entry::Occupied(e) => index.conflicts.push(ConfigError {
                        object: obj.key(),
                        field: format!("spec.hosts[{i}]"),
                        message: format!(
                            "{} is already routed by {}; this VirtualService is ignored for it",
                            e.key(),
                            e.get().1.key()
                        ),
                    }),
                }
            }
        }
        for obj in of(Kind::DestinationRule) {
            let Spec::DestinationRule(dr) = &obj.spec else {
                continue;
            };
            let host = resolve_host(&dr.host, &obj.meta.namespace, domain);
            if host.starts_with('*') {
                index.dr_wildcard.push((host, obj.clone()));
                continue;
            }
            match index.dr_exact.entry(host) {
                Entry::Vacant(e) => {
                    e.insert(obj.clone());
                }
                Entry::Occupied(e) => index.conflicts.push(ConfigError {
                    object: obj.key(),
                    field: "spec.host".into(),
                    message: format!(
                        "{} already has {}; this DestinationRule is ignored",
                        e.key(),
                        e.get().key()
                    ),
                }),
            }
        }
        index
            .dr_wildcard
            .sort_by_key(|(h, _)| std::cmp::Reverse(h.len()));
        index
    }
}

pub struct PushContext {
    pub version: u64,
    pub model: Arc<ServiceModel>,
    pub config: Arc<ConfigSnapshot>,
    pub mesh: Arc<MeshConfig>,
    pub domain: String,
    /// When the change that caused this push was first seen.
    pub triggered_at: Instant,
    /// The version of the newest full push this context descends from: equal
    /// to `version` when services or config changed, older when only
    /// endpoints did.
    pub full_version: u64,
    pub outbound_clusters: Arc<Vec<Resource>>,
    pub endpoints: Arc<BTreeMap<String, Resource>>,
    /// The plug-ins the generators call for this push.
    pub plugins: Plugins,
    index: Arc<ConfigIndex>,
    routes: Mutex<HashMap<RouteKey, Resource>>,
}

/// What an outbound route table depends on besides the push: the proxy's
/// namespace (short host names) and, only when some VirtualService matches on
/// `sourceLabels`, the proxy's labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub name: String,
    pub namespace: String,
    pub labels: Option<Labels>,
}

impl PushContext {
    /// The data of a full push; the shared resources are left for the generators.
    pub fn new(
        version: u64,
        registry: &ServiceModel,
        config: Arc<ConfigSnapshot>,
        mesh: Arc<MeshConfig>,
        domain: &str,
        triggered_at: Instant,
    ) -> PushContext {
        let model = Arc::new(merge_service_entries(registry, &config, domain));
        let index = Arc::new(ConfigIndex::build(&config, domain));
        PushContext {
            version,
            model,
            config,
            mesh,
            domain: domain.to_string(),
            triggered_at,
            full_version: version,
            outbound_clusters: Arc::default(),
            endpoints: Arc::default(),
            plugins: Plugins::standard(),
            index,
            routes: Mutex::default(),
        }
    }

    /// The data of an endpoint push: new endpoints under unchanged services
    /// and config. Clusters and routes are this context's; the endpoints are
    /// left for the generators.
    pub fn derive(
        &self,
        version: u64,
        registry: &ServiceModel,
        triggered_at: Instant,
    ) -> PushContext {
        let model = Arc::new(merge_service_entries(registry, &self.config, &self.domain));
        PushContext {
            version,
            model,
            config: self.config.clone(),
            mesh: self.mesh.clone(),
            domain: self.domain.clone(),
            triggered_at,
            full_version: self.full_version,
            outbound_clusters: self.outbound_clusters.clone(),
            endpoints: Arc::default(),
            plugins: self.plugins.clone(),
            index: self.index.clone(),
            routes: Mutex::new(
                self.routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
        }
    }

    /// Objects accepted alone but ignored for a host another object already
    /// claims: shown as warnings on `/debug/configz`.
    pub fn conflicts(&self) -> &[ConfigError] {
        &self.index.conflicts
    }

    pub fn is_full(&self) -> bool {
        self.full_version == self.version
    }

    /// A fingerprint of the service ports served at `ip`: when it moves, that
    /// proxy's inbound listeners and clusters change, even on an endpoint push.
    pub fn inbound_fingerprint(&self, ip: &str) -> u64 {
        self.model.inbound.get(ip).copied().unwrap_or_default()
    }

    pub fn route(&self, key: RouteKey, build: impl FnOnce() -> Resource) -> Resource {
        let mut cache = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        cache.entry(key).or_insert_with(build).clone()
    }

    /// True when some VirtualService selects routes by the caller's labels, which
    /// makes outbound routes differ between proxies of one namespace.
    pub fn uses_source_labels(&self) -> bool {
        self.index.source_labels
    }

    /// The VirtualService that routes `hostname` for sidecars: the first, by
    /// namespace/name, that names it and applies to the `mesh` gateway.
    pub fn virtual_service(&self, hostname: &str) -> Option<(&str, &VirtualService)> {
        let exact = self.index.vs_exact.get(hostname);
        let wild = self
            .index
            .vs_wildcard
            .iter()
            .find(|(h, _, _)| host_matches(h, hostname));
        let (_, obj) = match (exact, wild) {
            (Some(e), Some((_, order, obj))) if *order < e.0 => (order, obj),
            (Some((order, obj)), _) => (order, obj),
            (None, Some((_, order, obj))) => (order, obj),
            (None, None) => return None,
        };
        match &obj.spec {
            Spec::VirtualService(vs) => Some((obj.meta.namespace.as_str(), vs)),
            _ => None,
        }
    }

    /// The DestinationRule for `hostname`: an exact host match wins over a
    /// wildcard, and a longer wildcard over a shorter one.
    pub fn destination_rule(&self, hostname: &str) -> Option<&DestinationRule> {
        let obj = self.index.dr_exact.get(hostname).or_else(|| {
            self.index
                .dr_wildcard
                .iter()
                .find(|(h, _)| host_matches(h, hostname))
                .map(|(_, obj)| obj)
        })?;
        match &obj.spec {
            Spec::DestinationRule(dr) => Some(dr),
            _ => None,
        }
    }

    /// The cluster a VirtualService destination names. Without a port it is the
    /// service's only port, or else the port the traffic arrived on.
    pub fn destination_cluster(
        &self,
        d: &api::networking::Destination,
        vs_namespace: &str,
        port: u32,
    ) -> String {
        let host = resolve_host(&d.host, vs_namespace, &self.domain);
        let dest_port =
            d.port
                .as_ref()
                .map(|p| p.number)
                .unwrap_or_else(|| match self.service(&host) {
                    Some(s) if s.ports.len() == 1 => s.ports[0].port,
                    _ => port,
                });
        outbound_cluster_name(dest_port, &d.subset, &host)
    }

    pub fn service(&self, hostname: &str) -> Option<&Arc<Service>> {
        self.model.services.get(hostname)
    }
}

/// Adds ServiceEntry hosts to the registry's services, as Istio's "external" registry did.
fn merge_service_entries(
    registry: &ServiceModel,
    config: &ConfigSnapshot,
    domain: &str,
) -> ServiceModel {
    let mut model = registry.clone();
    for (obj, se) in config.service_entries() {
        let resolution = match se.resolution.unwrap_or_default() {
            SeResolution::Static => Resolution::ClientSideLb,
            SeResolution::Dns => Resolution::Dns,
            SeResolution::None => Resolution::Passthrough,
        };
        let ports: Vec<ServicePort> = se
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                port: p.number,
                protocol: Protocol::parse(&p.protocol).unwrap_or(Protocol::Tcp),
            })
            .collect();
        for host in &se.hosts {
            let hostname = resolve_host(host, &obj.meta.namespace, domain);
            if model.services.contains_key(&hostname) {
                // A Kubernetes service of the same name takes precedence, as in Istio.
                continue;
            }
            let mut instances = Vec::new();
            for port in &ports {
                if se.endpoints.is_empty() && resolution == Resolution::Dns {
                    instances.push(Instance {
                        service_port: port.port,
                        address: hostname.clone(),
                        port: port.port,
                        labels: Arc::default(),
                        pod: None,
                        service_account: String::new(),
                    });
                }
                for ep in &se.endpoints {
                    instances.push(Instance {
                        service_port: port.port,
                        address: ep.address.clone(),
                        port: ep.ports.get(&port.name).copied().unwrap_or(port.port),
                        labels: Arc::new(ep.labels.clone()),
                        pod: None,
                        service_account: String::new(),
                    });
                }
            }
            model
                .instances
                .insert(hostname.clone(), Arc::new(instances));
            model.services.insert(
                hostname.clone(),
                Arc::new(Service {
                    hostname,
                    namespace: obj.meta.namespace.clone(),
                    address: se.addresses.first().cloned(),
                    ports: ports.clone(),
                    resolution,
                    mesh_external: se.location != Some(api::networking::Location::MeshInternal),
                }),
            );
        }
    }
    model
}

#[cfg(test)]
mod tests {
    use api::mesh::MeshConfig;

    use crate::xds::fixtures::{mesh_yaml, push_from_yaml};

    /// Istio 1.x sent both VirtualServices and Envoy NACKed the shared route
    /// table; the first by namespace/name routes, and the other is reported.
    #[test]
    fn a_second_virtual_service_for_a_host_is_reported_not_routed() {
        let second = "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: svc-0-canary}\nspec:\n  hosts: [svc-0]\n  http:\n  - route:\n    - destination: {host: svc-0, subset: v2}\n";
        let push = push_from_yaml(
            1,
            &format!("{}---\n{second}", mesh_yaml(2, 2)),
            MeshConfig::default(),
        );
        let conflicts = push.conflicts();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].object, "VirtualService default/svc-0-canary");
        assert_eq!(conflicts[0].field, "spec.hosts[0]");
        assert!(
            conflicts[0]
                .message
                .contains("VirtualService default/svc-0")
        );
        let (_, routing) = push
            .virtual_service("svc-0.default.svc.cluster.local")
            .unwrap();
        assert_eq!(routing.http[0].route.len(), 2, "the first one routes");
    }
}
