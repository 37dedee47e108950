//! Config changes that rewrite clusters, as real Envoy takes them.

use std::time::{Duration, Instant};

use trireme_tests::eventually;
use trireme_tests::mesh::Mesh;

/// Editing a DestinationRule rewrites the reviews clusters. Envoy keeps a
/// rewritten cluster warming until its endpoints arrive, and asks for them
/// with a request that names nothing new; unanswered, the cluster waits out
/// Envoy's 15 s initial fetch timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_destination_rule_is_active_at_once() {
    let mesh = Mesh::start(&["v1", "v2"], &[]).await;
    let pooled = mesh.topology.destination_rule_yaml(
        "  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 7}\n",
    );
    let started = Instant::now();
    mesh.write_config("dr.yaml", &pooled);
    eventually(
        "the three rewritten reviews clusters active in the client's Envoy",
        Duration::from_secs(20),
        || async {
            let active = mesh.active_clusters("client").await;
            (active.matches("\"max_connections\":7").count() == 3).then_some(())
        },
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the rewritten clusters took {took:?} to become active"
    );
    let counts = mesh.tally(20, "/", &[]).await;
    let answered: usize = ["v1", "v2"].iter().filter_map(|v| counts.get(*v)).sum();
    assert_eq!(answered, 20, "{counts:?}");
}
