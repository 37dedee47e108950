//! Request latency through a local-mode mesh: from the client pod's
//! application, through its sidecar and reviews' sidecar, to the reviews
//! backend, one at a time and then several in flight.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use trireme_tests::mesh::{Mesh, PROXY_HTTP_PORT};

/// How many requests, and how many at once.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Load {
    /// Timed requests per case and mode (sequential, concurrent).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Untimed requests before each case.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Requests in flight in the concurrent mode.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

/// Latencies of one mode, sorted, in nanoseconds.
pub struct Sample {
    nanos: Vec<u64>,
    elapsed: Duration,
}

impl Sample {
    fn new(mut nanos: Vec<u64>, elapsed: Duration) -> Sample {
        nanos.sort_unstable();
        Sample { nanos, elapsed }
    }

    /// The `q` quantile in milliseconds.
    pub fn at(&self, q: f64) -> f64 {
        let v = &self.nanos;
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1e6
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({:.0} requests/s)",
            self.at(0.5),
            self.at(0.9),
            self.at(0.99),
            self.at(1.0),
            self.nanos.len() as f64 / self.elapsed.as_secs_f64()
        )
    }

    /// What `self` adds over `base` at p50, p90 and p99.
    pub fn added_over(&self, base: &Sample) -> String {
        let diff = |q: f64| {
            format!(
                "p{:.0} {:+.3} ms (x{:.2})",
                q * 100.0,
                self.at(q) - base.at(q),
                self.at(q) / base.at(q)
            )
        };
        format!("{}, {}, {}", diff(0.5), diff(0.9), diff(0.99))
    }
}

/// One mode's samples: one at a time, then `concurrency` in flight.
pub struct Measured {
    pub sequential: Sample,
    pub concurrent: Sample,
}

/// One request through the client's sidecar (with `x-user: jason`, which
/// the policy benchmark's rule reads); its latency, or why it failed.
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

/// Waits (at most 20 s) for one admitted request, warms up, then times
/// `load.requests` sequential and as many concurrent requests.
pub async fn measure(mesh: &Mesh, load: &Load) -> anyhow::Result<Measured> {
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!(
            "http://{}:{PROXY_HTTP_PORT}",
            mesh.pod("client").ip
        ))?)
        .timeout(Duration::from_secs(10))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = one(&client).await {
        if Instant::now() > deadline {
            return Err(e).context("no request admitted within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..load.warmup {
        one(&client).await.context("warm-up request")?;
    }
    let started = Instant::now();
    let mut nanos = Vec::with_capacity(load.requests);
    for _ in 0..load.requests {
        nanos.push(one(&client).await?);
    }
    let sequential = Sample::new(nanos, started.elapsed());

    let workers = load.concurrency.max(1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let client = client.clone();
            let n = load.requests / workers + usize::from(w < load.requests % workers);
            tokio::spawn(async move {
                let mut nanos = Vec::with_capacity(n);
                for _ in 0..n {
                    nanos.push(one(&client).await?);
                }
                anyhow::Ok(nanos)
            })
        })
        .collect();
    let mut nanos = Vec::with_capacity(load.requests);
    for t in tasks {
        nanos.extend(t.await??);
    }
    let concurrent = Sample::new(nanos, started.elapsed());
    Ok(Measured {
        sequential,
        concurrent,
    })
}

/// Prints each case's two modes (`{case:?}{label}`), then what each case
/// adds over `base` (lines starting with `added`).
pub fn report<C: std::fmt::Debug + PartialEq>(
    results: &[(C, Measured)],
    base: &C,
    load: &Load,
    label: &str,
    added: &str,
) {
    for (case, r) in results {
        println!("{case:?}{label}, sequential: {}", r.sequential.line());
        println!(
            "{case:?}{label}, {} in flight: {}",
            load.concurrency,
            r.concurrent.line()
        );
    }
    let Some((_, b)) = results.iter().find(|(c, _)| c == base) else {
        return;
    };
    for (case, r) in results.iter().filter(|(c, _)| c != base) {
        println!(
            "{added}, {case:?}, sequential: {}",
            r.sequential.added_over(&b.sequential)
        );
        println!(
            "{added}, {case:?}, concurrent: {}",
            r.concurrent.added_over(&b.concurrent)
        );
    }
}

/// The latencies (nanoseconds) of an open loop's requests, each a task, and
/// how many of them failed.
pub async fn gather<E>(
    tasks: Vec<tokio::task::JoinHandle<Result<u64, E>>>,
) -> anyhow::Result<(Vec<u64>, usize)> {
    let mut nanos = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        match t.await? {
            Ok(n) => nanos.push(n),
            Err(_) => errors += 1,
        }
    }
    Ok((nanos, errors))
}

/// p50, p90, p99, p99.9 and max of latencies in nanoseconds, in milliseconds.
pub fn quantiles(mut nanos: Vec<u64>) -> String {
    nanos.sort_unstable();
    let at = |q: f64| {
        nanos[((nanos.len() as f64 * q).ceil() as usize).clamp(1, nanos.len()) - 1] as f64 / 1e6
    };
    format!(
        "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}
