//! `memquota`: quotas counted in this process's memory. A quota with a
//! `validDuration` is a rate limit over a rolling window of that length; one
//! without is an allocation that never refills. Retries carrying the same
//! deduplication id within `minDeduplicationDuration` get the first answer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::duration::IstioDuration;
use async_trait::async_trait;
use mixer::adapter::{self, Adapter, Handler, ParamsError, QuotaArgs, QuotaResult, Status};
use mixer::template::{Instance, Template};
use serde::Deserialize;
use tokio::time::Instant;
use tonic::Code;

use super::quota::{self, QuotaParams};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    quotas: Vec<QuotaParams>,
    #[serde(default, alias = "min_deduplication_duration")]
    min_deduplication_duration: Option<IstioDuration>,
}

pub struct MemQuota;

impl Adapter for MemQuota {
    fn name(&self) -> &'static str {
        "memquota"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::Quota]
    }

    fn build(&self, params: &serde_json::Value) -> Result<Arc<dyn Handler>, ParamsError> {
        let p: Params = adapter::params(params)?;
        quota::validate(&p.quotas)?;
        for (i, q) in p.quotas.iter().enumerate() {
            // redisquota's fields: memquota always keeps a precise rolling window.
            if q.bucket_duration.is_some() {
                return Err(ParamsError::new(
                    format!("quotas[{i}].bucketDuration"),
                    "memquota has no buckets (redisquota has)",
                ));
            }
            if q.rate_limit_algorithm != quota::Algorithm::default() {
                return Err(ParamsError::new(
                    format!("quotas[{i}].rateLimitAlgorithm"),
                    "memquota has one algorithm, a rolling window (redisquota has a choice)",
                ));
            }
        }
        Ok(Arc::new(MemQuotaHandler {
            quotas: p.quotas,
            dedup_window: p
                .min_deduplication_duration
                .map_or(Duration::from_secs(1), |d| d.as_duration()),
            state: Mutex::new(State::default()),
        }))
    }
}

/// One counter: grants still inside the window, oldest first, and their sum.
#[derive(Default)]
struct Counter {
    grants: VecDeque<(Instant, i64)>,
    used: i64,
}

#[derive(Default)]
struct State {
    counters: HashMap<String, Counter>,
    /// Answers by deduplication id, and the ids in the order they expire.
    answers: HashMap<String, QuotaResult>,
    expiry: VecDeque<(Instant, String)>,
    /// Allocations since counters were last swept.
    since_sweep: u32,
}

/// Rate-limit counters left empty by their window are dropped this often, so
/// dimensions seen once (a client address, say) do not stay forever.
const SWEEP_EVERY: u32 = 4096;

struct MemQuotaHandler {
    quotas: Vec<QuotaParams>,
    dedup_window: Duration,
    state: Mutex<State>,
}

#[async_trait]
impl Handler for MemQuotaHandler {
    async fn quota(&self, instance: &Instance, args: &QuotaArgs) -> QuotaResult {
        let Some(limit) = quota::limit(&self.quotas, instance) else {
            return QuotaResult::denied(Status::new(
                Code::InvalidArgument,
                format!("memquota has no quota named {}", instance.name),
            ));
        };
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        while let Some((at, id)) = state.expiry.front() {
            if now.duration_since(*at) <= self.dedup_window {
                break;
            }
            state.answers.remove(id);
            state.expiry.pop_front();
        }
        let dedup = (!args.dedup_id.is_empty()).then(|| format!("{}|{}", limit.key, args.dedup_id));
        if let Some(answer) = dedup.as_ref().and_then(|id| state.answers.get(id)) {
            return answer.clone();
        }
        state.since_sweep += 1;
        if state.since_sweep >= SWEEP_EVERY {
            state.since_sweep = 0;
            state
                .counters
                .retain(|_, c| !c.grants.is_empty() || c.used != 0);
        }
        let counter = state.counters.entry(limit.key.clone()).or_default();
        if !limit.window.is_zero() {
            while let Some((at, amount)) = counter.grants.front() {
                if now.duration_since(*at) < limit.window {
                    break;
                }
                counter.used -= amount;
                counter.grants.pop_front();
            }
        }
        let available = (limit.max_amount - counter.used).max(0);
        let granted = if args.amount <= available {
            args.amount
        } else if args.best_effort {
            available
        } else {
            0
        };
        if granted > 0 {
            counter.used += granted;
            // An allocation quota never expires: its sum is all it needs.
            if !limit.window.is_zero() {
                counter.grants.push_back((now, granted));
            }
        }
        let answer = QuotaResult {
            status: if granted > 0 || args.amount == 0 {
                Status::OK
            } else {
                Status::new(
                    Code::ResourceExhausted,
                    format!("quota {} is exhausted", instance.short_name()),
                )
            },
            granted,
            valid_duration: limit.window,
        };
        if let Some(id) = dedup {
            state.answers.insert(id.clone(), answer.clone());
            state.expiry.push_back((now, id));
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer::attribute::Value;
    use mixer::template::FieldValue;
    use serde_json::json;

    fn instance(user: &str) -> Instance {
        Instance {
            name: "requestcount.instance.istio-system".into(),
            template: Template::Quota,
            fields: vec![(
                "dimensions",
                FieldValue::Map([("user".to_string(), Value::string(user))].into()),
            )],
        }
    }

    fn args(id: &str) -> QuotaArgs {
        QuotaArgs {
            dedup_id: id.into(),
            amount: 1,
            best_effort: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rolling_window_with_overrides_and_dedup() {
        let h = MemQuota
            .build(&json!({"quotas": [{
                "name": "requestcount.instance.istio-system",
                "maxAmount": 2,
                "validDuration": "10s",
                "overrides": [{"dimensions": {"user": "vip"}, "maxAmount": 3}],
            }]}))
            .unwrap();
        let plain = instance("jason");
        assert_eq!(h.quota(&plain, &args("a")).await.granted, 1);
        // A retry of "a" is not charged again.
        assert_eq!(h.quota(&plain, &args("a")).await.granted, 1);
        assert_eq!(h.quota(&plain, &args("b")).await.granted, 1);
        let refused = h.quota(&plain, &args("c")).await;
        assert_eq!(
            (refused.granted, refused.status.code),
            (0, Code::ResourceExhausted)
        );
        // Other dimensions count apart, with their override.
        for id in ["d", "e", "f"] {
            assert_eq!(h.quota(&instance("vip"), &args(id)).await.granted, 1);
        }
        assert_eq!(h.quota(&instance("vip"), &args("g")).await.granted, 0);
        // The window rolls on.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(h.quota(&plain, &args("h")).await.granted, 1);
    }

    #[tokio::test]
    async fn best_effort_and_bad_params() {
        let h = MemQuota
            .build(&json!({"quotas": [{"name": "requestcount", "maxAmount": 3}]}))
            .unwrap();
        let big = QuotaArgs {
            dedup_id: String::new(),
            amount: 5,
            best_effort: true,
        };
        assert_eq!(h.quota(&instance("x"), &big).await.granted, 3);
        let e = MemQuota
            .build(&json!({"quotas": [{"name": "q", "maxAmount": -1}]}))
            .err()
            .unwrap();
        assert_eq!(e.field, "quotas[0].maxAmount");
        let e = MemQuota
            .build(&json!({"quotas": [{"maxAmount": 1}]}))
            .err()
            .unwrap();
        assert!(e.message.contains("name"), "{e}");
    }
}
