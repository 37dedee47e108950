//! Heap allocations of the cases in `benches/generate.rs`, counted by a
//! wrapping allocator (which is why they are a separate benchmark: the timing
//! one runs with pilot-discovery's own allocator).

use std::alloc::System;
use std::sync::Arc;
use std::time::Instant;

use api::mesh::MeshConfig;
use pilot::xds::fixtures::{bench_inputs, full_config_bytes, sidecar_node};
use pilot::xds::proxy::Proxy;
use pilot::xds::push::PushContext;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn report(name: &str, f: impl FnOnce() -> usize) {
    let region = Region::new(GLOBAL);
    let xds_bytes = f();
    let stats = region.change();
    println!(
        "{name:>13}: {:>9} allocations, {:>6.1} MiB allocated, {:.2} MiB of xDS",
        stats.allocations,
        stats.bytes_allocated as f64 / 1048576.0,
        xds_bytes as f64 / 1048576.0
    );
}

fn main() {
    let (registry, config) = bench_inputs(1000, 10);
    let mesh = Arc::new(MeshConfig::default());
    let build = || {
        PushContext::build(
            1,
            &registry,
            config.clone(),
            mesh.clone(),
            "cluster.local",
            Instant::now(),
        )
    };
    let warm = build();
    let proxy =
        Proxy::from_node(&sidecar_node("10.100.0.2", "svc-0-0", false), &warm.model).expect("node");
    let other = Proxy::from_node(&sidecar_node("10.101.0.2", "svc-250-0", false), &warm.model)
        .expect("node");
    full_config_bytes(&warm, &proxy);
    println!("1000 services x 10 endpoints");
    report("push_context", || build().outbound_clusters.len());
    report("first_proxy", || full_config_bytes(&build(), &proxy));
    report("next_proxy", || full_config_bytes(&warm, &other));
}
