//! What memquota and redisquota share: their `quotas` params, and finding
//! the limit for an instance by its name and dimensions.

use std::collections::BTreeMap;
use std::time::Duration;

use api::duration::IstioDuration;
use mixer::adapter::ParamsError;
use mixer::template::Instance;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Algorithm {
    /// Counts per fixed window: cheap, but up to twice the rate at a window edge.
    #[default]
    FixedWindow,
    /// Counts over the last window, in buckets of `bucketDuration`.
    RollingWindow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaParams {
    pub name: String,
    #[serde(alias = "max_amount")]
    pub max_amount: i64,
    #[serde(default, alias = "valid_duration")]
    pub valid_duration: Option<IstioDuration>,
    #[serde(default, alias = "bucket_duration")]
    pub bucket_duration: Option<IstioDuration>,
    #[serde(default, alias = "rate_limit_algorithm")]
    pub rate_limit_algorithm: Algorithm,
    #[serde(default)]
    pub overrides: Vec<Override>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Override {
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    #[serde(alias = "max_amount")]
    pub max_amount: i64,
    #[serde(default, alias = "valid_duration")]
    pub valid_duration: Option<IstioDuration>,
}

/// The limit that applies to one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub max_amount: i64,
    /// Zero: an allocation quota, never refilled by time.
    pub window: Duration,
    pub algorithm: Algorithm,
    pub bucket: Duration,
    /// The counter's key: the quota and the instance's dimensions.
    pub key: String,
}

pub fn validate(quotas: &[QuotaParams]) -> Result<(), ParamsError> {
    for (i, q) in quotas.iter().enumerate() {
        let at = |f: &str| format!("quotas[{i}].{f}");
        if q.name.is_empty() {
            return Err(ParamsError::new(at("name"), "a quota needs a name"));
        }
        if q.max_amount < 0 {
            return Err(ParamsError::new(at("maxAmount"), "must not be negative"));
        }
        let window = q
            .valid_duration
            .map(|d| d.as_duration())
            .unwrap_or_default();
        if let Some(b) = q.bucket_duration.map(|d| d.as_duration())
            && !window.is_zero()
            && (b.is_zero() || b > window)
        {
            return Err(ParamsError::new(
                at("bucketDuration"),
                "must be positive and no longer than validDuration",
            ));
        }
        if let Some(b) = q.bucket_duration.map(|d| d.as_duration())
            && !b.is_zero()
            && window.as_nanos() / b.as_nanos() > 1000
        {
            return Err(ParamsError::new(
                at("bucketDuration"),
                "at most 1000 buckets per window: each allocation reads them all",
            ));
        }
        for (j, o) in q.overrides.iter().enumerate() {
            if o.max_amount < 0 {
                return Err(ParamsError::new(
                    at(&format!("overrides[{j}].maxAmount")),
                    "must not be negative",
                ));
            }
        }
    }
    Ok(())
}

/// The quota config for `instance` (by full or short name) and the limit its
/// dimensions select: the first override whose dimensions all match.
pub fn limit(quotas: &[QuotaParams], instance: &Instance) -> Option<Limit> {
    let q = quotas
        .iter()
        .find(|q| *q.name == *instance.name || q.name == instance.short_name())?;
    let mut dims: Vec<(String, String)> = instance
        .map("dimensions")
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    // By name, so the bucket's key is the same whatever order config gave.
    dims.sort();
    let matched = q.overrides.iter().find(|o| {
        o.dimensions
            .iter()
            .all(|(k, v)| dims.iter().any(|(dk, dv)| dk == k && dv == v))
    });
    let window = matched
        .and_then(|o| o.valid_duration)
        .or(q.valid_duration)
        .map(|d| d.as_duration())
        .unwrap_or_default();
    // JSON quotes and escapes, so no two dimension sets share a key.
    let key = format!(
        "{}{}",
        q.name,
        serde_json::to_string(&dims).unwrap_or_default()
    );
    // A bucket never outgrows its window, nor shrinks to nothing.
    let bucket = q
        .bucket_duration
        .map(|d| d.as_duration())
        .filter(|b| !b.is_zero())
        .unwrap_or(window / 10)
        .min(window)
        .max(Duration::from_millis(1));
    Some(Limit {
        max_amount: matched.map_or(q.max_amount, |o| o.max_amount),
        window,
        algorithm: q.rate_limit_algorithm,
        bucket,
        key,
    })
}
