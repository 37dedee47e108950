//! Process lifecycle: Pilot going away and coming back, Envoy dying under its
//! agent, and the agent draining on SIGTERM.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use trireme_tests::eventually;
use trireme_tests::kube_api::FakeApiServer;
use trireme_tests::mesh::Mesh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_serves_without_pilot_and_reconverges_after_restart() {
    let mut mesh = Mesh::start(&["v1", "v2"], &[]).await;
    // SIGTERM: pilot-discovery closes its streams and exits on its own.
    let pilot = mesh.pilot.as_mut().unwrap();
    pilot.signal(Signal::SIGTERM);
    assert!(
        pilot.wait_exit(Duration::from_secs(10)),
        "pilot-discovery exits after SIGTERM"
    );
    let counts = mesh.tally(20, "/", &[]).await;
    assert_eq!(counts.values().sum::<usize>(), 20);
    assert!(
        counts.keys().all(|k| k == "v1" || k == "v2"),
        "Envoy keeps serving: {counts:?}"
    );

    // Config changed while Pilot was down is served once it is back.
    mesh.write_config(
        "vs.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v2}\n",
    );
    mesh.start_pilot().await;
    eventually(
        "all three proxies reconnected and ACKed",
        Duration::from_secs(30),
        || async {
            let syncz = mesh.pilot_json("/debug/syncz").await;
            let list = syncz.as_array()?;
            let acked = list
                .iter()
                .filter(|c| {
                    ["cds", "lds", "rds"].iter().all(|t| {
                        let w = &c["watches"][t];
                        !w["acked_version"].as_str().unwrap_or("").is_empty()
                            && w["acked_version"] == w["sent_version"]
                    })
                })
                .count();
            (acked == 3).then_some(())
        },
    )
    .await;
    let counts = mesh.tally(20, "/", &[]).await;
    assert_eq!(counts.get("v2"), Some(&20), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restarts_a_dead_envoy_and_drains_on_sigterm() {
    let mut mesh = Mesh::start(&["v1"], &[]).await;
    let pod = mesh.pod("reviews-v1");
    let old = mesh.agent("reviews-v1").children();
    assert_eq!(old.len(), 1, "one Envoy under the agent");
    let _ = kill(Pid::from_raw(old[0] as i32), Signal::SIGKILL);
    let new = eventually(
        "a new Envoy under the agent",
        Duration::from_secs(10),
        || async {
            let kids = mesh.agent("reviews-v1").children();
            (kids.len() == 1 && kids[0] != old[0]).then(|| kids[0])
        },
    )
    .await;
    mesh.wait_sidecar_ready(&pod).await;
    assert_eq!(mesh.tally(5, "/", &[]).await.get("v1"), Some(&5));

    let (_, agent) = mesh
        .agents
        .iter_mut()
        .find(|(p, _)| p.name == "reviews-v1")
        .unwrap();
    agent.signal(Signal::SIGTERM);
    assert!(
        agent.wait_exit(Duration::from_secs(10)),
        "agent exits after draining"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{new}")).exists(),
        "Envoy stopped with its agent"
    );
}

/// `/quitquitquit` stops the proxy only when the pod itself asks, by POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_is_only_for_the_pod_itself() {
    let mut mesh = Mesh::start(&["v1"], &[]).await;
    let pod = mesh.pod("reviews-v1");
    let url = format!("http://{}:15020/quitquitquit", pod.ip);
    let from = |ip: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    // Another pod's address, as a neighbour on the network would be.
    let stranger = from(&mesh.pod("client").ip);
    let refused = stranger.post(&url).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let own = from(&pod.ip);
    assert_eq!(
        own.get(&url).send().await.unwrap().status(),
        405,
        "GET is not enough"
    );
    mesh.wait_sidecar_ready(&pod).await;

    assert_eq!(own.post(&url).send().await.unwrap().status(), 200);
    let (_, agent) = mesh
        .agents
        .iter_mut()
        .find(|(p, _)| p.name == "reviews-v1")
        .unwrap();
    assert!(
        agent.wait_exit(Duration::from_secs(10)),
        "the agent exits after quitquitquit"
    );
}

/// A sidecar told to stop lets the requests it is serving finish: Envoy drains
/// its listeners and is stopped only after the termination drain duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_finish_when_a_sidecar_drains() {
    let mut mesh = Mesh::start(&["v1"], &[]).await;
    mesh.restart_agent_draining("reviews-v1", "3s").await;
    let mesh = std::sync::Arc::new(mesh);
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let mesh = mesh.clone();
            tokio::spawn(async move { mesh.call("/delay/1500", &[]).await })
        })
        .collect();
    // Every request has reached the app (it logs nothing we can wait on, so
    // wait for Envoy's count of active upstream requests on the inbound side).
    let admin = format!(
        "http://{}:15000/stats?filter=upstream_rq_active",
        mesh.pod("reviews-v1").ip
    );
    eventually(
        "five requests in flight at reviews-v1",
        Duration::from_secs(10),
        || async {
            let stats = mesh.http.get(&admin).send().await.ok()?.text().await.ok()?;
            let active: u64 = stats
                .lines()
                .filter(|l| l.contains("inbound|"))
                .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse::<u64>().ok())
                .sum();
            (active == 5).then_some(())
        },
    )
    .await;
    mesh.agent("reviews-v1").signal(Signal::SIGTERM);
    for request in in_flight {
        let (status, version) = request.await.unwrap();
        assert_eq!(
            (status, version.as_deref()),
            (200, Some("v1")),
            "an in-flight request was cut"
        );
    }
}

/// Envoys reconnecting to a restarted Pilot are told nothing until its
/// registry has synced: an empty mesh would take every cluster from them.
/// The registry is Kubernetes, against a stand-in API server that answers
/// LIST only when the test says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_pilot_serves_nothing_until_its_registry_syncs() {
    let mut mesh = Mesh::start(&["v1"], &[]).await;
    let api = FakeApiServer::start(&mesh.topology.pilot_ip(), mesh.dir.path()).await;
    let pilot = mesh.pilot.as_mut().unwrap();
    pilot.signal(Signal::SIGTERM);
    assert!(pilot.wait_exit(Duration::from_secs(10)));
    mesh.spawn_pilot(
        "Kubernetes",
        &[("KUBECONFIG", api.kubeconfig.display().to_string())],
    );
    let metrics = format!("http://{}:15014/metrics", mesh.topology.pilot_ip());
    eventually(
        "both sidecars connected to the new, unsynced pilot",
        Duration::from_secs(30),
        || async {
            let text = mesh
                .http
                .get(&metrics)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let connected: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("pilot_xds "))?
                .trim()
                .parse()
                .ok()?;
            (connected >= 2.0).then_some(())
        },
    )
    .await;
    let ready = mesh
        .http
        .get(format!("{}/ready", mesh.pilot_http()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready before the registry synced");
    // While unsynced, the sidecars keep every cluster they had and keep routing.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        let active = mesh.active_clusters("client").await;
        assert!(
            active.contains("outbound|9080||reviews.default.svc.cluster.local"),
            "the client's clusters were taken away before the registry synced"
        );
    }
    assert_eq!(mesh.tally(10, "/", &[]).await.get("v1"), Some(&10));

    api.sync();
    eventually(
        "the recorded services in the client's Envoy",
        Duration::from_secs(30),
        || async {
            let active = mesh.active_clusters("client").await;
            active
                .contains("outbound|9080||ratings.default.svc.cluster.local")
                .then_some(())
        },
    )
    .await;
}
