//! SDS for Envoy (`envoy.service.secret.v3.SecretDiscoveryService`), state
//! of the world: each stream names the secrets it wants (`default`,
//! `ROOTCA`), gets them as soon as a certificate exists, and gets them again
//! whenever it changes. ACKs and NACKs are read, and a NACK is logged.

use std::collections::BTreeSet;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::workload::Issued;
use super::{DEFAULT, ROOTCA, SECRET_TYPE};

#[derive(Clone)]
pub struct Sds {
    current: watch::Receiver<Option<Arc<Issued>>>,
}

fn inline(text: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(
            text.as_bytes().to_vec(),
        )),
        ..Default::default()
    })
}

/// The named secret, if it is one this agent serves.
fn secret(name: &str, issued: &Issued) -> Option<Secret> {
    let kind = match name {
        DEFAULT => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&issued.chain),
            private_key: inline(&issued.key),
            ..Default::default()
        }),
        ROOTCA => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(&issued.roots),
            ..Default::default()
        }),
        _ => return None,
    };
    Some(Secret {
        name: name.to_string(),
        r#type: Some(kind),
    })
}

fn response(names: &BTreeSet<String>, issued: &Issued, nonce: u64) -> DiscoveryResponse {
    let resources = names
        .iter()
        .filter_map(|n| secret(n, issued))
        .map(|s| Any {
            type_url: SECRET_TYPE.to_string(),
            value: s.encode_to_vec(),
        })
        .collect();
    DiscoveryResponse {
        // The leaf's serial and the bundle change together on a rotation.
        version_info: format!(
            "{}-{:016x}",
            issued.serial,
            xxhash_rust::xxh3::xxh3_64(issued.roots.as_bytes())
        ),
        resources,
        type_url: SECRET_TYPE.to_string(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type StreamSecretsStream = Responses;
    type DeltaSecretsStream =
        Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let mut requests = request.into_inner();
        let mut current = self.current.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut names = BTreeSet::new();
            let mut nonce = 0u64;
            let mut sent: Option<Arc<Issued>> = None;
            loop {
                tokio::select! {
                    request = requests.message() => {
                        let request = match request {
                            Ok(Some(r)) => r,
                            Ok(None) => return,
                            Err(e) => {
                                tracing::debug!("SDS stream ended: {e}");
                                return;
                            }
                        };
                        if let Some(error) = &request.error_detail {
                            tracing::warn!(names = ?request.resource_names, version = %request.version_info, "Envoy rejected a secret: {}", error.message);
                        }
                        let wanted: BTreeSet<String> = request.resource_names.into_iter().collect();
                        if wanted == names && !request.response_nonce.is_empty() {
                            continue; // an ACK or NACK of what was sent
                        }
                        names = wanted;
                        sent = None;
                    }
                    changed = current.changed() => if changed.is_err() { return },
                }
                let now = current.borrow_and_update().clone();
                let Some(issued) = now else { continue };
                if names.is_empty() || sent.as_ref().is_some_and(|s| **s == *issued) {
                    continue;
                }
                nonce += 1;
                if tx.send(Ok(response(&names, &issued, nonce))).await.is_err() {
                    return;
                }
                sent = Some(issued);
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let issued = self
            .current
            .borrow()
            .clone()
            .ok_or_else(|| Status::unavailable("no certificate yet: waiting for Citadel"))?;
        let names = request.into_inner().resource_names.into_iter().collect();
        Ok(Response::new(response(&names, &issued, 0)))
    }

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("SDS is served state-of-the-world"))
    }
}

/// Serves SDS on the Unix socket `path` until `shutdown`.
pub async fn serve(
    path: &Path,
    current: watch::Receiver<Option<Arc<Issued>>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by an earlier run would refuse the bind.
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("--sdsUdsPath {}: {e}", path.display()))?;
    tracing::info!(socket = %path.display(), "serving SDS");
    tonic::transport::Server::builder()
        .add_service(SecretDiscoveryServiceServer::new(Sds { current }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await?;
    let _ = std::fs::remove_file(path);
    Ok(())
}
