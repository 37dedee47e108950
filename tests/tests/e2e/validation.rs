//! Bad config is refused with a precise error; Envoy keeps the last good config.

use std::time::Duration;

use trireme_tests::eventually;
use trireme_tests::mesh::Mesh;

const ALL_V1: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_virtual_services_are_rejected_and_last_good_kept() {
    let mut mesh = Mesh::start(&["v1", "v2"], &[("vs.yaml", ALL_V1)]).await;
    let cases = [
        (
            ALL_V1.replace("subset: v1}", "subset: v1}\n      wieght: 100"),
            "spec.http[0].route[0].wieght",
            "unknown field",
        ),
        (
            ALL_V1.replace("subset: v1}", "subset: v1}\n      weight: 60\n    - destination: {host: reviews, subset: v2}\n      weight: 30"),
            "spec.http[0].route",
            "add up to 90",
        ),
        (
            ALL_V1.replace("  - route:", "  - match:\n    - uri: {regex: \"/(unclosed\"}\n    route:"),
            "spec.http[0].match[0].uri.regex",
            "invalid regex",
        ),
        (
            ALL_V1.replace("  - route:", "  - match:\n    - uri: {regex: \"/[a-z]{1000}\"}\n    route:"),
            "spec.http[0].match[0].uri.regex",
            "over the 100 Envoy accepts",
        ),
        (
            ALL_V1.replace("  - route:", "  - timeout: 99999999999999999999s\n    route:"),
            "spec.http[0].timeout",
            "longer than the maximum",
        ),
    ];
    for (yaml, field, message) in cases {
        mesh.write_config("vs.yaml", &yaml);
        let rejection = eventually(
            &format!("rejection of {field}"),
            Duration::from_secs(10),
            || async {
                let configz = mesh.pilot_json("/debug/configz").await;
                configz["rejected"]
                    .as_array()?
                    .iter()
                    .find(|r| {
                        r["field"] == field
                            && r["message"].as_str().is_some_and(|m| m.contains(message))
                    })
                    .cloned()
            },
        )
        .await;
        assert!(
            rejection["file"].as_str().unwrap().ends_with("vs.yaml"),
            "{rejection}"
        );
        assert_eq!(rejection["object"], "VirtualService default/reviews");
        assert!(
            rejection["message"].as_str().unwrap().contains(message),
            "{rejection}"
        );
        // The last good VirtualService still routes everything to v1.
        let counts = mesh.tally(20, "/", &[]).await;
        assert_eq!(counts.get("v1"), Some(&20), "{counts:?}");
    }

    // A file that is not YAML at all keeps its last good objects too.
    mesh.write_config("vs.yaml", "spec: [unclosed\n");
    eventually(
        "the YAML syntax error on /debug/configz",
        Duration::from_secs(10),
        || async {
            let configz = mesh.pilot_json("/debug/configz").await;
            configz["rejected"]
                .as_array()?
                .iter()
                .find(|r| {
                    r["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("invalid YAML"))
                        && r["file"].as_str().is_some_and(|f| f.ends_with("vs.yaml"))
                })
                .map(|_| ())
        },
    )
    .await;
    let counts = mesh.tally(20, "/", &[]).await;
    assert_eq!(counts.get("v1"), Some(&20), "{counts:?}");

    // A restart with the oversized timeout on disk starts and serves: the file
    // that once crashed Pilot on every start is now one rejected object.
    mesh.write_config(
        "vs.yaml",
        &ALL_V1.replace(
            "  - route:",
            "  - timeout: 99999999999999999999s\n    route:",
        ),
    );
    let pilot = mesh.pilot.as_mut().unwrap();
    pilot.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(pilot.wait_exit(Duration::from_secs(10)));
    mesh.start_pilot().await;
    let configz = mesh.pilot_json("/debug/configz").await;
    let rejected = configz["rejected"].as_array().cloned().unwrap_or_default();
    assert!(
        rejected
            .iter()
            .any(|r| r["field"] == "spec.http[0].timeout"),
        "{configz}"
    );
}

/// A route Envoy refuses (an RE2 program of 125 instructions, over Envoy's 100,
/// which Pilot's lower bound of 43 lets through) is NACKed by the one proxy it
/// reaches; that proxy keeps serving, the NACK shows in /debug/syncz naming
/// the VirtualService, and other proxies keep getting pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_is_recorded_and_does_not_block_other_proxies() {
    let mesh = Mesh::start(&["v1", "v2"], &[("vs.yaml", ALL_V1)]).await;
    let huge_regex = ALL_V1.replace(
        "  - route:",
        "  - match:\n    - sourceLabels: {app: client}\n      uri: {regex: \"/[a-z0-9_]{40}\"}\n    route:\n    - destination: {host: reviews, subset: v2}\n  - route:",
    );
    mesh.write_config("vs.yaml", &huge_regex);
    let (nack, objects) = eventually(
        "client proxy NACK in syncz",
        Duration::from_secs(10),
        || async {
            let rds = mesh.sync_state("client", "rds").await?;
            let nack = rds["nack"].as_str()?.to_string();
            Some((nack, rds["nack_objects"].clone()))
        },
    )
    .await;
    assert_eq!(
        objects,
        serde_json::json!(["VirtualService default/reviews"]),
        "the NACK names the object to fix: {nack}"
    );
    assert!(
        nack.contains("regex") || nack.contains("program size"),
        "{nack}"
    );
    let counts = mesh.tally(10, "/", &[]).await;
    assert_eq!(
        counts.get("v1"),
        Some(&10),
        "NACKing proxy keeps its last good routes: {counts:?}"
    );

    // A later change still reaches the other proxies.
    let before = mesh.sync_state("reviews-v1", "cds").await.unwrap()["acked_version"].clone();
    mesh.write_config(
        "dr-policy.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: other, namespace: default}\nspec:\n  host: other.example.com\n",
    );
    mesh.write_config(
        "se.yaml",
        "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {name: other, namespace: default}\nspec:\n  hosts: [other.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n",
    );
    eventually(
        "reviews-v1 to ACK a new CDS version",
        Duration::from_secs(10),
        || async {
            let cds = mesh.sync_state("reviews-v1", "cds").await?;
            (cds["acked_version"] != before && cds["acked_version"] == cds["sent_version"])
                .then_some(())
        },
    )
    .await;
}
