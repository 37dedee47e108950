//! Envoy's `ext_authz` (v3) in front of the same dispatcher, so an unmodified
//! Envoy enforces Mixer policy. The request's attributes come from Envoy's
//! `AttributeContext` and from the `context_extensions` Pilot configures per
//! route; the quotas from `QuotaSpec`/`QuotaSpecBinding`. A denial carries
//! the HTTP status Envoy should answer with, as Envoy does not map gRPC codes.

use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::{Address, address, socket_address};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use mixer::adapter::{QuotaArgs, Status};
use mixer::attribute::{Bag, Declaration, Value, Vocabulary, compressed};
use mixer::config::kinds::HeaderOperation as Op;
use tokio::time::Instant;
use tonic::{Code, Request, Response};

use super::Policy;
use crate::metrics::{Labels, code_name};

#[tonic::async_trait]
impl Authorization for Policy {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let snapshot = self.dispatcher.snapshot();
        let attrs = request.into_inner().attributes.unwrap_or_default();
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
        // Retries of one request share an x-request-id; the caller and the
        // destination are part of the id, so a client repeating its own id
        // cannot spend someone else's charge, nor skip its own elsewhere.
        let text = |name: &str| bag.get(name).map(|v| v.to_string()).unwrap_or_default();
        let dedup_id = match text("request.id") {
            id if id.is_empty() => String::new(),
            id => format!(
                "{id}|{}|{}",
                text("source.ip"),
                text("destination.service.host")
            ),
        };
        for (quota, charge) in snapshot.quotas.charges(bag) {
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

/// The HTTP status for a denial: Envoy would otherwise answer 403 for all.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unauthenticated => 401,
        _ => 403,
    }
}

/// The attributes of one ext_authz request, and how many context
/// extensions named no declared attribute (ignored, as Istio did).
pub fn bag(
    ctx: &envoy_types::pb::envoy::service::auth::v3::AttributeContext,
    vocab: &Vocabulary,
) -> Result<(Bag, u64), String> {
    let mut bag = Bag::for_vocabulary(vocab);
    let peers = [
        (
            &ctx.source,
            ["source.ip", "source.port", "source.principal"],
        ),
        (
            &ctx.destination,
            [
                "destination.ip",
                "destination.port",
                "destination.principal",
            ],
        ),
    ];
    for (peer, [ip_name, port_name, principal_name]) in peers {
        let Some(peer) = peer else { continue };
        if let Some((ip, port)) = socket(peer.address.as_ref()) {
            bag.set(ip_name, Value::IpAddress(ip));
            bag.set(port_name, Value::Int64(i64::from(port)));
        }
        if !peer.principal.is_empty() {
            bag.set(principal_name, Value::string(&peer.principal));
        }
    }
    if let Some(request) = &ctx.request {
        if let Some(t) = &request.time {
            let wire = prost_types::Timestamp {
                seconds: t.seconds,
                nanos: t.nanos,
            };
            let time = compressed::timestamp(&wire).map_err(|e| format!("request.time: {e}"))?;
            bag.set("request.time", Value::Timestamp(time));
        }
        if let Some(http) = &request.http {
            let headers: std::collections::BTreeMap<String, String> = http
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
            let text = |name: &'static str, value: &str, bag: &mut Bag| {
                if !value.is_empty() {
                    bag.set(name, Value::string(value));
                }
            };
            text("request.method", &http.method, &mut bag);
            text("request.path", &http.path, &mut bag);
            text("request.host", &http.host, &mut bag);
            text("request.scheme", &http.scheme, &mut bag);
            let id = headers.get("x-request-id").unwrap_or(&http.id);
            text("request.id", id, &mut bag);
            if let Some(agent) = headers.get("user-agent") {
                text("request.useragent", agent, &mut bag);
            }
            if http.size >= 0 {
                bag.set("request.size", Value::Int64(http.size));
            }
            let protocol = if headers
                .get("content-type")
                .is_some_and(|c| c.starts_with("application/grpc"))
            {
                "grpc"
            } else {
                "http"
            };
            bag.set("context.protocol", Value::string(protocol));
            bag.set("request.headers", Value::StringMap(Arc::new(headers)));
        }
    }
    let mut undeclared = 0;
    for (key, text) in &ctx.context_extensions {
        let Some(Declaration { name, ty, .. }) = vocab.declaration(key) else {
            undeclared += 1;
            continue;
        };
        let value =
            Value::parse_as(ty, text).map_err(|e| format!("context_extensions[{key}]: {e}"))?;
        bag.set(name.clone(), value);
    }
    Ok((bag, undeclared))
}

fn socket(address: Option<&Address>) -> Option<(IpAddr, u32)> {
    let Some(address::Address::SocketAddress(sa)) = address.and_then(|a| a.address.as_ref()) else {
        return None;
    };
    let ip = sa.address.parse().ok()?;
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => p,
        _ => 0,
    };
    Some((ip, port))
}
