//! Heap allocations of the cases in `benches/generate.rs`, counted by a
//! wrapping allocator (which is why they are a separate benchmark: the timing
//! one runs with pilot-discovery's own allocator).

use std::alloc::System;

use pilot::xds::fixtures::{BenchMesh, full_config_bytes};
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
    let mesh = BenchMesh::new(1000, 10);
    let warm = mesh.build();
    full_config_bytes(&warm, &mesh.proxy);
    println!("1000 services x 10 endpoints");
    report("push_context", || mesh.build().outbound_clusters.len());
    report("first_proxy", || {
        full_config_bytes(&mesh.build(), &mesh.proxy)
    });
    report("next_proxy", || full_config_bytes(&warm, &mesh.other));
}
