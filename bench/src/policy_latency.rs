//! Latency Mixer policy adds to a request through real Envoys.
//!
//! Runs the local-mode mesh of the end-to-end tests (pilot-discovery, reviews
//! v1 and a client, each behind pilot-agent + Envoy) and times requests from
//! the client's application through both sidecars to the reviews backend:
//!
//! - `none`: no `mixerCheckServer`, so no ext_authz filter;
//! - `cached`: ext_authz on reviews-v1's inbound port, answered by one
//!   mixer-policy holding one denier rule on the `x-user` header that never
//!   matches these requests: every request is checked and admitted, and
//!   after the first, every Check is answered from mixer-policy's check cache
//!   (the decision read only `x-user`);
//! - `uncached`: the same mesh with mixer-policy restarted with
//!   `--numCheckCacheEntries 0`, so every Check runs the rule.
//!
//! Each case: `--warmup` requests, then `--requests` one at a time, then
//! `--requests` more with `--concurrency` in flight. Prints p50/p90/p99/max
//! per case and what policy adds over `none`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Parser, ValueEnum};
use trireme_tests::mesh::{Mesh, Options, POLICY_MESH, PROXY_HTTP_PORT, wait_ok};
use trireme_tests::mixer::DENY_BLOCKED_USER;
use trireme_tests::process::Proc;

#[derive(Parser)]
struct Args {
    /// Timed requests per case and mode (sequential, concurrent).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Untimed requests before each case.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Requests in flight in the concurrent mode.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Which cases to run; all when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    case: Vec<Case>,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Case {
    None,
    Cached,
    Uncached,
}

/// Latencies of one mode, sorted, in nanoseconds.
struct Sample {
    nanos: Vec<u64>,
    elapsed: Duration,
}

impl Sample {
    fn new(mut nanos: Vec<u64>, elapsed: Duration) -> Sample {
        nanos.sort_unstable();
        Sample { nanos, elapsed }
    }

    fn at(&self, q: f64) -> f64 {
        let v = &self.nanos;
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1e6
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({:.0} requests/s)",
            self.at(0.5),
            self.at(0.9),
            self.at(0.99),
            self.at(1.0),
            self.nanos.len() as f64 / self.elapsed.as_secs_f64()
        )
    }
}

struct Measured {
    case: Case,
    sequential: Sample,
    concurrent: Sample,
}

/// One request through the client's sidecar; its latency, or why it failed.
async fn one(client: &reqwest::Client) -> anyhow::Result<u64> {
    let t = Instant::now();
    let response = client
        .get("http://reviews.default.svc.cluster.local:9080/")
        .header("x-user", "jason")
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    let nanos = t.elapsed().as_nanos() as u64;
    ensure!(
        status.is_success(),
        "status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(nanos)
}

async fn measure(mesh: &Mesh, case: Case, args: &Args) -> anyhow::Result<Measured> {
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!(
            "http://{}:{PROXY_HTTP_PORT}",
            mesh.pod("client").ip
        ))?)
        .timeout(Duration::from_secs(10))
        .build()?;
    // A replaced mixer-policy is reached again once Envoy reconnects: wait
    // for one admitted request (for at most 20 s) before the warm-up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = one(&client).await {
        if Instant::now() > deadline {
            return Err(e).context("no request admitted within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..args.warmup {
        one(&client).await.context("warm-up request")?;
    }
    let started = Instant::now();
    let mut nanos = Vec::with_capacity(args.requests);
    for _ in 0..args.requests {
        nanos.push(one(&client).await?);
    }
    let sequential = Sample::new(nanos, started.elapsed());

    let workers = args.concurrency.max(1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let client = client.clone();
            let n = args.requests / workers + usize::from(w < args.requests % workers);
            tokio::spawn(async move {
                let mut nanos = Vec::with_capacity(n);
                for _ in 0..n {
                    nanos.push(one(&client).await?);
                }
                anyhow::Ok(nanos)
            })
        })
        .collect();
    let mut nanos = Vec::with_capacity(args.requests);
    for t in tasks {
        nanos.extend(t.await??);
    }
    let concurrent = Sample::new(nanos, started.elapsed());
    Ok(Measured {
        case,
        sequential,
        concurrent,
    })
}

/// What mixer-policy counted: (ext_authz Checks, cache hits).
async fn policy_counts(mesh: &Mesh) -> (u64, u64) {
    let metrics = mesh.policy_metrics(0).await;
    let sum = |prefix: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (
        sum("mixer_checks_total{api=\"ext_authz\""),
        sum("mixer_check_cache_hits_total"),
    )
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Measures a policy case and checks every request went through mixer-policy.
async fn measure_policy(
    mesh: &Mesh,
    case: Case,
    pid: u32,
    args: &Args,
) -> anyhow::Result<Measured> {
    let (checks_before, hits_before) = policy_counts(mesh).await;
    let cpu = cpu_seconds(pid);
    let m = measure(mesh, case, args).await?;
    let cpu = cpu_seconds(pid) - cpu;
    let (checks, hits) = policy_counts(mesh).await;
    let (checks, hits) = (checks - checks_before, hits - hits_before);
    let sent = (args.warmup + 2 * args.requests) as u64;
    if checks < sent {
        bail!("{case:?}: mixer-policy answered {checks} ext_authz Checks for {sent} requests");
    }
    println!(
        "{case:?}: mixer-policy answered {checks} Checks, {hits} from its cache; its CPU {:.1} µs per Check",
        cpu * 1e6 / checks.max(1) as f64
    );
    Ok(m)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cases = if args.case.is_empty() {
        vec![Case::None, Case::Cached, Case::Uncached]
    } else {
        args.case.clone()
    };
    let mut results = Vec::new();
    if cases.contains(&Case::None) {
        let mesh = Mesh::start(&["v1"], &[]).await;
        let listeners = mesh.listeners_dump("reviews-v1").await;
        ensure!(
            !listeners.contains("ext_authz"),
            "no policy, yet reviews-v1 has an ext_authz filter"
        );
        results.push(measure(&mesh, Case::None, &args).await?);
    }
    if cases.contains(&Case::Cached) || cases.contains(&Case::Uncached) {
        let mut mesh = Mesh::start_with(
            &["v1"],
            &[("mixer.yaml", DENY_BLOCKED_USER)],
            Options {
                mesh: POLICY_MESH.to_string(),
                policy_servers: 1,
                ..Default::default()
            },
        )
        .await;
        let listeners = mesh.listeners_dump("reviews-v1").await;
        ensure!(
            listeners.contains("envoy.filters.http.ext_authz"),
            "reviews-v1 has no ext_authz filter"
        );
        if cases.contains(&Case::Cached) {
            let pid = mesh.policies[0].as_ref().map(Proc::pid).unwrap_or_default();
            results.push(measure_policy(&mesh, Case::Cached, pid, &args).await?);
        }
        // The harness starts mixer-policy with fixed flags: replace it, on the
        // same address and config, with its check cache off.
        let _uncached = if cases.contains(&Case::Uncached) {
            mesh.kill_policy(0);
            let ip = mesh.topology.policy_ip(0);
            let flags: Vec<String> = vec![
                "server".into(),
                "--configStoreURL".into(),
                format!("fs://{}", mesh.config_dir().display()),
                "--address".into(),
                format!("tcp://{ip}:9091"),
                "--monitoringPort".into(),
                "15014".into(),
                "--numCheckCacheEntries".into(),
                "0".into(),
            ];
            let proc = Proc::spawn(
                "mixer-policy",
                &trireme_tests::bin("mixer-policy"),
                &flags,
                &[],
                &mesh.log("mixer-policy-uncached"),
            );
            wait_ok(
                &mesh.http,
                &format!("http://{ip}:15014/ready"),
                "mixer-policy /ready",
                Duration::from_secs(20),
            )
            .await;
            let pid = proc.pid();
            results.push(measure_policy(&mesh, Case::Uncached, pid, &args).await?);
            Some(proc)
        } else {
            None
        };
    }
    for r in &results {
        println!("{:?}, sequential: {}", r.case, r.sequential.line());
        println!(
            "{:?}, {} in flight: {}",
            r.case,
            args.concurrency,
            r.concurrent.line()
        );
    }
    let Some(base) = results.iter().find(|r| r.case == Case::None) else {
        return Ok(());
    };
    for r in results.iter().filter(|r| r.case != Case::None) {
        for (mode, with, without) in [
            ("sequential", &r.sequential, &base.sequential),
            ("concurrent", &r.concurrent, &base.concurrent),
        ] {
            let diff = |q: f64| {
                format!(
                    "p{:.0} {:+.3} ms (x{:.2})",
                    q * 100.0,
                    with.at(q) - without.at(q),
                    with.at(q) / without.at(q)
                )
            };
            println!(
                "policy added, {:?}, {mode}: {}, {}, {}",
                r.case,
                diff(0.5),
                diff(0.9),
                diff(0.99)
            );
        }
    }
    Ok(())
}
