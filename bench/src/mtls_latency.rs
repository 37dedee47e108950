//! Latency mutual TLS adds to a request through real Envoys.
//!
//! Runs the local-mode mesh of the end-to-end tests (pilot-discovery, reviews
//! v1 and a client, each behind pilot-agent + Envoy) and times requests from
//! the client's application through both sidecars to the reviews backend:
//!
//! - `plaintext`: no Citadel, no policy;
//! - `mtls`: Citadel, each sidecar's node agent serving ECDSA certificates
//!   over SDS, MeshPolicy STRICT and DestinationRule ISTIO_MUTUAL;
//! - `mtls-rbac`: the same with an AuthorizationPolicy admitting the
//!   client's principal, so Envoy's RBAC filter runs on every request.
//!
//! With `--new-connections` every request gets its own connection between
//! the sidecars (`maxRequestsPerConnection: 1`), so each mutual-TLS request
//! pays a full handshake. Prints p50/p90/p99/max per case and what mutual
//! TLS adds over `plaintext`.

use anyhow::ensure;
use clap::{Parser, ValueEnum};
use trireme_bench::latency::{Load, Measured, measure, report};
use trireme_tests::mesh::{Mesh, Options};
use trireme_tests::topology::Topology;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    load: Load,
    /// One upstream connection per request.
    #[arg(long)]
    new_connections: bool,
    /// Which cases to run; all when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    case: Vec<Case>,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Case {
    Plaintext,
    Mtls,
    MtlsRbac,
}

const STRICT: &str = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec:\n  peers:\n  - mtls: {}\n";

const ADMIT_CLIENT: &str = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: reviews, namespace: default}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/default/sa/client]}\n";

async fn run(case: Case, args: &Args) -> anyhow::Result<Measured> {
    let mut policy = String::from("  trafficPolicy:\n");
    if args.new_connections {
        policy.push_str("    connectionPool: {http: {maxRequestsPerConnection: 1}}\n");
    }
    if case != Case::Plaintext {
        policy.push_str("    tls: {mode: ISTIO_MUTUAL}\n");
    }
    let dr = Topology::reviews(0, &["v1"]).destination_rule_yaml(&policy);
    let mut config = vec![("dr.yaml", dr.as_str())];
    if case != Case::Plaintext {
        config.push(("authn.yaml", STRICT));
    }
    if case == Case::MtlsRbac {
        config.push(("authz.yaml", ADMIT_CLIENT));
    }
    let mesh = Mesh::start_with(
        &["v1"],
        &config,
        Options {
            citadel: (case != Case::Plaintext).then_some(""),
            ..Default::default()
        },
    )
    .await;
    let measured = measure(&mesh, &args.load).await?;
    // What was measured is what was meant: TLS between the sidecars or not.
    let handshakes = mesh.agent_stat("reviews-v1", "_9080.ssl.handshake").await;
    ensure!(
        (handshakes > 0) == (case != Case::Plaintext),
        "{case:?}: reviews-v1 counted {handshakes} TLS handshakes"
    );
    println!("{case:?}: reviews-v1 completed {handshakes} TLS handshakes");
    Ok(measured)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cases = if args.case.is_empty() {
        vec![Case::Plaintext, Case::Mtls, Case::MtlsRbac]
    } else {
        args.case.clone()
    };
    let mut results = Vec::new();
    for case in cases {
        results.push((case, run(case, &args).await?));
    }
    let connections = if args.new_connections {
        "a connection per request"
    } else {
        "pooled connections"
    };
    let label = format!(" ({connections})");
    report(
        &results,
        &Case::Plaintext,
        &args.load,
        &label,
        "added over plaintext",
    );
    Ok(())
}
