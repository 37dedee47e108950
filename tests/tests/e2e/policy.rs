//! Mixer policy enforced by real Envoy: Pilot's ext_authz filter on inbound
//! ports, mixer-policy processes answering it, real Redis for shared quota.

use std::time::Duration;

use trireme_tests::eventually;
use trireme_tests::mesh::{Mesh, Options, POLICY_MESH};
use trireme_tests::mixer::DENY_BLOCKED_USER;

fn policy(servers: usize, mesh: &str) -> Options {
    Options {
        mesh: format!("{POLICY_MESH}{mesh}"),
        policy_servers: servers,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denier_rule_on_a_header_returns_403() {
    let mesh = Mesh::start_with(&["v1"], &[("mixer.yaml", DENY_BLOCKED_USER)], policy(1, "")).await;
    let (status, body) = mesh
        .call_from("client", "/", &[("x-user", "blocked")])
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("Not allowed"),
        "the status message is the body: {body}"
    );
    let (status, body) = mesh.call_from("client", "/", &[("x-user", "jason")]).await;
    assert_eq!(status, 200, "{body}");

    // The rule goes away: the same request passes, with no restart.
    mesh.write_config("mixer.yaml", "");
    eventually("the deny rule is gone", Duration::from_secs(10), || async {
        let (status, _) = mesh
            .call_from("client", "/", &[("x-user", "blocked")])
            .await;
        (status == 200).then_some(())
    })
    .await;
}

/// The whitelist names the client pod's address: the client is admitted and
/// another pod (reviews-v1 calling reviews) is refused. Written after start,
/// so Pilot adds the filter and mixer-policy loads the rule while running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listchecker_whitelist_by_source_ip() {
    let mesh = Mesh::start_with(&["v1"], &[], policy(1, "")).await;
    let client_ip = mesh.pod("client").ip;
    let list = format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: callers, namespace: istio-system}}
spec:
  compiledAdapter: listchecker
  params:
    entryType: IP_ADDRESSES
    overrides: ["{client_ip}/32"]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: sourceip, namespace: istio-system}}
spec:
  compiledTemplate: listentry
  params:
    value: source.ip | ip("0.0.0.0")
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: whitelist, namespace: istio-system}}
spec:
  actions:
  - handler: callers
    instances: [sourceip]
"#
    );
    mesh.write_config("mixer.yaml", &list);
    let body = eventually("reviews-v1 is refused", Duration::from_secs(15), || async {
        let (status, body) = mesh.call_from("reviews-v1", "/", &[]).await;
        (status == 403).then_some(body)
    })
    .await;
    assert!(body.contains("is not whitelisted"), "{body}");
    for _ in 0..5 {
        let (status, body) = mesh.call_from("client", "/", &[]).await;
        assert_eq!(status, 200, "the whitelisted client is admitted: {body}");
    }
}

fn quota_config(handler: &str, instance: &str) -> String {
    format!(
        r#"
{handler}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: {instance}, namespace: istio-system}}
spec:
  compiledTemplate: quota
  params:
    dimensions:
      destination: destination.service.name | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: quota, namespace: istio-system}}
spec:
  actions:
  - handler: limit
    instances: [{instance}]
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpec
metadata: {{name: request-count, namespace: istio-system}}
spec:
  rules:
  - quotas:
    - {{charge: 1, quota: {instance}}}
---
apiVersion: config.istio.io/v1alpha2
kind: QuotaSpecBinding
metadata: {{name: request-count, namespace: istio-system}}
spec:
  quotaSpecs:
  - {{name: request-count, namespace: istio-system}}
  services:
  - {{name: reviews, namespace: default}}
"#
    )
}

/// Counts 200s and 429s over `n` requests from the client.
async fn admitted(mesh: &Mesh, n: usize) -> (usize, usize) {
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..n {
        match mesh.call_from("client", "/", &[]).await {
            (200, _) => ok += 1,
            (429, _) => limited += 1,
            (s, body) => panic!("unexpected {s}: {body}"),
        }
    }
    (ok, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memquota_refuses_with_429_then_admits_after_the_window() {
    let handler = r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: limit, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - {name: requestcount.instance.istio-system, maxAmount: 3, validDuration: 5s}"#;
    let config = quota_config(handler, "requestcount");
    let mesh = Mesh::start_with(&["v1"], &[("quota.yaml", &config)], policy(1, "")).await;
    assert_eq!(
        admitted(&mesh, 5).await,
        (3, 2),
        "3 admitted in the window, then 429"
    );
    eventually("the window passes", Duration::from_secs(10), || async {
        (mesh.call_from("client", "/", &[]).await.0 == 200).then_some(())
    })
    .await;
}

/// Two mixer-policy processes behind one Service, one Redis: Envoy spreads
/// the checks over both and the quota still holds for the sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redisquota_is_shared_by_two_policy_servers() {
    let redis = std::env::var("TRIREME_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
    // Unique per run, so concurrent runs sharing a Redis do not share a count.
    let instance = format!(
        "requestcount{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let handler = format!(
        r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: limit, namespace: istio-system}}
spec:
  compiledAdapter: redisquota
  params:
    redisServerUrl: {redis}
    connectionPoolSize: 4
    quotas:
    - {{name: {instance}.instance.istio-system, maxAmount: 4, validDuration: 3s, bucketDuration: 500ms, rateLimitAlgorithm: ROLLING_WINDOW}}"#
    );
    let config = quota_config(&handler, &instance);
    let mesh = Mesh::start_with(&["v1"], &[("quota.yaml", &config)], policy(2, "")).await;
    assert_eq!(
        admitted(&mesh, 8).await,
        (4, 4),
        "one quota across both servers"
    );
    let served: Vec<String> =
        futures::future::join_all((0..2).map(|i| mesh.policy_metrics(i))).await;
    for (i, m) in served.iter().enumerate() {
        assert!(
            m.contains(r#"mixer_quotas_total{api="ext_authz",code="ok"}"#),
            "mixer-policy {i} allocated some of the quota:\n{m}"
        );
    }
    eventually("the window rolls on", Duration::from_secs(8), || async {
        (mesh.call_from("client", "/", &[]).await.0 == 200).then_some(())
    })
    .await;
}

/// Starts v1 and v2 behind a deny rule with `mesh` lines and one Pod
/// annotation, checks the rule is enforced, kills mixer-policy, and shows
/// that v1 fails open and v2 fails closed: v1 answers, v2 gives 503 (an
/// outage, not a 403).
async fn outage(mesh: &str, annotated: &'static str, value: &'static str) -> Mesh {
    let mut mesh = Mesh::start_with(
        &["v1", "v2"],
        &[("mixer.yaml", DENY_BLOCKED_USER)],
        Options {
            annotations: vec![(annotated, "policy.istio.io/check", value)],
            ..policy(1, mesh)
        },
    )
    .await;
    assert_eq!(
        mesh.call_from("client", "/", &[("x-user", "blocked")])
            .await
            .0,
        403
    );
    mesh.kill_policy(0);
    let counts = mesh.tally(20, "/", &[]).await;
    assert!(
        counts.get("v1").is_some_and(|n| *n > 0),
        "fail-open v1 admits: {counts:?}"
    );
    assert_eq!(
        counts.get("v2"),
        None,
        "fail-closed v2 admits nothing: {counts:?}"
    );
    assert!(
        counts.get("status 503").is_some_and(|n| *n > 0),
        "{counts:?}"
    );
    mesh
}

/// Fail-closed mesh, v1 annotated `allow-on-error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_outage_fails_closed_except_where_annotated() {
    let mesh = outage("", "reviews-v1", "allow-on-error").await;
    let fail_open = mesh
        .agent_stat("reviews-v1", "ext_authz.failure_mode_allowed")
        .await;
    assert!(fail_open > 0, "Envoy counts each fail-open admission");
}

/// Fail-open mesh, v2 annotated `enable`: the reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_outage_fails_open_except_where_annotated() {
    outage("policyCheckFailOpen: true\n", "reviews-v2", "enable").await;
}

/// No rule can apply, or the Pod opts out: no filter, no cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_check_where_no_policy_can_apply() {
    let mesh = Mesh::start_with(
        &["v1", "v2"],
        &[],
        Options {
            annotations: vec![("reviews-v2", "policy.istio.io/check", "disable")],
            ..policy(1, "")
        },
    )
    .await;
    const FILTER: &str = "envoy.filters.http.ext_authz";
    assert!(
        !mesh.listeners_dump("reviews-v1").await.contains(FILTER),
        "no rule: no filter"
    );
    mesh.write_config("mixer.yaml", DENY_BLOCKED_USER);
    eventually(
        "reviews-v1 gets the filter",
        Duration::from_secs(10),
        || async {
            mesh.listeners_dump("reviews-v1")
                .await
                .contains(FILTER)
                .then_some(())
        },
    )
    .await;
    assert!(
        !mesh.listeners_dump("reviews-v2").await.contains(FILTER),
        "the disable annotation wins"
    );
    // mixer-policy has loaded the rule too (it may trail Pilot).
    eventually("the rule denies", Duration::from_secs(10), || async {
        let counts = mesh.tally(10, "/", &[("x-user", "blocked")]).await;
        (counts.contains_key("status 403") && !counts.contains_key("v1")).then_some(counts)
    })
    .await;
    let counts = mesh.tally(10, "/", &[("x-user", "blocked")]).await;
    assert!(counts.contains_key("v2"), "unchecked v2 admits: {counts:?}");
}

/// Rules on workloads, as kubernetesenv fills them in from the caller's Pod:
/// reviews-v1 may not call reviews, the client may.
const DENY_BY_WORKLOAD: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: kubernetesenv, namespace: istio-system}
spec:
  compiledAdapter: kubernetesenv
  params: {}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: attributes, namespace: istio-system}
spec:
  compiledTemplate: kubernetes
  params:
    source_uid: source.uid | ""
    source_ip: source.ip | ip("0.0.0.0")
  attributeBindings:
    source.workload.name: $out.source_workload_name | "unknown"
    source.labels: $out.source_labels | emptyStringMap()
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: kubeattrgenrulerule, namespace: istio-system}
spec:
  actions:
  - {handler: kubernetesenv, instances: [attributes]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyall, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: Not from that workload}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-reviews-to-reviews, namespace: istio-system}
spec:
  match: source.workload.name == "reviews-v1" && source.labels["app"] == "reviews"
  actions:
  - {handler: denyall, instances: [denyrequest]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_rules_match_the_callers_workload() {
    let mesh = Mesh::start_with(&["v1"], &[("mixer.yaml", DENY_BY_WORKLOAD)], policy(1, "")).await;
    let (status, body) = mesh.call_from("reviews-v1", "/", &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Not from that workload"), "{body}");
    let (status, body) = mesh.call_from("client", "/", &[]).await;
    assert_eq!(status, 200, "{body}");
}
