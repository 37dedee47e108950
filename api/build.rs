//! Compiles the protos under `proto/` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/envoy/service/discovery/v3/ads.proto",
        "proto/istio/v1/auth/istioca.proto",
        "proto/istio/mixer/v1/mixer.proto",
        "proto/mixer/template/listentry/handler_service.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".envoy.service.discovery.v3.Any.value")
        .compile_fds(descriptors)?;
    Ok(())
}
