//! `denier`: refuses every check with a fixed status. Istio's default is
//! FAILED_PRECONDITION for 5 s or 1,000 uses.

use std::sync::Arc;
use std::time::Duration;

use api::duration::IstioDuration;
use async_trait::async_trait;
use mixer::adapter::{
    self, Adapter, CheckResult, Handler, ParamsError, QuotaArgs, QuotaResult, Status,
};
use mixer::template::{Instance, Template};
use serde::Deserialize;
use tonic::Code;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    status: Option<StatusParams>,
    #[serde(default, alias = "valid_duration")]
    valid_duration: Option<IstioDuration>,
    #[serde(default, alias = "valid_use_count")]
    valid_use_count: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusParams {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
}

pub struct Denier;

impl Adapter for Denier {
    fn name(&self) -> &'static str {
        "denier"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::CheckNothing, Template::ListEntry, Template::Quota]
    }

    fn build(&self, params: &serde_json::Value) -> Result<Arc<dyn Handler>, ParamsError> {
        let p: Params = adapter::params(params)?;
        let (code, message) = match p.status {
            Some(s) => (s.code, s.message),
            None => (Code::FailedPrecondition as i32, String::new()),
        };
        if !(1..=16).contains(&code) {
            return Err(ParamsError::new(
                "status.code",
                format!("{code} is not a gRPC error code (1-16)"),
            ));
        }
        let uses = p.valid_use_count.unwrap_or(1000);
        if uses < 0 {
            return Err(ParamsError::new("validUseCount", "must not be negative"));
        }
        Ok(Arc::new(DenyHandler(CheckResult {
            status: Status::new(Code::from_i32(code), message),
            valid_duration: p
                .valid_duration
                .map_or(Duration::from_secs(5), |d| d.as_duration()),
            valid_use_count: uses,
        })))
    }
}

struct DenyHandler(CheckResult);

#[async_trait]
impl Handler for DenyHandler {
    async fn check(&self, _instance: &Instance) -> CheckResult {
        self.0.clone()
    }

    async fn quota(&self, _instance: &Instance, _args: &QuotaArgs) -> QuotaResult {
        QuotaResult::denied(self.0.status.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance() -> Instance {
        Instance {
            name: "denyrequest.instance.istio-system".into(),
            template: Template::CheckNothing,
            fields: Vec::new(),
        }
    }

    #[tokio::test]
    async fn denies_with_the_configured_status() {
        let h = Denier
            .build(&json!({"status": {"code": 7, "message": "Not allowed"}, "validDuration": "2s"}))
            .unwrap();
        let r = h.check(&instance()).await;
        assert_eq!(r.status, Status::new(Code::PermissionDenied, "Not allowed"));
        assert_eq!(r.valid_duration, Duration::from_secs(2));
        assert_eq!(r.valid_use_count, 1000);
    }

    #[tokio::test]
    async fn defaults_and_bad_params() {
        let r = Denier
            .build(&serde_json::Value::Null)
            .unwrap()
            .check(&instance())
            .await;
        assert_eq!(r.status.code, Code::FailedPrecondition);
        let e = Denier.build(&json!({"status": {"code": 0}})).err().unwrap();
        assert_eq!(e.field, "status.code");
        let e = Denier.build(&json!({"stat": {}})).err().unwrap();
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
