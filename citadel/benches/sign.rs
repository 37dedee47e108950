//! Signing alone, without gRPC or TLS: `Ca::sign` for an RSA 2048 and an
//! ECDSA P-256 CA, and reading a CSR (parse, key checks, signature check),
//! to set against `openssl speed` on the same machine.

use std::time::Duration;

use citadel::authority::csr;
use citadel::authority::keys::{Algorithm, Key};
use citadel::authority::{Ca, Root, selfsigned, uri_san};
use criterion::{Criterion, criterion_group, criterion_main};

fn ca(algorithm: Algorithm) -> Ca {
    let (key, pem) =
        selfsigned::create("cluster.local", Duration::from_secs(3600), algorithm).unwrap();
    Ca::new(
        "cluster.local",
        key.pair,
        &pem,
        Vec::new(),
        Root::parse_all("root", &pem).unwrap(),
    )
    .unwrap()
}

fn request(algorithm: Algorithm) -> String {
    let key = Key::generate(algorithm, true).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![uri_san("spiffe://cluster.local/ns/default/sa/a").unwrap()];
    params.serialize_request(&key.pair).unwrap().pem().unwrap()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign");
    for (name, algorithm) in [
        ("ecdsa_p256_ca", Algorithm::Ecdsa),
        ("rsa_2048_ca", Algorithm::Rsa),
    ] {
        let ca = ca(algorithm);
        let parsed = csr::parse(&request(Algorithm::Ecdsa)).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                let san = uri_san("spiffe://cluster.local/ns/default/sa/a").unwrap();
                ca.sign(&parsed.key, false, vec![san], Duration::from_secs(3600))
                    .unwrap()
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("csr");
    for (name, algorithm) in [
        ("ecdsa_p256", Algorithm::Ecdsa),
        ("rsa_2048", Algorithm::Rsa),
    ] {
        let pem = request(algorithm);
        group.bench_function(name, |b| b.iter(|| csr::parse(&pem).unwrap()));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
