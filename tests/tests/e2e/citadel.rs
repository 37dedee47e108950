//! Citadel on its own: the CSR service over TLS with tokens and client
//! certificates, Secrets following ServiceAccounts, the root's roll and a
//! replaced plugged-in CA, all against the real binary.

use std::time::Duration;

use nix::sys::signal::Signal;
use tonic::Code;
use trireme_tests::citadel::{Citadel, count, csr, signed_by, uris};
use trireme_tests::eventually;
use trireme_tests::mesh::next_subnet;
use trireme_tests::telemetry::series_value;

const ACCOUNTS: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: bookinfo-reviews, namespace: default}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: bookinfo-ratings, namespace: default}\n";

fn ip() -> String {
    format!("127.{}.0.40", next_subnet())
}

const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csr_service_signs_for_the_callers_identity_only() {
    let mut citadel = Citadel::start(
        &ip(),
        ACCOUNTS,
        &[
            "--self-signed-ca",
            "--key-algorithm",
            "ecdsa",
            "--max-workload-cert-ttl",
            "48h",
            "--workload-cert-ttl",
            "24h",
        ],
        &[],
    )
    .await;
    let mut client = citadel.client(None).await;
    let token = citadel.token("default", "bookinfo-reviews");

    let (key, own) = csr(&[REVIEWS]);
    let chain = citadel
        .sign(&mut client, Some(&token), &own, 3600)
        .await
        .expect("own identity");
    assert_eq!(chain.len(), 2, "leaf then root: {chain:#?}");
    assert_eq!(chain[1].trim(), citadel.roots().trim());
    assert!(signed_by(&chain[0], &chain[1]));
    assert_eq!(uris(&chain[0]), [REVIEWS]);

    let (_, other) = csr(&["spiffe://cluster.local/ns/default/sa/bookinfo-ratings"]);
    let e = citadel
        .sign(&mut client, Some(&token), &other, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains(REVIEWS), "{}", e.message());
    let (_, two) = csr(&[
        REVIEWS,
        "spiffe://cluster.local/ns/default/sa/bookinfo-ratings",
    ]);
    assert_eq!(
        citadel
            .sign(&mut client, Some(&token), &two, 0)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    let expired = citadel
        .issuer
        .mint_at(
            &citadel::token::issuer::Mint {
                namespace: "default".into(),
                service_account: "bookinfo-reviews".into(),
                audience: Some("istio-ca".into()),
                issuer: "kubernetes/local".into(),
                ttl: Some(Duration::from_secs(60)),
            },
            -600,
        )
        .unwrap();
    let e = citadel
        .sign(&mut client, Some(&expired), &own, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let stranger = citadel::token::issuer::Issuer::generate(false).unwrap();
    let foreign = stranger
        .mint(&citadel::token::issuer::Mint {
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
            audience: Some("istio-ca".into()),
            issuer: "kubernetes/local".into(),
            ttl: Some(Duration::from_secs(60)),
        })
        .unwrap();
    assert_eq!(
        citadel
            .sign(&mut client, Some(&foreign), &own, 0)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        citadel
            .sign(&mut client, None, &own, 0)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let e = citadel
        .sign(&mut client, Some(&token), "not a csr", 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("csr:"), "{}", e.message());
    let e = citadel
        .sign(&mut client, Some(&token), &own, 49 * 3600)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("validity_duration"), "{}", e.message());

    // Renewal: the certificate it holds is enough, and only for itself.
    let held = chain[0].clone();
    let mut renewing = citadel.client(Some((&held, &key.serialize_pem()))).await;
    let (_, again) = csr(&[REVIEWS]);
    let renewed = citadel
        .sign(&mut renewing, None, &again, 600)
        .await
        .expect("renewal by certificate");
    assert_eq!(uris(&renewed[0]), [REVIEWS]);
    assert_eq!(
        citadel
            .sign(&mut renewing, None, &other, 600)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    let metrics = eventually("the ledger written", Duration::from_secs(10), || async {
        let m = citadel.metrics().await;
        // Two workload Secrets and two signed CSRs.
        (series_value(&m, "citadel_ledger_written_total", &[]) == Some(4.0)).then_some(m)
    })
    .await;
    assert_eq!(
        series_value(
            &metrics,
            "citadel_server_success_cert_issuance_count_total",
            &[]
        ),
        Some(2.0)
    );
    assert_eq!(
        series_value(
            &metrics,
            "citadel_server_authorization_failure_count_total",
            &[]
        ),
        Some(3.0)
    );
    assert_eq!(
        series_value(
            &metrics,
            "citadel_server_authentication_failure_count_total",
            &[]
        ),
        Some(3.0)
    );
    assert_eq!(
        series_value(&metrics, "citadel_server_csr_parsing_err_count_total", &[]),
        Some(1.0)
    );

    citadel.proc.signal(Signal::SIGTERM);
    assert!(
        citadel.proc.wait_exit(Duration::from_secs(10)),
        "citadel drains and exits on SIGTERM"
    );
    let url = format!("sqlite://{}", citadel.path("ledger.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT identity, requester FROM citadel_issued_certificates ORDER BY issued_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(
        rows.iter()
            .any(|(id, by)| id == REVIEWS && by.contains("(token)")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|(id, by)| id == REVIEWS && by.contains("(certificate)")),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_follow_service_accounts_and_namespace_labels() {
    let citadel = Citadel::start(
        &ip(),
        ACCOUNTS,
        &["--self-signed-ca", "--key-algorithm", "ecdsa"],
        &[],
    )
    .await;
    let chain = eventually(
        "istio.bookinfo-reviews",
        Duration::from_secs(10),
        || async { citadel.secret("default", "istio.bookinfo-reviews", "cert-chain.pem") },
    )
    .await;
    assert_eq!(uris(&chain), [REVIEWS]);
    let root = citadel
        .secret("default", "istio.bookinfo-reviews", "root-cert.pem")
        .unwrap();
    assert_eq!(root, citadel.roots());
    assert!(signed_by(&chain, &root));
    assert!(
        citadel
            .secret("default", "istio.bookinfo-reviews", "key.pem")
            .unwrap()
            .contains("PRIVATE KEY")
    );

    let more = format!(
        "{ACCOUNTS}---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: cart, namespace: shop}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: legacy, labels: {{ca.istio.io/override: \"false\"}}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: old, namespace: legacy}}\n"
    );
    std::fs::write(citadel.path("config/accounts.yaml"), &more).unwrap();
    eventually("istio.cart", Duration::from_secs(10), || async {
        citadel.secret("shop", "istio.cart", "cert-chain.pem")
    })
    .await;
    assert!(
        citadel
            .secret("legacy", "istio.old", "cert-chain.pem")
            .is_none(),
        "an opted-out namespace gets none"
    );

    let fewer = more.replace("name: bookinfo-ratings", "name: bookinfo-details");
    std::fs::write(citadel.path("config/accounts.yaml"), fewer).unwrap();
    eventually(
        "istio.bookinfo-ratings removed",
        Duration::from_secs(10),
        || async {
            citadel
                .secret("default", "istio.bookinfo-ratings", "key.pem")
                .is_none()
                .then_some(())
        },
    )
    .await;
    eventually(
        "istio.bookinfo-details",
        Duration::from_secs(10),
        || async { citadel.secret("default", "istio.bookinfo-details", "key.pem") },
    )
    .await;
    // An unchanged Secret is left alone.
    assert_eq!(
        citadel
            .secret("default", "istio.bookinfo-reviews", "cert-chain.pem")
            .unwrap(),
        chain
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_signed_root_rolls_through_an_overlapping_bundle() {
    // A 24 s root rolled from 40% of its life left (new root trusted at
    // ~14 s, signing at ~19 s); workload certificates of 4 s.
    let env = [
        ("CITADEL_SELF_SIGNED_CA_CERT_TTL", "24s".to_string()),
        (
            "CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE",
            "40".to_string(),
        ),
        (
            "CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL",
            "500ms".to_string(),
        ),
    ];
    let args = [
        "--self-signed-ca",
        "--key-algorithm",
        "ecdsa",
        "--workload-cert-ttl",
        "4s",
        "--workload-cert-min-grace-period",
        "1s",
    ];
    let citadel = Citadel::start(&ip(), ACCOUNTS, &args, &env).await;
    let first_root = citadel.roots();
    assert_eq!(count(&first_root), 1);
    let read = |key: &str| citadel.secret("default", "istio.bookinfo-reviews", key);

    // Step one: both roots trusted, the old one still signing.
    let (bundle, chain) = eventually("a bundle of two roots", Duration::from_secs(30), || async {
        let bundle = read("root-cert.pem")?;
        let chain = read("cert-chain.pem")?;
        (count(&bundle) == 2).then_some((bundle, chain))
    })
    .await;
    assert!(
        bundle.contains(first_root.trim()),
        "the old root stays trusted"
    );
    assert!(
        signed_by(&chain, &first_root),
        "the old root still signs while the new one spreads"
    );

    // Step two: the new root signs; the old one is still trusted.
    let chain = eventually(
        "a certificate from the new root",
        Duration::from_secs(30),
        || async {
            let bundle = read("root-cert.pem")?;
            let chain = read("cert-chain.pem")?;
            (count(&bundle) == 2 && !signed_by(&chain, &first_root)).then_some(chain)
        },
    )
    .await;
    assert!(signed_by(&chain, &read("root-cert.pem").unwrap()));

    // Step three: the old root expires and leaves the bundle.
    eventually("the old root dropped", Duration::from_secs(30), || async {
        let bundle = read("root-cert.pem")?;
        (!bundle.contains(first_root.trim())).then_some(())
    })
    .await;
    let log = citadel.log();
    assert!(
        log.contains("AddNext") && log.contains("Promote") && log.contains("DropExpired"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_plugged_in_ca_is_taken_up() {
    let ca_dir = tempfile::tempdir().unwrap();
    let write_ca = |org: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(ca_dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(ca_dir.path().join("ca-cert.pem"), cert.pem()).unwrap();
        std::fs::write(ca_dir.path().join("root-cert.pem"), cert.pem()).unwrap();
        cert.pem()
    };
    let first = write_ca("first");
    let path = |f: &str| ca_dir.path().join(f).display().to_string();
    let (cert, key, root) = (
        path("ca-cert.pem"),
        path("ca-key.pem"),
        path("root-cert.pem"),
    );
    let args = [
        "--signing-cert",
        &cert,
        "--signing-key",
        &key,
        "--root-cert",
        &root,
        "--key-algorithm",
        "ecdsa",
    ];
    let citadel = Citadel::start(&ip(), ACCOUNTS, &args, &[]).await;
    let read = |key: &str| citadel.secret("default", "istio.bookinfo-reviews", key);
    let chain = eventually(
        "a Secret from the first CA",
        Duration::from_secs(10),
        || async { read("cert-chain.pem") },
    )
    .await;
    assert!(signed_by(&chain, &first));
    assert_eq!(read("root-cert.pem").unwrap().trim(), first.trim());

    let second = write_ca("second");
    eventually(
        "the Secret re-issued by the second CA",
        Duration::from_secs(20),
        || async {
            let chain = read("cert-chain.pem")?;
            (signed_by(&chain, &second) && read("root-cert.pem")?.trim() == second.trim())
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn bad_flags_stop_citadel_before_it_serves() {
    let out = std::process::Command::new(trireme_tests::bin("citadel"))
        .args(["--self-signed-ca", "--configDir", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("--configDir and --secrets-dir go together"),
        "{text}"
    );
}

/// The next SDS push, within 30 s.
async fn next(
    responses: &mut tonic::Streaming<
        envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
    >,
) -> envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse {
    tokio::time::timeout(Duration::from_secs(30), responses.message())
        .await
        .expect("an SDS push in time")
        .expect("the stream")
        .expect("a response")
}

/// One SDS response's secret, decoded.
fn decode_secret(
    response: &envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret {
    use prost::Message;
    assert_eq!(response.resources.len(), 1, "{response:?}");
    envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::decode(
        response.resources[0].value.as_slice(),
    )
    .expect("a Secret")
}

fn inline_text(source: &Option<envoy_types::pb::envoy::config::core::v3::DataSource>) -> String {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    match source.as_ref().and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::InlineBytes(b)) => String::from_utf8(b.clone()).expect("PEM"),
        other => panic!("not inline bytes: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_agent_serves_citadel_certificates_over_sds_and_rotates_them() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;

    let subnet = next_subnet();
    let citadel_ip = format!("127.{subnet}.0.40");
    let args = [
        "--self-signed-ca",
        "--key-algorithm",
        "ecdsa",
        "--max-workload-cert-ttl",
        "1h",
        "--workload-cert-ttl",
        "1h",
    ];
    let mut citadel = Citadel::start(&citadel_ip, ACCOUNTS, &args, &[]).await;
    let pod = tempfile::tempdir().unwrap();
    std::fs::write(
        pod.path().join("istio-token"),
        citadel.token("default", "bookinfo-reviews"),
    )
    .unwrap();
    let socket = pod.path().join("sds/uds_path");
    let roots = citadel.path("secrets/istio-system/istio-ca-secret/root-cert.pem");
    let agent_args: Vec<String> = [
        "proxy",
        "sidecar",
        "--discoveryAddress",
        &format!("127.{subnet}.0.1:15010"),
        "--binaryPath",
        &trireme_tests::envoy().display().to_string(),
        "--configPath",
        &pod.path().display().to_string(),
        "--concurrency",
        "1",
        "--sdsUdsPath",
        &format!("unix:{}", socket.display()),
        "--caAddr",
        &format!("{citadel_ip}:8060"),
        "--caRootCert",
        &roots.display().to_string(),
        "--tokenPath",
        &pod.path().join("istio-token").display().to_string(),
        "--serviceAccount",
        "bookinfo-reviews",
        "--keyAlgorithm",
        "ecdsa",
        // Renewed at 2–3 s.
        "--secretTtl",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [
        ("POD_NAME", "reviews-v1".to_string()),
        ("POD_NAMESPACE", "default".to_string()),
        ("INSTANCE_IP", format!("127.{subnet}.1.2")),
        ("ISTIO_META_INTERCEPTION_MODE", "NONE".to_string()),
    ];
    let log = pod.path().join("agent.log");
    let _agent = trireme_tests::process::Proc::spawn(
        "agent",
        &trireme_tests::bin("pilot-agent"),
        &agent_args,
        &env,
        &log,
    );

    let channel = trireme_tests::citadel::unix_channel(&socket).await;
    // Envoy took the bootstrap's cluster for the agent's socket.
    let clusters = format!("http://127.{subnet}.1.2:15000/clusters");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually(
        "Envoy's sds-grpc cluster",
        Duration::from_secs(20),
        || async {
            let text = http.get(&clusters).send().await.ok()?.text().await.ok()?;
            text.contains("sds-grpc::").then_some(())
        },
    )
    .await;
    let mut sds = SecretDiscoveryServiceClient::new(channel);
    let (requests, rx) = tokio::sync::mpsc::channel(4);
    let ask = |names: &[&str], version: &str, nonce: &str| DiscoveryRequest {
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    requests.send(ask(&["default"], "", "")).await.unwrap();
    let mut responses = sds
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("an SDS stream")
        .into_inner();
    let first = next(&mut responses).await;
    let Some(Type::TlsCertificate(tls)) = decode_secret(&first).r#type else {
        panic!("default is a TLS certificate: {first:?}")
    };
    let chain = inline_text(&tls.certificate_chain);
    assert!(inline_text(&tls.private_key).contains("PRIVATE KEY"));
    assert_eq!(uris(&chain), [REVIEWS]);
    assert!(signed_by(&chain, &citadel.roots()));
    requests
        .send(ask(&["default"], &first.version_info, &first.nonce))
        .await
        .unwrap();

    // Rotation: a new certificate on the same stream, unasked.
    let second = next(&mut responses).await;
    assert_ne!(second.version_info, first.version_info);
    let Some(Type::TlsCertificate(tls)) = decode_secret(&second).r#type else {
        panic!()
    };
    assert_ne!(
        inline_text(&tls.certificate_chain),
        chain,
        "a new certificate"
    );
    requests
        .send(ask(&["default"], &second.version_info, &second.nonce))
        .await
        .unwrap();

    // ROOTCA is the bundle.
    let root = sds
        .fetch_secrets(ask(&["ROOTCA"], "", ""))
        .await
        .expect("ROOTCA")
        .into_inner();
    let Some(Type::ValidationContext(ctx)) = decode_secret(&root).r#type else {
        panic!()
    };
    assert_eq!(inline_text(&ctx.trusted_ca).trim(), citadel.roots().trim());

    // Citadel away: the agent keeps what it has and retries with backoff...
    citadel.stop();
    let held = sds
        .fetch_secrets(ask(&["default"], "", ""))
        .await
        .expect("still served")
        .into_inner();
    eventually("the agent retrying", Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("cannot get a certificate, retrying")
            .then_some(())
    })
    .await;
    // ...and recovers when it returns, on the stream Envoy still holds.
    citadel.start_again().await;
    let after = loop {
        let r = next(&mut responses).await;
        requests
            .send(ask(&["default"], &r.version_info, &r.nonce))
            .await
            .unwrap();
        if r.version_info != held.version_info {
            break r;
        }
    };
    let Some(Type::TlsCertificate(tls)) = decode_secret(&after).r#type else {
        panic!()
    };
    assert!(signed_by(
        &inline_text(&tls.certificate_chain),
        &citadel.roots()
    ));
}
