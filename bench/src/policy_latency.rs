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
//!   `--numCheckCacheEntries 0`, so every Check runs the rule;
//! - `floor`: the same mesh with mixer-policy replaced, on its address, by
//!   `check-floor` ([`floor`](trireme_bench::floor)), which admits every
//!   Check without reading it: what the ext_authz hop costs by itself
//!   (Envoy's filter and gRPC client, HTTP/2 both ways, the wake-ups), the
//!   part of `cached` that no work in mixer-policy can remove.
//!
//! Each case: `--warmup` requests, then `--requests` one at a time, then
//! `--requests` more with `--concurrency` in flight ([`latency`](trireme_bench::latency)). Prints p50/p90/p99/max
//! per case and what policy adds over `none`.

use std::time::Duration;

use anyhow::{bail, ensure};
use clap::{Parser, ValueEnum};
use trireme_bench::cpu_seconds;
use trireme_bench::floor::wait_accepting;
use trireme_bench::latency::{Load, Measured, measure, report};
use trireme_tests::mesh::{Mesh, Options, POLICY_MESH, wait_ok};
use trireme_tests::mixer::DENY_BLOCKED_USER;
use trireme_tests::process::Proc;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    load: Load,
    /// Which cases to run; all when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    case: Vec<Case>,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Case {
    None,
    Cached,
    Uncached,
    Floor,
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

/// Measures a policy case and checks every request went through mixer-policy.
async fn measure_policy(
    mesh: &Mesh,
    case: Case,
    pid: u32,
    load: &Load,
) -> anyhow::Result<Measured> {
    let (checks_before, hits_before) = policy_counts(mesh).await;
    let cpu = cpu_seconds(pid);
    let m = measure(mesh, load).await?;
    let cpu = cpu_seconds(pid) - cpu;
    let (checks, hits) = policy_counts(mesh).await;
    let (checks, hits) = (checks - checks_before, hits - hits_before);
    let sent = (load.warmup + 2 * load.requests) as u64;
    if checks < sent {
        bail!("{case:?}: mixer-policy answered {checks} ext_authz Checks for {sent} requests");
    }
    println!(
        "{case:?}: mixer-policy answered {checks} Checks, {hits} from its cache; its CPU {:.1} µs per Check",
        cpu * 1e6 / checks.max(1) as f64
    );
    Ok(m)
}

/// ext_authz Checks that admitted a request, as reviews-v1's Envoy counts
/// them per listener (`http.<prefix>.ext_authz.ok`; the same count under
/// `cluster.<cluster>.` is left out, or each would count twice).
async fn admitted(mesh: &Mesh) -> u64 {
    let url = format!("http://{}:15000/stats", mesh.pod("reviews-v1").ip);
    let filter = [("filter", r"^http\..*\.ext_authz\.ok$")];
    let text = match mesh.http.get(&url).query(&filter).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// Measures the `floor` case on the address mixer-policy had, and checks
/// every request was admitted by an ext_authz Check.
async fn measure_floor(mesh: &Mesh, load: &Load) -> anyhow::Result<Measured> {
    let address = format!("{}:9091", mesh.topology.policy_ip(0));
    let floor = Proc::spawn(
        "check-floor",
        &trireme_tests::bin("check-floor"),
        &["--address".to_string(), address.clone()],
        &[],
        &mesh.log("check-floor"),
    );
    wait_accepting(&address, Duration::from_secs(20)).await?;
    let before = admitted(mesh).await;
    let cpu = cpu_seconds(floor.pid());
    let m = measure(mesh, load).await?;
    let cpu = cpu_seconds(floor.pid()) - cpu;
    let checks = admitted(mesh).await - before;
    let sent = (load.warmup + 2 * load.requests) as u64;
    if checks < sent {
        bail!("Floor: reviews-v1's Envoy counted {checks} admitting Checks for {sent} requests");
    }
    println!(
        "Floor: reviews-v1's Envoy counted {checks} admitting Checks; check-floor's CPU {:.1} µs per Check",
        cpu * 1e6 / checks as f64
    );
    Ok(m)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cases = if args.case.is_empty() {
        vec![Case::None, Case::Cached, Case::Uncached, Case::Floor]
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
        results.push((Case::None, measure(&mesh, &args.load).await?));
    }
    if cases.iter().any(|c| *c != Case::None) {
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
            results.push((
                Case::Cached,
                measure_policy(&mesh, Case::Cached, pid, &args.load).await?,
            ));
        }
        // The harness starts mixer-policy with fixed flags: replace it, on the
        // same address and config, with its check cache off.
        let uncached = if cases.contains(&Case::Uncached) {
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
            results.push((
                Case::Uncached,
                measure_policy(&mesh, Case::Uncached, pid, &args.load).await?,
            ));
            Some(proc)
        } else {
            None
        };
        if cases.contains(&Case::Floor) {
            drop(uncached);
            mesh.kill_policy(0);
            results.push((Case::Floor, measure_floor(&mesh, &args.load).await?));
        }
    }
    report(&results, &Case::None, &args.load, "", "policy added");
    Ok(())
}
