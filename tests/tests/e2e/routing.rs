//! VirtualService routing as real Envoy carries it out.

use std::time::{Duration, Instant};

use trireme_tests::eventually;
use trireme_tests::mesh::Mesh;

const SPLIT_80_20: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
"#;

/// 400 requests at 80/20: v1's share has a standard deviation of 2 points, so
/// 70–90% holds with overwhelming probability and a wrong split cannot pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_and_header_match() {
    let mesh = Mesh::start(&["v1", "v2"], &[("vs.yaml", SPLIT_80_20)]).await;
    let counts = mesh.tally(400, "/", &[]).await;
    let v1 = counts.get("v1").copied().unwrap_or(0);
    let v2 = counts.get("v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 400, "every request answered: {counts:?}");
    assert!(
        (280..=360).contains(&v1),
        "v1 share outside 70–90%: {counts:?}"
    );

    let jason = mesh.tally(50, "/", &[("end-user", "jason")]).await;
    assert_eq!(
        jason.get("v2"),
        Some(&50),
        "end-user: jason goes to v2: {jason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_applies_to_its_share() {
    let vs = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - fault:
      abort:
        httpStatus: 418
        percentage: {value: 50}
    route:
    - destination: {host: reviews, subset: v1}
"#;
    let mesh = Mesh::start(&["v1"], &[("vs.yaml", vs)]).await;
    let counts = mesh.tally(400, "/", &[]).await;
    let aborted = counts.get("status 418").copied().unwrap_or(0);
    let passed = counts.get("v1").copied().unwrap_or(0);
    assert_eq!(aborted + passed, 400, "{counts:?}");
    // Binomial(400, 0.5): standard deviation 10, so 150–250 is five deviations wide.
    assert!(
        (150..=250).contains(&aborted),
        "abort share far from 50%: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fires_and_delay_is_injected() {
    let vs = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /delayed}
    fault:
      delay:
        fixedDelay: 300ms
        percentage: {value: 100}
    route:
    - destination: {host: reviews, subset: v1}
  - timeout: 500ms
    route:
    - destination: {host: reviews, subset: v1}
"#;
    let mesh = Mesh::start(&["v1"], &[("vs.yaml", vs)]).await;
    let started = Instant::now();
    let (status, _) = mesh.call("/delay/3000", &[]).await;
    let took = started.elapsed();
    assert_eq!(status, 504, "upstream timeout");
    assert!(
        took < Duration::from_millis(2500),
        "timeout fired after {took:?}, expected ~500ms"
    );
    assert_eq!(mesh.call("/delay/10", &[]).await.0, 200);

    let started = Instant::now();
    assert_eq!(mesh.call("/delayed", &[]).await.0, 200);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(290),
        "delay fault not applied: answered in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_redirect_and_headers() {
    let vs = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {exact: /old}
    redirect: {uri: /new, redirectCode: 302}
  - match:
    - uri: {prefix: /api/v1}
      method: {exact: GET}
    rewrite: {uri: /internal}
    headers:
      request:
        set: {x-routed-by: trireme}
    route:
    - destination: {host: reviews, subset: v1}
  - match:
    - uri: {regex: "^/re/[0-9]+$"}
    route:
    - destination: {host: reviews, subset: v1}
"#;
    let mesh = Mesh::start(&["v1"], &[("vs.yaml", vs)]).await;
    let r = mesh
        .client
        .get("http://reviews:9080/old")
        .send()
        .await
        .unwrap();
    // reqwest follows redirects; the final path proves Envoy redirected to /new.
    assert_eq!(r.url().path(), "/new");

    let body: serde_json::Value = mesh
        .client
        .get("http://reviews:9080/api/v1/items")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["path"], "/internal/items");
    assert_eq!(body["headers"]["x-routed-by"], "trireme");

    assert_eq!(mesh.call("/re/42", &[]).await.0, 200);
    assert_eq!(mesh.call("/re/abc", &[]).await.0, 404, "no route matches");
}

/// Editing the VirtualService file moves traffic and shows in Envoy's config_dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_virtual_service_reaches_envoy() {
    let mesh = Mesh::start(&["v1", "v2"], &[("vs.yaml", SPLIT_80_20)]).await;
    let all_v2 = SPLIT_80_20
        .replace("weight: 80", "weight: 0")
        .replace("weight: 20", "weight: 100");
    let started = Instant::now();
    mesh.write_config("vs.yaml", &all_v2);
    eventually(
        "client sidecar to route everything to v2",
        Duration::from_secs(10),
        || async {
            let routes = mesh.routes_dump("client").await;
            (routes.contains("outbound|9080|v2|reviews")
                && !routes.contains("outbound|9080|v1|reviews"))
            .then_some(())
        },
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "edit took {took:?} to reach Envoy"
    );
    let counts = mesh.tally(50, "/", &[]).await;
    assert_eq!(counts.get("v2"), Some(&50), "{counts:?}");
}

/// A mirrored request reaches the mirror's app; a CORS preflight is answered by Envoy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_and_cors() {
    let vs = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
    mirror: {host: reviews, subset: v2}
    mirrorPercent: 100
    corsPolicy:
      allowOrigin: [https://bookinfo.example.com]
      allowMethods: [GET, POST]
      maxAge: 1h
"#;
    let mesh = Mesh::start(&["v1", "v2"], &[("vs.yaml", vs)]).await;
    let counts = mesh.tally(10, "/", &[]).await;
    assert_eq!(counts.get("v1"), Some(&10), "{counts:?}");
    let v2_app = mesh.pod("reviews-v2").app_addr.unwrap();
    let mirrored = eventually(
        "mirrored requests at v2",
        Duration::from_secs(10),
        || async {
            let body: serde_json::Value = mesh
                .http
                .get(format!("http://{v2_app}/requests"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let n = body["requests"].as_u64()?;
            (n >= 10).then_some(n)
        },
    )
    .await;
    assert!(mirrored >= 10);

    let preflight = mesh
        .client
        .request(reqwest::Method::OPTIONS, "http://reviews:9080/")
        .header("origin", "https://bookinfo.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    let allowed = preflight
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(allowed.as_deref(), Some("https://bookinfo.example.com"));
    let other = mesh
        .client
        .get("http://reviews:9080/")
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
