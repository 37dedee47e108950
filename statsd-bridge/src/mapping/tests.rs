use super::*;

fn mapper(yaml: &str) -> Mapper {
    from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn refused(yaml: &str) -> String {
    match from_yaml(yaml, "test.yaml") {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

/// (name, labels sorted) of a mapped resolution.
fn mapped(m: &Mapper, name: &str, t: MetricType) -> (String, Vec<(String, String)>, bool) {
    match m.resolve(name, t) {
        Resolution::Map {
            name,
            mut labels,
            mapped,
            ..
        } => {
            labels.sort();
            (name, labels, mapped)
        }
        other => panic!("{name}: {other:?}"),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn glob_captures_fill_name_and_labels() {
    let m = mapper(
        r#"
mappings:
- match: test.dispatcher.*.*.*
  name: "dispatcher_events_total"
  labels:
    processor: "$1"
    action: "$2"
    outcome: "$3"
    job: "test_dispatcher"
- match: "*.signup.*.*"
  name: "${3}_signups"
  labels:
    provider: "$2"
    job: "${1}_server"
"#,
    );
    assert_eq!(
        mapped(
            &m,
            "test.dispatcher.FooProcessor.send.success",
            MetricType::Counter
        ),
        (
            "dispatcher_events_total".into(),
            labels(&[
                ("action", "send"),
                ("job", "test_dispatcher"),
                ("outcome", "success"),
                ("processor", "FooProcessor")
            ]),
            true
        )
    );
    assert_eq!(
        mapped(
            &m,
            "foo_product.signup.facebook.failure",
            MetricType::Counter
        ),
        (
            "failure_signups".into(),
            labels(&[("job", "foo_product_server"), ("provider", "facebook")]),
            true
        )
    );
    // Unmapped: statsd_exporter's default naming, no suffix, no labels.
    assert_eq!(
        mapped(&m, "test.web-server.foo.bar", MetricType::Counter),
        ("test_web_server_foo_bar".into(), vec![], false)
    );
}

#[test]
fn regex_captures_by_number_and_name() {
    let m = mapper(
        r#"
mappings:
- match: 'envoy\.cluster\.(?P<cluster>.+)\.upstream_rq_(\d+)'
  match_type: regex
  name: envoy_cluster_upstream_rq
  labels:
    cluster_name: "${cluster}"
    response_code: "$2"
"#,
    );
    assert_eq!(
        mapped(
            &m,
            "envoy.cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_200",
            MetricType::Counter
        ),
        (
            "envoy_cluster_upstream_rq".into(),
            labels(&[
                (
                    "cluster_name",
                    "outbound|9080||reviews.default.svc.cluster.local"
                ),
                ("response_code", "200")
            ]),
            true
        )
    );
    // Not anchored, as in statsd_exporter.
    assert!(
        mapped(
            &m,
            "prefix.envoy.cluster.x.upstream_rq_503.suffix",
            MetricType::Counter
        )
        .2
    );
}

#[test]
fn globs_before_regexes_and_first_glob_wins() {
    let m = mapper(
        r#"
mappings:
- match: 'a\.(.*)'
  match_type: regex
  name: from_regex
- match: a.*.c
  name: first_glob
- match: a.b.c
  name: second_glob
"#,
    );
    assert_eq!(mapped(&m, "a.b.c", MetricType::Counter).0, "first_glob");
    assert_eq!(mapped(&m, "a.x", MetricType::Counter).0, "from_regex");
}

#[test]
fn glob_disable_ordering_prefers_text_over_stars() {
    let m = mapper(
        r#"
defaults:
  glob_disable_ordering: true
mappings:
- match: a.*.*
  name: stars
- match: a.b.*
  name: text
"#,
    );
    assert_eq!(mapped(&m, "a.b.c", MetricType::Counter).0, "text");
    assert_eq!(mapped(&m, "a.x.c", MetricType::Counter).0, "stars");
}

#[test]
fn match_metric_type_and_drop() {
    let m = mapper(
        r#"
mappings:
- match: svc.*
  match_metric_type: counter
  name: svc_total
- match: svc.*
  match_metric_type: timer
  name: svc_seconds
- match: noisy.*
  action: drop
"#,
    );
    assert_eq!(mapped(&m, "svc.a", MetricType::Counter).0, "svc_total");
    assert_eq!(mapped(&m, "svc.a", MetricType::Observer).0, "svc_seconds");
    assert_eq!(
        mapped(&m, "svc.a", MetricType::Gauge),
        ("svc_a".into(), vec![], false)
    );
    assert_eq!(m.resolve("noisy.x", MetricType::Counter), Resolution::Drop);
}

#[test]
fn settings_from_mapping_then_defaults() {
    let m = mapper(
        r#"
defaults:
  observer_type: histogram
  buckets: [.01, .1, 1]
  ttl: 10m
mappings:
- match: a.*
  name: a
- match: b.*
  name: b
  timer_type: summary
  quantiles:
  - quantile: 0.99
    error: 0.001
  ttl: 30s
  help: "B's latency"
  scale: 0.5
  honor_labels: true
- match: c.*
  name: c
  histogram_options:
    buckets: [1, 2]
- match: d.*
  name: d
  observer_type: summary
  summary_options:
    max_age: 1m
    age_buckets: 3
    buf_cap: 100
"#,
    );
    let settings = |name: &str| match m.resolve(name, MetricType::Observer) {
        Resolution::Map { settings, .. } => settings.clone(),
        other => panic!("{other:?}"),
    };
    let a = settings("a.x");
    assert_eq!(
        a.observer,
        Observer::Histogram {
            buckets: vec![0.01, 0.1, 1.0].into()
        }
    );
    assert_eq!(a.ttl, Duration::from_secs(600));
    assert_eq!(&*a.help, DEFAULT_HELP);
    let b = settings("b.x");
    let Observer::Summary(s) = &b.observer else {
        panic!("{b:?}")
    };
    assert_eq!(s.quantiles.len(), 1);
    assert_eq!(s.max_age, Duration::from_secs(600));
    assert_eq!(
        (b.ttl, &*b.help, b.scale, b.honor_labels),
        (Duration::from_secs(30), "B's latency", 0.5, true)
    );
    assert_eq!(
        settings("c.x").observer,
        Observer::Histogram {
            buckets: vec![1.0, 2.0].into()
        }
    );
    let Observer::Summary(d) = settings("d.x").observer else {
        panic!()
    };
    assert_eq!(
        (d.max_age, d.age_buckets, d.quantiles.len()),
        (Duration::from_secs(60), 3, 3)
    );
    // Unmapped names take the defaults too.
    assert_eq!(settings("zzz").ttl, Duration::from_secs(600));
    assert!(matches!(
        settings("zzz").observer,
        Observer::Histogram { .. }
    ));
}

#[test]
fn statsd_exporter_defaults_when_nothing_is_said() {
    let m = Mapper::empty();
    assert!(m.is_empty());
    let Observer::Summary(s) = &m.unmapped.observer else {
        panic!()
    };
    let q: Vec<f64> = s.quantiles.iter().map(|q| q.quantile).collect();
    assert_eq!(q, vec![0.5, 0.9, 0.99]);
    assert_eq!(m.unmapped.ttl, Duration::ZERO);
    let m = mapper("defaults:\n  observer_type: histogram\n");
    assert_eq!(
        m.unmapped.observer,
        Observer::Histogram {
            buckets: DEFAULT_BUCKETS.into()
        }
    );
}

#[test]
fn errors_name_the_mapping_and_the_field() {
    let e =
        refused("mappings:\n- match: a.b\n  name: x\n- match: c.*\n  name: y\n  lables: {a: b}\n");
    assert!(
        e.contains(r#"mappings[1] (match "c.*"): lables: unknown field"#),
        "{e}"
    );
    let e = refused("mappings:\n- match: '(unclosed'\n  match_type: regex\n  name: x\n");
    assert!(
        e.contains(r#"mappings[0] (match "(unclosed"): match: bad regex"#),
        "{e}"
    );
    let e = refused("mappings:\n- match: a.*\n  name: x\n  ttl: 60\n");
    assert!(e.contains("ttl: 60 has no unit"), "{e}");
    let e = refused("mappings:\n- match: a.*\n  name: x\n  ttl: 10 minutes\n");
    assert!(e.contains("mappings[0] (match \"a.*\"): ttl:"), "{e}");
    let e = refused("mappings:\n- match: a.*\n  name: x_$2\n");
    assert!(
        e.contains("name: ${2} refers to wildcard 2, but the match has 1"),
        "{e}"
    );
    let e = refused("mappings:\n- match: a.*\n  name: x\n  labels:\n    k: $1_suffix\n");
    assert!(
        e.contains("labels.k: ${1_suffix}: a glob's captures are numbered"),
        "{e}"
    );
    let e = refused("mappings:\n- match: a.*\n  name: x\n  labels:\n    9k: v\n");
    assert!(e.contains("labels.9k: not a label name"), "{e}");
    let e = refused("mappings:\n- match: a.*\n  name: a-b\n");
    assert!(e.contains("name: \"a-b\" holds '-'"), "{e}");
    let e = refused("mappings:\n- match: a.*\n");
    assert!(e.contains("name: required"), "{e}");
    let e = refused("mappings:\n- name: x\n");
    assert!(e.contains("mappings[0]: match: required"), "{e}");
    let e = refused(
        "mappings:\n- match: a.*\n  name: x\n  buckets: [1, 0.5]\n  timer_type: histogram\n",
    );
    assert!(e.contains("buckets: bounds must increase"), "{e}");
    let e = refused(
        "mappings:\n- match: a.*\n  name: x\n  observer_type: histogram\n  summary_options: {max_age: 1m}\n",
    );
    assert!(e.contains("summary_options: given for a histogram"), "{e}");
    let e = refused("mappings:\n- match: a.*\n  name: x\n  action: keep\n");
    assert!(e.contains("action: \"keep\": expected map or drop"), "{e}");
    let e = refused("mappings:\n- match: a.*\n  name: x\n  match_metric_type: meter\n");
    assert!(e.contains("match_metric_type"), "{e}");
    let e = refused("mappings:\n- match: a.*\n  name: x\n  quantiles:\n  - quantile: 1.5\n");
    assert!(
        e.contains("quantiles[0].quantile: must be between 0 and 1"),
        "{e}"
    );
    let e = refused("mappings:\n- match: a.*\n  name: x\n  labels:\n    le: $1\n");
    assert!(e.contains("labels.le: reserved"), "{e}");
    let e = refused("mappings:\n- match: a.b*\n  name: x\n");
    assert!(e.contains("whole component"), "{e}");
    let e = refused("defaults:\n  timer_type: histogramm\n");
    assert!(e.contains("defaults: timer_type: \"histogramm\""), "{e}");
    let e = refused("defaults:\n  histogram_options:\n    native_histogram_bucket_factor: 1.1\n");
    assert!(e.contains("not supported"), "{e}");
    let e = refused("mapping:\n- match: a\n");
    assert!(e.contains("top level: mapping: unknown field"), "{e}");
    let e = refused("mappings: [\n");
    assert!(e.contains("is not YAML"), "{e}");
}

#[test]
fn a_drop_mapping_needs_no_name_and_regex_named_groups_are_checked() {
    let m = mapper("mappings:\n- match: .\n  match_type: regex\n  action: drop\n");
    assert_eq!(m.resolve("anything", MetricType::Gauge), Resolution::Drop);
    let e = refused("mappings:\n- match: 'a\\.(?P<x>.*)'\n  match_type: regex\n  name: ${y}\n");
    assert!(e.contains("no group named \"y\""), "{e}");
    // `le` is fine where no histogram can come of it.
    mapper("mappings:\n- match: a.*\n  match_metric_type: gauge\n  name: x\n  labels: {le: $1}\n");
}

#[test]
fn a_name_that_expands_to_nothing_is_an_error_not_a_metric() {
    let m = mapper("mappings:\n- match: '(.*)'\n  match_type: regex\n  name: $1\n");
    assert_eq!(m.resolve("", MetricType::Counter), Resolution::EmptyName);
    // Expanded names are escaped like default names.
    assert_eq!(mapped(&m, "a.b-c", MetricType::Counter).0, "a_b_c");
}

#[test]
fn the_documented_example_is_a_valid_mapping_file() {
    let doc = include_str!("../../../docs/statsd-bridge.md");
    let section = &doc[doc.find("## Mapping files").expect("the section")..];
    let start = section.find("```yaml\n").expect("a YAML block") + "```yaml\n".len();
    let yaml = &section[start..start + section[start..].find("```").expect("its end")];
    let m = mapper(yaml);
    assert_eq!(m.len(), 4);
    assert_eq!(
        mapped(
            &m,
            "envoy.cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_200",
            MetricType::Counter
        ),
        (
            "envoy_cluster_upstream_rq".into(),
            labels(&[
                (
                    "cluster_name",
                    "outbound|9080||reviews.default.svc.cluster.local"
                ),
                ("response_code", "200")
            ]),
            true
        )
    );
    assert_eq!(
        mapped(&m, "svc.ratings.requests", MetricType::Counter).0,
        "ratings_requests_total"
    );
    assert_eq!(
        m.resolve("envoy.server.uptime", MetricType::Gauge),
        Resolution::Drop
    );
}
