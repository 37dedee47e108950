//! The real `statsd-bridge` binary on loopback: statsd over real UDP and TCP
//! sockets, the exposition over real HTTP, signals from outside.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_statsd-bridge");

/// A port free for both TCP and UDP on 127.0.0.1 just now.
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind TCP :0");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The bridge under test; killed when dropped.
struct Bridge {
    child: Child,
    statsd: SocketAddr,
    web: String,
    http: reqwest::Client,
}

impl Bridge {
    async fn start(extra: &[&str]) -> Bridge {
        let statsd: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let web = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            format!("--statsd.listen-udp={statsd}"),
            "--statsd.listen-tcp".to_string(),
            statsd.to_string(),
            format!("--web.listen-address={web}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let child = Command::new(BIN)
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start statsd-bridge");
        let mut bridge = Bridge {
            child,
            statsd,
            web: format!("http://{web}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        };
        bridge.wait_ready().await;
        bridge
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("statsd-bridge exited before it was ready: {status}");
            }
            if let Ok(r) = self.http.get(format!("{}/-/ready", self.web)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "statsd-bridge never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metrics(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.web))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        r.text().await.expect("body")
    }

    /// Polls the exposition until every `(series, value)` shows; UDP is
    /// asynchronous, so this is how a test knows the bridge got there.
    async fn expect(&self, wanted: &[(&str, f64)]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics().await;
            let missing: Vec<_> = wanted
                .iter()
                .filter(|(series, v)| value(&text, series) != Some(*v))
                .collect();
            if missing.is_empty() {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {missing:?}; last exposition:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn udp(&self, packet: &[u8]) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("UDP client");
        socket.send_to(packet, self.statsd).expect("send UDP");
    }

    async fn tcp(&self, stream: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut conn = tokio::net::TcpStream::connect(self.statsd)
            .await
            .expect("connect TCP");
        conn.write_all(stream).await.expect("write TCP");
        conn.shutdown().await.expect("close TCP");
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("signal");
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "statsd-bridge did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

const MAPPING: &str = r#"
defaults:
  observer_type: histogram
  buckets: [0.01, 0.1, 1]
mappings:
- match: 'envoy\.cluster\.(.+)\.upstream_rq_(\d+)'
  match_type: regex
  name: envoy_cluster_upstream_rq
  labels:
    cluster_name: $1
    response_code: $2
- match: envoy.http.*.downstream_rq_time
  name: envoy_http_downstream_rq_time
  labels:
    http_conn_manager_prefix: $1
- match: envoy.*.noisy
  action: drop
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_tcp_statsd_become_mapped_series_and_garbage_is_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mapping = write(dir.path(), "mapping.yaml", MAPPING);
    let bridge = Bridge::start(&[&format!("--statsd.mapping-config={mapping}")]).await;

    bridge.udp(
        b"envoy.cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_200:3|c\n\
          envoy.cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_200:1|c|@0.5\n\
          envoy.http.ingress_http.downstream_rq_time:50|ms\n\
          envoy.http.ingress_http.downstream_rq_time:500|ms|@0.5\n\
          envoy.http.a.b.downstream_rq_time:5000|ms\n\
          envoy.server.noisy:1|c\n\
          envoy.server.live:1|g\n\
          envoy.server.live:+2|g\n\
          dog.requests:1|c|#method:GET,code:200\n\
          multi:1|c:2|c\n\
          this is garbage\n\
          truncated:1|\n\
          bad.value:x|c\n",
    );
    bridge.udp(&[0xff, 0xfe, 0xfd, b'\n', b'x', b':', b'1', b'|', b'c']);
    bridge.udp(b"cut.short:");
    let mut stream = b"tcp.gauge:7|g\ntcp.counter:1|c\n".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 70_000));
    stream.extend_from_slice(b":1|c\nafter.long:1|c\nno.newline.at.end:4|c");
    bridge.tcp(&stream).await;

    let text = bridge
        .expect(&[
            (
                "envoy_cluster_upstream_rq{cluster_name=\"outbound|9080||reviews.default.svc.cluster.local\",response_code=\"200\"}",
                5.0,
            ),
            // 50 ms, and 500 ms sampled at 0.5 (observed twice): in seconds.
            (
                "envoy_http_downstream_rq_time_bucket{http_conn_manager_prefix=\"ingress_http\",le=\"0.1\"}",
                1.0,
            ),
            (
                "envoy_http_downstream_rq_time_bucket{http_conn_manager_prefix=\"ingress_http\",le=\"1\"}",
                3.0,
            ),
            (
                "envoy_http_downstream_rq_time_count{http_conn_manager_prefix=\"ingress_http\"}",
                3.0,
            ),
            // A glob's `*` is one component: this one has two, so it is unmapped.
            ("envoy_http_a_b_downstream_rq_time_count", 1.0),
            ("envoy_server_live", 3.0),
            ("dog_requests{code=\"200\",method=\"GET\"}", 1.0),
            ("multi", 3.0),
            ("x", 1.0),
            ("tcp_gauge", 7.0),
            ("tcp_counter", 1.0),
            ("after_long", 1.0),
            ("no_newline_at_end", 4.0),
            ("statsd_exporter_sample_errors_total{reason=\"malformed_line\"}", 1.0),
            ("statsd_exporter_sample_errors_total{reason=\"illegal_event\"}", 1.0),
            ("statsd_exporter_sample_errors_total{reason=\"malformed_value\"}", 1.0),
            ("statsd_exporter_sample_errors_total{reason=\"invalid_utf8\"}", 1.0),
            (
                "statsd_exporter_sample_errors_total{reason=\"not_enough_parts_after_colon\"}",
                1.0,
            ),
            ("statsd_exporter_sample_errors_total{reason=\"line_too_long\"}", 1.0),
            ("statsd_exporter_tcp_too_long_lines_total", 1.0),
            ("statsd_exporter_udp_packets_total", 3.0),
            ("statsd_exporter_tcp_connections_total", 1.0),
            ("statsd_exporter_events_actions_total{action=\"drop\"}", 1.0),
            ("statsd_exporter_tags_total", 1.0),
            ("statsd_exporter_loaded_mappings", 3.0),
        ])
        .await;
    assert!(!text.contains("noisy"), "{text}");
    assert!(
        value(&text, "process_resident_memory_bytes").is_some_and(|b| b > 1e6),
        "{text}"
    );

    let version: serde_json::Value = bridge
        .http
        .get(format!("{}/version", bridge.web))
        .send()
        .await
        .expect("GET /version")
        .json()
        .await
        .expect("JSON");
    assert_eq!(version["component"], "statsd-bridge");
    let healthy = bridge
        .http
        .get(format!("{}/-/healthy", bridge.web))
        .send()
        .await
        .expect("GET /-/healthy");
    assert!(healthy.status().is_success());
}

/// Runs the binary to its exit (killing it if it does not exit in time).
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("stderr");
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start statsd-bridge");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("statsd-bridge {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn bad_configuration_exits_64_naming_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let free = format!("127.0.0.1:{}", free_port());
    let bad = |name: &str, yaml: &str| write(dir.path(), name, yaml);
    let cases = [
        (
            bad(
                "unknown.yaml",
                "mappings:\n- match: a.*\n  name: a\n- match: b.*\n  name: b\n  lables: {x: $1}\n",
            ),
            r#"mappings[1] (match "b.*"): lables: unknown field"#,
        ),
        (
            bad(
                "regex.yaml",
                "mappings:\n- match: 'a(['\n  match_type: regex\n  name: a\n",
            ),
            r#"mappings[0] (match "a(["): match: bad regex"#,
        ),
        (
            bad(
                "ttl.yaml",
                "mappings:\n- match: a.*\n  name: a\n  ttl: 5 minutes\n",
            ),
            r#"mappings[0] (match "a.*"): ttl:"#,
        ),
    ];
    for (path, wanted) in &cases {
        let (status, stderr) = run_to_exit(&[
            &format!("--statsd.mapping-config={path}"),
            &format!("--statsd.listen-udp={free}"),
            "--statsd.listen-tcp=",
            &format!("--web.listen-address={free}"),
        ]);
        assert_eq!(status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(wanted), "wanted {wanted:?} in:\n{stderr}");
    }
    for (args, wanted) in [
        (
            vec!["--statsd.listen-udp=", "--statsd.listen-tcp="],
            "nothing would receive statsd",
        ),
        (vec!["--web.listen-address=nowhere"], "--web.listen-address"),
        (vec!["--statsd.max-series=0"], "--statsd.max-series"),
        (vec!["--statsd.no-such-flag=1"], "--statsd.no-such-flag"),
        (
            vec!["--statsd.mapping-config=/does/not/exist.yaml"],
            "/does/not/exist.yaml",
        ),
    ] {
        let (status, stderr) = run_to_exit(&args);
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains(wanted),
            "{args:?}: wanted {wanted:?} in:\n{stderr}"
        );
    }
    let good = write(dir.path(), "good.yaml", MAPPING);
    let (status, stderr) = run_to_exit(&["--check-config", "--statsd.mapping-config", &good]);
    assert!(status.success(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_cap_reload_on_sighup_and_graceful_exit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mapping = write(dir.path(), "mapping.yaml", "mappings: []\n");
    let mut bridge =
        Bridge::start(&["--statsd.mapping-config", &mapping, "--statsd.max-series=5"]).await;
    let packet: String = (0..8).map(|i| format!("capped.s{i}:1|c\n")).collect();
    bridge.udp(packet.as_bytes());
    let text = bridge
        .expect(&[
            ("statsd_exporter_series_limit_drops_total", 3.0),
            ("statsd_exporter_metrics_total{type=\"counter\"}", 5.0),
            ("statsd_exporter_max_series", 5.0),
        ])
        .await;
    assert_eq!(
        text.lines().filter(|l| l.starts_with("capped_s")).count(),
        5
    );

    // A bad edit is refused and counted; the rules in use stay.
    write(
        dir.path(),
        "mapping.yaml",
        "mappings:\n- match: a.*\n  nme: x\n",
    );
    bridge.signal(Signal::SIGHUP);
    bridge
        .expect(&[(
            "statsd_exporter_config_reloads_total{outcome=\"failure\"}",
            1.0,
        )])
        .await;
    write(
        dir.path(),
        "mapping.yaml",
        "mappings:\n- match: capped.*\n  name: capped_total\n  labels: {series: $1}\n",
    );
    bridge.signal(Signal::SIGHUP);
    bridge
        .expect(&[
            (
                "statsd_exporter_config_reloads_total{outcome=\"success\"}",
                1.0,
            ),
            ("statsd_exporter_loaded_mappings", 1.0),
        ])
        .await;
    // Old series stay (and hold the cap), so a new mapped series is refused...
    bridge.udp(b"capped.s0:1|c\n");
    bridge
        .expect(&[("statsd_exporter_series_limit_drops_total", 4.0)])
        .await;

    bridge.signal(Signal::SIGTERM);
    let status = bridge.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}
