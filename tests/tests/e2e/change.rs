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

/// An endpoint change sends Envoy only the load assignments that changed;
/// Envoy keeps every other one (SotW allows partial EDS responses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_push_carries_only_what_changed() {
    let external = "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {name: ext, namespace: default}\nspec:\n  hosts: [ext.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{number: 9999, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.77.0.1}]\n";
    let mesh = Mesh::start(&["v1", "v2"], &[("se.yaml", external)]).await;
    let client = mesh.pod("client").ip;
    let updates = |cluster: &'static str| {
        let url = format!(
            "http://{client}:15000/stats?filter=^cluster\\.{}\\.update_success$",
            regex_escape(cluster)
        );
        let http = mesh.http.clone();
        async move {
            let text = http.get(&url).send().await.ok()?.text().await.ok()?;
            text.lines()
                .find_map(|l| l.rsplit_once(": ")?.1.trim().parse::<u64>().ok())
        }
    };
    const EXT: &str = "outbound|9999||ext.example.com";
    const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
    eventually(
        "the external endpoint in the client's Envoy",
        Duration::from_secs(10),
        || async {
            let dump = mesh.endpoints_dump("client").await?;
            dump.contains("10.77.0.1").then_some(())
        },
    )
    .await;
    let ext_before = updates(EXT)
        .await
        .expect("EDS stats of the external cluster");
    let reviews_before = updates(REVIEWS).await.expect("EDS stats of reviews");

    let ports = "  ports: [{name: http, port: 9080}]";
    let grown =
        mesh.topology
            .cluster_yaml()
            .replacen(ports, &format!("  - ip: 10.99.0.7\n{ports}"), 1);
    mesh.write_config("cluster.yaml", &grown);
    eventually(
        "the new reviews address in the client's Envoy",
        Duration::from_secs(10),
        || async {
            let dump = mesh.endpoints_dump("client").await?;
            (dump.contains("10.99.0.7") && dump.contains("10.77.0.1")).then_some(())
        },
    )
    .await;
    assert!(
        updates(REVIEWS).await.unwrap() > reviews_before,
        "reviews was updated"
    );
    assert_eq!(
        updates(EXT).await.unwrap(),
        ext_before,
        "the unchanged external assignment was not sent again"
    );
}

/// Envoy's stats filter is a regex; cluster names hold `|` and `.`.
fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| match c {
            '|' | '.' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}
