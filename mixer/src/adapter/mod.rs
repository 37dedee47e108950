//! Adapters: what handlers do with instances. An adapter is a factory
//! registered at build time (in-process) or a separate gRPC service that a
//! handler's `connection.address` names (out-of-process, [`grpc`]); either
//! way the dispatcher sees a [`Handler`].

pub mod grpc;
pub mod kubernetesenv;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tonic::Code;

use crate::attribute::Value;
use crate::template::{Instance, Template, Variety};

/// A gRPC status, as adapters and Mixer's API report a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub const OK: Status = Status {
        code: Code::Ok,
        message: String::new(),
    };

    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }
}

/// A check's answer and how long the caller may reuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub status: Status,
    pub valid_duration: Duration,
    pub valid_use_count: i32,
}

impl CheckResult {
    /// Istio's answer when nothing decided: OK for a minute or 10,000 uses.
    pub fn ok_default() -> CheckResult {
        CheckResult {
            status: Status::OK,
            valid_duration: Duration::from_secs(60),
            valid_use_count: 10_000,
        }
    }

    /// An answer not to be reused.
    pub fn once(status: Status) -> CheckResult {
        CheckResult {
            status,
            valid_duration: Duration::ZERO,
            valid_use_count: 0,
        }
    }
}

/// One quota allocation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaArgs {
    /// Retries of one request carry the same id and are charged once.
    pub dedup_id: String,
    pub amount: i64,
    /// Grant what is left rather than nothing when less than `amount` is.
    pub best_effort: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaResult {
    pub status: Status,
    pub granted: i64,
    pub valid_duration: Duration,
}

impl QuotaResult {
    pub fn denied(status: Status) -> QuotaResult {
        QuotaResult {
            status,
            granted: 0,
            valid_duration: Duration::ZERO,
        }
    }
}

/// A configured adapter. Every method has a default that refuses, so a
/// handler implements only its templates' varieties; the config loader
/// already refuses rules that send a handler a template it does not take.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn check(&self, instance: &Instance) -> CheckResult {
        CheckResult::once(Status::new(
            Code::Unimplemented,
            format!("this handler does not check {}", instance.template.name()),
        ))
    }

    async fn quota(&self, instance: &Instance, _args: &QuotaArgs) -> QuotaResult {
        QuotaResult::denied(Status::new(
            Code::Unimplemented,
            format!(
                "this handler does not allocate {}",
                instance.template.name()
            ),
        ))
    }

    async fn report(&self, _instances: &[Instance]) -> Result<(), String> {
        Err("this handler does not take reports".into())
    }

    /// An attribute-generating handler's `$out` fields for one instance.
    /// Synchronous: it runs before every check and report, so it must
    /// answer from memory.
    fn generate(&self, instance: &Instance) -> Result<Vec<(&'static str, Value)>, String> {
        Err(format!(
            "this handler does not generate attributes from {}",
            instance.template.name()
        ))
    }

    /// For a handler whose `generate` answers the same for the same
    /// instance until its own state changes: a number that changes when it
    /// does, so the dispatcher may remember answers meanwhile. `None` (the
    /// default): ask every time.
    fn generation(&self) -> Option<u64> {
        None
    }
}

/// A params error: the field under `params` and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamsError {
    pub field: String,
    pub message: String,
}

impl ParamsError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ParamsError {
        ParamsError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// From a serde error on `params`, keeping the path of the bad field.
    pub fn from_serde(e: serde_path_to_error::Error<serde_json::Error>) -> ParamsError {
        let path = e.path().to_string();
        ParamsError::new(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    }
}

/// Builds handlers from params. Implemented once per in-process adapter.
pub trait Adapter: Send + Sync {
    /// The name config refers to (`compiledAdapter`, or the legacy kind).
    fn name(&self) -> &'static str;

    fn templates(&self) -> &'static [Template];

    /// Validates `params` and builds a handler. Called again only when a
    /// handler's params change, so a handler's state (quota counters, say)
    /// survives unrelated config edits.
    fn build(&self, params: &serde_json::Value) -> Result<Arc<dyn Handler>, ParamsError>;
}

/// Typed params from a handler's `params`, with unknown fields refused by the
/// params type and errors naming the field.
pub fn params<T: serde::de::DeserializeOwned>(json: &serde_json::Value) -> Result<T, ParamsError> {
    let json = if json.is_null() {
        &serde_json::Value::Object(Default::default())
    } else {
        json
    };
    serde_path_to_error::deserialize(json).map_err(ParamsError::from_serde)
}

/// Istio's in-tree adapters (and Trireme's own). Policy and telemetry read
/// one config store: a handler of one of these that this binary does not
/// offer is the other binary's, skipped rather than reported.
pub const IN_TREE: &[&str] = &[
    "bypass",
    "circonus",
    "cloudwatch",
    "denier",
    "dogstatsd",
    "fluentd",
    "kubernetesenv",
    "list",
    "listchecker",
    "memquota",
    "noop",
    "opa",
    "opentelemetry",
    "prometheus",
    "rbac",
    "redisquota",
    "signalfx",
    "solarwinds",
    "sql",
    "stackdriver",
    "statsd",
    "stdio",
    "zipkin",
];

/// The in-process adapters a binary offers.
#[derive(Clone, Default)]
pub struct Registry {
    adapters: HashMap<&'static str, Arc<dyn Adapter>>,
    validation: bool,
}

impl Registry {
    /// Whether some adapter here takes instances of `variety`.
    pub fn serves(&self, variety: Variety) -> bool {
        self.validation
            || self
                .adapters
                .values()
                .any(|a| a.templates().iter().any(|t| t.variety() == variety))
    }

    pub fn new(adapters: Vec<Arc<dyn Adapter>>) -> Registry {
        Registry {
            adapters: adapters.into_iter().map(|a| (a.name(), a)).collect(),
            validation: false,
        }
    }

    /// For checking config without running it (Galley): handlers of
    /// in-tree adapters stand unbuilt, taking any template, so a rule is
    /// checked for what it names whichever Mixer binary will run it; their
    /// params are the running binary's to check.
    pub fn validation() -> Registry {
        Registry {
            adapters: HashMap::new(),
            validation: true,
        }
    }

    pub fn is_validation(&self) -> bool {
        self.validation
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Adapter>> {
        self.adapters.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.adapters.keys().copied()
    }
}

/// A handler validation stands in for: it runs nothing.
pub struct Unbuilt;

impl Handler for Unbuilt {}
