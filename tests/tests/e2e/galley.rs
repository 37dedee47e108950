//! Galley as real processes: its webhook over HTTPS, its MCP stream as a
//! raw sink sees it, and Pilot and Mixer taking their config from it while
//! real Envoy carries the traffic.

use std::time::Duration;

use api::mcp::v1alpha1::resource_source_client::ResourceSourceClient;
use api::mcp::v1alpha1::{RequestResources, Resources};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trireme_tests::eventually;
use trireme_tests::galley::{Galley, admission_review};
use trireme_tests::injector::Certs;
use trireme_tests::mesh::{Mesh, Options, POLICY_MESH, next_subnet};
use trireme_tests::mixer::DENY_BLOCKED_USER;

fn route_to(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: {subset}}}\n"
    )
}

const VIRTUAL_SERVICES: &str = "istio/networking/v1alpha3/virtualservices";

/// A Galley on its own, over a directory of its own.
async fn lone_galley(
    config: &[(&str, &str)],
    certs: Option<&Certs>,
) -> (tempfile::TempDir, Galley) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
    for (name, text) in config {
        std::fs::write(dir.path().join("config").join(name), text).expect("config");
    }
    let ip = format!("127.{}.0.50", next_subnet());
    let galley = Galley::start(&ip, &dir.path().join("config"), dir.path(), certs).await;
    (dir, galley)
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = client
        .post(url)
        .json(body)
        .send()
        .await
        .expect("webhook answers");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_allows_valid_config_and_denies_the_rest_with_the_reason() {
    let ip = format!("127.{}.0.51", next_subnet());
    let certs = Certs::for_ip(&ip);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
    // A handler and instance Galley serves: a rule naming them is valid.
    std::fs::write(dir.path().join("config/mixer.yaml"), DENY_BLOCKED_USER).expect("config");
    let galley = Galley::start(&ip, &dir.path().join("config"), dir.path(), Some(&certs)).await;
    let https = certs.client();
    let pilot = galley.webhook("/admitpilot");
    let mixer = galley.webhook("/admitmixer");

    let vs: Value = serde_yaml_value(&route_to("v1"));
    for version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
        let (status, answer) =
            post(&https, &pilot, &admission_review(version, "CREATE", &vs)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["apiVersion"], version);
        assert_eq!(
            answer["response"]["uid"],
            "7d5c1a3e-0d4e-4c4b-9d6e-2f5a8f0e1b2c"
        );
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
    }

    let mut bad = vs.clone();
    bad["spec"]["http"][0]["route"][0]["weight"] = json!(50);
    bad["spec"]["http"][0]["match"] = json!([{"uri": {"regex": "(v1"}}]);
    let (_, answer) = post(
        &https,
        &pilot,
        &admission_review("admission.k8s.io/v1", "UPDATE", &bad),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    // Every problem, each naming the object and the field.
    assert_eq!(
        message,
        "VirtualService default/reviews: spec.http[0].match[0].uri.regex: invalid regex \"(v1\": error: unclosed group; \
         VirtualService default/reviews: spec.http[0].route: weights add up to 50, not 100"
    );

    // Deleting is never refused.
    let (_, answer) = post(
        &https,
        &pilot,
        &admission_review("admission.k8s.io/v1", "DELETE", &bad),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    // Mixer's kinds are judged with the config Galley serves.
    let rule = |handler: &str| {
        json!({
            "apiVersion": "config.istio.io/v1alpha2", "kind": "rule",
            "metadata": {"name": "deny-mallory", "namespace": "istio-system"},
            "spec": {"match": "request.headers[\"x-user\"] == \"mallory\"",
                     "actions": [{"handler": handler, "instances": ["denyrequest"]}]},
        })
    };
    let (_, answer) = post(
        &https,
        &mixer,
        &admission_review("admission.k8s.io/v1beta1", "CREATE", &rule("denyall")),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let (_, answer) = post(
        &https,
        &mixer,
        &admission_review("admission.k8s.io/v1beta1", "CREATE", &rule("nosuch")),
    )
    .await;
    // A handler not served (yet) is a warning: `kubectl apply` of a file
    // with handler, instance and rule admits them faster than Galley sees
    // them stored. The sources refuse the rule if the handler never comes.
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert_eq!(
        answer["response"]["warnings"],
        json!([
            "rule istio-system/deny-mallory: spec.actions[0].handler: no valid handler named \"nosuch\""
        ])
    );
    let mut typo = rule("denyall");
    typo["spec"]["match"] = json!("request.headers[\"x-user\"] = \"mallory\"");
    let (_, answer) = post(
        &https,
        &mixer,
        &admission_review("admission.k8s.io/v1", "CREATE", &typo),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");

    // Not a review: 400 with the reason; not JSON: 415.
    let (status, answer) = post(&https, &pilot, &json!({"apiVersion": "v1", "kind": "Pod"})).await;
    assert_eq!(status, 400);
    assert!(
        answer
            .as_str()
            .unwrap_or_default()
            .starts_with("apiVersion: \"v1\" is not admission.k8s.io/v1"),
        "{answer}"
    );
    let r = https
        .post(&pilot)
        .body("hello")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 415);

    let metrics = galley.metrics().await;
    assert_eq!(
        trireme_tests::sum_metric(&metrics, "galley_validation_passed_total"),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        trireme_tests::sum_metric(&metrics, "galley_validation_failed_total"),
        2.0,
        "{metrics}"
    );
    // Plain HTTP is refused.
    let plain = reqwest::Client::new()
        .post(pilot.replace("https", "http"))
        .json(&vs)
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

fn serde_yaml_value(text: &str) -> Value {
    serde_yaml::from_str(text).expect("yaml")
}

/// A raw MCP sink: one stream, the requests it sends, the pushes it gets.
struct RawSink {
    tx: mpsc::Sender<RequestResources>,
    inbound: tonic::Streaming<Resources>,
}

impl RawSink {
    async fn open(address: &str, collections: &[&str]) -> RawSink {
        RawSink::try_open(address, collections)
            .await
            .expect("MCP connects")
    }

    async fn try_open(address: &str, collections: &[&str]) -> Option<RawSink> {
        let mut client = ResourceSourceClient::connect(format!("http://{address}"))
            .await
            .ok()?;
        let (tx, rx) = mpsc::channel(16);
        for c in collections {
            tx.send(RequestResources {
                collection: c.to_string(),
                ..Default::default()
            })
            .await
            .expect("send");
        }
        let inbound = client
            .establish_resource_stream(ReceiverStream::new(rx))
            .await
            .ok()?
            .into_inner();
        Some(RawSink { tx, inbound })
    }

    async fn next(&mut self) -> Result<Resources, tonic::Status> {
        let next = tokio::time::timeout(Duration::from_secs(10), self.inbound.message()).await;
        match next.expect("a push within 10 s") {
            Ok(Some(r)) => Ok(r),
            Ok(None) => panic!("stream ended"),
            Err(status) => Err(status),
        }
    }

    async fn ack(&self, push: &Resources) {
        let ack = RequestResources {
            collection: push.collection.clone(),
            response_nonce: push.nonce.clone(),
            ..Default::default()
        };
        self.tx.send(ack).await.expect("ack");
    }
}

fn names(push: &Resources) -> Vec<String> {
    push.resources
        .iter()
        .map(|r| r.metadata.as_ref().expect("metadata").name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_stream_follows_the_directory_and_never_serves_invalid_config() {
    let (dir, galley) = lone_galley(&[("vs.yaml", &route_to("v1"))], None).await;
    let mut sink = RawSink::open(
        &galley.address(),
        &[VIRTUAL_SERVICES, "istio/policy/v1beta1/rules"],
    )
    .await;
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(sink.next().await.expect("push"));
    }
    first.sort_by(|a, b| a.collection.cmp(&b.collection));
    let (vs, rules) = (&first[0], &first[1]);
    assert_eq!(rules.collection, "istio/policy/v1beta1/rules");
    assert!(rules.resources.is_empty());
    assert_eq!(names(vs), ["default/reviews"]);
    let resource = &vs.resources[0];
    let body = resource.body.as_ref().expect("body");
    assert_eq!(
        body.type_url,
        "type.googleapis.com/istio.networking.v1alpha3.VirtualService"
    );
    let spec =
        api::mcp::decode(api::mcp::collection(VIRTUAL_SERVICES).unwrap(), body).expect("decodes");
    assert_eq!(spec["http"][0]["route"][0]["destination"]["subset"], "v1");
    let version = resource.metadata.as_ref().unwrap().version.clone();
    assert!(!version.is_empty() && !vs.nonce.is_empty() && !vs.system_version_info.is_empty());
    sink.ack(rules).await;
    sink.ack(vs).await;

    // An edit is pushed on the open stream, with a new version.
    let config = dir.path().join("config");
    std::fs::write(config.join("vs.yaml"), route_to("v2")).expect("edit");
    let push = sink.next().await.expect("push");
    assert_eq!(push.collection, VIRTUAL_SERVICES);
    assert_ne!(
        push.resources[0].metadata.as_ref().unwrap().version,
        version
    );
    sink.ack(&push).await;

    // An invalid edit is refused at Galley: nothing is pushed, the last
    // good version stays, and the refusal is counted.
    std::fs::write(
        config.join("vs.yaml"),
        route_to("v3").replace("hosts: [reviews]", "hosts: []"),
    )
    .expect("edit");
    eventually("the refusal counted", Duration::from_secs(10), || async {
        (galley.metric("galley_runtime_rejected").await >= 1.0).then_some(())
    })
    .await;
    let quiet = tokio::time::timeout(Duration::from_millis(500), sink.inbound.message()).await;
    assert!(
        quiet.is_err(),
        "nothing pushed for an invalid edit: {quiet:?}"
    );
    // A new object alongside is pushed, and the old one is still served.
    std::fs::write(
        config.join("more.yaml"),
        route_to("v1")
            .replace("name: reviews", "name: ratings")
            .replace("[reviews]", "[ratings]")
            .replace("host: reviews", "host: ratings"),
    )
    .expect("add");
    let push = sink.next().await.expect("push");
    assert_eq!(names(&push), ["default/ratings", "default/reviews"]);
    let reviews = api::mcp::decode(
        api::mcp::collection(VIRTUAL_SERVICES).unwrap(),
        push.resources[1].body.as_ref().unwrap(),
    )
    .unwrap();
    assert_eq!(
        reviews["http"][0]["route"][0]["destination"]["subset"],
        "v2"
    );
    sink.ack(&push).await;
    eventually("every ACK counted", Duration::from_secs(5), || async {
        (galley.metric("galley_mcp_source_request_acks_total").await == 4.0).then_some(())
    })
    .await;

    // An unknown collection ends the stream with INVALID_ARGUMENT.
    let mut wrong = RawSink::open(&galley.address(), &["istio/networking/v1alpha3/nonsense"]).await;
    let status = wrong.next().await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("nonsense"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_takes_its_routes_from_galley_and_keeps_them_while_galley_is_away() {
    let options = Options {
        galley: true,
        ..Default::default()
    };
    let mut mesh = Mesh::start_with(&["v1", "v2"], &[("vs.yaml", &route_to("v1"))], options).await;
    assert_eq!(mesh.tally(10, "/", &[]).await.get("v1"), Some(&10));

    // Editing the file moves the traffic: Galley → MCP → Pilot → Envoy.
    mesh.write_config("vs.yaml", &route_to("v2"));
    eventually("traffic moves to v2", Duration::from_secs(10), || async {
        (mesh.tally(5, "/", &[]).await.get("v2") == Some(&5)).then_some(())
    })
    .await;

    // An invalid edit is refused at Galley; Envoy keeps the last good routes.
    let galley = mesh.galley.as_ref().expect("galley");
    let rejected = galley.metric("galley_runtime_rejected").await;
    mesh.write_config(
        "vs.yaml",
        &route_to("v1").replace("subset: v1}", "subset: v1}\n      weight: 30"),
    );
    eventually(
        "the invalid edit refused",
        Duration::from_secs(10),
        || async { (galley.metric("galley_runtime_rejected").await > rejected).then_some(()) },
    )
    .await;
    assert_eq!(mesh.tally(10, "/", &[]).await.get("v2"), Some(&10));

    // The file mended (to what Envoy has). Galley keeps the last good
    // version only while it runs: a restart reads the files as they are.
    mesh.write_config("vs.yaml", &route_to("v2"));

    // Galley lost: Pilot keeps serving what it had, and stays ready.
    mesh.galley.as_mut().unwrap().kill();
    assert_eq!(mesh.tally(5, "/", &[]).await.get("v2"), Some(&5));
    let ready = mesh
        .http
        .get(format!("{}/ready", mesh.pilot_http()))
        .send()
        .await
        .expect("pilot");
    assert!(ready.status().is_success());
    // Back again: a sink that dials in at once (as Pilot's does, redialling)
    // is answered with the directory's config, never with the empty one a
    // Galley holds before its first read.
    mesh.galley.as_mut().unwrap().spawn();
    let address = mesh.galley.as_ref().unwrap().address();
    let mut sink = eventually(
        "Galley accepts a stream",
        Duration::from_secs(10),
        || async { RawSink::try_open(&address, &[VIRTUAL_SERVICES]).await },
    )
    .await;
    let first = sink.next().await.expect("push");
    assert_eq!(names(&first), ["default/reviews"]);
    mesh.galley.as_ref().unwrap().wait_ready().await;
    assert_eq!(mesh.tally(10, "/", &[]).await.get("v2"), Some(&10));

    // Pilot follows the restarted Galley.
    mesh.write_config("vs.yaml", &route_to("v1"));
    eventually(
        "Pilot follows the restarted Galley",
        Duration::from_secs(15),
        || async { (mesh.tally(5, "/", &[]).await.get("v1") == Some(&5)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixer_policy_takes_its_rules_from_galley() {
    let options = Options {
        galley: true,
        mesh: POLICY_MESH.into(),
        policy_servers: 1,
        ..Default::default()
    };
    let mesh = Mesh::start_with(&["v1"], &[("mixer.yaml", DENY_BLOCKED_USER)], options).await;
    eventually(
        "the deny rule enforced",
        Duration::from_secs(15),
        || async {
            let (status, _) = mesh
                .call_from("client", "/", &[("x-user", "blocked")])
                .await;
            (status == 403).then_some(())
        },
    )
    .await;
    let (status, _) = mesh
        .call_from("client", "/", &[("x-user", "mallory")])
        .await;
    assert_eq!(status, 200);

    // The rule edited in the directory: the other user is refused now.
    mesh.write_config(
        "mixer.yaml",
        &DENY_BLOCKED_USER.replace("== \"blocked\"", "== \"mallory\""),
    );
    eventually(
        "the edited rule enforced",
        Duration::from_secs(15),
        || async {
            let (mallory, _) = mesh
                .call_from("client", "/", &[("x-user", "mallory")])
                .await;
            let (blocked, _) = mesh
                .call_from("client", "/", &[("x-user", "blocked")])
                .await;
            (mallory == 403 && blocked == 200).then_some(())
        },
    )
    .await;
    // Galley lost: mixer-policy keeps its rules, and stays ready.
    let mut mesh = mesh;
    mesh.galley.as_mut().unwrap().kill();
    let (mallory, _) = mesh
        .call_from("client", "/", &[("x-user", "mallory")])
        .await;
    assert_eq!(mallory, 403);
    let ready = mesh
        .http
        .get(format!("http://{}:15014/ready", mesh.topology.policy_ip(0)))
        .send()
        .await
        .expect("mixer-policy");
    assert!(ready.status().is_success());
    let configz = mesh.policy_configz(0).await;
    assert!(
        configz["rules"].as_array().is_some_and(|r| r
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains("deny-blocked")))),
        "{configz}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_mutual_tls_admits_only_the_access_list() {
    let ip = format!("127.{}.0.52", next_subnet());
    let certs = Certs::for_ip(&ip);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
    std::fs::write(dir.path().join("config/vs.yaml"), route_to("v1")).expect("config");
    let pilot = "spiffe://cluster.local/ns/istio-system/sa/istio-pilot-service-account";
    let galley = Galley::start_with(
        &ip,
        &dir.path().join("config"),
        dir.path(),
        Some(&certs),
        Some(&[pilot]),
    )
    .await;
    let open = |spiffe: Option<&str>| {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&certs.ca_pem))
            .domain_name(ip.clone());
        let tls = match spiffe {
            Some(id) => {
                let (cert, key) = certs.client_cert(id);
                tls.identity(tonic::transport::Identity::from_pem(cert, key))
            }
            None => tls,
        };
        let address = format!("https://{}", galley.address());
        async move {
            let channel = tonic::transport::Endpoint::from_shared(address)
                .expect("endpoint")
                .tls_config(tls)
                .expect("tls")
                .connect()
                .await?;
            let (tx, rx) = mpsc::channel(1);
            tx.send(RequestResources {
                collection: VIRTUAL_SERVICES.into(),
                ..Default::default()
            })
            .await
            .expect("send");
            let mut inbound = ResourceSourceClient::new(channel)
                .establish_resource_stream(ReceiverStream::new(rx))
                .await
                .map_err(|s| anyhow_status(&s))?
                .into_inner();
            let push = inbound.message().await.map_err(|s| anyhow_status(&s))?;
            drop(tx);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(push.map(|p| names(&p)))
        }
    };
    let allowed = open(Some(pilot)).await.expect("admitted");
    assert_eq!(allowed, Some(vec!["default/reviews".to_string()]));
    let other = open(Some(
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
    ))
    .await
    .expect_err("refused");
    assert!(
        other.to_string().contains("not in the access list"),
        "{other}"
    );
    // No client certificate: the handshake itself fails.
    assert!(open(None).await.is_err());

    // Trireme's own sink (Pilot's ISTIO_MUTUAL source, Mixer's mcps://),
    // with an istio.<sa> Secret as mounted.
    let secret = dir.path().join("pilot-certs");
    std::fs::create_dir_all(&secret).expect("secret dir");
    let (cert, key) = certs.client_cert(pilot);
    std::fs::write(secret.join("cert-chain.pem"), cert).expect("cert");
    std::fs::write(secret.join("key.pem"), key).expect("key");
    std::fs::write(secret.join("root-cert.pem"), &certs.ca_pem).expect("root");
    let sink = mesh::mcp::Sink {
        address: format!("mcps://{}", galley.address()),
        node_id: "test".into(),
        collections: vec![api::mcp::collection(VIRTUAL_SERVICES).unwrap()],
        tls: Some(mesh::tls::MountedCerts::in_dir(&secret)),
    };
    let (tx, mut state) = tokio::sync::watch::channel(None);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(sink.run(tx, stop.clone()));
    let synced = tokio::time::timeout(Duration::from_secs(10), state.wait_for(Option::is_some))
        .await
        .expect("the sink syncs over mutual TLS")
        .expect("running")
        .clone()
        .unwrap();
    assert!(synced[VIRTUAL_SERVICES].contains_key("default/reviews"));
    stop.cancel();
}

fn anyhow_status(s: &tonic::Status) -> Box<dyn std::error::Error + Send + Sync> {
    format!("{:?}: {}", s.code(), s.message()).into()
}

#[test]
fn meshctl_and_galley_validate_list_every_error_and_set_the_exit_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, format!("{}---\n{DENY_BLOCKED_USER}", route_to("v1"))).expect("good");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        route_to("v1").replace("subset: v1}", "subset: v1}\n      weight: 50")
            + "---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: typo, namespace: istio-system}\nspec: {match: 'request.size = 3'}\n",
    )
    .expect("bad");
    for (binary, command) in [("meshctl", vec!["validate"]), ("galley", vec!["validate"])] {
        let run = |file: &std::path::Path| {
            std::process::Command::new(trireme_tests::bin(binary))
                .args(&command)
                .arg("-f")
                .arg(file)
                .output()
                .expect("runs")
        };
        let ok = run(&good);
        assert_eq!(ok.status.code(), Some(0), "{binary}: {ok:?}");
        assert_eq!(String::from_utf8_lossy(&ok.stdout), "4 objects valid\n");
        let failed = run(&bad);
        assert_eq!(failed.status.code(), Some(1), "{binary}: {failed:?}");
        let stderr = String::from_utf8_lossy(&failed.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(
            errors,
            [
                "error: VirtualService default/reviews: spec.http[0].route: weights add up to 50, not 100",
                "error: rule istio-system/typo: spec.match: `=` is not an operator; compare with `==` (at offset 13 of \"request.size = 3\")",
            ],
            "{binary}: {stderr}"
        );
        let missing = run(&dir.path().join("nowhere.yaml"));
        assert_eq!(missing.status.code(), Some(2), "{binary}: {missing:?}");
    }
}
