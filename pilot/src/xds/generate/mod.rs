//! The generators: one module per resource type, each turning a push context
//! into one proxy's resources, with the plug-ins called at fixed points.
//! They are registered by type URL ([`Generators`]), so a new type (or delta
//! xDS over the same ones) is a registration, not an edit of the server.

pub mod cds;
pub mod eds;
pub mod lds;
pub mod rds;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use api::mesh::MeshConfig;

use crate::config::ConfigSnapshot;
use crate::model::ServiceModel;
use crate::xds::proxy::{Proxy, ProxyKind};
use crate::xds::push::PushContext;
use crate::xds::resource::{Resource, XdsType};

/// Builds one type's resources for one proxy. For the named types (RDS, EDS)
/// only `names` are built, in `names` order, skipping names that have none.
pub trait Generator: Send + Sync {
    fn generate(&self, push: &PushContext, proxy: &Proxy, names: &[String]) -> Vec<Resource>;
}

/// The generators, by type URL. Each ADS connection answers with the set it
/// was given; a type without a generator is answered with no resources.
#[derive(Default)]
pub struct Generators(HashMap<&'static str, Box<dyn Generator>>);

impl Generators {
    /// CDS, EDS, LDS and RDS, shared by every connection that is given no other set.
    pub fn standard() -> Arc<Generators> {
        static STANDARD: LazyLock<Arc<Generators>> = LazyLock::new(|| {
            Arc::new(
                Generators::default()
                    .with(XdsType::Cluster, Cds)
                    .with(XdsType::Endpoint, Eds)
                    .with(XdsType::Listener, Lds)
                    .with(XdsType::Route, Rds),
            )
        });
        STANDARD.clone()
    }

    /// Registers (or replaces) the generator of `kind`.
    pub fn with(mut self, kind: XdsType, generator: impl Generator + 'static) -> Generators {
        self.0.insert(kind.url(), Box::new(generator));
        self
    }

    pub fn get(&self, type_url: &str) -> Option<&dyn Generator> {
        self.0.get(type_url).map(|g| g.as_ref())
    }
}

/// The resources of `kind` for `proxy`, from the standard generators.
pub fn generate(
    push: &PushContext,
    proxy: &Proxy,
    kind: XdsType,
    names: &[String],
) -> Vec<Resource> {
    Generators::standard()
        .get(kind.url())
        .map(|g| g.generate(push, proxy, names))
        .unwrap_or_default()
}

struct Cds;
struct Eds;
struct Lds;
struct Rds;

impl Generator for Cds {
    fn generate(&self, push: &PushContext, proxy: &Proxy, _: &[String]) -> Vec<Resource> {
        let mut out: Vec<Resource> = push.outbound_clusters.iter().cloned().collect();
        if proxy.kind == ProxyKind::Sidecar {
            out.extend(cds::inbound(push, proxy));
        }
        out.extend(cds::from_plugins(push, proxy));
        out
    }
}

impl Generator for Eds {
    fn generate(&self, push: &PushContext, _: &Proxy, names: &[String]) -> Vec<Resource> {
        names
            .iter()
            .filter_map(|n| push.endpoints.get(n).cloned())
            .collect()
    }
}

impl Generator for Lds {
    fn generate(&self, push: &PushContext, proxy: &Proxy, _: &[String]) -> Vec<Resource> {
        lds::build(push, proxy)
    }
}

impl Generator for Rds {
    fn generate(&self, push: &PushContext, proxy: &Proxy, names: &[String]) -> Vec<Resource> {
        names
            .iter()
            .filter_map(|n| rds::outbound(push, proxy, n))
            .collect()
    }
}

/// A full push: the push context with the resources every proxy shares.
pub fn build_push(
    version: u64,
    registry: &ServiceModel,
    config: Arc<ConfigSnapshot>,
    mesh: Arc<MeshConfig>,
    domain: &str,
    triggered_at: Instant,
) -> PushContext {
    let mut push = PushContext::new(version, registry, config, mesh, domain, triggered_at);
    push.outbound_clusters = Arc::new(cds::outbound(&push));
    push.endpoints = Arc::new(eds::all(&push));
    push
}

/// An endpoint push after `previous`: clusters and routes reused, and only the
/// load assignments of services whose instances changed marshalled again.
pub fn endpoint_push(
    previous: &PushContext,
    version: u64,
    registry: &ServiceModel,
    triggered_at: Instant,
) -> PushContext {
    let mut push = previous.derive(version, registry, triggered_at);
    push.endpoints = Arc::new(eds::update(&push, &previous.model, &previous.endpoints));
    push
}
