//! The gRPC APIs mixer-policy answers on its one port: Istio's Mixer `Check`
//! ([`mixer`]) and Envoy's `ext_authz` ([`ext_authz`]). Both decode their
//! request into attributes and hand them to the same dispatcher. The port is
//! served by `mesh::unary`, which hands each call here by method path.

pub mod ext_authz;
pub mod mixer;

use std::sync::Arc;

use ::mixer::dispatch::Dispatcher;
use bytes::Bytes;
use mesh::unary::{self, Unary};
use tonic::{Request, Response, Status};

use crate::metrics::PolicyMetrics;

/// What both APIs share.
#[derive(Clone)]
pub struct Policy {
    pub dispatcher: Arc<Dispatcher>,
    pub metrics: PolicyMetrics,
}

const MIXER_CHECK: &str = "/istio.mixer.v1.Mixer/Check";
const MIXER_REPORT: &str = "/istio.mixer.v1.Mixer/Report";
const AUTHZ_CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The port's methods, by path, each decoded into its request type and
/// answered by the same handlers a tonic server would call.
impl Unary for Policy {
    async fn call(&self, method: &str, message: Bytes) -> Result<Bytes, Status> {
        use api::mixer_wire::mixer_server::Mixer;
        match method {
            MIXER_CHECK => {
                answer(message, "istio.mixer.v1.CheckRequest", |r| {
                    Mixer::check(self, r)
                })
                .await
            }
            MIXER_REPORT => {
                answer(message, "istio.mixer.v1.ReportRequest", |r| {
                    Mixer::report(self, r)
                })
                .await
            }
            AUTHZ_CHECK => {
                answer(message, "envoy.service.auth.v3.CheckRequest", |r| {
                    self.authz_check(r)
                })
                .await
            }
            _ => Err(Status::unimplemented(format!(
                "mixer-policy has no method {method}: it serves {MIXER_CHECK} and {AUTHZ_CHECK}"
            ))),
        }
    }
}

/// Decodes `message` as `what`, has `handler` answer it, and frames the
/// answer.
async fn answer<Req, Resp, F, Fut>(message: Bytes, what: &str, handler: F) -> Result<Bytes, Status>
where
    Req: prost::Message + Default,
    Resp: prost::Message,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let request = unary::decode(message, what)?;
    let answered = handler(Request::new(request)).await?;
    Ok(unary::frame(answered.get_ref()))
}
