//! `report-load`: drives the real mixer-telemetry with reports as Istio's
//! proxies (Mixer API `Report`, batches of 100 with shared default words) and
//! as Envoy (the access log service, streams of HTTP entries) send them, and
//! measures attribute bags dispatched per second and per CPU-second with
//! Istio's default telemetry config (kubernetesenv + the prometheus
//! metrics; the stdio access log only with `--access-log`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use api::mixer::mixer_client::MixerClient;
use api::mixer::report_request::RepeatedAttributesSemantics;
use api::mixer::{CompressedAttributes, ReportRequest};
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::config::core::v3::{
    Address, Node, RequestMethod, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::data::accesslog::v3::{
    AccessLogCommon, HttpAccessLogEntry, HttpRequestProperties, HttpResponseProperties,
};
use envoy_types::pb::envoy::service::accesslog::v3::StreamAccessLogsMessage;
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_client::AccessLogServiceClient;
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::{
    HttpAccessLogEntries, Identifier, LogEntries,
};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, Timestamp, UInt32Value};
use mixer::attribute::compressed::encode;
use mixer::attribute::{Bag, Value, dictionary};
use tonic::transport::{Channel, Endpoint};
use trireme_bench::{cpu_seconds, machine_cpu_seconds, start_server, sum};
use trireme_tests::mesh::next_subnet;
use trireme_tests::process::Proc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Api {
    /// Istio's Mixer API, `Report`.
    Mixer,
    /// Envoy's access log service.
    Als,
}

#[derive(Parser)]
#[command(about = "Report load against the real mixer-telemetry")]
struct Args {
    /// Which APIs to drive (both when not given).
    #[arg(long, value_enum)]
    api: Vec<Api>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// HTTP/2 connections (one access-log stream each).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Reports in flight (Mixer API).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Attribute sets per Report, entries per access-log message.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Keep Istio's stdio access log on (it writes a JSON line per report).
    #[arg(long)]
    access_log: bool,
    /// Pin mixer-telemetry to these CPUs (taskset's list).
    #[arg(long)]
    server_cpus: Option<String>,
    /// The mixer-telemetry binary (default: beside this tool).
    #[arg(long)]
    mixer_telemetry: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

/// Source workloads (and their addresses) the reports come from.
const SOURCES: usize = 10;
const CODES: [i64; 5] = [200, 200, 200, 404, 503];

fn pods() -> String {
    let mut y = String::new();
    for i in 0..SOURCES {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: productpage-v{i}-6b746f74dc-{i:05}\n  namespace: default\n  labels: {{app: productpage, version: v{i}, pod-template-hash: 6b746f74dc}}\n  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: productpage-v{i}-6b746f74dc, uid: u{i}, controller: true}}]\nstatus: {{podIP: 10.2.0.{}}}\n---\n",
            i + 1
        ));
    }
    y.push_str("apiVersion: v1\nkind: Pod\nmetadata:\n  name: reviews-v1-7f99cc4496-gdxfn\n  namespace: default\n  labels: {app: reviews, version: v1, pod-template-hash: 7f99cc4496}\n  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v1-7f99cc4496, uid: r, controller: true}]\nstatus: {podIP: 10.2.1.1}\n");
    y
}

/// Istio's access-log rules, turned off: what is measured is the metrics.
const NO_ACCESS_LOG: &str = "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: stdio, namespace: istio-system}\nspec: {match: \"false\", actions: [{handler: stdio, instances: [accesslog]}]}\n---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: stdiotcp, namespace: istio-system}\nspec: {match: \"false\", actions: [{handler: stdio, instances: [tcpaccesslog]}]}\n";

/// What reviews-v1's sidecar reported about one request from a productpage.
fn bag(i: usize) -> Bag {
    let mut b = Bag::new();
    let s = |v: &str| Value::string(v);
    let now = SystemTime::now();
    let headers: std::collections::BTreeMap<String, String> = [
        (":authority", "reviews:9080"),
        (":method", "GET"),
        (":path", "/reviews/0"),
        ("accept", "*/*"),
        ("user-agent", "python-requests/2.21.0"),
        ("x-request-id", "4b1a5e9c-6a62-9c3e-a0f2-3c1a7c0f4a11"),
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "0"),
        ("x-forwarded-proto", "http"),
        ("content-length", "0"),
        ("x-envoy-attempt-count", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    b.set("context.protocol", s("http"));
    b.set("context.reporter.kind", s("inbound"));
    b.set(
        "source.ip",
        Value::IpAddress(format!("10.2.0.{}", i % SOURCES + 1).parse().expect("ip")),
    );
    b.set(
        "destination.ip",
        Value::IpAddress("10.2.1.1".parse().expect("ip")),
    );
    b.set("destination.port", Value::Int64(9080));
    b.set(
        "destination.uid",
        s("kubernetes://reviews-v1-7f99cc4496-gdxfn.default"),
    );
    b.set(
        "destination.service.host",
        s("reviews.default.svc.cluster.local"),
    );
    b.set("destination.service.name", s("reviews"));
    b.set("destination.service.namespace", s("default"));
    b.set("request.headers", Value::StringMap(Arc::new(headers)));
    b.set("request.method", s("GET"));
    b.set("request.path", s("/reviews/0"));
    b.set("request.url_path", s("/reviews/0"));
    b.set("request.host", s("reviews:9080"));
    b.set("request.scheme", s("http"));
    b.set("request.useragent", s("python-requests/2.21.0"));
    b.set("request.id", s("4b1a5e9c-6a62-9c3e-a0f2-3c1a7c0f4a11"));
    b.set("request.size", Value::Int64(0));
    b.set("request.total_size", Value::Int64(300));
    b.set("request.time", Value::Timestamp(now));
    b.set(
        "response.time",
        Value::Timestamp(now + Duration::from_millis(4)),
    );
    b.set(
        "response.duration",
        Value::Duration(Duration::from_millis(4)),
    );
    b.set("response.code", Value::Int64(CODES[i % CODES.len()]));
    b.set("response.size", Value::Int64(295));
    b.set("response.total_size", Value::Int64(512));
    b.set("connection.mtls", Value::Bool(false));
    b.set("context.proxy_error_code", s("-"));
    b
}

/// A Report of `n` sets sharing the request's default words, as Istio's
/// proxy batched them (only integers and addresses vary between sets).
fn report(n: usize) -> anyhow::Result<ReportRequest> {
    let sets: Vec<CompressedAttributes> = (0..n).map(|i| encode(&bag(i))).collect();
    let words = sets[0].words.clone();
    if sets.iter().any(|s| s.words != words) {
        bail!("the sets do not share their words");
    }
    Ok(ReportRequest {
        attributes: sets
            .into_iter()
            .map(|s| CompressedAttributes {
                words: Vec::new(),
                ..s
            })
            .collect(),
        default_words: words,
        global_word_count: dictionary::words().len() as u32,
        repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
    })
}

fn socket(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

/// The same requests as Envoy's access-log entries.
fn entries(n: usize) -> Vec<HttpAccessLogEntry> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (0..n)
        .map(|i| HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                downstream_remote_address: socket(&format!("10.2.0.{}", i % SOURCES + 1), 40_000),
                downstream_local_address: socket("10.2.1.1", 9080),
                upstream_remote_address: socket("127.0.0.1", 9080),
                upstream_cluster: "inbound|9080|http|reviews.default.svc.cluster.local".into(),
                route_name: "reviews.default.svc.cluster.local".into(),
                start_time: Some(Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                }),
                time_to_last_downstream_tx_byte: Some(PbDuration {
                    seconds: 0,
                    nanos: 4_000_000,
                }),
                ..Default::default()
            }),
            request: Some(HttpRequestProperties {
                request_method: RequestMethod::Get as i32,
                scheme: "http".into(),
                authority: "reviews:9080".into(),
                path: "/reviews/0".into(),
                user_agent: "python-requests/2.21.0".into(),
                request_id: "4b1a5e9c-6a62-9c3e-a0f2-3c1a7c0f4a11".into(),
                request_headers_bytes: 300,
                ..Default::default()
            }),
            response: Some(HttpResponseProperties {
                response_code: Some(UInt32Value {
                    value: CODES[i % CODES.len()] as u32,
                }),
                response_headers_bytes: 217,
                response_body_bytes: 295,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

struct Server {
    proc: Proc,
    ip: String,
    http: reqwest::Client,
}

impl Server {
    async fn metrics(&self) -> String {
        let url = format!("http://{}:15014/metrics", self.ip);
        match self.http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

async fn start(args: &Args, dir: &Path) -> anyhow::Result<Server> {
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("pods.yaml"), pods())?;
    if !args.access_log {
        std::fs::write(config.join("no-access-log.yaml"), NO_ACCESS_LOG)?;
    }
    let ip = format!("127.{}.0.20", next_subnet());
    let binary = args
        .mixer_telemetry
        .clone()
        .unwrap_or_else(|| trireme_tests::bin("mixer-telemetry"));
    let server_args: Vec<String> = vec![
        "server".into(),
        "--configStoreURL".into(),
        format!("fs://{}", config.display()),
        "--address".into(),
        format!("tcp://{ip}:9091"),
    ];
    let (proc, http) = start_server(
        "mixer-telemetry",
        &binary,
        server_args,
        args.server_cpus.as_deref(),
        dir,
        &format!("http://{ip}:15014/ready"),
    )
    .await;
    let configz: serde_json::Value = http
        .get(format!("http://{ip}:15014/debug/configz"))
        .send()
        .await?
        .json()
        .await?;
    if configz["errors"].as_array().is_some_and(|e| !e.is_empty()) {
        bail!("mixer-telemetry's config has errors: {}", configz["errors"]);
    }
    Ok(Server { proc, ip, http })
}

async fn channels(ip: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        out.push(
            Endpoint::from_shared(format!("http://{ip}:9091"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .context("connect to mixer-telemetry")?,
        );
    }
    Ok(out)
}

/// Sends Reports back to back from `concurrency` tasks for `duration`.
async fn drive_mixer(
    channels: &[Channel],
    request: &ReportRequest,
    concurrency: usize,
    duration: Duration,
) -> u64 {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|i| {
            let mut client = MixerClient::new(channels[i % channels.len()].clone());
            let request = request.clone();
            tokio::spawn(async move {
                let mut failed = 0;
                while Instant::now() < deadline {
                    if client.report(request.clone()).await.is_err() {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap_or(0);
    }
    failed
}

/// One access-log stream per channel, each sending messages of `entries`
/// as fast as HTTP/2 flow control lets it, for `duration`.
async fn drive_als(channels: &[Channel], entries: &[HttpAccessLogEntry], duration: Duration) {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = channels
        .iter()
        .map(|channel| {
            let mut client = AccessLogServiceClient::new(channel.clone());
            let entries = entries.to_vec();
            tokio::spawn(async move {
                let (tx, rx) = tokio::sync::mpsc::channel::<StreamAccessLogsMessage>(4);
                let stream = tokio::spawn(async move {
                    client
                        .stream_access_logs(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await
                });
                let mut first = true;
                while Instant::now() < deadline {
                    let message = StreamAccessLogsMessage {
                        identifier: first.then(|| Identifier {
                            node: Some(Node {
                                id: "sidecar~10.2.1.1~reviews-v1-7f99cc4496-gdxfn.default~default.svc.cluster.local".into(),
                                ..Default::default()
                            }),
                            log_name: "inbound".into(),
                        }),
                        log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
                            log_entry: entries.clone(),
                        })),
                    };
                    first = false;
                    if tx.send(message).await.is_err() {
                        break;
                    }
                }
                drop(tx);
                let _ = stream.await;
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let apis = if args.api.is_empty() {
        vec![Api::Mixer, Api::Als]
    } else {
        args.api.clone()
    };
    let dir = tempfile::Builder::new()
        .prefix("trireme-report-load-")
        .tempdir()?;
    let server = start(&args, dir.path()).await?;
    let channels = channels(&server.ip, args.connections).await?;
    let request = report(args.batch.max(1))?;
    let entries = entries(args.batch.max(1));
    println!(
        "mixer-telemetry: Istio's default telemetry config{}; {} attributes per report, batches of {}; {} connections; {} s per measurement{}",
        if args.access_log {
            " with the stdio access log"
        } else {
            " (metrics; access log off)"
        },
        bag(0).len(),
        args.batch,
        channels.len(),
        args.duration,
        args.server_cpus
            .as_ref()
            .map(|c| format!("; mixer-telemetry on CPU(s) {c}"))
            .unwrap_or_default(),
    );
    for api in apis {
        let name = match api {
            Api::Mixer => "Mixer Report",
            Api::Als => "Envoy access log service",
        };
        let drive = |d: u64| {
            let (channels, request, entries) = (&channels, &request, &entries);
            async move {
                let d = Duration::from_secs(d);
                match api {
                    Api::Mixer => {
                        drive_mixer(channels, request, args.concurrency, d).await;
                    }
                    Api::Als => drive_als(channels, entries, d).await,
                }
            }
        };
        drive(args.warmup).await;
        let before = server.metrics().await;
        let (cpu0, tool0, machine0) = (
            cpu_seconds(server.proc.pid()),
            cpu_seconds(std::process::id()),
            machine_cpu_seconds(),
        );
        let started = Instant::now();
        drive(args.duration).await;
        let elapsed = started.elapsed().as_secs_f64();
        let after = server.metrics().await;
        let cpu = cpu_seconds(server.proc.pid()) - cpu0;
        let tool = cpu_seconds(std::process::id()) - tool0;
        let others = (machine_cpu_seconds() - machine0 - cpu - tool).max(0.0);
        let delta = |name: &str| sum(&after, name) - sum(&before, name);
        let dispatched = delta("mixer_report_dispatched_bags_total");
        let accepted = delta("mixer_report_bags_total");
        let dropped = delta("mixer_report_dropped_bags_total");
        let instances = delta("mixer_report_instances_total");
        let errors = delta("mixer_report_instance_errors_total")
            + delta("mixer_report_handler_errors_total");
        println!(
            "{name}: {dispatched:.0} bags dispatched in {elapsed:.2} s = {:.0} bags/s = {:.0} bags per mixer-telemetry CPU-second ({:.2} µs each); accepted {accepted:.0}, dropped {dropped:.0} (queues full); {:.1} instances per bag, {errors:.0} errors; CPU: mixer-telemetry {:.2} cores, this tool {:.2}, other processes {:.2}",
            dispatched / elapsed,
            dispatched / cpu.max(0.01),
            1e6 * cpu / dispatched.max(1.0),
            instances / dispatched.max(1.0),
            cpu / elapsed,
            tool / elapsed,
            others / elapsed,
        );
    }
    Ok(())
}
