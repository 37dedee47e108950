//! The real `galley server`:
//! - MCP distribution: `--resources` VirtualServices in a directory, then
//!   `--sinks` streams opened at once, each taking the whole collection and
//!   ACKing it; timed from the streams' opening to the last ACK, then again
//!   for one edited object pushed to every sink. Galley's memory is sampled.
//! - The validating webhook over HTTPS: admissions at a fixed rate (open
//!   loop: each latency counts from when the request was due), valid and
//!   invalid objects alternating.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use api::mcp::v1alpha1::resource_source_client::ResourceSourceClient;
use api::mcp::v1alpha1::{RequestResources, Resources};
use clap::Parser;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trireme_bench::latency::{gather, quantiles};
use trireme_tests::galley::{Galley, admission_review};
use trireme_tests::injector::Certs;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    resources: usize,
    #[arg(long, default_value_t = 10)]
    sinks: usize,
    /// Admission requests per second in the webhook run.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Pin Galley (all its threads) to these CPUs, e.g. `0`; run this tool
    /// on the others (`taskset -c 1`).
    #[arg(long = "server-cpus")]
    server_cpus: Option<String>,
}

const COLLECTION: &str = "istio/networking/v1alpha3/virtualservices";

fn virtual_service(i: usize, subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: svc-{i}, namespace: team-{}}}\nspec:\n  hosts: [svc-{i}]\n  http:\n  - match:\n    - headers: {{end-user: {{exact: jason}}}}\n    route:\n    - destination: {{host: svc-{i}, subset: {subset}}}\n  - route:\n    - destination: {{host: svc-{i}, subset: v1}}\n      weight: 90\n    - destination: {{host: svc-{i}, subset: v2}}\n      weight: 10\n    timeout: 3s\n    retries: {{attempts: 2, perTryTimeout: 1s}}\n---\n",
        i % 20
    )
}

/// One sink's stream: waits for the full collection, ACKs it; then for the
/// next push, ACKs that. Returns when each arrived.
async fn sink(
    address: String,
    resources: usize,
    incremental: bool,
    opened: Instant,
) -> anyhow::Result<(Duration, Duration)> {
    let mut client = ResourceSourceClient::connect(format!("http://{address}"))
        .await?
        .max_decoding_message_size(1 << 30);
    let (tx, rx) = mpsc::channel(4);
    tx.send(RequestResources {
        collection: COLLECTION.into(),
        incremental,
        ..Default::default()
    })
    .await?;
    let mut inbound = client
        .establish_resource_stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let ack = |push: &Resources| RequestResources {
        collection: push.collection.clone(),
        response_nonce: push.nonce.clone(),
        ..Default::default()
    };
    let first = inbound.message().await?.context("stream ended")?;
    ensure!(
        first.resources.len() == resources,
        "{} resources pushed",
        first.resources.len()
    );
    tx.send(ack(&first)).await?;
    let all = opened.elapsed();
    let second = inbound.message().await?.context("stream ended")?;
    let expected = if incremental { 1 } else { resources };
    ensure!(
        second.resources.len() == expected,
        "{} resources re-pushed",
        second.resources.len()
    );
    tx.send(ack(&second)).await?;
    Ok((all, opened.elapsed()))
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn pin(galley: &Galley, cpus: &Option<String>) -> anyhow::Result<()> {
    if let (Some(cpus), Some(proc)) = (cpus, &galley.proc) {
        let pinned = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &proc.pid().to_string()])
            .output()?;
        ensure!(
            pinned.status.success(),
            "taskset: {}",
            String::from_utf8_lossy(&pinned.stderr)
        );
    }
    Ok(())
}

async fn distribution(args: &Args, incremental: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config)?;
    let per_file = 100;
    for f in 0..args.resources.div_ceil(per_file) {
        let text: String = (f * per_file..((f + 1) * per_file).min(args.resources))
            .map(|i| virtual_service(i, "v2"))
            .collect();
        std::fs::write(config.join(format!("vs-{f:04}.yaml")), text)?;
    }
    let started = Instant::now();
    let ip = if incremental {
        "127.62.0.3"
    } else {
        "127.62.0.1"
    };
    let galley = Galley::start(ip, &config, dir.path(), None).await;
    println!(
        "{} VirtualServices read, validated and encoded: ready in {:.0} ms, {:.0} MiB resident",
        args.resources,
        started.elapsed().as_secs_f64() * 1000.0,
        rss_mib(galley.proc.as_ref().map_or(0, |p| p.pid()))
    );
    pin(&galley, &args.server_cpus)?;

    let opened = Instant::now();
    let streams: Vec<_> = (0..args.sinks)
        .map(|_| tokio::spawn(sink(galley.address(), args.resources, incremental, opened)))
        .collect();
    // The edit, once every sink holds the whole collection.
    let mut first = Vec::new();
    let edited = config.join("vs-0000.yaml");
    let wait_all = async {
        loop {
            let acks = galley.metric("galley_mcp_source_request_acks_total").await;
            if acks >= args.sinks as f64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait_all)
        .await
        .context("every sink ACKs the collection within 60 s")?;
    let rss = rss_mib(galley.proc.as_ref().map_or(0, |p| p.pid()));
    let text = std::fs::read_to_string(&edited)?.replacen("subset: v2", "subset: v3", 1);
    let edit_at = opened.elapsed();
    std::fs::write(&edited, text)?;
    let mut pushed = Vec::new();
    for s in streams {
        let (all, second) = s.await??;
        first.push(all);
        pushed.push(second.saturating_sub(edit_at));
    }
    first.sort();
    pushed.sort();
    let mode = if incremental { "incremental" } else { "full" };
    println!(
        "MCP ({mode} sinks): {} resources to {} sinks, all ACKed in {:.0} ms (first sink {:.0} ms); Galley {:.0} MiB resident while serving",
        args.resources,
        args.sinks,
        first.last().unwrap().as_secs_f64() * 1000.0,
        first[0].as_secs_f64() * 1000.0,
        rss
    );
    println!(
        "MCP ({mode} sinks): one object edited, pushed to every sink in {:.0} ms (file write to last sink ACK, includes the 100 ms debounce)",
        pushed.last().unwrap().as_secs_f64() * 1000.0
    );
    Ok(())
}

async fn webhook(args: &Args) -> anyhow::Result<()> {
    let ip = "127.62.0.2";
    let certs = Certs::for_ip(ip);
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(
        config.join("mixer.yaml"),
        trireme_tests::mixer::DENY_BLOCKED_USER,
    )?;
    let galley = Galley::start(ip, &config, dir.path(), Some(&certs)).await;
    pin(&galley, &args.server_cpus)?;
    let client = certs.client();
    let valid: serde_json::Value =
        serde_yaml::from_str(virtual_service(1, "v2").trim_end_matches("---\n"))?;
    let mut invalid = valid.clone();
    invalid["spec"]["http"][1]["route"][0]["weight"] = json!(80);
    let rule = json!({
        "apiVersion": "config.istio.io/v1alpha2", "kind": "rule",
        "metadata": {"name": "deny-mallory", "namespace": "istio-system"},
        "spec": {"match": "request.headers[\"x-user\"] == \"mallory\"", "actions": [{"handler": "denyall", "instances": ["denyrequest"]}]},
    });
    let cases = [
        (
            "/admitpilot",
            serde_json::to_vec(&admission_review("admission.k8s.io/v1", "CREATE", &valid))?,
        ),
        (
            "/admitpilot",
            serde_json::to_vec(&admission_review("admission.k8s.io/v1", "UPDATE", &invalid))?,
        ),
        (
            "/admitmixer",
            serde_json::to_vec(&admission_review("admission.k8s.io/v1", "CREATE", &rule))?,
        ),
    ];
    let one = |i: usize| {
        let (path, body) = &cases[i % cases.len()];
        let request = client
            .post(galley.webhook(path))
            .header("content-type", "application/json")
            .body(body.clone());
        async move {
            let r = request.send().await?;
            ensure!(r.status() == 200, "status {}", r.status());
            r.bytes().await?;
            Ok::<(), anyhow::Error>(())
        }
    };
    for i in 0..300 {
        one(i).await.context("warm-up")?;
    }
    let total = (args.rate * args.seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        let request = one(i);
        tasks.push(tokio::spawn(async move {
            request.await.map(|()| sent.elapsed().as_nanos() as u64)
        }));
    }
    let (nanos, errors) = gather(tasks).await?;
    println!(
        "webhook, {} admissions/s for {} s over HTTPS (valid and invalid VirtualServices, a Mixer rule checked with the served config): {} ({errors} errors)",
        args.rate,
        args.seconds,
        quantiles(nanos)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    distribution(&args, false).await?;
    distribution(&args, true).await?;
    webhook(&args).await
}
