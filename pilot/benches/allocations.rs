//! Heap allocations of the cases in `benches/generate.rs`, counted by a
//! wrapping allocator (which is why they are a separate benchmark: the timing
//! one runs with pilot-discovery's own allocator). Bytes are every byte asked
//! of the allocator: fresh allocations plus what reallocations grew by.

use std::alloc::System;

use pilot::xds::fixtures::{BenchMesh, serve_proxy};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn report(name: &str, f: impl FnOnce() -> usize) {
    let region = Region::new(GLOBAL);
    let xds_bytes = f();
    let stats = region.change();
    let grown = stats.bytes_reallocated.max(0) as usize;
    println!(
        "{name:>27}: {:>9} allocations, {:>7} reallocations, {:>6.1} MiB allocated, {:.2} MiB of framed xDS",
        stats.allocations,
        stats.reallocations,
        (stats.bytes_allocated + grown) as f64 / 1048576.0,
        xds_bytes as f64 / 1048576.0
    );
}

fn main() {
    let mesh = BenchMesh::new(1000, 10);
    println!("1000 services x 10 endpoints");
    report("push_context", || mesh.build().outbound_clusters.len());
    report("first_proxy", || serve_proxy(&mesh.build(), &mesh.proxy));
    let push = mesh.build();
    serve_proxy(&push, &mesh.proxy);
    report("next_proxy_other_namespace", || {
        serve_proxy(&push, &mesh.elsewhere)
    });
    report("next_proxy_same_namespace", || {
        serve_proxy(&push, &mesh.neighbour)
    });
}
