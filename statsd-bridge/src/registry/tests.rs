use super::*;
use crate::exposition::{self, Build};
use crate::mapping;
use crate::process::Process;

fn registry(yaml: &str, limits: Limits) -> Registry {
    let mapper = mapping::from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    Registry::new(Arc::new(mapper), limits)
}

fn render(r: &mut Registry, now: Instant) -> String {
    let build = Build {
        version: "test",
        revision: "test",
    };
    exposition::render(r.snapshot(now), &Process::default(), 0.0, &build)
}

/// The value of the sample line starting with `series ` (name and labels as
/// rendered), if there is one.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{series}: {v}")))
}

fn has_series(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(name) && !l.starts_with('#'))
}

#[test]
fn counters_gauges_and_sample_rates() {
    let mut r = registry("", Limits::default());
    let now = Instant::now();
    r.ingest(
        b"hits:1|c\nhits:2|c|@0.1\nqueue:5|g\nqueue:+3|g\nqueue:-10|g\ntemp:7|g|@0.5",
        now,
    );
    let text = render(&mut r, now);
    assert_eq!(value(&text, "hits"), Some(21.0));
    assert_eq!(value(&text, "queue"), Some(-2.0));
    assert_eq!(value(&text, "temp"), Some(7.0), "a gauge's rate is ignored");
    r.ingest(b"queue:4|g", now);
    assert_eq!(value(&render(&mut r, now), "queue"), Some(4.0));
    assert_eq!(r.stats.lines, 7);
    assert_eq!(r.stats.events, [2, 5, 0, 0]);
    assert_eq!(r.stats.events_unmapped, 7);
}

#[test]
fn timers_are_seconds_and_sampled_timers_count_many_times() {
    let mut r = registry(
        "defaults:\n  observer_type: histogram\n  buckets: [0.1, 0.25, 1]\n",
        Limits::default(),
    );
    let now = Instant::now();
    r.ingest(b"lat:250|ms|@0.5\nlat:50|ms\nsize:0.2|h\nsize:3|d", now);
    let text = render(&mut r, now);
    assert_eq!(value(&text, "lat_bucket{le=\"0.1\"}"), Some(1.0));
    assert_eq!(value(&text, "lat_bucket{le=\"0.25\"}"), Some(3.0));
    assert_eq!(value(&text, "lat_bucket{le=\"+Inf\"}"), Some(3.0));
    assert_eq!(value(&text, "lat_count"), Some(3.0));
    assert!((value(&text, "lat_sum").unwrap() - 0.55).abs() < 1e-9);
    // h and d are observed as sent, not divided by 1000.
    assert_eq!(value(&text, "size_bucket{le=\"0.25\"}"), Some(1.0));
    assert_eq!(value(&text, "size_sum"), Some(3.2));
}

#[test]
fn mapped_names_labels_and_tags() {
    let mut r = registry(
        r#"
mappings:
- match: 'envoy\.cluster\.(.+)\.upstream_rq_(\d+)'
  match_type: regex
  name: envoy_cluster_upstream_rq
  labels:
    cluster_name: $1
    response_code: $2
    source: mapping
- match: svc.*.requests
  name: svc_requests_total
  honor_labels: true
  labels:
    service: $1
    env: default
"#,
        Limits::default(),
    );
    let now = Instant::now();
    r.ingest(
        b"envoy.cluster.reviews.upstream_rq_200:3|c|#source:tag,zone:a\n\
          envoy.cluster.reviews.upstream_rq_200:1|c|#zone:a,source:tag\n\
          svc.ratings.requests:1|c|#env:prod\n\
          svc.ratings.requests:1|c",
        now,
    );
    let text = render(&mut r, now);
    // The mapping's label wins over a tag of the same name; tag order does
    // not make another series.
    assert_eq!(
        value(
            &text,
            "envoy_cluster_upstream_rq{cluster_name=\"reviews\",response_code=\"200\",source=\"mapping\",zone=\"a\"}"
        ),
        Some(4.0),
        "{text}"
    );
    // With honor_labels the tag wins.
    assert_eq!(
        value(
            &text,
            "svc_requests_total{env=\"prod\",service=\"ratings\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "svc_requests_total{env=\"default\",service=\"ratings\"}"
        ),
        Some(1.0)
    );
    assert_eq!(r.stats.tags, 3);
    assert_eq!(r.stats.actions[0], 4);
    assert!(text.contains("# TYPE envoy_cluster_upstream_rq counter\n"));
}

#[test]
fn the_cache_answers_repeats() {
    let mut r = registry("", Limits::default());
    let now = Instant::now();
    for _ in 0..10 {
        r.ingest(b"a.b:1|c|#k:v", now);
    }
    assert_eq!((r.stats.cache_gets, r.stats.cache_hits), (10, 9));
    assert_eq!(r.series_count(), 1);
    // A tag error is counted on every sample, hits included.
    for _ in 0..3 {
        r.ingest(b"a.b:1|c|#bad", now);
    }
    assert_eq!(r.stats.tag_errors, 3);
}

#[test]
fn series_expire_after_their_ttl() {
    let mut r = registry(
        "defaults:\n  ttl: 1m\nmappings:\n- match: keep.*\n  name: keep\n  ttl: 0\n  labels: {k: $1}\n",
        Limits::default(),
    );
    let t0 = Instant::now();
    r.ingest(b"short:5|c\nkeep.x:1|c", t0);
    assert_eq!(r.expire(t0 + Duration::from_secs(59)), 0);
    // A sample renews it.
    r.ingest(b"short:1|c", t0 + Duration::from_secs(30));
    assert_eq!(r.expire(t0 + Duration::from_secs(89)), 0);
    assert_eq!(r.expire(t0 + Duration::from_secs(90)), 1);
    let later = t0 + Duration::from_secs(3600);
    let text = render(&mut r, later);
    assert!(!has_series(&text, "short"), "{text}");
    assert_eq!(
        value(&text, "keep{k=\"x\"}"),
        Some(1.0),
        "ttl 0 never expires"
    );
    assert_eq!(r.stats.series_expired, 1);
    // The name comes back as a new series, not the old one's cached slot.
    r.ingest(b"short:2|c", later);
    assert_eq!(value(&render(&mut r, later), "short"), Some(2.0));
}

#[test]
fn the_series_limit_drops_new_series_and_counts_them() {
    let mut r = registry(
        "defaults:\n  ttl: 10s\n",
        Limits {
            max_series: 3,
            ..Limits::default()
        },
    );
    let t0 = Instant::now();
    r.ingest(b"a:1|c\nb:1|c\nc:1|c\nd:1|c\ne:1|g", t0);
    assert_eq!(r.series_count(), 3);
    assert_eq!(r.stats.series_limit_drops, 2);
    // Series that exist keep taking samples.
    r.ingest(b"a:1|c\nd:1|c", t0 + Duration::from_secs(5));
    let text = render(&mut r, t0);
    assert_eq!(value(&text, "a"), Some(2.0));
    assert!(!has_series(&text, "d"));
    assert_eq!(
        value(&text, "statsd_exporter_series_limit_drops_total"),
        Some(3.0)
    );
    // Room comes back as series expire.
    r.expire(t0 + Duration::from_secs(12));
    r.ingest(b"d:1|c", t0 + Duration::from_secs(12));
    assert_eq!(value(&render(&mut r, t0), "d"), Some(1.0));
}

#[test]
fn conflicting_types_and_names_are_refused() {
    let mut r = registry("defaults:\n  observer_type: histogram\n", Limits::default());
    let now = Instant::now();
    r.ingest(b"x:1|c\nx:1|g\nlat:5|ms\nlat_count:1|c\nlat_sum:1|g", now);
    assert_eq!(r.stats.conflicts, [1, 2, 0, 0]);
    r.ingest(b"total_count:1|c\ntotal:1|ms", now);
    assert_eq!(r.stats.conflicts, [1, 2, 1, 0]);
    // The bridge's own names are not for mapped metrics.
    r.ingest(
        b"statsd_exporter_lines_total:1|c\nprocess.open_fds:1|g",
        now,
    );
    assert_eq!(r.stats.conflicts, [2, 3, 1, 0]);
    let text = render(&mut r, now);
    assert_eq!(value(&text, "x"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "statsd_exporter_events_conflict_total{type=\"gauge\"}"
        ),
        Some(3.0)
    );
}

#[test]
fn negative_counters_empty_names_and_drops() {
    let mut r = registry(
        "mappings:\n- match: noisy.*\n  action: drop\n- match: '^empty\\.(x*)$'\n  match_type: regex\n  name: $1\n",
        Limits::default(),
    );
    let now = Instant::now();
    r.ingest(
        b"neg:-1|c\nnoisy.a:1|c\nnoisy.b:1|g|#t:1\nnoisy.a:1|c\nempty.:1|c",
        now,
    );
    assert_eq!(r.series_count(), 0);
    assert_eq!(r.stats.event_errors, [1, 1]);
    assert_eq!(r.stats.actions, [0, 3]);
    assert_eq!(r.stats.tags, 1);
    r.ingest(b"ok:1|c\nok:-5|c", now);
    assert_eq!(value(&render(&mut r, now), "ok"), Some(1.0));
    assert_eq!(r.stats.event_errors, [2, 1]);
}

#[test]
fn garbage_is_counted_by_reason_and_good_lines_around_it_kept() {
    let mut r = registry("", Limits::default());
    let now = Instant::now();
    let mut packet = b"good:1|c\nno_colon\ntrunc:1|\ntrunc2:\nbad:x|c\n".to_vec();
    packet.extend_from_slice(&[0xff, 0xfe, b':', b'1', b'|', b'c', b'\n']);
    packet.extend_from_slice(b"good:2|c\n\n");
    r.ingest(&packet, now);
    let text = render(&mut r, now);
    assert_eq!(value(&text, "good"), Some(3.0));
    for (reason, n) in [
        ("malformed_line", 1.0),
        ("illegal_event", 1.0),
        ("not_enough_parts_after_colon", 1.0),
        ("malformed_value", 1.0),
        ("invalid_utf8", 1.0),
        ("line_too_long", 0.0),
    ] {
        let series = format!("statsd_exporter_sample_errors_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&text, &series), Some(n), "{reason}");
    }
    assert_eq!(r.stats.lines, 7);
}

#[test]
fn sets_count_distinct_members() {
    let mut r = registry("", Limits::default());
    let t0 = Instant::now();
    r.ingest(b"users:alice|s\nusers:bob|s\nusers:alice|s", t0);
    let text = render(&mut r, t0);
    assert_eq!(value(&text, "users"), Some(2.0));
    assert!(text.contains("# TYPE users gauge\n"));
    r.ingest(b"users:1|g", t0);
    assert_eq!(r.stats.conflicts, [0, 1, 0, 0], "a gauge cannot join a set");
}

#[test]
fn summaries_by_default_as_statsd_exporter() {
    let mut r = registry("", Limits::default());
    let now = Instant::now();
    for i in 1..=100 {
        r.ingest(format!("rt:{i}|ms").as_bytes(), now);
    }
    let text = render(&mut r, now);
    let median = value(&text, "rt{quantile=\"0.5\"}").unwrap();
    assert!((median - 0.05).abs() < 0.001, "{median}");
    assert_eq!(value(&text, "rt_count"), Some(100.0));
    assert!((value(&text, "rt_sum").unwrap() - 5.05).abs() < 1e-9);
}

#[test]
fn a_new_mapper_applies_to_what_arrives_next() {
    let mut r = registry("", Limits::default());
    let now = Instant::now();
    r.ingest(b"a.b:1|c", now);
    let mapper = mapping::from_yaml(
        "mappings:\n- match: a.*\n  name: a_total\n  labels: {x: $1}\n",
        "new",
    )
    .unwrap();
    r.set_mapper(Arc::new(mapper));
    r.ingest(b"a.b:1|c", now);
    let text = render(&mut r, now);
    assert_eq!(value(&text, "a_b"), Some(1.0));
    assert_eq!(value(&text, "a_total{x=\"b\"}"), Some(1.0));
    assert_eq!(value(&text, "statsd_exporter_loaded_mappings"), Some(1.0));
}

#[test]
fn a_full_cache_starts_over_without_losing_series() {
    let mut r = registry(
        "",
        Limits {
            cache_size: 2,
            ..Limits::default()
        },
    );
    let now = Instant::now();
    r.ingest(b"a:1|c\nb:1|c\nc:1|c\na:1|c", now);
    assert_eq!(r.stats.cache_resets, 1);
    assert_eq!(value(&render(&mut r, now), "a"), Some(2.0));
    let mut r = registry(
        "",
        Limits {
            cache_size: 0,
            ..Limits::default()
        },
    );
    r.ingest(b"a:1|c\na:1|c", now);
    assert_eq!((r.stats.cache_hits, r.series_count()), (0, 1));
}
