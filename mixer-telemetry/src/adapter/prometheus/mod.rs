//! Istio's `prometheus` adapter: `metric` instances become counters, gauges
//! and histograms, exposed at 42422 `/metrics` (by [`MeshMetrics`]) under
//! the metric's namespace (`istio` unless set), so `requests_total` is
//! `istio_requests_total`.

mod exposition;
mod family;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mixer::adapter::{Adapter, Handler, ParamsError, params};
use mixer::attribute::Value;
use mixer::template::{Instance, Template, ValueMap, short_name};
use serde::Deserialize;
use serde_json::Value as Json;

pub use family::{Definition, Family, Kind};

/// Every mesh metric the handlers define, shared by them and the 42422
/// endpoint.
#[derive(Clone, Default)]
pub struct MeshMetrics(Arc<RwLock<BTreeMap<String, Arc<Family>>>>);

impl MeshMetrics {
    /// The family for `def`: the existing one when its definition is equal
    /// (so a config reload keeps the counts), a new one otherwise.
    fn family(&self, def: Definition, max_idle: Option<Duration>) -> Arc<Family> {
        let mut all = self.0.write().unwrap_or_else(|p| p.into_inner());
        let f = match all.get(&def.name) {
            Some(f) if f.def == def => f.clone(),
            _ => {
                let f = Arc::new(Family::new(def));
                all.insert(f.def.name.clone(), f.clone());
                f
            }
        };
        *f.max_idle.lock().unwrap_or_else(|p| p.into_inner()) = max_idle;
        f
    }

    fn families(&self) -> Vec<Arc<Family>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in self.families() {
            exposition::render(&f, &mut out);
        }
        out
    }

    /// Series across all families.
    pub fn series(&self) -> usize {
        self.families().iter().map(|f| f.len()).sum()
    }

    /// Drops series idle past their handler's `metricsExpiryDuration`.
    pub fn expire(&self, now: Instant) -> usize {
        self.families()
            .iter()
            .map(|f| {
                let max_idle = *f.max_idle.lock().unwrap_or_else(|p| p.into_inner());
                max_idle.map_or(0, |d| f.expire(now, d))
            })
            .sum()
    }
}

pub struct Prometheus {
    metrics: MeshMetrics,
}

impl Prometheus {
    pub fn new(metrics: MeshMetrics) -> Prometheus {
        Prometheus { metrics }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    metrics: Vec<MetricInfo>,
    #[serde(default, alias = "metrics_expiration_policy")]
    metrics_expiration_policy: Option<Expiration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricInfo {
    #[serde(default)]
    namespace: String,
    name: String,
    #[serde(default, alias = "instance_name")]
    instance_name: String,
    #[serde(default)]
    description: String,
    kind: String,
    #[serde(default)]
    buckets: Option<Buckets>,
    #[serde(default, alias = "label_names")]
    label_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Buckets {
    #[serde(default, alias = "linear_buckets")]
    linear_buckets: Option<Linear>,
    #[serde(default, alias = "exponential_buckets")]
    exponential_buckets: Option<Exponential>,
    #[serde(default, alias = "explicit_buckets")]
    explicit_buckets: Option<Explicit>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Linear {
    #[serde(alias = "num_finite_buckets")]
    num_finite_buckets: u32,
    width: f64,
    #[serde(default)]
    offset: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Exponential {
    #[serde(alias = "num_finite_buckets")]
    num_finite_buckets: u32,
    #[serde(alias = "growth_factor")]
    growth_factor: f64,
    scale: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Explicit {
    bounds: Vec<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expiration {
    #[serde(default, alias = "metrics_expiry_duration")]
    metrics_expiry_duration: Option<api::duration::IstioDuration>,
    /// Accepted; mixer-telemetry sweeps idle series on its own interval.
    #[serde(default, alias = "expiry_check_interval_duration")]
    #[allow(dead_code)]
    expiry_check_interval_duration: Option<api::duration::IstioDuration>,
}

/// Most buckets one distribution may have: each is a series per label set.
const MAX_BUCKETS: u32 = 100;

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn definition(m: &MetricInfo, at: &str) -> Result<Definition, ParamsError> {
    let namespace = if m.namespace.is_empty() {
        "istio"
    } else {
        &m.namespace
    };
    let name = format!("{namespace}_{}", m.name);
    if !valid_name(&name, true) {
        return Err(ParamsError::new(
            format!("{at}.name"),
            format!("{name:?} is not a Prometheus metric name"),
        ));
    }
    let kind = match m.kind.as_str() {
        "COUNTER" => Kind::Counter,
        "GAUGE" => Kind::Gauge,
        "DISTRIBUTION" => Kind::Distribution,
        other => {
            return Err(ParamsError::new(
                format!("{at}.kind"),
                format!("{other:?}: expected COUNTER, GAUGE or DISTRIBUTION"),
            ));
        }
    };
    for (i, l) in m.label_names.iter().enumerate() {
        if !valid_name(l, false) || l.starts_with("__") || l == "le" {
            return Err(ParamsError::new(
                format!("{at}.labelNames[{i}]"),
                format!("{l:?} is not a label name Prometheus accepts"),
            ));
        }
        if m.label_names[..i].contains(l) {
            return Err(ParamsError::new(
                format!("{at}.labelNames[{i}]"),
                format!("{l:?} is listed twice"),
            ));
        }
    }
    let buckets = match (kind, &m.buckets) {
        (Kind::Distribution, Some(b)) => bounds(b, &format!("{at}.buckets"))?,
        (Kind::Distribution, None) => {
            return Err(ParamsError::new(
                format!("{at}.buckets"),
                "a DISTRIBUTION needs buckets",
            ));
        }
        _ => Vec::new(),
    };
    Ok(Definition {
        help: if m.description.is_empty() {
            m.name.clone()
        } else {
            m.description.clone()
        },
        name,
        kind,
        labels: m.label_names.clone(),
        buckets,
    })
}

/// Istio's bucket definitions: N finite buckets have N+1 bounds.
fn bounds(b: &Buckets, at: &str) -> Result<Vec<f64>, ParamsError> {
    let out: Vec<f64> = match (
        &b.linear_buckets,
        &b.exponential_buckets,
        &b.explicit_buckets,
    ) {
        (Some(l), None, None) => {
            if l.num_finite_buckets > MAX_BUCKETS || l.width <= 0.0 {
                return Err(ParamsError::new(
                    format!("{at}.linearBuckets"),
                    format!("needs 0–{MAX_BUCKETS} buckets of a positive width"),
                ));
            }
            (0..=l.num_finite_buckets)
                .map(|i| l.offset + l.width * f64::from(i))
                .collect()
        }
        (None, Some(e), None) => {
            if e.num_finite_buckets > MAX_BUCKETS || e.growth_factor <= 1.0 || e.scale <= 0.0 {
                return Err(ParamsError::new(
                    format!("{at}.exponentialBuckets"),
                    format!(
                        "needs 0–{MAX_BUCKETS} buckets, a growthFactor over 1 and a positive scale"
                    ),
                ));
            }
            (0..=e.num_finite_buckets)
                .map(|i| e.scale * e.growth_factor.powi(i as i32))
                .collect()
        }
        (None, None, Some(x)) => x.bounds.clone(),
        _ => {
            return Err(ParamsError::new(
                at.to_string(),
                "set exactly one of linearBuckets, exponentialBuckets and explicitBuckets",
            ));
        }
    };
    let increasing = out.windows(2).all(|w| w[0] < w[1]);
    if out.is_empty()
        || out.len() > MAX_BUCKETS as usize + 1
        || !increasing
        || out.iter().any(|b| !b.is_finite())
    {
        return Err(ParamsError::new(
            at.to_string(),
            format!(
                "bounds must be 1–{} finite, increasing numbers",
                MAX_BUCKETS + 1
            ),
        ));
    }
    Ok(out)
}

impl Adapter for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::Metric]
    }

    fn build(&self, json: &Json) -> Result<Arc<dyn Handler>, ParamsError> {
        let p: Params = params(json)?;
        let max_idle = p
            .metrics_expiration_policy
            .as_ref()
            .and_then(|e| e.metrics_expiry_duration)
            .map(|d| d.as_duration())
            .filter(|d| !d.is_zero());
        let mut by_instance = ByInstance::default();
        let mut names = Vec::new();
        let mut shapes: Vec<Vec<String>> = Vec::new();
        for (i, m) in p.metrics.iter().enumerate() {
            let at = format!("metrics[{i}]");
            let def = definition(m, &at)?;
            if names.contains(&def.name) {
                return Err(ParamsError::new(
                    format!("{at}.name"),
                    format!("{} is defined twice", def.name),
                ));
            }
            names.push(def.name.clone());
            let shape = match shapes.iter().position(|l| *l == def.labels) {
                Some(s) => s,
                None => {
                    shapes.push(def.labels.clone());
                    shapes.len() - 1
                }
            };
            // Istio 1.0 configs may leave instance_name out: the metric's
            // name is then the instance's short name.
            let instance = if m.instance_name.is_empty() {
                m.name.clone()
            } else {
                m.instance_name.clone()
            };
            by_instance
                .entry(instance)
                .or_default()
                .push((self.metrics.family(def, max_idle), shape));
        }
        Ok(Arc::new(PromHandler { by_instance }))
    }
}

/// Full instance name (or a short one, from 1.0 configs) → its metrics,
/// each with its label list's index among the handler's distinct lists.
type ByInstance = HashMap<String, Vec<(Arc<Family>, usize)>, foldhash::fast::RandomState>;

struct PromHandler {
    by_instance: ByInstance,
}

impl PromHandler {
    fn families(&self, instance: &str) -> Option<&Vec<(Arc<Family>, usize)>> {
        self.by_instance
            .get(instance)
            .or_else(|| self.by_instance.get(short_name(instance)))
    }
}

/// A metric value as a number; durations in seconds, as Istio's adapter
/// recorded `request_duration_seconds`.
fn number(v: Option<&Value>) -> Result<f64, String> {
    match v {
        Some(Value::Int64(i)) => Ok(*i as f64),
        Some(Value::Double(d)) => Ok(*d),
        Some(Value::Duration(d)) => Ok(d.as_secs_f64()),
        Some(Value::Bool(b)) => Ok(if *b { 1.0 } else { 0.0 }),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("value {s:?} is not a number")),
        Some(other) => Err(format!("value {other} is not a number")),
        None => Err("the instance has no value".into()),
    }
}

#[async_trait]
impl Handler for PromHandler {
    async fn report(&self, instances: &[Instance]) -> Result<(), String> {
        let now = Instant::now();
        let mut key = String::new();
        // The dimensions and label list `key` was built for: Istio's four
        // metrics of a request share both, so their key is built once.
        let mut keyed: Option<(Option<&ValueMap>, usize)> = None;
        let mut refused = 0;
        let mut first = None;
        for instance in instances {
            let Some(families) = self.families(&instance.name) else {
                continue;
            };
            let result = number(instance.value("value")).and_then(|value| {
                let dims = instance.map("dimensions");
                families.iter().try_for_each(|(f, shape)| {
                    let same = keyed.is_some_and(|(d, s)| {
                        s == *shape && d.map(ValueMap::as_ptr) == dims.map(ValueMap::as_ptr)
                    });
                    if !same {
                        f.key(dims, &mut key);
                        keyed = Some((dims, *shape));
                    }
                    f.record(&key, value, now)
                })
            });
            if let Err(e) = result {
                refused += 1;
                first.get_or_insert_with(|| format!("{}: {e}", instance.name));
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(format!(
                "{refused} of {} instances not recorded; first: {e}",
                instances.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use mixer::template::{FieldValue, ValueMap};

    use super::*;

    const ISTIO_LIKE: &str = r#"{
      "metricsExpirationPolicy": {"metricsExpiryDuration": "10m", "expiryCheckIntervalDuration": "1m"},
      "metrics": [
        {"name": "requests_total", "instance_name": "requestcount.instance.istio-system", "kind": "COUNTER",
         "label_names": ["reporter", "response_code"]},
        {"name": "request_duration_seconds", "instance_name": "requestduration.instance.istio-system",
         "kind": "DISTRIBUTION", "label_names": ["reporter"],
         "buckets": {"explicit_buckets": {"bounds": [0.005, 0.01, 0.025]}}},
        {"name": "request_bytes", "instance_name": "requestsize.instance.istio-system",
         "kind": "DISTRIBUTION", "label_names": [],
         "buckets": {"exponentialBuckets": {"numFiniteBuckets": 3, "scale": 1, "growthFactor": 10}}}
      ]}"#;

    fn instance(name: &str, value: Value, dims: &[(&str, Value)]) -> Instance {
        let dims: ValueMap = dims
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Instance {
            name: name.into(),
            template: Template::Metric,
            fields: vec![
                ("value", FieldValue::Value(value)),
                ("dimensions", FieldValue::Map(dims)),
            ],
        }
    }

    #[tokio::test]
    async fn istio_metrics_are_exposed_under_istio_names() {
        let metrics = MeshMetrics::default();
        let adapter = Prometheus::new(metrics.clone());
        let h = adapter
            .build(&serde_json::from_str(ISTIO_LIKE).unwrap())
            .unwrap();
        let dest = ("reporter", Value::string("destination"));
        h.report(&[
            instance(
                "requestcount.instance.istio-system",
                Value::Int64(1),
                &[dest.clone(), ("response_code", Value::Int64(200))],
            ),
            instance(
                "requestcount.instance.istio-system",
                Value::Int64(1),
                &[dest.clone(), ("response_code", Value::Int64(200))],
            ),
            instance(
                "requestduration.instance.istio-system",
                Value::Duration(Duration::from_millis(7)),
                std::slice::from_ref(&dest),
            ),
            instance("requestsize.instance.istio-system", Value::Int64(150), &[]),
            instance("unrelated.instance.istio-system", Value::Int64(1), &[]),
        ])
        .await
        .unwrap();
        let text = metrics.render();
        assert!(text.contains("# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"destination\",response_code=\"200\"} 2\n"), "{text}");
        assert!(!text.contains("_total_total"));
        assert!(
            text.contains(
                "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"0.01\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("istio_request_bytes_bucket{le=\"1000\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("istio_request_bytes_bucket{le=\"100\"} 0\n"),
            "{text}"
        );
        assert_eq!(metrics.series(), 3);

        // A reload with the same definitions keeps the counts.
        let again = adapter
            .build(&serde_json::from_str(ISTIO_LIKE).unwrap())
            .unwrap();
        again
            .report(&[instance(
                "requestcount.instance.istio-system",
                Value::Int64(1),
                &[dest, ("response_code", Value::Int64(200))],
            )])
            .await
            .unwrap();
        assert!(metrics.render().contains("response_code=\"200\"} 3\n"));
    }

    #[tokio::test]
    async fn a_shared_dimension_map_is_keyed_per_label_list() {
        let metrics = MeshMetrics::default();
        let params = r#"{"metrics": [
            {"name": "a_total", "instance_name": "a.instance.istio-system", "kind": "COUNTER",
             "label_names": ["reporter", "response_code"]},
            {"name": "b_total", "instance_name": "b.instance.istio-system", "kind": "COUNTER",
             "label_names": ["response_code", "reporter"]},
            {"name": "c_total", "instance_name": "c.instance.istio-system", "kind": "COUNTER",
             "label_names": ["reporter", "response_code"]}]}"#;
        let h = Prometheus::new(metrics.clone())
            .build(&serde_json::from_str(params).unwrap())
            .unwrap();
        // One map for all three, as the dispatcher shares a request's.
        let dims: ValueMap = [
            ("reporter", Value::string("destination")),
            ("response_code", Value::Int64(200)),
        ]
        .into();
        let of = |name: &str| Instance {
            name: name.into(),
            template: Template::Metric,
            fields: vec![
                ("value", FieldValue::Value(Value::Int64(1))),
                ("dimensions", FieldValue::Map(dims.clone())),
            ],
        };
        let names = ["a", "b", "c"].map(|n| format!("{n}.instance.istio-system"));
        h.report(&names.each_ref().map(|n| of(n))).await.unwrap();
        let text = metrics.render();
        for series in [
            "istio_a_total{reporter=\"destination\",response_code=\"200\"} 1\n",
            "istio_b_total{response_code=\"200\",reporter=\"destination\"} 1\n",
            "istio_c_total{reporter=\"destination\",response_code=\"200\"} 1\n",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }

    #[tokio::test]
    async fn bad_values_are_refused_and_counted_not_fatal() {
        let metrics = MeshMetrics::default();
        let h = Prometheus::new(metrics.clone())
            .build(&serde_json::from_str(ISTIO_LIKE).unwrap())
            .unwrap();
        let err = h
            .report(&[
                instance(
                    "requestcount.instance.istio-system",
                    Value::string("many"),
                    &[],
                ),
                instance("requestcount.instance.istio-system", Value::Int64(1), &[]),
            ])
            .await
            .unwrap_err();
        assert!(err.starts_with("1 of 2 instances not recorded; first: requestcount.instance.istio-system: value \"many\""), "{err}");
        assert_eq!(metrics.series(), 1);
    }

    #[test]
    fn bad_params_name_the_field() {
        let a = Prometheus::new(MeshMetrics::default());
        let err = |json: &str| {
            a.build(&serde_json::from_str(json).unwrap())
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            err(
                r#"{"metrics": [{"name": "x", "kind": "COUNTER", "label_names": ["ok", "bad-label"]}]}"#
            ),
            "metrics[0].labelNames[1]: \"bad-label\" is not a label name Prometheus accepts"
        );
        assert!(
            err(r#"{"metrics": [{"name": "x", "kind": "DISTRIBUTION"}]}"#)
                .starts_with("metrics[0].buckets:")
        );
        assert!(
            err(r#"{"metrics": [{"name": "x", "kind": "HISTOGRAM"}]}"#)
                .starts_with("metrics[0].kind:")
        );
        assert!(
            err(r#"{"metrics": [{"name": "x", "kind": "GAUGE", "colour": 1}]}"#).contains("colour")
        );
        assert!(err(r#"{"metrics": [{"name": "x", "kind": "DISTRIBUTION", "buckets": {"explicitBuckets": {"bounds": [2, 1]}}}]}"#).contains("increasing"));
    }
}
