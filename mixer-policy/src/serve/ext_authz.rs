//! Envoy's `ext_authz` (v3) in front of the same dispatcher, so an unmodified
//! Envoy enforces Mixer policy. The request's attributes come from Envoy's
//! `AttributeContext` and from the `context_extensions` Pilot configures per
//! route; the quotas from `QuotaSpec`/`QuotaSpecBinding`. A denial carries
//! the HTTP status Envoy should answer with, as Envoy does not map gRPC codes.

use std::sync::Arc;

use api::authz_wire::CheckRequest;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use mixer::adapter::{QuotaArgs, Status};
use mixer::attribute::Bag;
use mixer::attribute::attribute_context::bag;
use mixer::config::kinds::HeaderOperation as Op;
use tokio::time::Instant;
use tonic::{Code, Request, Response};

use super::Policy;
use crate::metrics::{Labels, code_name};

impl Policy {
    /// `envoy.service.auth.v3.Authorization/Check`, its `AttributeContext`
    /// read in place.
    pub async fn authz_check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let snapshot = self.dispatcher.snapshot();
        let attrs = request.into_inner().attributes;
        let status = match bag(&attrs, &snapshot.vocabulary) {
            Ok((mut bag, undeclared)) => {
                self.metrics.undeclared_attributes.inc_by(undeclared);
                self.dispatcher.generate(&snapshot, &mut bag);
                self.decide(&bag, &snapshot).await
            }
            Err(e) => {
                self.metrics.bad_requests.inc();
                Err(Status::new(Code::InvalidArgument, e))
            }
        };
        let code = match &status {
            Ok(_) => Code::Ok,
            Err(s) => s.code,
        };
        self.metrics
            .checks
            .get_or_create(&Labels {
                api: "ext_authz",
                code: code_name(code),
            })
            .inc();
        self.metrics
            .check_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(match status {
            Ok(ok) => CheckResponse {
                status: Some(RpcStatus::default()),
                http_response: Some(HttpResponse::OkResponse(ok)),
                ..Default::default()
            },
            Err(denied) => CheckResponse {
                status: Some(RpcStatus {
                    code: denied.code as i32,
                    message: denied.message.clone(),
                    details: Vec::new(),
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: http_status(denied.code) as i32,
                    }),
                    headers: Vec::new(),
                    body: denied.message,
                })),
                ..Default::default()
            },
        }))
    }
}

impl Policy {
    async fn decide(
        &self,
        bag: &Bag,
        snapshot: &Arc<mixer::config::Snapshot>,
    ) -> Result<OkHttpResponse, Status> {
        let outcome = self.dispatcher.check(snapshot, bag).await;
        if outcome.cache_hit {
            self.metrics.check_cache_hits.inc();
        }
        if !outcome.result.status.is_ok() {
            return Err(outcome.result.status);
        }
        let charges = snapshot.quotas.charges(bag);
        let dedup_id = if charges.is_empty() {
            String::new()
        } else {
            dedup_id(bag)
        };
        for (quota, charge) in charges {
            let args = QuotaArgs {
                dedup_id: dedup_id.clone(),
                amount: charge,
                best_effort: false,
            };
            let q = self.dispatcher.quota(snapshot, bag, &quota, &args).await;
            self.metrics
                .quotas
                .get_or_create(&Labels {
                    api: "ext_authz",
                    code: code_name(q.result.status.code),
                })
                .inc();
            if !q.result.status.is_ok() {
                return Err(q.result.status);
            }
        }
        let mut ok = OkHttpResponse::default();
        for change in &outcome.request_headers {
            match change.operation {
                Op::Remove => ok.headers_to_remove.push(change.name.clone()),
                Op::Replace | Op::Append => ok.headers.push(HeaderValueOption {
                    header: Some(HeaderValue {
                        key: change.name.clone(),
                        value: change.value.clone(),
                        ..Default::default()
                    }),
                    append_action: if change.operation == Op::Append {
                        HeaderAppendAction::AppendIfExistsOrAdd
                    } else {
                        HeaderAppendAction::OverwriteIfExistsOrAdd
                    } as i32,
                    ..Default::default()
                }),
            }
        }
        Ok(ok)
    }
}

/// The id that makes a retried request's quota charge count once. Retries
/// of one request share an x-request-id; the caller and the destination are
/// part of the id, so a client repeating its own id cannot spend someone
/// else's charge, nor skip its own elsewhere.
fn dedup_id(bag: &Bag) -> String {
    let text = |name: &str| bag.get(name).map(|v| v.to_string()).unwrap_or_default();
    match text("request.id") {
        id if id.is_empty() => String::new(),
        id => format!(
            "{id}|{}|{}",
            text("source.ip"),
            text("destination.service.host")
        ),
    }
}

/// The HTTP status for a denial: Envoy would otherwise answer 403 for all.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unauthenticated => 401,
        _ => 403,
    }
}
