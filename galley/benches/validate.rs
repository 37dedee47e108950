//! Validations per second for a mixed corpus: every valid example of every
//! kind (Pilot's and Mixer's), checked as `galley validate` checks files,
//! Mixer's objects compiled together; and one object alone, as the webhook
//! judges it.

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use galley::validate::{check_text, validate_files};

fn corpus() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["../api/tests/corpus/valid", "tests/corpus/valid"] {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("corpus")
            .map(|e| e.expect("entry").path())
            .collect();
        paths.sort();
        for p in paths {
            files.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).expect("file"),
            ));
        }
    }
    files
}

fn bench(c: &mut Criterion) {
    let files = corpus();
    let objects = validate_files(&files).valid;
    assert!(validate_files(&files).errors.is_empty());
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Elements(objects as u64));
    group.bench_function(format!("mixed corpus ({objects} objects)"), |b| {
        b.iter(|| validate_files(&files))
    });
    group.finish();
    let vs = "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - headers: {end-user: {exact: jason}}\n    route:\n    - destination: {host: reviews, subset: v2}\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n    - destination: {host: reviews, subset: v3}\n      weight: 10\n";
    c.bench_function("validate/one VirtualService", |b| {
        b.iter(|| check_text("vs.yaml", vs))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
