//! The node agent's SDS server over a real Unix socket, with the
//! certificate source scripted: what Envoy is sent, when, and that ACKs and
//! NACKs are not answered with the same secret again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use pilot::agent::sds::server::serve;
use pilot::agent::sds::workload::Issued;
use pilot::agent::sds::{DEFAULT, ROOTCA, SECRET_TYPE};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

fn issued(serial: &str) -> Option<Arc<Issued>> {
    Some(Arc::new(Issued {
        chain: format!("chain {serial}"),
        key: format!("key {serial}"),
        roots: "roots".into(),
        serial: serial.into(),
        not_after: SystemTime::now() + Duration::from_secs(60),
    }))
}

fn ask(names: &[&str], answered: Option<&DiscoveryResponse>, nack: bool) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        type_url: SECRET_TYPE.into(),
        version_info: answered.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: answered.map(|r| r.nonce.clone()).unwrap_or_default(),
        error_detail: nack.then(|| RpcStatus {
            code: 3,
            message: "bad certificate".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| Secret::decode(a.value.as_slice()).unwrap().name)
        .collect()
}

async fn channel(path: std::path::PathBuf) -> Channel {
    for _ in 0..200 {
        let p = path.clone();
        let connected = tonic::transport::Endpoint::from_static("http://sds")
            .connect_with_connector(tower::service_fn(move |_| {
                let p = p.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(p).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }))
            .await;
        if let Ok(c) = connected {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no SDS socket at {}", path.display());
}

/// Nothing arrives within `ms`.
async fn quiet(responses: &mut tonic::Streaming<DiscoveryResponse>, ms: u64) {
    let got = tokio::time::timeout(Duration::from_millis(ms), responses.message()).await;
    assert!(got.is_err(), "unexpected push: {got:?}");
}

async fn next(responses: &mut tonic::Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("a push")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn secrets_wait_for_a_certificate_and_follow_it_without_echoing_acks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sds/uds_path");
    let (tx, rx) = watch::channel(None);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let path = path.clone();
        let shutdown = shutdown.clone();
        async move { serve(&path, rx, shutdown).await }
    });
    let mut client = SecretDiscoveryServiceClient::new(channel(path.clone()).await);

    let fetched = client.fetch_secrets(ask(&[DEFAULT], None, false)).await;
    assert_eq!(
        fetched.unwrap_err().code(),
        tonic::Code::Unavailable,
        "no certificate yet"
    );

    let (requests, rx) = mpsc::channel(8);
    requests.send(ask(&[DEFAULT], None, false)).await.unwrap();
    let mut responses = client
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    quiet(&mut responses, 200).await;

    tx.send_replace(issued("01"));
    let first = next(&mut responses).await;
    assert_eq!(names(&first), [DEFAULT]);
    let secret = Secret::decode(first.resources[0].value.as_slice()).unwrap();
    assert!(matches!(
        secret.r#type,
        Some(secret::Type::TlsCertificate(_))
    ));
    requests
        .send(ask(&[DEFAULT], Some(&first), false))
        .await
        .unwrap();
    quiet(&mut responses, 200).await;

    // A NACK is not answered with the same secret again.
    requests
        .send(ask(&[DEFAULT], Some(&first), true))
        .await
        .unwrap();
    quiet(&mut responses, 200).await;

    // A rotation is pushed unasked, with a new version and nonce.
    tx.send_replace(issued("02"));
    let second = next(&mut responses).await;
    assert_ne!(second.version_info, first.version_info);
    assert_ne!(second.nonce, first.nonce);
    requests
        .send(ask(&[DEFAULT], Some(&second), false))
        .await
        .unwrap();

    // Asking for more names answers at once; unknown names are left out.
    requests
        .send(ask(
            &[DEFAULT, ROOTCA, "spiffe://other"],
            Some(&second),
            false,
        ))
        .await
        .unwrap();
    let both = next(&mut responses).await;
    assert_eq!(names(&both), [ROOTCA, DEFAULT]);

    drop(requests);
    shutdown.cancel();
    server.await.unwrap().unwrap();
    assert!(!path.exists(), "the socket is removed on shutdown");
}
