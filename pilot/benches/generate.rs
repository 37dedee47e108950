//! Generating and marshalling a full LDS/RDS/CDS/EDS set for 1,000 services ×
//! 10 endpoints, for one proxy (allocation counts: `benches/allocations.rs`).
//!
//! - `push_context`: building the push (model, outbound clusters and endpoints
//!   marshalled once for every proxy).
//! - `first_proxy`: a new push plus one proxy's config: the cost after a config
//!   change, before anything is cached.
//! - `next_proxy`: one more proxy's config on a warm push: what each further
//!   proxy costs.

use std::sync::Arc;
use std::time::Instant;

use api::mesh::MeshConfig;
use criterion::{Criterion, criterion_group, criterion_main};
use pilot::xds::fixtures::{bench_inputs, full_config_bytes, sidecar_node};
use pilot::xds::proxy::Proxy;
use pilot::xds::push::PushContext;

// The allocator pilot-discovery runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
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

    let mut group = c.benchmark_group("1000 services x 10 endpoints");
    group.sample_size(20);
    group.bench_function("push_context", |b| b.iter(build));
    group.bench_function("first_proxy", |b| {
        b.iter(|| full_config_bytes(&build(), &proxy))
    });
    group.bench_function("next_proxy", |b| {
        b.iter(|| full_config_bytes(&warm, &other))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
