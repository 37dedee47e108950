//! Push contexts built from YAML, for unit tests and benchmarks.

use std::sync::Arc;
use std::time::Instant;

use api::mesh::MeshConfig;
use api::xds::Node;
use prost_types::{Struct, Value, value::Kind};

use crate::config::dir::snapshot_from_texts;
use crate::xds::generate::generate;
use crate::xds::generate::lds::route_names;
use crate::xds::proxy::Proxy;
use crate::xds::push::PushContext;
use crate::xds::resource::XdsType;

pub const DOMAIN: &str = "cluster.local";

/// Every document must be accepted: a fixture with a typo fails loudly.
pub fn push_from_yaml(version: u64, yaml: &str, mesh: MeshConfig) -> PushContext {
    let snap = snapshot_from_texts(&[("fixture.yaml", yaml)]);
    assert!(
        snap.rejections.is_empty(),
        "fixture rejected: {:?}",
        snap.rejections
    );
    crate::xds::generate::build_push(
        version,
        &snap.cluster.to_model(DOMAIN),
        snap.config.clone(),
        Arc::new(mesh),
        DOMAIN,
        Instant::now(),
    )
}

/// The node a sidecar at `ip` sends; `local` adds `INTERCEPTION_MODE: NONE`.
pub fn sidecar_node(ip: &str, pod: &str, local: bool) -> Node {
    let mut fields = std::collections::BTreeMap::new();
    if local {
        fields.insert(
            "INTERCEPTION_MODE".to_string(),
            Value {
                kind: Some(Kind::StringValue("NONE".into())),
            },
        );
    }
    Node {
        id: format!("sidecar~{ip}~{pod}.default~default.svc.cluster.local"),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

/// Services `svc-0` … `svc-<n-1>` in namespace `default`, each with one HTTP
/// port, `endpoints` pods split into subsets v1/v2, a DestinationRule with both
/// subsets and a 90/10 VirtualService: the shape of a large mesh's config.
pub fn mesh_yaml(services: usize, endpoints: usize) -> String {
    let mut y = String::new();
    for s in 0..services {
        let (a, b) = (s / 250, s % 250);
        y.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: default}}\nspec:\n  clusterIP: 10.{a}.{b}.1\n  ports: [{{name: http, port: 8080}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: svc-{s}, namespace: default}}\nsubsets:\n- ports: [{{name: http, port: 8080}}]\n  addresses:\n"
        ));
        for e in 0..endpoints {
            y.push_str(&format!(
                "  - ip: 10.{}.{b}.{}\n    targetRef: {{kind: Pod, name: svc-{s}-{e}, namespace: default}}\n",
                100 + a,
                e + 2
            ));
        }
        y.push_str("---\n");
        for e in 0..endpoints {
            let v = if e.is_multiple_of(2) { "v1" } else { "v2" };
            y.push_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: svc-{s}-{e}, namespace: default, labels: {{app: svc-{s}, version: {v}}}}}\nspec: {{containers: [{{name: app}}]}}\nstatus: {{podIP: 10.{}.{b}.{}}}\n---\n",
                100 + a,
                e + 2
            ));
        }
        y.push_str(&format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: svc-{s}}}\nspec:\n  host: svc-{s}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: svc-{s}}}\nspec:\n  hosts: [svc-{s}]\n  http:\n  - route:\n    - destination: {{host: svc-{s}, subset: v1}}\n      weight: 90\n    - destination: {{host: svc-{s}, subset: v2}}\n      weight: 10\n---\n"
        ));
    }
    y
}

/// Everything one sidecar is sent, as Envoy would ask for it; returns the bytes.
pub fn full_config_bytes(push: &PushContext, proxy: &Proxy) -> usize {
    let clusters = generate(push, proxy, XdsType::Cluster, &[]);
    let eds: Vec<String> = push.endpoints.keys().cloned().collect();
    let endpoints = generate(push, proxy, XdsType::Endpoint, &eds);
    let listeners = generate(push, proxy, XdsType::Listener, &[]);
    let routes = generate(push, proxy, XdsType::Route, &route_names(push, proxy));
    [clusters, endpoints, listeners, routes]
        .iter()
        .flatten()
        .map(|r| r.body.len())
        .sum()
}

/// The benchmark mesh ([`mesh_yaml`]) ready to build pushes from, with two
/// sidecars of different services.
pub struct BenchMesh {
    registry: crate::model::ServiceModel,
    config: Arc<crate::config::ConfigSnapshot>,
    mesh: Arc<MeshConfig>,
    pub proxy: Proxy,
    pub other: Proxy,
}

impl BenchMesh {
    pub fn new(services: usize, endpoints: usize) -> BenchMesh {
        let snap = snapshot_from_texts(&[("mesh.yaml", &mesh_yaml(services, endpoints))]);
        let registry = snap.cluster.to_model(DOMAIN);
        let proxy = |ip: &str, pod: &str| {
            Proxy::from_node(&sidecar_node(ip, pod, false), &registry).expect("benchmark node")
        };
        let (proxy, other) = (
            proxy("10.100.0.2", "svc-0-0"),
            proxy("10.101.0.2", "svc-250-0"),
        );
        BenchMesh {
            config: snap.config.clone(),
            registry,
            mesh: Arc::default(),
            proxy,
            other,
        }
    }

    /// A new push, as after a config change.
    pub fn build(&self) -> PushContext {
        crate::xds::generate::build_push(
            1,
            &self.registry,
            self.config.clone(),
            self.mesh.clone(),
            DOMAIN,
            Instant::now(),
        )
    }
}
