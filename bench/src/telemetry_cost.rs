//! What telemetry costs at mesh scale: the local-mode mesh of the end-to-end
//! tests (a client and reviews-v1, each behind pilot-agent + Envoy) with
//! mixer-telemetry behind `istio-telemetry` and Istio's default telemetry
//! config, driven at a fixed rate through the client's sidecar. Both
//! sidecars report every request over Envoy's access log service. Prints
//! mixer-telemetry's CPU per 1,000 mesh requests/s, set against Istio
//! 1.1–1.4's published 0.6 vCPU, and checks every request was counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use clap::Parser;
use trireme_bench::cpu_seconds;
use trireme_tests::mesh::{Mesh, Options};
use trireme_tests::telemetry::series_value;

#[derive(Parser)]
struct Args {
    /// Mesh requests per second.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of timed load.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Keep Istio's stdio access log (a JSON line per report) on.
    #[arg(long)]
    access_log: bool,
}

const NO_ACCESS_LOG: &str = "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: stdio, namespace: istio-system}\nspec: {match: \"false\", actions: [{handler: stdio, instances: [accesslog]}]}\n";

fn requests_counted(text: &str) -> f64 {
    series_value(text, "istio_requests_total", &[("reporter", "destination")]).unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: Vec<(&str, &str)> = if args.access_log {
        Vec::new()
    } else {
        vec![("no-access-log.yaml", NO_ACCESS_LOG)]
    };
    let mesh = Arc::new(
        Mesh::start_with(
            &["v1"],
            &config,
            Options {
                telemetry: true,
                ..Default::default()
            },
        )
        .await,
    );
    let pid = mesh.telemetry.as_ref().map(|p| p.pid()).unwrap_or_default();
    // Warm up, and let the first reports through.
    for _ in 0..50 {
        mesh.call("/reviews/1", &[]).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counted_before = requests_counted(&mesh.mesh_metrics().await);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let total = args.rate * args.duration;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total as usize);
    for _ in 0..total {
        tick.tick().await;
        let (mesh, ok, failed) = (mesh.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let sent = mesh
                .client
                .get("http://reviews.default.svc.cluster.local:9080/reviews/1")
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                _ => failed.fetch_add(1, Ordering::Relaxed),
            };
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Envoy flushes access logs every second; wait for the last of them.
    let want = counted_before + ok.load(Ordering::Relaxed) as f64;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut counted = counted_before;
    while Instant::now() < deadline {
        counted = requests_counted(&mesh.mesh_metrics().await);
        if counted >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    let rate = ok.load(Ordering::Relaxed) as f64 / elapsed;
    let vcpu_per_1000 = cpu / elapsed / (rate / 1000.0);
    println!(
        "mixer-telemetry{}: {:.0} mesh requests/s for {elapsed:.1} s ({} failed), each reported by both sidecars; {:.0} of {:.0} counted in istio_requests_total (reporter=destination); {cpu:.2} CPU-seconds = {:.4} vCPU per 1,000 mesh requests/s (Istio 1.1–1.4: 0.6, so {:.1}x less)",
        if args.access_log {
            " with the stdio access log"
        } else {
            ""
        },
        rate,
        failed.load(Ordering::Relaxed),
        counted - counted_before,
        want - counted_before,
        vcpu_per_1000,
        0.6 / vcpu_per_1000.max(1e-9),
    );
    ensure!(counted >= want, "not every request was counted");
    Ok(())
}
