//! Mutual TLS between real Envoys with Citadel identities served by each
//! sidecar's node agent over SDS: peer authentication (STRICT, PERMISSIVE),
//! the caller's identity reaching the application, AuthorizationPolicy
//! enforced by Envoy's RBAC filter, and certificates rotating in place.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use trireme_tests::eventually;
use trireme_tests::mesh::{Mesh, Options};
use trireme_tests::topology::{REVIEWS_PORT, Topology};

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

fn mesh_policy(mode: &str) -> String {
    format!(
        "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {{name: default}}\nspec:\n  peers:\n  - mtls: {{mode: {mode}}}\n"
    )
}

/// Clients of reviews originate mutual TLS, as Istio's `mtls.enabled` did.
const ISTIO_MUTUAL: &str = "  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n";

async fn start(versions: &[&str], config: &[(&str, &str)], ttl: &'static str) -> Mesh {
    // The subsets do not depend on the addresses.
    let dr = Topology::reviews(0, versions).destination_rule_yaml(ISTIO_MUTUAL);
    let mut config = config.to_vec();
    config.push(("dr.yaml", &dr));
    Mesh::start_with(
        versions,
        &config,
        Options {
            citadel: Some(ttl),
            ..Default::default()
        },
    )
    .await
}

/// A request straight to reviews-v1's sidecar, as a workload without one
/// would send it: the status and body, or the connection error.
async fn plaintext(mesh: &Mesh, headers: &[(&str, &str)]) -> Result<(u16, String), String> {
    let url = format!("http://{}:{REVIEWS_PORT}/", mesh.pod("reviews-v1").ip);
    let mut request = mesh.http.get(&url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

/// The client certificate reviews' application was told of (Envoy's XFCC header).
fn xfcc(body: &str) -> String {
    let body: Value = serde_json::from_str(body).unwrap_or_default();
    body["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_admits_mesh_clients_only_permissive_admits_both() {
    let mesh = start(&["v1"], &[("authn.yaml", &mesh_policy("STRICT"))], "").await;
    let (status, body) = eventually("a mutual-TLS request", Duration::from_secs(20), || async {
        let (status, body) = mesh.call_from("client", "/", &[]).await;
        (status == 200 && xfcc(&body).contains("URI=")).then_some((status, body))
    })
    .await;
    assert_eq!(status, 200);
    assert!(
        xfcc(&body).contains(&format!("URI={CLIENT_ID}")),
        "the server sees the client's SPIFFE principal: {body}"
    );
    let refused = plaintext(&mesh, &[]).await;
    assert!(refused.is_err(), "STRICT refuses plaintext: {refused:?}");

    mesh.write_config("authn.yaml", &mesh_policy("PERMISSIVE"));
    eventually("plaintext admitted", Duration::from_secs(20), || async {
        plaintext(&mesh, &[]).await.ok().filter(|(s, _)| *s == 200)
    })
    .await;
    // A plaintext caller cannot claim an identity: the header is dropped.
    let forged = "By=spiffe://cluster.local/ns/default/sa/reviews;URI=spiffe://cluster.local/ns/default/sa/admin";
    let (status, body) = plaintext(&mesh, &[("x-forwarded-client-cert", forged)])
        .await
        .expect("plaintext under PERMISSIVE");
    assert_eq!(status, 200);
    assert!(
        !body.contains("sa/admin"),
        "a forged XFCC reached the application: {body}"
    );
    // Mesh clients still arrive over mutual TLS.
    let (status, body) = mesh.call_from("client", "/", &[]).await;
    assert_eq!(status, 200);
    assert!(xfcc(&body).contains(&format!("URI={CLIENT_ID}")), "{body}");
}

const ONLY_CLIENT: &str = "apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from:
    - source: {principals: [cluster.local/ns/default/sa/client]}
  - from:
    - source: {principals: [\"*\"]}
    to:
    - operation: {methods: [GET], paths: [/health*]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policy_admits_the_named_principal_only() {
    let config = [
        ("authn.yaml", mesh_policy("STRICT")),
        ("authz.yaml", ONLY_CLIENT.to_string()),
    ];
    let config: Vec<(&str, &str)> = config.iter().map(|(f, y)| (*f, y.as_str())).collect();
    // reviews-v2's sidecar calls as the `reviews` identity.
    let mesh = start(&["v1", "v2"], &config, "").await;
    eventually("the client admitted", Duration::from_secs(20), || async {
        let (status, _) = mesh.call_from("client", "/private", &[]).await;
        (status == 200).then_some(())
    })
    .await;
    let (status, body) = mesh.call_from("reviews-v2", "/private", &[]).await;
    assert_eq!(status, 403, "another identity is denied: {body}");
    assert!(body.contains("RBAC"), "{body}");
    let (status, body) = mesh.call_from("reviews-v2", "/health/live", &[]).await;
    assert_eq!(status, 200, "any mesh identity may GET /health*: {body}");
    // Dot segments do not lead around the rule (HTTP clients would resolve
    // them before sending: this one sends the path as written).
    let status = raw_get(&mesh, "reviews-v2", "/health/../private").await;
    assert_eq!(status, 403, "/health/../private is /private");

    // Without the policy, the same caller passes.
    mesh.write_config("authz.yaml", "");
    eventually("the policy gone", Duration::from_secs(20), || async {
        let (status, _) = mesh.call_from("reviews-v2", "/private", &[]).await;
        (status == 200).then_some(())
    })
    .await;
}

/// A GET with `path` exactly as written, through `pod`'s sidecar: the status.
async fn raw_get(mesh: &Mesh, pod: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = format!(
        "{}:{}",
        mesh.pod(pod).ip,
        trireme_tests::mesh::PROXY_HTTP_PORT
    );
    let mut stream = tokio::net::TcpStream::connect(&proxy).await.expect("proxy");
    let request = format!(
        "GET http://reviews.default.svc.cluster.local:{REVIEWS_PORT}{path} HTTP/1.1\r\nHost: reviews.default.svc.cluster.local:{REVIEWS_PORT}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

/// The serial numbers of the certificates one Envoy holds, from its admin `/certs`.
async fn serials(mesh: &Mesh, pod: &str) -> BTreeSet<String> {
    let url = format!("http://{}:15000/certs", mesh.pod(pod).ip);
    let Ok(response) = mesh.http.get(&url).send().await else {
        return BTreeSet::new();
    };
    let certs: Value = response.json().await.unwrap_or_default();
    certs["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["serial_number"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_in_place_under_traffic() {
    // Five-second certificates, renewed after two to three seconds.
    let mesh = start(&["v1"], &[("authn.yaml", &mesh_policy("STRICT"))], "5s").await;
    eventually("a mutual-TLS request", Duration::from_secs(20), || async {
        let (status, _) = mesh.call_from("client", "/", &[]).await;
        (status == 200).then_some(())
    })
    .await;
    let envoy = |pod: &str| mesh.agent(pod).children();
    let envoys = (envoy("client"), envoy("reviews-v1"));
    assert!(!envoys.0.is_empty() && !envoys.1.is_empty(), "{envoys:?}");

    let mut seen = (BTreeSet::new(), BTreeSet::new());
    let (mut sent, mut failed) = (0, Vec::new());
    let until = Instant::now() + Duration::from_secs(12);
    let mut next_sample = Instant::now();
    // Bounded: one request at a time for twelve seconds.
    while Instant::now() < until {
        let (status, body) = mesh.call_from("client", "/", &[]).await;
        sent += 1;
        if status != 200 {
            failed.push(format!("{status}: {body}"));
        }
        if Instant::now() >= next_sample {
            seen.0.extend(serials(&mesh, "client").await);
            seen.1.extend(serials(&mesh, "reviews-v1").await);
            next_sample = Instant::now() + Duration::from_millis(500);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {failed:?}",
        failed.len()
    );
    assert!(
        seen.0.len() >= 3 && seen.1.len() >= 3,
        "new certificates over time (client {:?}, server {:?})",
        seen.0,
        seen.1
    );
    assert_eq!(
        (envoy("client"), envoy("reviews-v1")),
        envoys,
        "the same Envoy processes throughout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_reach_pilot_over_mutual_tls_on_15011() {
    let mesh = Mesh::start_with(
        &["v1"],
        &[],
        Options {
            citadel: Some(""),
            control_plane_mtls: true,
            ..Default::default()
        },
    )
    .await;
    // The sidecars got their config (they are ready), over TLS.
    let (status, body) = mesh.call_from("client", "/", &[]).await;
    assert_eq!(status, 200, "{body}");
    for pod in ["client", "reviews-v1"] {
        let handshakes = mesh.agent_stat(pod, "cluster.xds-grpc.ssl.handshake").await;
        assert!(handshakes >= 1, "{pod} reached Pilot over TLS");
    }
    // Without a certificate from the mesh, 15011 serves nothing.
    let pilot = format!("{}:15011", mesh.topology.pilot_ip());
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{pilot}"))
        .unwrap()
        .connect()
        .await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(channel) => {
            let mut ads = api::xds::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient::new(channel);
            let request = api::xds::DiscoveryRequest::default();
            ads.stream_aggregated_resources(tokio_stream::once(request))
                .await
                .is_err()
        }
    };
    assert!(refused, "a plaintext client on 15011 was served");
}
