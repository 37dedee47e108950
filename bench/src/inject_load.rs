//! The real `sidecar-injector` over HTTPS: admissions at a fixed rate
//! (open loop: each request's latency counts from when it was due, so a
//! stall is not hidden by the requests it delays), then as fast as a few
//! connections go; and `meshctl kube-inject` of a 1,000-document file.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use serde_json::json;
use trireme_bench::latency::{gather, quantiles};
use trireme_tests::bin;
use trireme_tests::injector::{Certs, Injector};

#[derive(Parser)]
struct Args {
    /// Admission requests per second in the open-loop run.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Connections in the closed-loop run.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Requests in the closed-loop run.
    #[arg(long, default_value_t = 20000)]
    requests: usize,
    /// Webhook HTTP workers; 0 is one per core.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Documents in the kube-inject file.
    #[arg(long, default_value_t = 1000)]
    documents: usize,
    /// Pin the injector (all its threads) to these CPUs, e.g. `0`; run this
    /// tool on the others (`taskset -c 1`).
    #[arg(long = "server-cpus")]
    server_cpus: Option<String>,
}

/// A review of one of `reviews-v1`'s Pods; `revision` makes it a Pod of
/// another ReplicaSet, which the injector cannot have rendered before.
fn body(revision: Option<usize>) -> Vec<u8> {
    let hash = revision.map_or("7d8f9c".to_string(), |r| format!("{r:06x}"));
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "9c1f7d1e-0c5a-4d0e-8d7a-3f1e2b3c4d5e",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "default",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": format!("reviews-v1-{hash}-"), "labels": {"app": "reviews", "version": "v1", "pod-template-hash": hash}},
                "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [{
                    "name": "reviews",
                    "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.15.0",
                    "ports": [{"containerPort": 9080}],
                    "livenessProbe": {"httpGet": {"path": "/health", "port": 9080}},
                    "readinessProbe": {"tcpSocket": {"port": 9080}},
                }]},
            },
        },
    }))
    .expect("review body")
}

async fn one(client: &reqwest::Client, url: &str, body: &[u8]) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await?;
    ensure!(response.status() == 200, "status {}", response.status());
    let answer = response.bytes().await?;
    ensure!(
        answer.windows(7).any(|w| w == b"\"patch\""),
        "no patch in the answer"
    );
    Ok(())
}

fn kube_inject_file(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app-{i}, namespace: team-{}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: app-{i}}}}}\n  template:\n    metadata: {{labels: {{app: app-{i}, version: v1}}}}\n    spec:\n      containers:\n      - name: app\n        image: registry.example/app:{i}\n        ports: [{{containerPort: 8080}}]\n        readinessProbe: {{httpGet: {{path: /ready, port: 8080}}}}\n---\n",
            i % 10
        ));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ip = "127.61.0.1";
    let certs = Certs::for_ip(ip);
    let injector = Injector::spawn_with(ip, Some(&certs), args.workers);
    injector.wait_ready().await;
    if let Some(cpus) = &args.server_cpus {
        let pinned = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &injector.proc.pid().to_string()])
            .output()?;
        ensure!(
            pinned.status.success(),
            "taskset: {}",
            String::from_utf8_lossy(&pinned.stderr)
        );
    }
    let client = certs.client();
    let url = injector.webhook();
    let replica = body(None);
    for _ in 0..500 {
        one(&client, &url, &replica).await.context("warm-up")?;
    }

    // Open loop at the rate asked for: Pods of one ReplicaSet (a scale-up),
    // then every Pod of a ReplicaSet of its own.
    let total = (args.rate * args.seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    for distinct in [false, true] {
        let bodies: Vec<Vec<u8>> = (0..total)
            .map(|i| {
                if distinct {
                    body(Some(i))
                } else {
                    replica.clone()
                }
            })
            .collect();
        let start = Instant::now() + Duration::from_millis(50);
        let mut tasks = Vec::with_capacity(total);
        let mut late = Vec::with_capacity(total);
        for (i, review) in bodies.into_iter().enumerate() {
            let due = start + interval * i as u32;
            tokio::time::sleep_until(due.into()).await;
            // Tokio's timer ticks every millisecond: time from the send, and
            // keep how late the send was, which is this tool's, not the injector's.
            let sent = Instant::now();
            late.push(sent.duration_since(due).as_nanos() as u64);
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                one(&client, &url, &review)
                    .await
                    .map(|()| sent.elapsed().as_nanos() as u64)
            }));
        }
        let (nanos, errors) = gather(tasks).await?;
        let elapsed = start.elapsed();
        println!(
            "open loop, {} admissions/s for {} s over HTTPS, {}: {} ({:.0} done/s, {errors} errors; sends late by {})",
            args.rate,
            args.seconds,
            if distinct {
                "every Pod different"
            } else {
                "Pods of one ReplicaSet"
            },
            quantiles(nanos.clone()),
            nanos.len() as f64 / elapsed.as_secs_f64(),
            quantiles(late)
        );
    }

    // Closed loop: as fast as `concurrency` connections go, Pods all different.
    let started = Instant::now();
    let per = args.requests / args.concurrency.max(1);
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|w| {
            let (client, url) = (client.clone(), url.clone());
            let reviews: Vec<Vec<u8>> = (0..per).map(|i| body(Some(total + w * per + i))).collect();
            tokio::spawn(async move {
                let mut nanos = Vec::with_capacity(per);
                for review in reviews {
                    let t = Instant::now();
                    one(&client, &url, &review).await?;
                    nanos.push(t.elapsed().as_nanos() as u64);
                }
                anyhow::Ok(nanos)
            })
        })
        .collect();
    let mut nanos = Vec::new();
    for w in workers {
        nanos.extend(w.await??);
    }
    println!(
        "closed loop, {} in flight: {:.0} admissions/s, {}",
        args.concurrency,
        nanos.len() as f64 / started.elapsed().as_secs_f64(),
        quantiles(nanos)
    );

    // kube-inject of a large file, five runs.
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("workloads.yaml");
    std::fs::write(&input, kube_inject_file(args.documents))?;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let status = Command::new(bin("meshctl"))
            .args(["kube-inject", "-f"])
            .arg(&input)
            .arg("-o")
            .arg(dir.path().join("out.yaml"))
            .status()?;
        ensure!(status.success(), "meshctl kube-inject failed");
        runs.push(t.elapsed());
    }
    runs.sort();
    let out = std::fs::read_to_string(dir.path().join("out.yaml"))?;
    ensure!(
        out.matches("name: istio-proxy").count() == args.documents,
        "not every document was injected"
    );
    println!(
        "meshctl kube-inject of {} Deployments: median {:.0} ms, best {:.0} ms, worst {:.0} ms (5 runs, whole process)",
        args.documents,
        runs[2].as_secs_f64() * 1e3,
        runs[0].as_secs_f64() * 1e3,
        runs[4].as_secs_f64() * 1e3
    );
    Ok(())
}
