//! The generators against golden Envoy JSON.
//!
//! Each proxy's resources are decoded with Envoy's own protos (the ones the
//! `envoy-types` crate ships, compiled here with protox) and printed as the
//! proto3 JSON Envoy's `/config_dump` uses, then compared with
//! `tests/golden/<proxy>.json`. `UPDATE_GOLDEN=1` rewrites the files; review the
//! diff. Real Envoy (`TRIREME_ENVOY`, set by `make test`) also validates each
//! proxy's listeners and clusters in `--mode validate`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use api::mesh::MeshConfig;
use pilot::xds::fixtures::{push_from_yaml, sidecar_node};
use pilot::xds::generate::generate;
use pilot::xds::generate::lds::route_names;
use pilot::xds::proxy::Proxy;
use pilot::xds::push::PushContext;
use pilot::xds::resource::XdsType;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Value, json};

/// The protos the `envoy-types` crate in this build ships, found through
/// `cargo metadata` (wherever the crate was unpacked, whatever its version).
fn envoy_protos() -> PathBuf {
    let rustc = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc names its host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // This platform's packages only: the others were never downloaded.
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let manifest = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("envoy-types among the build's packages");
    let protos = Path::new(manifest).with_file_name("proto");
    assert!(protos.is_dir(), "{} is missing", protos.display());
    protos
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let root = envoy_protos();
        let includes: Vec<PathBuf> = ["data-plane-api", "xds", "googleapis", "protoc-gen-validate", "cel-spec/proto", "opentelemetry-proto", "client_model"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        let files = [
            "envoy/config/listener/v3/listener.proto",
            "envoy/config/cluster/v3/cluster.proto",
            "envoy/config/route/v3/route.proto",
            "envoy/config/endpoint/v3/endpoint.proto",
            "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
            "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
            "envoy/extensions/filters/http/router/v3/router.proto",
            "envoy/extensions/filters/http/fault/v3/fault.proto",
            "envoy/extensions/filters/http/cors/v3/cors.proto",
            "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
            "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
            "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
            "envoy/extensions/transport_sockets/tls/v3/tls.proto",
            "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
            "envoy/extensions/filters/http/rbac/v3/rbac.proto",
            "envoy/extensions/filters/network/rbac/v3/rbac.proto",
        ];
        let fds = protox::compile(files, includes).expect("compile Envoy protos");
        DescriptorPool::from_file_descriptor_set(fds).expect("descriptor pool")
    })
}

fn to_json(type_url: &str, body: &[u8]) -> Value {
    let name = type_url.rsplit('/').next().unwrap_or_default();
    let desc = pool().get_message_by_name(name).expect("message type");
    let msg = DynamicMessage::decode(desc, body).expect("decodes with Envoy's protos");
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .expect("json")
}

fn proxy_config(push: &PushContext, proxy: &Proxy) -> Value {
    let of = |kind: XdsType, names: &[String]| -> Vec<Value> {
        generate(push, proxy, kind, names)
            .iter()
            .map(|r| to_json(kind.url(), &r.body))
            .collect()
    };
    let clusters = of(XdsType::Cluster, &[]);
    let eds_names: Vec<String> = clusters
        .iter()
        .filter(|c| c["type"] == "EDS")
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    json!({
        "clusters": clusters,
        "endpoints": of(XdsType::Endpoint, &eds_names),
        "listeners": of(XdsType::Listener, &[]),
        "routes": of(XdsType::Route, &route_names(push, proxy)),
    })
}

fn check_golden(name: &str, actual: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(actual).expect("json") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with UPDATE_GOLDEN=1 and review it",
            path.display()
        )
    });
    if expected != text {
        let actual_path = path.with_extension("actual.json");
        std::fs::write(&actual_path, &text).expect("write actual");
        panic!(
            "{name}: generated config differs from {}; see {}",
            path.display(),
            actual_path.display()
        );
    }
}

/// Real Envoy accepts the listeners and clusters as static config. Without
/// Envoy the test fails: a golden file nobody validated proves little.
fn envoy_validates(name: &str, config: &Value) {
    let envoy = std::env::var("TRIREME_ENVOY")
        .expect("TRIREME_ENVOY names the Envoy binary (`make test` installs and sets it)");
    let xds = json!({
        "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
    });
    // The node agent's socket, which SDS secrets name (a pipe need not exist to validate).
    let sds = json!({
        "name": "sds-grpc", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "sds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": "/var/run/sds/uds_path"}}}}]}]},
        "typed_extension_protocol_options": xds["typed_extension_protocol_options"].clone(),
    });
    let mut clusters = config["clusters"].as_array().cloned().unwrap_or_default();
    clusters.push(xds);
    clusters.push(sds);
    let bootstrap = json!({
        "node": {"id": "validate", "cluster": "validate"},
        "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
        "static_resources": {"listeners": config["listeners"], "clusters": clusters},
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{name}.json"));
    std::fs::write(&file, bootstrap.to_string()).expect("write bootstrap");
    let out = std::process::Command::new(envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&file)
        .output()
        .expect("run envoy");
    assert!(
        out.status.success(),
        "Envoy rejected {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn input() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/input.yaml"))
        .expect("input")
}

#[test]
fn sidecar_with_iptables_capture() {
    let push = push_from_yaml(1, &input(), MeshConfig::default());
    let proxy = Proxy::from_node(&sidecar_node("10.1.0.11", "reviews-v1", false), &push.model)
        .expect("node");
    let config = proxy_config(&push, &proxy);
    check_golden("sidecar-iptables", &config);
    envoy_validates("sidecar-iptables", &config);
}

#[test]
fn sidecar_in_local_mode() {
    let mesh =
        MeshConfig::parse("proxyHttpPort: 15080\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}\n")
            .expect("mesh");
    let push = push_from_yaml(1, &input(), mesh);
    let proxy = Proxy::from_node(&sidecar_node("10.1.0.1", "productpage", true), &push.model)
        .expect("node");
    let config = proxy_config(&push, &proxy);
    check_golden("sidecar-local", &config);
    envoy_validates("sidecar-local", &config);
}

/// Mutual TLS over SDS, peer authentication and authorization: the reviews
/// proxy STRICT on its port, RBAC from two policies, every outbound cluster
/// ISTIO_MUTUAL with its service's identities; a ratings proxy, which no
/// rule admits, gets a filter that denies everything.
#[test]
fn sidecar_with_mutual_tls_and_authorization() {
    let mesh = MeshConfig::parse("sdsUdsPath: unix:/var/run/sds/uds_path\n").expect("mesh");
    let security = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/security.yaml"),
    )
    .expect("security.yaml");
    let push = push_from_yaml(1, &format!("{}\n---\n{security}", input()), mesh);
    for (name, ip, pod) in [
        ("sidecar-mtls", "10.1.0.11", "reviews-v1"),
        ("sidecar-mtls-ratings", "10.1.0.21", "ratings-v1"),
    ] {
        let proxy = Proxy::from_node(&sidecar_node(ip, pod, false), &push.model).expect("node");
        let mut config = proxy_config(&push, &proxy);
        if pod == "ratings-v1" {
            // Its outbound side is reviews-v1's; the listeners are what differ.
            config = json!({"listeners": config["listeners"]});
        }
        check_golden(name, &config);
        envoy_validates(name, &config);
    }
}
