//! Generating and marshalling a full LDS/RDS/CDS/EDS set for 1,000 services ×
//! 10 endpoints, for one proxy (allocation counts: `benches/allocations.rs`).
//!
//! - `push_context`: building the push (model, outbound clusters and endpoints
//!   marshalled once for every proxy).
//! - `first_proxy`: a new push plus one proxy's config: the cost after a config
//!   change, before anything is cached.
//! - `next_proxy`: one more proxy's config on a warm push: what each further
//!   proxy costs.

use criterion::{Criterion, criterion_group, criterion_main};
use pilot::xds::fixtures::{BenchMesh, full_config_bytes};

// The allocator pilot-discovery runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let mesh = BenchMesh::new(1000, 10);
    let warm = mesh.build();
    full_config_bytes(&warm, &mesh.proxy);

    let mut group = c.benchmark_group("1000 services x 10 endpoints");
    group.sample_size(20);
    group.bench_function("push_context", |b| b.iter(|| mesh.build()));
    group.bench_function("first_proxy", |b| {
        b.iter(|| full_config_bytes(&mesh.build(), &mesh.proxy))
    });
    group.bench_function("next_proxy", |b| {
        b.iter(|| full_config_bytes(&warm, &mesh.other))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
