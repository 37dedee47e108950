//! The mesh metrics in Prometheus' text format (0.0.4), as scraped at
//! 42422 `/metrics`.

use std::fmt::Write as _;

use super::family::{Family, Kind, SEP};

/// Appends `family` to `out`, series in key order so scrapes are stable.
pub fn render(family: &Family, out: &mut String) {
    let def = &family.def;
    let kind = match def.kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Distribution => "histogram",
    };
    let _ = writeln!(out, "# HELP {} {}", def.name, escape_help(&def.help));
    let _ = writeln!(out, "# TYPE {} {kind}", def.name);
    let series = family.series.lock().unwrap_or_else(|p| p.into_inner());
    let mut keys: Vec<&Box<str>> = series.keys().collect();
    keys.sort();
    let mut labels = String::new();
    for key in keys {
        let s = &series[key];
        labels.clear();
        for (i, (name, value)) in def.labels.iter().zip(key.split(SEP)).enumerate() {
            if i > 0 {
                labels.push(',');
            }
            let _ = write!(labels, "{name}=\"");
            escape_value(value, &mut labels);
            labels.push('"');
        }
        match def.kind {
            Kind::Counter | Kind::Gauge => {
                let _ = writeln!(out, "{}{} {}", def.name, braces(&labels), s.value);
            }
            Kind::Distribution => {
                let sep = if labels.is_empty() { "" } else { "," };
                let mut cumulative = 0;
                for (bound, n) in def.buckets.iter().zip(&s.buckets) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "{}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}",
                        def.name
                    );
                }
                let _ = writeln!(
                    out,
                    "{}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
                    def.name, s.count
                );
                let _ = writeln!(out, "{}_sum{} {}", def.name, braces(&labels), s.value);
                let _ = writeln!(out, "{}_count{} {}", def.name, braces(&labels), s.count);
            }
        }
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

fn escape_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::family::Definition;
    use super::*;

    #[test]
    fn counters_and_histograms_render_as_prometheus_reads_them() {
        let now = Instant::now();
        let c = Family::new(Definition {
            name: "istio_requests_total".into(),
            help: "requests_total".into(),
            kind: Kind::Counter,
            labels: vec!["reporter".into(), "path".into()],
            buckets: vec![],
        });
        c.record("destination\u{1f}/a\"b\\c\nd", 2.0, now).unwrap();
        let h = Family::new(Definition {
            name: "istio_request_duration_seconds".into(),
            help: String::new(),
            kind: Kind::Distribution,
            labels: vec![],
            buckets: vec![0.005, 0.01],
        });
        h.record("", 0.007, now).unwrap();
        h.record("", 3.0, now).unwrap();
        let mut out = String::new();
        render(&c, &mut out);
        render(&h, &mut out);
        assert_eq!(
            out,
            "# HELP istio_requests_total requests_total\n\
             # TYPE istio_requests_total counter\n\
             istio_requests_total{reporter=\"destination\",path=\"/a\\\"b\\\\c\\nd\"} 2\n\
             # HELP istio_request_duration_seconds \n\
             # TYPE istio_request_duration_seconds histogram\n\
             istio_request_duration_seconds_bucket{le=\"0.005\"} 0\n\
             istio_request_duration_seconds_bucket{le=\"0.01\"} 1\n\
             istio_request_duration_seconds_bucket{le=\"+Inf\"} 2\n\
             istio_request_duration_seconds_sum 3.007\n\
             istio_request_duration_seconds_count 2\n"
        );
    }
}
