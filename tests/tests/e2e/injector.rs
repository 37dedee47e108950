//! The real `sidecar-injector` over HTTPS, `meshctl kube-inject`, and the
//! real pilot-agent running rewritten probes.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use trireme_tests::injector::{Certs, Injector, review};
use trireme_tests::mesh::next_subnet;
use trireme_tests::process::Proc;
use trireme_tests::{bin, envoy, eventually};

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{
            "name": "web",
            "image": "web:1",
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        }]},
    })
}

fn patched(answer: &Value) -> Option<Value> {
    let patch = answer["response"]["patch"].as_str()?;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("base64 patch");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("JSON patch");
    let mut pod = pod();
    json_patch::patch(&mut pod, &patch).expect("patch applies");
    Some(pod)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

#[tokio::test]
async fn the_webhook_injects_over_https_in_v1_and_v1beta1() {
    let ip = format!("127.{}.9.1", next_subnet());
    let certs = Certs::for_ip(&ip);
    let injector = Injector::spawn(&ip, Some(&certs));
    injector.wait_ready().await;
    let client = certs.client();

    for version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
        let answer = review(&client, &injector.webhook(), version, &pod()).await;
        assert_eq!(answer["apiVersion"], version);
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["uid"], "4b1e3d62-8a3c-4b7c-9f25-1c2d3e4f5a6b");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let pod = patched(&answer).expect("a patch");
        assert_eq!(names(&pod["spec"]["containers"]), ["web", "istio-proxy"]);
        assert_eq!(names(&pod["spec"]["initContainers"]), ["istio-init"]);
        assert_eq!(
            pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"],
            "/app-health/web/readyz"
        );
        assert!(pod["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
    }

    // Opted out: admitted as it is.
    let mut opted_out = pod();
    opted_out["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
    let answer = review(
        &client,
        &injector.webhook(),
        "admission.k8s.io/v1",
        &opted_out,
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());

    // Malformed reviews: 400 with the reason; not JSON: 415.
    let bad = client
        .post(injector.webhook())
        .header("content-type", "application/json")
        .body(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":"pod"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.text().await.unwrap(),
        "request.object: missing or not an object\n"
    );
    let garbage = client
        .post(injector.webhook())
        .header("content-type", "application/json")
        .body(vec![0xff, 0x00, 0x7b])
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    assert!(
        garbage
            .text()
            .await
            .unwrap()
            .starts_with("AdmissionReview: ")
    );
    let form = client
        .post(injector.webhook())
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);

    // Only TLS, with the mounted certificate: plain HTTP and clients that do
    // not trust its CA get nowhere.
    let plain = reqwest::Client::new()
        .post(format!("http://{ip}:8443/inject"))
        .json(&json!({}))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let stranger = Certs::for_ip(&ip).client();
    assert!(
        stranger
            .post(injector.webhook())
            .json(&json!({}))
            .send()
            .await
            .is_err()
    );

    // Still serving after all that, and it counted.
    let answer = review(&client, &injector.webhook(), "admission.k8s.io/v1", &pod()).await;
    assert!(patched(&answer).is_some());
    let metrics = injector.metrics().await;
    for line in [
        "sidecar_injection_success_total 3",
        "sidecar_injection_requests_total 6",
        "sidecar_injection_failure_total{reason=\"malformed\"} 2",
        "sidecar_injection_skip_total{reason=\"annotation sidecar.istio.io/inject\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn it_is_ready_only_with_its_certificate_and_reloads_it_in_place() {
    let ip = format!("127.{}.9.1", next_subnet());
    let mut injector = Injector::spawn(&ip, None);
    let http = reqwest::Client::new();
    // Up, but not ready: no certificate yet (Citadel writes it later).
    let status = eventually("monitoring port", Duration::from_secs(20), || async {
        Some(
            http.get(injector.monitoring("/ready"))
                .send()
                .await
                .ok()?
                .status(),
        )
    })
    .await;
    assert_eq!(status, 503);
    let probe = |path: &std::path::Path| {
        Command::new(bin("sidecar-injector"))
            .args(["probe", "--probe-path"])
            .arg(path)
            .args(["--interval", "2s"])
            .status()
            .unwrap()
            .success()
    };
    // Alive all the same: waiting for a certificate is no reason to be restarted.
    eventually("health file", Duration::from_secs(5), || async {
        injector.path("health").exists().then_some(())
    })
    .await;
    assert!(probe(&injector.path("health")));
    assert!(!probe(&injector.path("no-such-file")));

    let first = Certs::for_ip(&ip);
    first.write(&injector.path("certs"));
    injector.wait_ready().await;
    let answer = review(
        &first.client(),
        &injector.webhook(),
        "admission.k8s.io/v1",
        &pod(),
    )
    .await;
    assert!(patched(&answer).is_some());

    // A new certificate from another CA: new connections get it, with no restart.
    let pid = injector.proc.pid();
    let second = Certs::for_ip(&ip);
    second.write(&injector.path("certs"));
    eventually(
        "the new certificate served",
        Duration::from_secs(10),
        || async {
            let client = second.client();
            client
                .post(injector.webhook())
                .json(&json!({}))
                .send()
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    assert!(
        first
            .client()
            .post(injector.webhook())
            .json(&json!({}))
            .send()
            .await
            .is_err()
    );
    assert_eq!(injector.proc.pid(), pid);

    // SIGTERM: it stops serving and exits, its health file gone.
    injector.proc.signal(Signal::SIGTERM);
    assert!(
        injector.proc.wait_exit(Duration::from_secs(10)),
        "still running after SIGTERM"
    );
    assert!(!injector.path("health").exists());
}

#[tokio::test]
async fn config_edits_apply_without_a_restart_and_a_bad_one_changes_nothing() {
    let ip = format!("127.{}.9.1", next_subnet());
    let certs = Certs::for_ip(&ip);
    let injector = Injector::spawn(&ip, Some(&certs));
    injector.wait_ready().await;
    let client = certs.client();
    let config = injector.path("inject/config");
    let default = injector::config::DEFAULT_INJECT_CONFIG;

    std::fs::write(
        &config,
        default.replace("policy: enabled", "policy: disabled"),
    )
    .unwrap();
    injector
        .wait_review(&client, &pod(), |a| a["response"].get("patch").is_none())
        .await;
    let mut opted_in = pod();
    opted_in["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "true"});
    let answer = review(
        &client,
        &injector.webhook(),
        "admission.k8s.io/v1",
        &opted_in,
    )
    .await;
    assert!(
        answer["response"]["patch"].is_string(),
        "opt-in under policy disabled"
    );

    std::fs::write(&config, "policy: enabled\ntemplate: '{{ if }}'\n").unwrap();
    eventually(
        "the reload error counted",
        Duration::from_secs(10),
        || async {
            injector
                .metrics()
                .await
                .contains("sidecar_injector_config_reload_errors_total 1")
                .then_some(())
        },
    )
    .await;
    let answer = review(&client, &injector.webhook(), "admission.k8s.io/v1", &pod()).await;
    assert!(
        answer["response"].get("patch").is_none(),
        "the bad config was taken"
    );
}

#[test]
fn meshctl_kube_inject_reads_files_and_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("app.yaml");
    std::fs::write(
        &input,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: web:1}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
    )
    .unwrap();
    let out = dir.path().join("out.yaml");
    let status = Command::new(bin("meshctl"))
        .args(["kube-inject", "-f"])
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let from_file = std::fs::read_to_string(&out).unwrap();
    assert!(from_file.contains("name: istio-proxy"), "{from_file}");
    assert!(from_file.contains("kind: Service"));

    let mut child = Command::new(bin("meshctl"))
        .args(["kube-inject", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(std::fs::read(&input).unwrap().as_slice())
        .unwrap();
    let piped = child.wait_with_output().unwrap();
    assert!(piped.status.success());
    assert_eq!(String::from_utf8(piped.stdout).unwrap(), from_file);

    // Injected output injected again: the same.
    let again = Command::new(bin("meshctl"))
        .args(["kube-inject", "-f"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), from_file);

    std::fs::write(
        &input,
        "kind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n",
    )
    .unwrap();
    let bad = Command::new(bin("meshctl"))
        .args(["kube-inject", "-f"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(
        stderr.contains("document 1 (Pod/p): spec.containers: expected a list"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_agent_runs_the_apps_rewritten_probes() {
    let subnet = next_subnet();
    let pod_ip = format!("127.{subnet}.9.2");
    let dir = tempfile::tempdir().unwrap();
    let app_addr = format!("{pod_ip}:9080");
    let mut app = Proc::spawn(
        "app",
        &bin("echo"),
        &[
            "--listen".into(),
            app_addr.clone(),
            "--service".into(),
            "app".into(),
        ],
        &[],
        &dir.path().join("app.log"),
    );
    eventually("app listening", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(&app_addr)
            .await
            .ok()
            .map(drop)
    })
    .await;
    // What the injector puts in the sidecar's environment for this container.
    let mut containers = vec![json!({
        "name": "app",
        "ports": [{"name": "http", "containerPort": 9080}],
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http", "httpHeaders": [{"name": "Host", "value": "app.local"}]}},
        "readinessProbe": {"tcpSocket": {"port": 9080}},
    })];
    let probers = serde_json::to_value(injector::probe::rewrite(&mut containers, 15020)).unwrap();
    assert_eq!(
        containers[0]["livenessProbe"]["httpGet"]["path"],
        "/app-health/app/livez"
    );
    let args: Vec<String> = [
        "proxy",
        "sidecar",
        "--discoveryAddress",
        &format!("127.{subnet}.9.9:15010"),
        "--binaryPath",
        &envoy().display().to_string(),
        "--configPath",
        &dir.path().display().to_string(),
        "--concurrency",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _agent = Proc::spawn(
        "agent",
        &bin("pilot-agent"),
        &args,
        &[
            ("INSTANCE_IP", pod_ip.clone()),
            ("POD_NAME", "app".into()),
            ("ISTIO_META_INTERCEPTION_MODE", "NONE".into()),
            ("ISTIO_KUBE_APP_PROBERS", probers.to_string()),
        ],
        &dir.path().join("agent.log"),
    );
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("http://{pod_ip}:15020{path}");
        let http = http.clone();
        async move { http.get(url).send().await.ok().map(|r| r.status().as_u16()) }
    };
    eventually(
        "livez 200 while the app answers",
        Duration::from_secs(20),
        || async { (get("/app-health/app/livez").await? == 200).then_some(()) },
    )
    .await;
    assert_eq!(get("/app-health/app/readyz").await, Some(200));
    assert_eq!(get("/app-health/app/startupz").await, Some(404));

    app.kill_now();
    assert_eq!(get("/app-health/app/livez").await, Some(503));
    assert_eq!(get("/app-health/app/readyz").await, Some(503));
}
