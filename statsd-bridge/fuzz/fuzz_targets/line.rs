//! Any bytes as a statsd datagram. The parser never panics and what it
//! yields holds together: a sample's name, tags and container are slices of
//! its line, its value is finite and its rate in (0, 1]. The same bytes then
//! go through a registry with mapping rules and a small series cap, and the
//! exposition that comes out is well-formed text: every sample line is a
//! declared family's, with a value Prometheus can read.

#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use statsd_bridge::exposition::{Build, render};
use statsd_bridge::line::{Item, parse_line, tags};
use statsd_bridge::mapping::{self, Mapper};
use statsd_bridge::process::Process;
use statsd_bridge::registry::{Limits, Registry};
use tokio::time::Instant;

static MAPPER: LazyLock<Arc<Mapper>> = LazyLock::new(|| {
    let yaml = r#"
defaults:
  observer_type: histogram
  buckets: [0.01, 0.1, 1]
mappings:
- match: 'envoy\.cluster\.(.+)\.upstream_rq_(\d+)'
  match_type: regex
  name: envoy_cluster_upstream_rq
  labels: {cluster_name: $1, response_code: $2}
- match: envoy.http.*.*
  name: envoy_http_${2}
  labels: {prefix: $1}
- match: summary.*
  name: summary_$1
  observer_type: summary
- match: drop.*
  action: drop
"#;
    Arc::new(mapping::from_yaml(yaml, "fuzz").expect("the fuzz mapping is valid"))
});

fn check_line(line: &str) {
    let mut check = |item: Item<'_>| {
        if let Item::Sample(s) = item {
            let inside = |part: &str| {
                part.is_empty()
                    || (line.as_ptr() as usize <= part.as_ptr() as usize
                        && part.as_ptr() as usize + part.len() <= line.as_ptr() as usize + line.len())
            };
            assert!(!s.name.is_empty());
            assert!(inside(s.name) && inside(s.tags) && inside(s.container) && inside(s.member));
            assert!(s.value.is_finite(), "{line:?}");
            assert!(s.rate > 0.0 && s.rate <= 1.0, "{line:?}");
            for (k, v) in tags(s.tags).flatten() {
                assert!(!k.is_empty() && !v.is_empty());
            }
        }
    };
    parse_line(line, &mut check);
}

fn check_exposition(text: &str) {
    let mut families: HashSet<&str> = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(families.insert(name), "family {name} declared twice");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let value_ok = matches!(value, "NaN" | "+Inf" | "-Inf") || value.parse::<f64>().is_ok();
        assert!(value_ok, "{line:?}");
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with(|c: char| c.is_ascii_digit()),
            "{line:?}"
        );
        let declared = families.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|base| families.contains(base)));
        assert!(declared, "{line:?} has no family");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.split('\n') {
            check_line(line);
        }
    }
    let mut registry = Registry::new(
        MAPPER.clone(),
        Limits {
            max_series: 50,
            cache_size: 64,
            ..Limits::default()
        },
    );
    let now = Instant::now();
    registry.ingest(data, now);
    registry.ingest(data, now);
    assert!(registry.series_count() <= 50);
    registry.expire(now);
    let build = Build {
        version: "fuzz",
        revision: "fuzz",
    };
    let text = render(registry.snapshot(now), &Process::default(), 0.0, &build);
    check_exposition(&text);
});
