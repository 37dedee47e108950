//! The floor under a policy server: Mixer's `Check` and Envoy's `ext_authz`
//! served on `mesh::unary` with mixer-policy's threads, every Check admitted
//! without reading it. Measured in place of mixer-policy (`check-load
//! --floor`, `policy-latency --case floor`), it shows what a Check costs that
//! no work inside mixer-policy can remove: the client, HTTP/2 both ways, the
//! kernel and the wake-ups.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::google::rpc::Status as MixerStatus;
use api::mixer::CheckResponse as MixerResponse;
use api::mixer::check_response::PreconditionResult;
use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse as AuthzResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc::Status as AuthzStatus;
use mesh::unary::{self, Unary};
use tokio_util::sync::CancellationToken;

const MIXER_CHECK: &str = "/istio.mixer.v1.Mixer/Check";
const AUTHZ_CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Each API's admitting answer, framed once.
#[derive(Clone)]
struct Admit {
    mixer: Bytes,
    authz: Bytes,
}

impl Unary for Admit {
    async fn call(&self, method: &str, _message: Bytes) -> Result<Bytes, tonic::Status> {
        match method {
            MIXER_CHECK => Ok(self.mixer.clone()),
            AUTHZ_CHECK => Ok(self.authz.clone()),
            _ => Err(tonic::Status::unimplemented(format!(
                "the floor server has no method {method}"
            ))),
        }
    }
}

/// Serves both Checks on `address`, one thread per core as mixer-policy,
/// until the process is stopped.
pub async fn serve(address: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    serve_on(listener).await
}

async fn serve_on(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let admit = Admit {
        mixer: unary::frame(&MixerResponse {
            precondition: Some(PreconditionResult {
                status: Some(MixerStatus::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        authz: unary::frame(&AuthzResponse {
            status: Some(AuthzStatus::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }),
    };
    let threads = mesh::server::cores();
    mesh::grpc::serve_per_thread("floor", listener, threads, CancellationToken::new(), admit).await
}

/// Waits until something accepts connections on `address`: the floor
/// server has no readiness page, and accepting is all it needs to be ready.
pub async fn wait_accepting(address: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::net::TcpStream::connect(address).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!("nothing accepts on {address} after {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use api::mixer::CheckRequest as MixerRequest;
    use envoy_types::ext_authz::v3::pb::CheckRequest as AuthzRequest;

    use super::*;
    use crate::unary::Unary as Client;

    #[tokio::test]
    async fn admits_both_checks_and_refuses_other_methods() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve_on(listener));
        wait_accepting(&address, Duration::from_secs(5))
            .await
            .unwrap();
        let client = Client::connect(&address).await.unwrap();

        let mixer: MixerResponse = client
            .call(MIXER_CHECK, &MixerRequest::default())
            .await
            .unwrap();
        let status = mixer.precondition.and_then(|p| p.status).unwrap();
        assert_eq!(status.code, 0);

        let authz: AuthzResponse = client
            .call(AUTHZ_CHECK, &AuthzRequest::default())
            .await
            .unwrap();
        assert_eq!(authz.status.unwrap().code, 0);
        assert!(matches!(
            authz.http_response,
            Some(HttpResponse::OkResponse(_))
        ));

        let other = client
            .call::<_, AuthzResponse>("/istio.mixer.v1.Mixer/Report", &MixerRequest::default())
            .await
            .unwrap_err();
        assert!(other.starts_with("gRPC status 12"), "{other}");
    }

    #[tokio::test]
    async fn waiting_for_a_closed_port_gives_up_naming_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = wait_accepting(&address, Duration::from_millis(100))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&address), "{e}");
    }
}
