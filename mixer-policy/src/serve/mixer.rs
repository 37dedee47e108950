//! `istio.mixer.v1.Mixer`: Check with quotas, wire-compatible with Istio's
//! proxies. Report belongs to mixer-telemetry and answers UNIMPLEMENTED.

use std::time::Duration;

use api::google::rpc::Status as RpcStatus;
use api::mixer::check_response::{PreconditionResult, QuotaResult as WireQuota};
use api::mixer::referenced_attributes::{AttributeMatch, Condition};
use api::mixer::{
    CheckResponse, HeaderOperation, ReferencedAttributes, ReportResponse, RouteDirective,
    header_operation,
};
use api::mixer_wire::{CheckRequest, ReportRequest, mixer_server};
use mixer::adapter::{QuotaArgs, Status};
use mixer::attribute::compressed::{self, Raw, Words};
use mixer::attribute::{Bag, dictionary};
use mixer::config::Snapshot;
use mixer::config::kinds::HeaderOperation as Op;
use mixer::dispatch::HeaderChange;
use mixer::referenced::Read;
use tokio::time::Instant;
use tonic::{Request, Response};

use super::Policy;
use crate::metrics::{Labels, code_name};

#[tonic::async_trait]
impl mixer_server::Mixer for Policy {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let snapshot = self.dispatcher.snapshot();
        let mut bag = self.decode(&req, &snapshot)?;
        self.dispatcher.generate(&snapshot, &mut bag);
        let outcome = self.dispatcher.check(&snapshot, &bag).await;
        if outcome.cache_hit {
            self.metrics.check_cache_hits.inc();
        }
        self.count_check(outcome.result.status.code);
        let mut words = Vec::new();
        let referenced = encode_reads(&outcome.referenced, &bag, &mut words);
        let precondition = PreconditionResult {
            status: Some(rpc_status(&outcome.result.status)),
            valid_duration: Some(proto_duration(outcome.result.valid_duration)),
            valid_use_count: outcome.result.valid_use_count,
            referenced_attributes: Some(ReferencedAttributes {
                words,
                attribute_matches: referenced,
            }),
            route_directive: directive(&outcome.request_headers, &outcome.response_headers),
        };
        let mut quotas = std::collections::HashMap::new();
        // Istio allocated quotas only for requests the precondition admitted.
        if outcome.result.status.is_ok() {
            for (name, params) in &req.quotas {
                if params.amount <= 0 {
                    return Err(tonic::Status::invalid_argument(format!(
                        "quotas[{name}].amount must be positive, not {}",
                        params.amount
                    )));
                }
                let args = QuotaArgs {
                    dedup_id: req.deduplication_id.clone(),
                    amount: params.amount,
                    best_effort: params.best_effort,
                };
                let q = self.dispatcher.quota(&snapshot, &bag, name, &args).await;
                self.metrics
                    .quotas
                    .get_or_create(&Labels {
                        api: "mixer",
                        code: code_name(q.result.status.code),
                    })
                    .inc();
                let mut words = Vec::new();
                let matches = encode_reads(&q.referenced, &bag, &mut words);
                quotas.insert(
                    name.clone(),
                    WireQuota {
                        valid_duration: Some(proto_duration(q.result.valid_duration)),
                        granted_amount: q.result.granted,
                        referenced_attributes: Some(ReferencedAttributes {
                            words,
                            attribute_matches: matches,
                        }),
                        status: Some(rpc_status(&q.result.status)),
                    },
                );
            }
        }
        self.metrics
            .check_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(CheckResponse {
            precondition: Some(precondition),
            quotas,
        }))
    }

    async fn report(
        &self,
        _request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "mixer-policy does not take reports: send them to mixer-telemetry",
        ))
    }
}

impl Policy {
    fn decode(&self, req: &CheckRequest, snapshot: &Snapshot) -> Result<Bag, tonic::Status> {
        let decoded = Raw::parse(&req.attributes).and_then(|raw| {
            let words = Words::new(req.global_word_count, raw.words())?;
            let mut bag = Bag::for_vocabulary(&snapshot.vocabulary);
            compressed::decode(&raw, &words, &snapshot.vocabulary, &mut bag).map(|s| (bag, s))
        });
        match decoded {
            Ok((bag, stats)) => {
                self.metrics
                    .undeclared_attributes
                    .inc_by(u64::from(stats.undeclared));
                Ok(bag)
            }
            Err(e) => {
                self.metrics.bad_requests.inc();
                self.count_check(tonic::Code::InvalidArgument);
                Err(tonic::Status::invalid_argument(format!("attributes: {e}")))
            }
        }
    }

    pub(crate) fn count_check(&self, code: tonic::Code) {
        self.metrics
            .checks
            .get_or_create(&Labels {
                api: "mixer",
                code: code_name(code),
            })
            .inc();
    }
}

fn rpc_status(s: &Status) -> RpcStatus {
    RpcStatus {
        code: s.code as i32,
        message: s.message.clone(),
        details: Vec::new(),
    }
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 0,
    })
}

/// Reads as Istio's proxy expects them: global word indexes where the
/// dictionary has the word, this message's words otherwise.
fn encode_reads(reads: &[Read], bag: &Bag, words: &mut Vec<String>) -> Vec<AttributeMatch> {
    let mut index = |w: &str| -> i32 {
        if let Some(i) = dictionary::index_of(w) {
            return i;
        }
        match words.iter().position(|x| x == w) {
            Some(i) => -(i as i32) - 1,
            None => {
                words.push(w.to_string());
                -(words.len() as i32)
            }
        }
    };
    reads
        .iter()
        .map(|r| AttributeMatch {
            name: index(&r.name),
            condition: if r.present(bag) {
                Condition::Exact
            } else {
                Condition::Absence
            } as i32,
            regex: String::new(),
            map_key: r.key.as_deref().map(&mut index).unwrap_or_default(),
        })
        .collect()
}

fn directive(request: &[HeaderChange], response: &[HeaderChange]) -> Option<RouteDirective> {
    if request.is_empty() && response.is_empty() {
        return None;
    }
    let ops = |changes: &[HeaderChange]| {
        changes
            .iter()
            .map(|c| HeaderOperation {
                name: c.name.clone(),
                value: c.value.clone(),
                operation: match c.operation {
                    Op::Replace => header_operation::Operation::Replace,
                    Op::Remove => header_operation::Operation::Remove,
                    Op::Append => header_operation::Operation::Append,
                } as i32,
            })
            .collect()
    };
    Some(RouteDirective {
        request_header_operations: ops(request),
        response_header_operations: ops(response),
        direct_response_code: 0,
        direct_response_body: String::new(),
    })
}
