//! Reading statsd_exporter's mapping YAML. Every field it knows is read
//! (the deprecated `timer_type`, top-level `buckets` and `quantiles`
//! included); a field it does not know, a bad regex or a bad value is
//! refused with the mapping's index and match and the field's name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde_yaml::{Mapping as YamlMap, Value};

use super::glob::Glob;
use super::template::{Group, Template};
use super::{
    Action, DEFAULT_BUCKETS, DEFAULT_HELP, Mapper, Mapping, Matcher, Observer, Quantile, Settings,
    SummaryOptions,
};
use crate::line::MetricType;
use crate::names::is_label_name;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read mapping config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mapping config {path} is not YAML: {source}")]
    Yaml {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("mapping config {path}: {place}: {field}: {message}")]
    Field {
        path: String,
        /// `defaults`, or `mappings[3] (match "a.*.b")`.
        place: String,
        field: String,
        message: String,
    },
}

pub fn load(path: &Path) -> Result<Mapper, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    from_yaml(&text, &shown)
}

/// `source` names the file in errors.
pub fn from_yaml(text: &str, source: &str) -> Result<Mapper, ConfigError> {
    let root: Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
        path: source.to_string(),
        source: e,
    })?;
    let fail = |place: &str, field: &str, message: String| ConfigError::Field {
        path: source.to_string(),
        place: place.to_string(),
        field: field.to_string(),
        message,
    };
    let root = match root {
        Value::Null => YamlMap::new(),
        Value::Mapping(m) => m,
        _ => {
            return Err(fail(
                "top level",
                "",
                "expected `defaults` and `mappings`".into(),
            ));
        }
    };
    let top =
        Fields::new(&root, &["defaults", "mappings"]).map_err(|(f, m)| fail("top level", &f, m))?;
    let defaults = match top.get("defaults") {
        None | Some(Value::Null) => Defaults::builtin(),
        Some(Value::Mapping(m)) => Defaults::read(m).map_err(|(f, m)| fail("defaults", &f, m))?,
        Some(_) => return Err(fail("defaults", "", "expected a mapping".into())),
    };
    let entries = match top.get("mappings") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(s)) => s.clone(),
        Some(_) => return Err(fail("top level", "mappings", "expected a list".into())),
    };
    let mut mappings = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let place = match entry.get("match").and_then(Value::as_str) {
            Some(m) => format!("mappings[{index}] (match {m:?})"),
            None => format!("mappings[{index}]"),
        };
        let Value::Mapping(entry) = entry else {
            return Err(fail(&place, "", "expected a mapping".into()));
        };
        mappings.push(read_mapping(index, entry, &defaults).map_err(|(f, m)| fail(&place, &f, m))?);
    }
    let globs = mappings
        .iter()
        .filter(|m| matches!(m.matcher, Matcher::Glob(_)))
        .map(|m| m.index)
        .collect();
    let regexes = mappings
        .iter()
        .filter(|m| matches!(m.matcher, Matcher::Regex(_)))
        .map(|m| m.index)
        .collect();
    Ok(Mapper {
        mappings,
        globs,
        regexes,
        glob_disable_ordering: defaults.glob_disable_ordering,
        unmapped: Settings {
            observer: defaults.observer.clone(),
            ttl: defaults.ttl,
            help: Arc::from(DEFAULT_HELP),
            honor_labels: false,
            scale: 1.0,
        },
    })
}

/// A field name and what is wrong with it.
type FieldError = (String, String);

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    (field.to_string(), message.into())
}

/// The fields of one YAML mapping, every key checked against `known`.
struct Fields<'a> {
    map: &'a YamlMap,
}

impl<'a> Fields<'a> {
    fn new(map: &'a YamlMap, known: &[&str]) -> Result<Fields<'a>, FieldError> {
        for key in map.keys() {
            let Some(k) = key.as_str() else {
                return Err(field_error(&format!("{key:?}"), "field names are text"));
            };
            if !known.contains(&k) {
                return Err(field_error(
                    k,
                    format!("unknown field (known: {})", known.join(", ")),
                ));
            }
        }
        Ok(Fields { map })
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn string(&self, field: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(field_error(field, "expected text")),
        }
    }

    fn boolean(&self, field: &str) -> Result<Option<bool>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(field_error(field, "expected true or false")),
        }
    }

    fn number(&self, field: &str) -> Result<Option<f64>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => number(v)
                .map(Some)
                .ok_or_else(|| field_error(field, "expected a number")),
        }
    }

    fn duration(&self, field: &str) -> Result<Option<Duration>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => crate::duration::parse(s)
                .map(Some)
                .map_err(|e| field_error(field, e)),
            Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(Some(Duration::ZERO)),
            Some(Value::Number(n)) => Err(field_error(
                field,
                format!("{n} has no unit; write a Go duration such as {n}s or 10m"),
            )),
            Some(_) => Err(field_error(field, "expected a duration such as 10m")),
        }
    }

    fn buckets(&self, field: &str) -> Result<Option<Arc<[f64]>>, FieldError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let Value::Sequence(items) = v else {
            return Err(field_error(field, "expected a list of numbers"));
        };
        let mut buckets = Vec::with_capacity(items.len());
        for item in items {
            let b = number(item)
                .filter(|b| b.is_finite())
                .ok_or_else(|| field_error(field, format!("{item:?} is not a finite number")))?;
            if buckets.last().is_some_and(|&last| b <= last) {
                return Err(field_error(field, "bounds must increase"));
            }
            buckets.push(b);
        }
        // An empty list means "the defaults", as in statsd_exporter.
        Ok((!buckets.is_empty()).then(|| buckets.into()))
    }

    fn quantiles(&self, field: &str) -> Result<Option<Arc<[Quantile]>>, FieldError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let Value::Sequence(items) = v else {
            return Err(field_error(field, "expected a list of {quantile, error}"));
        };
        let mut quantiles = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let here = format!("{field}[{i}]");
            let Value::Mapping(m) = item else {
                return Err(field_error(&here, "expected {quantile, error}"));
            };
            let f = Fields::new(m, &["quantile", "error"])
                .map_err(|(f, m)| (format!("{here}.{f}"), m))?;
            let quantile = f
                .number("quantile")
                .map_err(|(f, m)| (format!("{here}.{f}"), m))?
                .ok_or_else(|| field_error(&format!("{here}.quantile"), "required"))?;
            if !(quantile > 0.0 && quantile < 1.0) {
                return Err(field_error(
                    &format!("{here}.quantile"),
                    "must be between 0 and 1",
                ));
            }
            let error = f
                .number("error")
                .map_err(|(f, m)| (format!("{here}.{f}"), m))?
                .unwrap_or(0.0);
            if !(0.0..1.0).contains(&error) {
                return Err(field_error(
                    &format!("{here}.error"),
                    "must be at least 0 and below 1",
                ));
            }
            quantiles.push(Quantile { quantile, error });
        }
        Ok((!quantiles.is_empty()).then(|| quantiles.into()))
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ObserverKind {
    Histogram,
    Summary,
}

fn observer_kind(fields: &Fields<'_>) -> Result<Option<ObserverKind>, FieldError> {
    // `observer_type` wins over the deprecated `timer_type`, as in statsd_exporter.
    let (field, value) = match fields.string("observer_type")? {
        Some(v) => ("observer_type", v),
        None => match fields.string("timer_type")? {
            Some(v) => ("timer_type", v),
            None => return Ok(None),
        },
    };
    match value {
        "histogram" => Ok(Some(ObserverKind::Histogram)),
        "summary" => Ok(Some(ObserverKind::Summary)),
        // statsd_exporter reads an empty type as "the default".
        "" => Ok(None),
        other => Err(field_error(
            field,
            format!("{other:?}: expected histogram or summary"),
        )),
    }
}

/// `histogram_options` or `summary_options`, checked.
fn options<'a>(
    fields: &Fields<'a>,
    field: &str,
    known: &[&str],
) -> Result<Option<Fields<'a>>, FieldError> {
    match fields.get(field) {
        None => Ok(None),
        Some(Value::Mapping(m)) => {
            for key in m.keys().filter_map(Value::as_str) {
                if key.starts_with("native_histogram") {
                    return Err(field_error(
                        &format!("{field}.{key}"),
                        "native histograms are not supported by statsd-bridge",
                    ));
                }
            }
            Fields::new(m, known)
                .map(Some)
                .map_err(|(f, m)| (format!("{field}.{f}"), m))
        }
        Some(_) => Err(field_error(field, "expected a mapping")),
    }
}

const HISTOGRAM_OPTIONS: &[&str] = &["buckets"];
const SUMMARY_OPTIONS: &[&str] = &["quantiles", "max_age", "age_buckets", "buf_cap"];

fn prefixed<T>(prefix: &str, r: Result<T, FieldError>) -> Result<T, FieldError> {
    r.map_err(|(f, m)| (format!("{prefix}.{f}"), m))
}

/// Summary options as given (each may be missing).
struct SummaryFields {
    quantiles: Option<Arc<[Quantile]>>,
    max_age: Option<Duration>,
    age_buckets: Option<u32>,
}

fn summary_fields(f: &Fields<'_>) -> Result<SummaryFields, FieldError> {
    let max_age = f.duration("max_age")?;
    if max_age == Some(Duration::ZERO) {
        return Err(field_error("max_age", "must be positive"));
    }
    let age_buckets = match f.number("age_buckets")? {
        None => None,
        Some(n) if n.fract() == 0.0 && (1.0..=1000.0).contains(&n) => Some(n as u32),
        Some(_) => {
            return Err(field_error(
                "age_buckets",
                "must be a whole number from 1 to 1000",
            ));
        }
    };
    // buf_cap sizes client_golang's sample buffer; the bridge's estimator
    // keeps no samples, so it is read and has no effect.
    if f.number("buf_cap")?.is_some_and(|n| n < 0.0) {
        return Err(field_error("buf_cap", "must not be negative"));
    }
    Ok(SummaryFields {
        quantiles: f.quantiles("quantiles")?,
        max_age,
        age_buckets,
    })
}

struct Defaults {
    observer: Observer,
    buckets: Arc<[f64]>,
    summary: Arc<SummaryOptions>,
    match_regex: bool,
    glob_disable_ordering: bool,
    ttl: Duration,
}

const DEFAULT_QUANTILES: [Quantile; 3] = [
    Quantile {
        quantile: 0.5,
        error: 0.05,
    },
    Quantile {
        quantile: 0.9,
        error: 0.01,
    },
    Quantile {
        quantile: 0.99,
        error: 0.001,
    },
];

impl Defaults {
    fn builtin() -> Defaults {
        let summary = Arc::new(SummaryOptions {
            quantiles: DEFAULT_QUANTILES.into(),
            max_age: Duration::from_secs(600),
            age_buckets: 5,
        });
        Defaults {
            observer: Observer::Summary(summary.clone()),
            buckets: DEFAULT_BUCKETS.into(),
            summary,
            match_regex: false,
            glob_disable_ordering: false,
            ttl: Duration::ZERO,
        }
    }

    fn read(map: &YamlMap) -> Result<Defaults, FieldError> {
        let f = Fields::new(
            map,
            &[
                "observer_type",
                "timer_type",
                "buckets",
                "quantiles",
                "match_type",
                "glob_disable_ordering",
                "ttl",
                "summary_options",
                "histogram_options",
            ],
        )?;
        let mut d = Defaults::builtin();
        let legacy_buckets = f.buckets("buckets")?;
        let histogram = options(&f, "histogram_options", HISTOGRAM_OPTIONS)?;
        let buckets = match histogram {
            Some(h) => prefixed("histogram_options", h.buckets("buckets"))?,
            None => None,
        };
        if let Some(b) = buckets.or(legacy_buckets) {
            d.buckets = b;
        }
        let legacy_quantiles = f.quantiles("quantiles")?;
        let summary = match options(&f, "summary_options", SUMMARY_OPTIONS)? {
            Some(s) => Some(prefixed("summary_options", summary_fields(&s))?),
            None => None,
        };
        let mut options = (*d.summary).clone();
        if let Some(s) = &summary {
            options.max_age = s.max_age.unwrap_or(options.max_age);
            options.age_buckets = s.age_buckets.unwrap_or(options.age_buckets);
        }
        if let Some(q) = summary.and_then(|s| s.quantiles).or(legacy_quantiles) {
            options.quantiles = q;
        }
        d.summary = Arc::new(options);
        d.observer = match observer_kind(&f)? {
            Some(ObserverKind::Histogram) => Observer::Histogram {
                buckets: d.buckets.clone(),
            },
            Some(ObserverKind::Summary) | None => Observer::Summary(d.summary.clone()),
        };
        d.match_regex = match f.string("match_type")? {
            None | Some("" | "glob") => false,
            Some("regex") => true,
            Some(other) => {
                return Err(field_error(
                    "match_type",
                    format!("{other:?}: expected glob or regex"),
                ));
            }
        };
        d.glob_disable_ordering = f.boolean("glob_disable_ordering")?.unwrap_or(false);
        d.ttl = f.duration("ttl")?.unwrap_or(Duration::ZERO);
        Ok(d)
    }
}

const MAPPING_FIELDS: &[&str] = &[
    "match",
    "name",
    "labels",
    "honor_labels",
    "observer_type",
    "timer_type",
    "buckets",
    "quantiles",
    "match_type",
    "help",
    "action",
    "match_metric_type",
    "ttl",
    "summary_options",
    "histogram_options",
    "scale",
];

fn read_mapping(index: usize, map: &YamlMap, defaults: &Defaults) -> Result<Mapping, FieldError> {
    let f = Fields::new(map, MAPPING_FIELDS)?;
    let match_text = f
        .string("match")?
        .filter(|m| !m.is_empty())
        .ok_or_else(|| field_error("match", "required"))?
        .to_string();
    let regex = match f.string("match_type")? {
        None | Some("") => defaults.match_regex,
        Some("glob") => false,
        Some("regex") => true,
        Some(other) => {
            return Err(field_error(
                "match_type",
                format!("{other:?}: expected glob or regex"),
            ));
        }
    };
    let (matcher, captures) = if regex {
        let re =
            Regex::new(&match_text).map_err(|e| field_error("match", format!("bad regex: {e}")))?;
        let names: Vec<String> = re.capture_names().flatten().map(str::to_string).collect();
        let count = re.captures_len() - 1;
        (Matcher::Regex(re), Captures::Regex { count, names })
    } else {
        let glob =
            Glob::parse(&match_text).map_err(|e| field_error("match", format!("bad glob: {e}")))?;
        let count = glob.captures();
        (Matcher::Glob(glob), Captures::Glob(count))
    };
    let action = match f.string("action")? {
        None | Some("" | "map") => Action::Map,
        Some("drop") => Action::Drop,
        Some(other) => {
            return Err(field_error(
                "action",
                format!("{other:?}: expected map or drop"),
            ));
        }
    };
    let name_text = f.string("name")?.unwrap_or("");
    if name_text.is_empty() && action == Action::Map {
        return Err(field_error(
            "name",
            "required (only a drop mapping may leave it out)",
        ));
    }
    let name = Template::parse(name_text);
    captures.check(&name).map_err(|m| field_error("name", m))?;
    if let Some(bad) = name
        .text()
        .flat_map(str::chars)
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(field_error(
            "name",
            format!(
                "{name_text:?} holds {bad:?}; a metric name is letters, digits, '_' and captures"
            ),
        ));
    }
    let metric_type = match f.string("match_metric_type")? {
        None | Some("") => None,
        Some("counter") => Some(MetricType::Counter),
        Some("gauge") => Some(MetricType::Gauge),
        // "timer" is what statsd_exporter called observers before 0.14.
        Some("observer" | "timer") => Some(MetricType::Observer),
        Some(other) => {
            return Err(field_error(
                "match_metric_type",
                format!("{other:?}: expected counter, gauge or observer"),
            ));
        }
    };
    let labels = read_labels(&f, &captures, metric_type)?;

    let observer = read_observer(&f, defaults)?;
    let ttl = f.duration("ttl")?.unwrap_or(defaults.ttl);
    let help = match f.string("help")? {
        Some(h) if !h.is_empty() => Arc::from(h),
        _ => Arc::from(DEFAULT_HELP),
    };
    let scale = f.number("scale")?.unwrap_or(1.0);
    if !scale.is_finite() {
        return Err(field_error("scale", "must be a finite number"));
    }
    Ok(Mapping {
        index,
        match_text,
        matcher,
        name,
        labels,
        action,
        metric_type,
        settings: Settings {
            observer,
            ttl,
            help,
            honor_labels: f.boolean("honor_labels")?.unwrap_or(false),
            scale,
        },
    })
}

fn read_labels(
    f: &Fields<'_>,
    captures: &Captures,
    metric_type: Option<MetricType>,
) -> Result<Vec<(String, Template)>, FieldError> {
    let Some(v) = f.get("labels") else {
        return Ok(Vec::new());
    };
    let Value::Mapping(m) = v else {
        return Err(field_error(
            "labels",
            "expected a mapping of label names to values",
        ));
    };
    let mut labels = Vec::with_capacity(m.len());
    for (k, v) in m {
        let Some(k) = k.as_str() else {
            return Err(field_error(
                "labels",
                format!("label name {k:?} is not text"),
            ));
        };
        let here = format!("labels.{k}");
        if !is_label_name(k) {
            return Err(field_error(
                &here,
                "not a label name (a letter or '_', then letters, digits and '_'; no leading \"__\")",
            ));
        }
        // A histogram or summary writes these itself.
        if matches!(k, "le" | "quantile") && metric_type.is_none_or(|t| t == MetricType::Observer) {
            return Err(field_error(
                &here,
                "reserved for histogram buckets and summary quantiles; set match_metric_type to counter or gauge to use it",
            ));
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(field_error(&here, "expected text")),
        };
        let template = Template::parse(&text);
        captures
            .check(&template)
            .map_err(|m| field_error(&here, m))?;
        labels.push((k.to_string(), template));
    }
    Ok(labels)
}

fn read_observer(f: &Fields<'_>, defaults: &Defaults) -> Result<Observer, FieldError> {
    let kind = observer_kind(f)?;
    let histogram = options(f, "histogram_options", HISTOGRAM_OPTIONS)?;
    let summary = options(f, "summary_options", SUMMARY_OPTIONS)?;
    let legacy_buckets = f.buckets("buckets")?;
    let legacy_quantiles = f.quantiles("quantiles")?;
    let buckets = match &histogram {
        Some(h) => prefixed("histogram_options", h.buckets("buckets"))?,
        None => None,
    };
    let summary = match &summary {
        Some(s) => Some(prefixed("summary_options", summary_fields(s))?),
        None => None,
    };
    if buckets.is_some() && legacy_buckets.is_some() {
        return Err(field_error(
            "buckets",
            "given both here and in histogram_options",
        ));
    }
    if summary.as_ref().is_some_and(|s| s.quantiles.is_some()) && legacy_quantiles.is_some() {
        return Err(field_error(
            "quantiles",
            "given both here and in summary_options",
        ));
    }
    let kind = kind.unwrap_or(match defaults.observer {
        Observer::Histogram { .. } => ObserverKind::Histogram,
        Observer::Summary(_) => ObserverKind::Summary,
    });
    match kind {
        ObserverKind::Histogram => {
            if summary.is_some() {
                return Err(field_error("summary_options", "given for a histogram"));
            }
            Ok(Observer::Histogram {
                buckets: buckets
                    .or(legacy_buckets)
                    .unwrap_or_else(|| defaults.buckets.clone()),
            })
        }
        ObserverKind::Summary => {
            if histogram.is_some() {
                return Err(field_error("histogram_options", "given for a summary"));
            }
            let mut options = (*defaults.summary).clone();
            if let Some(s) = summary {
                options.max_age = s.max_age.unwrap_or(options.max_age);
                options.age_buckets = s.age_buckets.unwrap_or(options.age_buckets);
                if let Some(q) = s.quantiles {
                    options.quantiles = q;
                }
            }
            if let Some(q) = legacy_quantiles {
                options.quantiles = q;
            }
            Ok(Observer::Summary(Arc::new(options)))
        }
    }
}

/// What a match captures, for checking the templates that use it.
enum Captures {
    Glob(usize),
    Regex { count: usize, names: Vec<String> },
}

impl Captures {
    fn check(&self, template: &Template) -> Result<(), String> {
        for group in template.groups() {
            match (self, group) {
                (Captures::Glob(n), Group::Index(i)) if *i == 0 || i > n => {
                    return Err(format!(
                        "{group} refers to wildcard {i}, but the match has {n} (counted from 1)"
                    ));
                }
                (Captures::Glob(_), Group::Name(_)) => {
                    return Err(format!(
                        "{group}: a glob's captures are numbered ($1, ${{2}})"
                    ));
                }
                (Captures::Regex { count, .. }, Group::Index(i)) if i > count => {
                    return Err(format!("{group}: the regex has {count} groups"));
                }
                (Captures::Regex { names, .. }, Group::Name(n)) if !names.contains(n) => {
                    return Err(format!("{group}: the regex has no group named {n:?}"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
