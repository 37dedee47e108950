//! Push contexts built from YAML, for unit tests and benchmarks.

use std::sync::Arc;
use std::time::Instant;

use api::mesh::MeshConfig;
use api::xds::{DiscoveryRequest, Node};
use prost_types::{Struct, Value, value::Kind};

use crate::config::dir::snapshot_from_texts;
use crate::xds::generate::lds::route_names;
use crate::xds::proxy::Proxy;
use crate::xds::push::PushContext;
use crate::xds::resource::XdsType;
use crate::xds::server::connection::Connection;
use crate::xds::server::grpc::frame;

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

/// Everything one sidecar is sent, as Envoy asks for it (CDS and LDS, then
/// EDS for every EDS cluster and RDS for every route its listeners name),
/// through the whole response path: generation, the per-proxy cache's hashing
/// and versions, `Any` wrapping with type URLs, and gRPC framing. Returns the
/// framed bytes.
pub fn serve_proxy(push: &PushContext, node: &Node) -> usize {
    let proxy = Proxy::from_node(node, &push.model).expect("benchmark node");
    let mut conn = Connection::new();
    let eds: Vec<String> = push.endpoints.keys().cloned().collect();
    let requests = [
        (XdsType::Cluster, Vec::new()),
        (XdsType::Listener, Vec::new()),
        (XdsType::Endpoint, eds),
        (XdsType::Route, route_names(push, &proxy)),
    ];
    let mut bytes = 0;
    for (kind, names) in requests {
        let request = DiscoveryRequest {
            node: Some(node.clone()),
            type_url: kind.url().to_string(),
            resource_names: names,
            ..Default::default()
        };
        let (_, response) = conn.on_request(request, push).expect("benchmark request");
        bytes += frame(response.expect("a response"))
            .map(|b| b.len())
            .sum::<usize>();
    }
    bytes
}

/// The benchmark mesh ([`mesh_yaml`]) ready to build pushes from, with the
/// nodes of three sidecars: `proxy` and `neighbour` in namespace `default`
/// (the second shares the first's route tables), `elsewhere` in namespace
/// `other` (its route tables are its own).
pub struct BenchMesh {
    registry: crate::model::ServiceModel,
    config: Arc<crate::config::ConfigSnapshot>,
    mesh: Arc<MeshConfig>,
    pub proxy: Node,
    pub neighbour: Node,
    pub elsewhere: Node,
}

impl BenchMesh {
    pub fn new(services: usize, endpoints: usize) -> BenchMesh {
        let snap = snapshot_from_texts(&[("mesh.yaml", &mesh_yaml(services, endpoints))]);
        let registry = snap.cluster.to_model(DOMAIN);
        BenchMesh {
            config: snap.config.clone(),
            registry,
            mesh: Arc::default(),
            proxy: sidecar_node("10.100.0.2", "svc-0-0", false),
            neighbour: sidecar_node("10.101.0.2", "svc-250-0", false),
            elsewhere: Node {
                id: "sidecar~10.250.0.2~client.other~other.svc.cluster.local".into(),
                ..Default::default()
            },
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
