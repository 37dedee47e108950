//! Compiles the protos under `proto/` with protox, so no system `protoc` is
//! needed: Rust code for the services Trireme speaks, and one descriptor set
//! of Istio's config messages for the MCP codec (`src/mcp.rs`).

use prost::Message;

const SERVICES: &[&str] = &[
    "proto/envoy/service/discovery/v3/ads.proto",
    "proto/istio/v1/auth/istioca.proto",
    "proto/istio/mixer/v1/mixer.proto",
    "proto/mixer/template/listentry/handler_service.proto",
    "proto/istio/mcp/v1alpha1/mcp.proto",
];

/// The bodies of MCP resources.
const CONFIG: &[&str] = &[
    "proto/istio/networking/v1alpha3/virtual_service.proto",
    "proto/istio/networking/v1alpha3/destination_rule.proto",
    "proto/istio/networking/v1alpha3/gateway.proto",
    "proto/istio/networking/v1alpha3/service_entry.proto",
    "proto/istio/networking/v1alpha3/sidecar.proto",
    "proto/istio/networking/v1alpha3/envoy_filter.proto",
    "proto/istio/authentication/v1alpha1/policy.proto",
    "proto/istio/rbac/v1alpha1/rbac.proto",
    "proto/istio/security/v1beta1/authorization.proto",
    "proto/istio/policy/v1beta1/cfg.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(SERVICES, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".envoy.service.discovery.v3.Any.value")
        // A report carries a few dozen small maps per attribute set: a B-tree
        // builds them without hashing each key (prost's HashMap uses SipHash).
        .btree_map(".istio.mixer.v1.CompressedAttributes")
        .btree_map(".istio.mixer.v1.StringMap")
        .compile_fds(descriptors)?;
    mixer_in_place();
    access_log_in_place();
    let config = protox::compile(CONFIG, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("istio_descriptors.bin"), config.encode_to_vec())?;
    Ok(())
}

/// The server side of `istio.mixer.v1.Mixer` over `mixer_wire`'s requests,
/// whose attribute sets stay bytes for mixer's in-place decoder. Same
/// routes, same wire; clients keep the generated message types.
fn mixer_in_place() {
    use tonic_prost_build::manual::{Builder, Method, Service};
    let method = |name: &str, route: &str, input: &str, output: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("crate::mixer_wire::{input}"))
            .output_type(format!("crate::mixer::{output}"))
            .codec_path("tonic_prost::ProstCodec")
            .build()
    };
    let service = Service::builder()
        .name("Mixer")
        .package("istio.mixer.v1")
        .method(method("check", "Check", "CheckRequest", "CheckResponse"))
        .method(method(
            "report",
            "Report",
            "ReportRequest",
            "ReportResponse",
        ))
        .build();
    Builder::new().build_client(false).compile(&[service]);
}

/// The server side of Envoy's `AccessLogService` over `als_wire`'s
/// messages, whose entries stay bytes for mixer-telemetry's in-place
/// reader. Same route, same wire; clients use `envoy-types`.
fn access_log_in_place() {
    use tonic_prost_build::manual::{Builder, Method, Service};
    let method = Method::builder()
        .name("stream_access_logs")
        .route_name("StreamAccessLogs")
        .input_type("crate::als_wire::StreamAccessLogsMessage")
        .output_type("crate::als_wire::StreamAccessLogsResponse")
        .codec_path("tonic_prost::ProstCodec")
        .client_streaming()
        .build();
    let service = Service::builder()
        .name("AccessLogService")
        .package("envoy.service.accesslog.v3")
        .method(method)
        .build();
    Builder::new().build_client(false).compile(&[service]);
}
