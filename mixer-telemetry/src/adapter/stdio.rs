//! Istio's `stdio` adapter: `logentry` (and `metric`) instances as lines on
//! stdout, stderr, a file, or a file rotated by size, one JSON object per
//! line when `outputAsJson` (as Istio's demo profile set it).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mixer::adapter::{Adapter, Handler, ParamsError, params};
use mixer::attribute::Value;
use mixer::expr::functions::format_rfc3339;
use mixer::template::{Instance, Template};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

pub struct Stdio;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
enum Level {
    #[default]
    Info,
    Warning,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warn",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Stream {
    #[default]
    Stdout,
    Stderr,
    File,
    RotatedFile,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default, alias = "log_stream")]
    log_stream: Stream,
    /// A `severity` value → the level its entries are written at.
    #[serde(default, alias = "severity_levels")]
    severity_levels: HashMap<String, Level>,
    #[serde(default, alias = "metric_level")]
    metric_level: Level,
    #[serde(default, alias = "output_as_json")]
    output_as_json: bool,
    /// Entries below this level are not written.
    #[serde(default, alias = "output_level")]
    output_level: Level,
    #[serde(default, alias = "output_path")]
    output_path: String,
    #[serde(default = "hundred", alias = "max_megabytes_before_rotation")]
    max_megabytes_before_rotation: u32,
    #[serde(default = "thirty", alias = "max_days_before_rotation")]
    max_days_before_rotation: u32,
    #[serde(default = "thousand", alias = "max_backups_before_removal")]
    max_backups_before_removal: u32,
}

fn hundred() -> u32 {
    100
}
fn thirty() -> u32 {
    30
}
fn thousand() -> u32 {
    1000
}

impl Adapter for Stdio {
    fn name(&self) -> &'static str {
        "stdio"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::LogEntry, Template::Metric]
    }

    fn build(&self, json: &Json) -> Result<Arc<dyn Handler>, ParamsError> {
        let p: Params = params(json)?;
        let sink = match p.log_stream {
            Stream::Stdout => Sink::Stdout,
            Stream::Stderr => Sink::Stderr,
            Stream::File | Stream::RotatedFile => {
                if p.output_path.is_empty() {
                    return Err(ParamsError::new(
                        "outputPath",
                        "FILE and ROTATED_FILE need an outputPath",
                    ));
                }
                let path = PathBuf::from(&p.output_path);
                let file = open(&path).map_err(|e| {
                    ParamsError::new("outputPath", format!("cannot open {}: {e}", path.display()))
                })?;
                let rotation = (p.log_stream == Stream::RotatedFile).then_some(Rotation {
                    max_bytes: u64::from(p.max_megabytes_before_rotation.max(1)) << 20,
                    max_age: Duration::from_secs(u64::from(p.max_days_before_rotation) * 86_400),
                    max_backups: p.max_backups_before_removal,
                });
                Sink::File {
                    written: file.metadata().map(|m| m.len()).unwrap_or(0),
                    out: BufWriter::new(file),
                    path,
                    rotation,
                }
            }
        };
        Ok(Arc::new(StdioHandler {
            params: p,
            sink: Mutex::new(sink),
        }))
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Rotation {
    max_bytes: u64,
    max_age: Duration,
    max_backups: u32,
}

enum Sink {
    Stdout,
    Stderr,
    File {
        out: BufWriter<File>,
        path: PathBuf,
        written: u64,
        rotation: Option<Rotation>,
    },
}

impl Sink {
    fn write_lines(&mut self, lines: &str) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(lines.as_bytes())?;
                out.flush()
            }
            Sink::Stderr => io::stderr().lock().write_all(lines.as_bytes()),
            Sink::File {
                out,
                path,
                written,
                rotation,
            } => {
                out.write_all(lines.as_bytes())?;
                out.flush()?;
                *written += lines.len() as u64;
                if let Some(r) = rotation
                    && *written >= r.max_bytes
                {
                    rotate(path, r)?;
                    *out = BufWriter::new(open(path)?);
                    *written = 0;
                }
                Ok(())
            }
        }
    }
}

/// `path` becomes `path.1`, `path.1` becomes `path.2`, and so on; backups
/// past the count or the age are removed.
fn rotate(path: &Path, r: &Rotation) -> io::Result<()> {
    let backup = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let _ = std::fs::remove_file(backup(r.max_backups.max(1)));
    for n in (1..r.max_backups.max(1)).rev() {
        let _ = std::fs::rename(backup(n), backup(n + 1));
    }
    std::fs::rename(path, backup(1))?;
    let now = SystemTime::now();
    for n in 1..=r.max_backups.max(1) {
        let old = std::fs::metadata(backup(n))
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > r.max_age);
        if old {
            let _ = std::fs::remove_file(backup(n));
        }
    }
    Ok(())
}

struct StdioHandler {
    params: Params,
    sink: Mutex<Sink>,
}

/// A value as the log shows it: numbers and booleans as JSON's, maps as
/// objects, everything else as the text an operator would write.
pub fn json_value(v: &Value) -> Json {
    match v {
        Value::Int64(i) => Json::from(*i),
        Value::Double(d) => Json::from(*d),
        Value::Bool(b) => Json::from(*b),
        Value::StringMap(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), Json::from(v.as_str())))
                .collect(),
        ),
        Value::Duration(d) => Json::from(go_duration(*d)),
        other => Json::from(other.to_string()),
    }
}

/// Durations as Istio (Go) printed them: `1.5ms`, `2s`, `350µs`.
fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0s".into()
    } else if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{}ms", ns as f64 / 1e6)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

impl StdioHandler {
    fn level(&self, instance: &Instance) -> Level {
        match instance.template {
            Template::Metric => self.params.metric_level,
            _ => instance
                .value("severity")
                .and_then(Value::as_str)
                .and_then(|s| self.params.severity_levels.get(s).copied())
                .unwrap_or_default(),
        }
    }

    fn line(&self, instance: &Instance, level: Level, out: &mut String) {
        let time = match instance.value("timestamp") {
            Some(Value::Timestamp(t)) => *t,
            _ => SystemTime::now(),
        };
        let time = format_rfc3339(time.duration_since(UNIX_EPOCH).unwrap_or_default());
        let mut fields: Vec<(&str, Json)> = Vec::new();
        let map = match instance.template {
            Template::Metric => {
                if let Some(v) = instance.value("value") {
                    fields.push(("value", json_value(v)));
                }
                instance.map("dimensions")
            }
            _ => instance.map("variables"),
        };
        for (k, v) in map.into_iter().flatten() {
            fields.push((k, json_value(v)));
        }
        if self.params.output_as_json {
            let mut object = Map::new();
            object.insert("level".into(), level.name().into());
            object.insert("time".into(), time.into());
            object.insert("instance".into(), instance.name.as_ref().into());
            for (k, v) in fields {
                object.insert(k.to_string(), v);
            }
            out.push_str(&Json::Object(object).to_string());
        } else {
            out.push_str(&format!("{time}\t{}\t{}", level.name(), instance.name));
            for (k, v) in fields {
                let v = match v {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                out.push_str(&format!("\t{k}={v}"));
            }
        }
        out.push('\n');
    }
}

#[async_trait]
impl Handler for StdioHandler {
    async fn report(&self, instances: &[Instance]) -> Result<(), String> {
        let mut lines = String::new();
        for instance in instances {
            let level = self.level(instance);
            if level >= self.params.output_level {
                self.line(instance, level, &mut lines);
            }
        }
        if lines.is_empty() {
            return Ok(());
        }
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        sink.write_lines(&lines)
            .map_err(|e| format!("writing {} log lines: {e}", instances.len()))
    }
}

#[cfg(test)]
mod tests {
    use mixer::template::{FieldValue, ValueMap};

    use super::*;

    fn entry(severity: &str, vars: &[(&str, Value)]) -> Instance {
        let vars: ValueMap = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Instance {
            name: "accesslog.instance.istio-system".into(),
            template: Template::LogEntry,
            fields: vec![
                ("severity", FieldValue::Value(Value::string(severity))),
                (
                    "timestamp",
                    FieldValue::Value(Value::Timestamp(
                        UNIX_EPOCH + Duration::from_millis(1_574_000_000_123),
                    )),
                ),
                ("variables", FieldValue::Map(vars)),
            ],
        }
    }

    #[tokio::test]
    async fn json_lines_to_a_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let json = serde_json::json!({
            "logStream": "ROTATED_FILE", "outputPath": path.to_str().unwrap(),
            "outputAsJson": true, "outputLevel": "INFO",
            "severityLevels": {"Warning": "WARNING", "Default": "INFO"},
            "maxMegabytesBeforeRotation": 1, "maxBackupsBeforeRemoval": 2,
        });
        let h = Stdio.build(&json).unwrap();
        h.report(&[entry(
            "Warning",
            &[
                ("responseCode", Value::Int64(503)),
                ("latency", Value::Duration(Duration::from_micros(1500))),
                ("sourceIp", Value::IpAddress("10.1.0.5".parse().unwrap())),
            ],
        )])
        .await
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let line: Json = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "level": "warn", "time": "2019-11-17T14:13:20.123Z",
                "instance": "accesslog.instance.istio-system",
                "responseCode": 503, "latency": "1.5ms", "sourceIp": "10.1.0.5"
            })
        );
        // Past a megabyte the file is rotated, and only two backups stay.
        let big = Value::string(&"x".repeat(600_000));
        for _ in 0..8 {
            h.report(&[entry("Default", &[("big", big.clone())])])
                .await
                .unwrap();
        }
        assert!(dir.path().join("access.log.1").exists());
        assert!(dir.path().join("access.log.2").exists());
        assert!(!dir.path().join("access.log.3").exists());
    }

    #[tokio::test]
    async fn entries_below_the_output_level_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let json = serde_json::json!({
            "logStream": "FILE", "outputPath": path.to_str().unwrap(),
            "outputLevel": "WARNING", "severityLevels": {"Error": "ERROR"},
        });
        let h = Stdio.build(&json).unwrap();
        h.report(&[
            entry("Default", &[]),
            entry("Error", &[("code", Value::Int64(500))]),
        ])
        .await
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "2019-11-17T14:13:20.123Z\terror\taccesslog.instance.istio-system\tcode=500\n"
        );
    }

    #[test]
    fn bad_params_name_the_field() {
        let err = |j: Json| Stdio.build(&j).err().unwrap().to_string();
        assert_eq!(
            err(serde_json::json!({"logStream": "FILE"})),
            "outputPath: FILE and ROTATED_FILE need an outputPath"
        );
        assert!(err(serde_json::json!({"logStream": "PIGEON"})).starts_with("logStream:"));
        assert!(err(serde_json::json!({"outputLevel": "LOUD"})).starts_with("outputLevel:"));
    }
}
