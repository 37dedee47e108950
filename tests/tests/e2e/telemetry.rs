//! Telemetry through real Envoy: the sidecars' access logs stream to the real
//! mixer-telemetry, whose default config turns them into Istio's metrics
//! (scraped by a real Prometheus) and access-log lines.

use std::time::Duration;

use serde_json::Value;
use trireme_tests::eventually;
use trireme_tests::mesh::{Mesh, Options};
use trireme_tests::postgres::Postgres;
use trireme_tests::telemetry::{Prometheus, series_value};

/// Requests with `x-fault: abort` are answered 503 by the client's Envoy
/// itself: no upstream cluster, so the service must come from the route.
const ABORT: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        x-fault: {exact: abort}
    fault:
      abort: {httpStatus: 503, percentage: {value: 100}}
    route:
    - destination: {host: reviews}
  - route:
    - destination: {host: reviews}
"#;

fn telemetry() -> Options {
    Options {
        telemetry: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_traffic_becomes_istio_metrics_in_prometheus_and_access_logs() {
    let mesh = Mesh::start_with(&["v1"], &[("vs.yaml", ABORT)], telemetry()).await;
    for _ in 0..5 {
        assert_eq!(mesh.call("/reviews/1", &[]).await.0, 200);
    }
    assert_eq!(
        mesh.call("/reviews/2", &[("x-fault", "abort")]).await.0,
        503
    );

    let both = [
        ("source_workload", "client"),
        ("source_app", "client"),
        ("destination_workload", "reviews-v1"),
        ("destination_app", "reviews"),
        ("destination_version", "v1"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "default"),
        ("request_protocol", "http"),
        ("response_code", "200"),
    ];
    let text = eventually(
        "5 requests reported by both sidecars",
        Duration::from_secs(20),
        || async {
            let text = mesh.mesh_metrics().await;
            let count = |reporter| {
                let mut labels = both.to_vec();
                labels.push(("reporter", reporter));
                series_value(&text, "istio_requests_total", &labels).unwrap_or(0.0)
            };
            // One scrape can fall between two metrics of one batch.
            let durations = series_value(
                &text,
                "istio_request_duration_seconds_count",
                &[("reporter", "destination")],
            );
            (count("destination") == 5.0
                && count("source") == 5.0
                && durations.is_some_and(|n| n >= 5.0))
            .then_some(text)
        },
    )
    .await;
    assert!(!text.contains("_total_total"));

    // The abort never reached a cluster: the route named the service.
    let aborted = eventually("the abort reported", Duration::from_secs(20), || async {
        let text = mesh.mesh_metrics().await;
        series_value(
            &text,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("source_workload", "client"),
                ("destination_service", "reviews.default.svc.cluster.local"),
                ("response_code", "503"),
                ("response_flags", "FI"),
            ],
        )
    })
    .await;
    assert_eq!(aborted, 1.0);

    // The access log: one JSON line per request and reporter.
    let log = std::fs::read_to_string(mesh.log("mixer-telemetry")).expect("log");
    let entries: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["instance"] == "accesslog.instance.istio-system")
        .collect();
    let ok_from = |reporter: &str| {
        entries
            .iter()
            .filter(|e| {
                e["reporter"] == reporter
                    && e["responseCode"] == 200
                    && e["sourceWorkload"] == "client"
                    && e["destinationWorkload"] == "reviews-v1"
                    && e["url"] == "/reviews/1"
                    && e["method"] == "GET"
            })
            .count()
    };
    assert_eq!(
        (ok_from("destination"), ok_from("source")),
        (5, 5),
        "{entries:#?}"
    );

    // A real Prometheus scraping 42422 sees the same series.
    let ip = mesh.topology.telemetry_ip();
    let listen = ip.replace(".0.20", ".0.21") + ":9090";
    let prometheus = Prometheus::start(
        mesh.dir.path(),
        &listen,
        &[("istio-mesh", format!("{ip}:42422"))],
    )
    .await;
    let sample = prometheus
        .wait_for(
            r#"istio_requests_total{reporter="destination",source_workload="client",destination_service="reviews.default.svc.cluster.local",response_code="200"}"#,
            |v| v == 5.0,
        )
        .await;
    assert_eq!(sample["metric"]["destination_workload"], "reviews-v1");
    assert_eq!(sample["metric"]["job"], "istio-mesh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_without_telemetry_sends_no_reports_anywhere() {
    let mesh = Mesh::start(&["v1"], &[]).await;
    assert_eq!(mesh.call("/reviews/1", &[]).await.0, 200);
    let listeners = mesh.listeners_dump("client").await;
    assert!(!listeners.contains("http_grpc"), "{listeners}");
    assert!(
        !mesh
            .active_clusters("client")
            .await
            .contains("istio-telemetry")
    );
}

/// The default access log, also as rows in PostgreSQL: a small buffer, so
/// an outage overflows it.
fn sql_config(url: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: accesslog-sql, namespace: istio-system}}
spec:
  compiledAdapter: sql
  params:
    url: "{url}"
    table: access_log
    flushInterval: 200ms
    bufferSize: 6
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: accesslog-sql, namespace: istio-system}}
spec:
  match: context.protocol == "http"
  actions:
  - handler: accesslog-sql
    instances: [accesslog]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_reach_postgresql_and_survive_its_outage() {
    // The mesh's subnet is chosen when it starts: PostgreSQL gets an
    // address of its own first, on the loopback like every "pod".
    let pg_host = format!("127.{}.9.1", trireme_tests::mesh::next_subnet());
    let mut pg = Postgres::start(&pg_host);
    let mesh = Mesh::start_with(
        &["v1"],
        &[("sql.yaml", &sql_config(&pg.url()))],
        telemetry(),
    )
    .await;
    let rows = |pg: &Postgres| {
        pg.query("SELECT count(*) FROM access_log WHERE variables->>'url' = '/reviews/1' AND (variables->>'responseCode')::int = 200")
            .parse::<u64>()
            .unwrap_or(0)
    };
    for _ in 0..3 {
        assert_eq!(mesh.call("/reviews/1", &[]).await.0, 200);
    }
    // Each request is logged by both sidecars.
    eventually("6 rows in PostgreSQL", Duration::from_secs(20), || async {
        (rows(&pg) == 6).then_some(())
    })
    .await;
    let reporters =
        pg.query("SELECT string_agg(DISTINCT variables->>'reporter', ',') FROM access_log");
    assert_eq!(reporters, "destination,source");

    pg.stop();
    for _ in 0..5 {
        assert_eq!(
            mesh.call("/reviews/1", &[]).await.0,
            200,
            "the mesh does not notice"
        );
    }
    // Ten rows for a buffer of six: six wait, four are dropped and counted.
    let metric = |text: &str, name: &str| {
        trireme_tests::telemetry::series_value(text, name, &[("table", "access_log")])
            .unwrap_or(0.0)
    };
    // What was seen last is printed when it changes, so a timeout shows it.
    let seen = std::sync::Mutex::new((0.0, 0.0, 0.0));
    eventually("the overflow counted", Duration::from_secs(20), || async {
        let own = mesh.telemetry_metrics().await;
        let now = (
            metric(&own, "mixer_sql_rows_dropped_total"),
            metric(&own, "mixer_sql_buffered_rows"),
            metric(&own, "mixer_sql_write_errors_total"),
        );
        let mut last = seen.lock().unwrap();
        if *last != now {
            eprintln!("dropped, buffered, write errors: {now:?}");
            *last = now;
        }
        (now.0 == 4.0 && now.1 == 6.0 && now.2 >= 1.0).then_some(())
    })
    .await;
    let ready = format!("http://{}:15014/ready", mesh.topology.telemetry_ip());
    assert!(
        mesh.http
            .get(&ready)
            .send()
            .await
            .expect("ready")
            .status()
            .is_success()
    );

    pg.start_again();
    eventually(
        "the buffered rows written",
        Duration::from_secs(30),
        || async { (rows(&pg) == 12).then_some(()) },
    )
    .await;
    let own = mesh.telemetry_metrics().await;
    assert_eq!(metric(&own, "mixer_sql_rows_written_total"), 12.0);
    assert_eq!(metric(&own, "mixer_sql_buffered_rows"), 0.0);
}

/// Envoy's upstream request counts per cluster, the cluster as a label.
const STATSD_MAPPING: &str = r#"
mappings:
- match: 'envoy\.cluster\.(.+)\.upstream_rq_total'
  match_type: regex
  name: envoy_cluster_upstream_rq_total
  labels:
    cluster_name: "$1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_statsd_reaches_prometheus_through_the_bridge() {
    let mesh = Mesh::start_with(
        &["v1"],
        &[],
        Options {
            statsd_bridge: Some(STATSD_MAPPING.into()),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..4 {
        assert_eq!(mesh.call("/reviews/1", &[]).await.0, 200);
    }
    // Envoy flushes its stats every 5 s.
    let cluster = "outbound|9080||reviews.default.svc.cluster.local";
    let labels = [("cluster_name", cluster)];
    eventually(
        "the client's requests counted at the bridge",
        Duration::from_secs(30),
        || async {
            let text = mesh.statsd_metrics().await;
            (series_value(&text, "envoy_cluster_upstream_rq_total", &labels) >= Some(4.0))
                .then_some(())
        },
    )
    .await;
    let text = mesh.statsd_metrics().await;
    // Unmapped metrics keep statsd_exporter's default names.
    assert!(
        text.contains("envoy_server_live"),
        "{}",
        &text[..text.len().min(2000)]
    );
    assert_eq!(
        series_value(&text, "statsd_exporter_sample_errors_total", &[]).unwrap_or(0.0),
        0.0
    );

    let ip = mesh.topology.statsd_bridge_ip();
    let listen = ip.replace(".0.30", ".0.31") + ":9090";
    let prometheus =
        Prometheus::start(mesh.dir.path(), &listen, &[("envoy", format!("{ip}:9102"))]).await;
    let sample = prometheus
        .wait_for(
            &format!(r#"envoy_cluster_upstream_rq_total{{cluster_name="{cluster}"}}"#),
            |v| v >= 4.0,
        )
        .await;
    assert_eq!(sample["metric"]["job"], "envoy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statsd_bridge_that_is_gone_never_stops_a_proxy() {
    // As Istio 1.0 with the bridge turned off: its name no longer resolves.
    let mesh = Mesh::start_with(
        &["v1"],
        &[],
        Options {
            agent_args: vec![
                "--statsdUdpAddress".into(),
                "istio-statsd-prom-bridge.istio-system.invalid:9125".into(),
            ],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(mesh.call("/reviews/1", &[]).await.0, 200);
    let log = std::fs::read_to_string(mesh.log("client-agent")).expect("log");
    assert!(log.contains("statsd sink left out"), "{log}");
}
