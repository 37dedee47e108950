//! The Prometheus text exposition (version 0.0.4, what statsd_exporter
//! serves): the mapped families sorted by name, their series by labels, then
//! the bridge's own metrics under statsd_exporter's names.

use std::ops::Range;
use std::sync::Arc;

use crate::line::ParseError;
use crate::names::{push_help, push_label_value, push_value};
use crate::process::Process;
use crate::registry::{FamilySnapshot, Kind, Snapshot};
use crate::stats::{EVENT_TYPES, EventError};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a sample name belongs to the bridge's own metrics, which mapped
/// metrics may not take.
pub fn is_own(name: &str) -> bool {
    name.starts_with("statsd_exporter_")
        || name.starts_with("statsd_metric_mapper_")
        || PROCESS.contains(&name)
}

const PROCESS: [&str; 6] = [
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// Build facts for `statsd_exporter_build_info`.
#[derive(Clone, Copy)]
pub struct Build {
    pub version: &'static str,
    pub revision: &'static str,
}

/// Text produced per chunk of a streamed exposition: a scrape of 100,000
/// series is tens of MiB of text, which is never held whole.
const CHUNK: usize = 64 * 1024;

/// The exposition of one snapshot, as chunks of text in order.
pub struct Exposition {
    snapshot: Snapshot,
    process: Process,
    start_time: f64,
    build: Build,
    family: usize,
    series: usize,
    own_done: bool,
}

impl Exposition {
    pub fn new(
        mut snapshot: Snapshot,
        process: Process,
        start_time: f64,
        build: Build,
    ) -> Exposition {
        snapshot
            .families
            .sort_unstable_by(|a, b| a.name.cmp(&b.name));
        for family in &mut snapshot.families {
            family.series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        Exposition {
            snapshot,
            process,
            start_time,
            build,
            family: 0,
            series: 0,
            own_done: false,
        }
    }
}

impl Iterator for Exposition {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut out = String::with_capacity(CHUNK + CHUNK / 4);
        while out.len() < CHUNK {
            if let Some(family) = self.snapshot.families.get(self.family) {
                if self.series == 0 {
                    header(&mut out, &family.name, &family.help, family.kind.exposed());
                }
                match family.series.get(self.series) {
                    Some(series) => {
                        write_series(&mut out, family, series, &self.snapshot.numbers);
                        self.series += 1;
                    }
                    None => {
                        self.family += 1;
                        self.series = 0;
                    }
                }
            } else if !self.own_done {
                write_own(
                    &mut out,
                    &self.snapshot,
                    &self.process,
                    self.start_time,
                    &self.build,
                );
                self.own_done = true;
            } else {
                break;
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// The whole exposition as one string.
pub fn render(snapshot: Snapshot, process: &Process, start_time: f64, build: &Build) -> String {
    Exposition::new(snapshot, process.clone(), start_time, *build).collect()
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    push_help(out, help);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// `name{labels,extra_name="extra"} value`.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &str,
    extra: Option<(&str, f64)>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        out.push_str(labels);
        if let Some((k, v)) = extra {
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            push_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    push_value(out, value);
    out.push('\n');
}

fn write_series(
    out: &mut String,
    family: &FamilySnapshot,
    series: &(Arc<str>, Range<usize>),
    numbers: &[f64],
) {
    let name = &*family.name;
    let (labels, range) = series;
    let values = &numbers[range.clone()];
    match family.kind {
        Kind::Counter | Kind::Gauge | Kind::Set => sample(out, name, "", labels, None, values[0]),
        Kind::Histogram | Kind::Summary => {
            let (pairs, totals) = values.split_at(values.len() - 2);
            let (suffix, label) = if family.kind == Kind::Histogram {
                ("_bucket", "le")
            } else {
                ("", "quantile")
            };
            for pair in pairs.chunks_exact(2) {
                sample(out, name, suffix, labels, Some((label, pair[0])), pair[1]);
            }
            sample(out, name, "_sum", labels, None, totals[0]);
            sample(out, name, "_count", labels, None, totals[1]);
        }
    }
}

/// One metric without labels.
fn single(out: &mut String, name: &str, help: &str, kind: &str, value: f64) {
    header(out, name, help, kind);
    sample(out, name, "", "", None, value);
}

/// One metric with one label.
fn labelled<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, f64)>,
) {
    header(out, name, help, kind);
    for (v, n) in values {
        out.push_str(name);
        out.push('{');
        out.push_str(label);
        out.push_str("=\"");
        push_label_value(out, v);
        out.push_str("\"} ");
        push_value(out, n);
        out.push('\n');
    }
}

fn write_own(
    out: &mut String,
    snapshot: &Snapshot,
    process: &Process,
    start_time: f64,
    build: &Build,
) {
    let s = &snapshot.stats;
    let c = |n: u64| n as f64;
    header(
        out,
        "statsd_exporter_build_info",
        "A metric with a constant '1' value labeled by version and revision of statsd-bridge.",
        "gauge",
    );
    out.push_str("statsd_exporter_build_info{version=\"");
    push_label_value(out, build.version);
    out.push_str("\",revision=\"");
    push_label_value(out, build.revision);
    out.push_str("\"} 1\n");
    single(
        out,
        "statsd_exporter_udp_packets_total",
        "The total number of StatsD packets received over UDP.",
        "counter",
        c(s.udp_packets),
    );
    single(
        out,
        "statsd_exporter_tcp_connections_total",
        "The total number of TCP connections handled.",
        "counter",
        c(s.tcp_connections),
    );
    single(
        out,
        "statsd_exporter_tcp_connection_errors_total",
        "The number of errors encountered reading from TCP.",
        "counter",
        c(s.tcp_connection_errors),
    );
    single(
        out,
        "statsd_exporter_tcp_too_long_lines_total",
        "The number of lines discarded due to being too long.",
        "counter",
        c(s.tcp_too_long_lines),
    );
    single(
        out,
        "statsd_exporter_tcp_connections_refused_total",
        "TCP connections closed on arrival because --statsd.tcp-max-connections were open.",
        "counter",
        c(s.tcp_connections_refused),
    );
    single(
        out,
        "statsd_exporter_lines_total",
        "The total number of StatsD lines received.",
        "counter",
        c(s.lines),
    );
    single(
        out,
        "statsd_exporter_samples_total",
        "The total number of StatsD samples received.",
        "counter",
        c(s.samples),
    );
    labelled(
        out,
        "statsd_exporter_sample_errors_total",
        "The total number of errors parsing StatsD samples.",
        "counter",
        "reason",
        ParseError::ALL
            .iter()
            .map(|e| (e.reason(), c(s.sample_errors(*e)))),
    );
    single(
        out,
        "statsd_exporter_tags_total",
        "The total number of DogStatsD tags processed.",
        "counter",
        c(s.tags),
    );
    single(
        out,
        "statsd_exporter_tag_errors_total",
        "The number of errors parsing DogStatsD tags.",
        "counter",
        c(s.tag_errors),
    );
    labelled(
        out,
        "statsd_exporter_events_total",
        "The total number of StatsD events seen.",
        "counter",
        "type",
        EVENT_TYPES.iter().zip(s.events).map(|(t, n)| (*t, c(n))),
    );
    single(
        out,
        "statsd_exporter_events_unmapped_total",
        "The total number of StatsD events no mapping was found for.",
        "counter",
        c(s.events_unmapped),
    );
    labelled(
        out,
        "statsd_exporter_events_actions_total",
        "The total number of StatsD events by action.",
        "counter",
        "action",
        [("map", c(s.actions[0])), ("drop", c(s.actions[1]))],
    );
    labelled(
        out,
        "statsd_exporter_events_conflict_total",
        "The total number of StatsD events with conflicting names.",
        "counter",
        "type",
        EVENT_TYPES.iter().zip(s.conflicts).map(|(t, n)| (*t, c(n))),
    );
    labelled(
        out,
        "statsd_exporter_events_error_total",
        "The total number of StatsD events discarded due to errors.",
        "counter",
        "reason",
        EventError::ALL
            .iter()
            .map(|e| (e.reason(), c(s.event_errors[*e as usize]))),
    );
    labelled(
        out,
        "statsd_exporter_metrics_total",
        "The total number of metrics.",
        "gauge",
        "type",
        Kind::ALL.iter().map(|k| {
            let name = match k {
                Kind::Set => "set",
                k => k.exposed(),
            };
            (name, snapshot.series_by_kind[*k as usize] as f64)
        }),
    );
    single(
        out,
        "statsd_exporter_max_series",
        "Series the bridge keeps at most (--statsd.max-series).",
        "gauge",
        snapshot.max_series as f64,
    );
    single(
        out,
        "statsd_exporter_series_limit_drops_total",
        "Samples dropped because their new series would pass --statsd.max-series.",
        "counter",
        c(s.series_limit_drops),
    );
    single(
        out,
        "statsd_exporter_series_expired_total",
        "Series removed because their TTL passed without a sample.",
        "counter",
        c(s.series_expired),
    );
    single(
        out,
        "statsd_exporter_loaded_mappings",
        "The current number of configured metric mappings.",
        "gauge",
        snapshot.mappings as f64,
    );
    labelled(
        out,
        "statsd_exporter_config_reloads_total",
        "The number of configuration reloads.",
        "counter",
        "outcome",
        [
            ("success", c(s.config_reloads[0])),
            ("failure", c(s.config_reloads[1])),
        ],
    );
    single(
        out,
        "statsd_metric_mapper_cache_length",
        "The count of unique metrics currently cached.",
        "gauge",
        snapshot.cache_len as f64,
    );
    single(
        out,
        "statsd_metric_mapper_cache_gets_total",
        "The count of total metric cache gets.",
        "counter",
        c(s.cache_gets),
    );
    single(
        out,
        "statsd_metric_mapper_cache_hits_total",
        "The count of total metric cache hits.",
        "counter",
        c(s.cache_hits),
    );
    single(
        out,
        "statsd_metric_mapper_cache_resets_total",
        "Times the full mapping cache was emptied to start over.",
        "counter",
        c(s.cache_resets),
    );
    if let Some(v) = process.resident_bytes {
        single(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            v as f64,
        );
    }
    if let Some(v) = process.virtual_bytes {
        single(
            out,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
            v as f64,
        );
    }
    if let Some(v) = process.cpu_seconds {
        single(
            out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            v,
        );
    }
    if let Some(v) = process.open_fds {
        single(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
            v as f64,
        );
    }
    if let Some(v) = process.max_fds {
        single(
            out,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            "gauge",
            v as f64,
        );
    }
    single(
        out,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
        start_time,
    );
}

#[cfg(test)]
mod tests;
