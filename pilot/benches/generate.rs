//! One proxy's full LDS/RDS/CDS/EDS for 1,000 services × 10 endpoints, served
//! through the whole response path (generation, cache hashing, type URLs,
//! gRPC framing; see `fixtures::serve_proxy`). Allocation counts:
//! `benches/allocations.rs`.
//!
//! - `push_context`: building the push (model, outbound clusters and endpoints
//!   marshalled once for every proxy).
//! - `first_proxy`: a new push plus one proxy's config: the cost after a config
//!   change, before anything is cached.
//! - `next_proxy_other_namespace`: one more proxy on the same push, in a
//!   namespace whose route table is not built yet (built in the measurement).
//! - `next_proxy_same_namespace`: one more proxy that shares the route table
//!   the first proxy of its namespace built.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pilot::xds::fixtures::{BenchMesh, serve_proxy};

// The allocator pilot-discovery runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let mesh = BenchMesh::new(1000, 10);
    // A push on which the first proxy has been served, as the later proxies find it.
    let served = || {
        let push = mesh.build();
        serve_proxy(&push, &mesh.proxy);
        push
    };
    let mut group = c.benchmark_group("1000 services x 10 endpoints");
    group.sample_size(20);
    group.bench_function("push_context", |b| b.iter(|| mesh.build()));
    group.bench_function("first_proxy", |b| {
        b.iter(|| serve_proxy(&mesh.build(), &mesh.proxy))
    });
    group.bench_function("next_proxy_other_namespace", |b| {
        b.iter_batched(
            served,
            |push| serve_proxy(&push, &mesh.elsewhere),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("next_proxy_same_namespace", |b| {
        b.iter_batched(
            served,
            |push| serve_proxy(&push, &mesh.neighbour),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
