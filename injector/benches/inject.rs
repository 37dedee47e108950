//! Admission reviews and kube-inject documents per second, in process.

use criterion::{Criterion, criterion_group, criterion_main};
use injector::config::Config;
use injector::metrics::Metrics;

// As the binary: the render allocates a great deal.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `revision` names the Pod's ReplicaSet: a new one each time is a Pod the
/// injector has not rendered before.
fn review_body(revision: usize) -> Vec<u8> {
    let hash = format!("{revision:06x}");
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "bench",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "default",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": format!("reviews-v1-{hash}-"), "labels": {"app": "reviews", "version": "v1", "pod-template-hash": hash}},
                "spec": {"containers": [{
                    "name": "reviews",
                    "image": "bookinfo/reviews:v1",
                    "ports": [{"containerPort": 9080}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": 9080}},
                }]},
            },
        },
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let config = Config::builtin();
    let metrics = Metrics::new();
    let body = review_body(0);
    c.bench_function("admission review, a Pod of a ReplicaSet seen before", |b| {
        b.iter(|| injector::webhook::review(&config, &metrics, &body).unwrap())
    });
    let bodies: Vec<Vec<u8>> = (1..=4096).map(review_body).collect();
    let mut next = bodies.iter().cycle();
    c.bench_function("admission review, a Pod of a new ReplicaSet", |b| {
        b.iter(|| injector::webhook::review(&config, &metrics, next.next().unwrap()).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
