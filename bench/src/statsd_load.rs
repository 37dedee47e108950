//! statsd load tool: the real statsd-bridge, Envoy-like statsd over UDP.
//!
//! Starts `statsd-bridge` on its own loopback address with the mapping rules
//! in `bench/config/statsd-mapping.yaml`, then sends it Envoy's stats as an
//! Envoy sink would: cluster request counters by response code, connection
//! gauges, request and connection timers (histograms), HTTP stats with
//! DogStatsD tags and with a sample rate. Ten series per simulated upstream
//! cluster; `--series` picks how many.
//!
//! - throughput (the default): sends from one thread as fast as the socket
//!   takes it for `--duration` seconds, with `--lines-per-packet` lines per
//!   datagram (1 is Envoy's default; more is `max_bytes_per_datagram`), once
//!   per value given. The bridge's own `statsd_exporter_lines_total` and its
//!   CPU time from `/proc/<pid>/stat` give lines processed per CPU-second;
//!   what the kernel dropped for want of a reader is what was sent and not
//!   processed.
//! - `--soak SECONDS`: `--soak-series` distinct series (100,000 by default) at
//!   `--rate` lines/s, scraping `/metrics` and reading the bridge's resident
//!   memory every `--sample-every` seconds, then saying whether memory stayed
//!   flat once every series existed.
//!
//! `--server-cpus 0` runs the bridge under `taskset -c 0`; run this tool on
//! the other core (`taskset -c 1 statsd-load ...`) so that they do not compete.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use trireme_bench::{cpu_seconds, start_server};
use trireme_tests::mesh::next_subnet;
use trireme_tests::process::Proc;

#[derive(Parser)]
struct Args {
    /// Seconds of sending per throughput measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of sending before the measurements, so every series exists.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Distinct series in the throughput runs (ten per simulated cluster).
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// statsd lines per UDP datagram; each value is measured in turn.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 20])]
    lines_per_packet: Vec<usize>,
    /// Soak instead: run this many seconds at `--rate`, sampling memory.
    #[arg(long)]
    soak: Option<u64>,
    /// Distinct series in the soak.
    #[arg(long, default_value_t = 100_000)]
    soak_series: usize,
    /// Soak send rate, lines/s (throughput runs send as fast as they can).
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    /// Seconds between memory samples in the soak.
    #[arg(long, default_value_t = 5)]
    sample_every: u64,
    /// Run statsd-bridge under `taskset -c <CPUS>`.
    #[arg(long)]
    server_cpus: Option<String>,
    /// The bridge's `--statsd.read-buffer` (the kernel caps it at rmem_max).
    #[arg(long, default_value_t = 8 << 20)]
    read_buffer: usize,
    /// statsd-bridge binary; defaults to the one next to this tool.
    #[arg(long)]
    statsd_bridge: Option<PathBuf>,
}

const MAPPING: &str = include_str!("../config/statsd-mapping.yaml");

/// One line of the series `i`, as an Envoy statsd sink writes it.
fn line(i: usize, round: u64) -> String {
    let cluster = i / 10;
    let host = format!(
        "outbound|9080||svc-{cluster}.ns-{}.svc.cluster.local",
        cluster % 50
    );
    let v = (i as u64).wrapping_mul(7).wrapping_add(round) % 1000;
    match i % 10 {
        0 => format!("envoy.cluster.{host}.upstream_rq_200:1|c"),
        1 => format!("envoy.cluster.{host}.upstream_rq_404:1|c"),
        2 => format!("envoy.cluster.{host}.upstream_rq_503:1|c"),
        3 => format!("envoy.cluster.{host}.upstream_cx_total:1|c"),
        4 => format!("envoy.cluster.{host}.upstream_cx_active:{}|g", v % 100),
        5 => format!("envoy.cluster.{host}.membership_healthy:{}|g", v % 10),
        6 => format!("envoy.cluster.{host}.upstream_rq_time:{v}|ms"),
        7 => format!("envoy.cluster.{host}.upstream_cx_length_ms:{}|ms", v * 10),
        8 => format!("envoy.http.inbound_{cluster}.downstream_rq_xx:1|c|#response_code_class:2xx"),
        _ => format!("envoy.http.inbound_{cluster}.downstream_rq_time:{v}|ms|@0.5"),
    }
}

/// Datagrams covering every series once, `per_packet` lines each; two rounds
/// with different values so gauges and timers move.
fn packets(series: usize, per_packet: usize) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    for round in 0..2 {
        let mut packet = Vec::new();
        let mut lines = 0u64;
        for i in 0..series {
            if lines > 0 {
                packet.push(b'\n');
            }
            packet.extend_from_slice(line(i, round).as_bytes());
            lines += 1;
            if lines == per_packet as u64 {
                out.push((std::mem::take(&mut packet), lines));
                lines = 0;
            }
        }
        if lines > 0 {
            out.push((packet, lines));
        }
    }
    out
}

/// Sends `packets` round and round until `stop`, at most `rate` lines/s
/// when given; returns lines sent and send errors.
fn send(
    socket: &UdpSocket,
    packets: &[(Vec<u8>, u64)],
    rate: Option<u64>,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> u64 {
    let started = Instant::now();
    let mut errors = 0;
    let mut lines = 0u64;
    'outer: loop {
        for (packet, n) in packets {
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            if let Some(rate) = rate {
                // Ahead of the rate: wait for it to catch up.
                while lines as f64 > started.elapsed().as_secs_f64() * rate as f64 {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            match socket.send(packet) {
                Ok(_) => {
                    lines += n;
                    sent.fetch_add(*n, Ordering::Relaxed);
                }
                Err(_) => errors += 1,
            }
        }
    }
    errors
}

/// The bridge under load and what is read from it.
struct Bridge {
    proc: Proc,
    metrics_url: String,
    statsd: String,
    http: reqwest::Client,
}

impl Bridge {
    async fn start(args: &Args, dir: &std::path::Path) -> anyhow::Result<Bridge> {
        let mapping = dir.join("mapping.yaml");
        std::fs::write(&mapping, MAPPING)?;
        let ip = format!("127.{}.0.30", next_subnet());
        let binary = args
            .statsd_bridge
            .clone()
            .unwrap_or_else(|| trireme_tests::bin("statsd-bridge"));
        let bridge_args: Vec<String> = vec![
            format!("--statsd.listen-udp={ip}:9125"),
            "--statsd.listen-tcp=".into(),
            format!("--web.listen-address={ip}:9102"),
            format!("--statsd.mapping-config={}", mapping.display()),
            format!("--statsd.read-buffer={}", args.read_buffer),
            format!(
                "--statsd.max-series={}",
                args.soak_series.max(args.series) * 2
            ),
            format!(
                "--statsd.cache-size={}",
                args.soak_series.max(args.series) * 4
            ),
        ];
        let (proc, http) = start_server(
            "statsd-bridge",
            &binary,
            bridge_args,
            args.server_cpus.as_deref(),
            dir,
            &format!("http://{ip}:9102/-/ready"),
        )
        .await;
        Ok(Bridge {
            proc,
            metrics_url: format!("http://{ip}:9102/metrics"),
            statsd: format!("{ip}:9125"),
            http,
        })
    }

    async fn scrape(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(&self.metrics_url)
            .send()
            .await?
            .text()
            .await?)
    }

    /// The sum of the samples of `name` (with any labels).
    fn sum(text: &str, name: &str) -> f64 {
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum()
    }

    async fn lines(&self) -> anyhow::Result<f64> {
        Ok(Bridge::sum(
            &self.scrape().await?,
            "statsd_exporter_lines_total",
        ))
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.proc.pid())
    }

    fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.pid()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Waits until the processed-lines counter stops moving (the socket's
    /// queue is drained), at most 5 s.
    async fn settle(&self) -> anyhow::Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.lines().await?;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.lines().await?;
            if now == last || Instant::now() > deadline {
                return Ok(now);
            }
            last = now;
        }
    }
}

/// Sends on a thread of its own until told to stop; returns lines sent.
struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<u64>,
}

impl Sender {
    fn start(
        target: &str,
        packets: Arc<Vec<(Vec<u8>, u64)>>,
        rate: Option<u64>,
    ) -> anyhow::Result<Sender> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(target)?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || send(&socket, &packets, rate, &stop, &sent))
        };
        Ok(Sender { stop, sent, thread })
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops; returns (lines sent, send errors).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.thread.join().unwrap_or(0);
        (self.sent.load(Ordering::Relaxed), errors)
    }
}

async fn throughput(args: &Args, bridge: &Bridge, per_packet: usize) -> anyhow::Result<()> {
    let packets = Arc::new(packets(args.series, per_packet));
    let warm = Sender::start(&bridge.statsd, packets.clone(), None)?;
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    warm.finish();
    let lines0 = bridge.settle().await?;
    let cpu0 = bridge.cpu_seconds();
    let started = Instant::now();
    let sender = Sender::start(&bridge.statsd, packets, None)?;
    tokio::time::sleep(Duration::from_secs(args.duration.max(1))).await;
    let sending = started.elapsed();
    let (sent, errors) = sender.finish();
    let lines1 = bridge.settle().await?;
    let cpu = bridge.cpu_seconds() - cpu0;
    let processed = lines1 - lines0;
    let text = bridge.scrape().await?;
    let series = Bridge::sum(&text, "statsd_exporter_metrics_total");
    println!(
        "{per_packet} line(s) per datagram: sent {sent} lines in {:.1} s ({:.0}/s{}), processed {processed:.0} ({:.1}%; the rest dropped by the kernel, the bridge being busy); bridge CPU {cpu:.2} s = {:.0} lines per CPU-second; {series:.0} series, RSS {:.1} MiB",
        sending.as_secs_f64(),
        sent as f64 / sending.as_secs_f64(),
        if errors > 0 {
            format!(", {errors} send errors")
        } else {
            String::new()
        },
        100.0 * processed / (sent as f64).max(1.0),
        processed / cpu.max(0.01),
        bridge.resident_bytes() as f64 / (1 << 20) as f64,
    );
    Ok(())
}

async fn soak(args: &Args, bridge: &Bridge, seconds: u64) -> anyhow::Result<()> {
    let per_packet = args.lines_per_packet.first().copied().unwrap_or(20);
    let packets = Arc::new(packets(args.soak_series, per_packet));
    println!(
        "soak: {} series, {} lines/s, {per_packet} line(s) per datagram, {seconds} s, a sample every {} s",
        args.soak_series, args.rate, args.sample_every
    );
    println!(
        "   t(s)   RSS(MiB)   series   lines processed   scrape(ms)   scrape(KiB)   CPU(cores)"
    );
    let started = Instant::now();
    let sender = Sender::start(&bridge.statsd, packets, Some(args.rate))?;
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    let mut last_cpu = (bridge.cpu_seconds(), Instant::now());
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(args.sample_every.max(1))).await;
        let t = Instant::now();
        let text = bridge.scrape().await?;
        let scrape = t.elapsed();
        let rss = bridge.resident_bytes() as f64 / (1 << 20) as f64;
        let series = Bridge::sum(&text, "statsd_exporter_metrics_total");
        let lines = Bridge::sum(&text, "statsd_exporter_lines_total");
        let cpu = bridge.cpu_seconds();
        let cores = (cpu - last_cpu.0) / last_cpu.1.elapsed().as_secs_f64();
        last_cpu = (cpu, Instant::now());
        let at = started.elapsed().as_secs_f64();
        println!(
            "{at:7.0} {rss:10.1} {series:8.0} {lines:17.0} {:12.1} {:13.0} {cores:12.2}",
            scrape.as_secs_f64() * 1e3,
            text.len() as f64 / 1024.0
        );
        samples.push((at, rss, series));
    }
    let sent = sender.sent();
    let (sent_total, _) = sender.finish();
    let processed = bridge.settle().await?;
    println!(
        "sent {sent_total} lines ({sent} while sampling), processed {processed:.0} ({:.1}%)",
        100.0 * processed / (sent_total as f64).max(1.0)
    );
    verdict(&samples, args.soak_series as f64)
}

/// Memory is flat when, from the first sample at which every series existed,
/// resident memory never rose more than 10% over that sample, and its trend
/// over the rest of the run is under 1% per minute.
fn verdict(samples: &[(f64, f64, f64)], series: f64) -> anyhow::Result<()> {
    let Some(first) = samples.iter().position(|s| s.2 >= series * 0.99) else {
        bail!(
            "the bridge never held all {series} series (is --rate too low for the run's length?)"
        );
    };
    let steady = &samples[first..];
    if steady.len() < 3 {
        bail!("too few samples after every series existed to judge");
    }
    let base = steady[0].1;
    let peak = steady.iter().map(|s| s.1).fold(f64::MIN, f64::max);
    let n = steady.len() as f64;
    let (mt, mr) = (
        steady.iter().map(|s| s.0).sum::<f64>() / n,
        steady.iter().map(|s| s.1).sum::<f64>() / n,
    );
    let slope = steady.iter().map(|s| (s.0 - mt) * (s.1 - mr)).sum::<f64>()
        / steady
            .iter()
            .map(|s| (s.0 - mt).powi(2))
            .sum::<f64>()
            .max(1e-9);
    let per_minute = slope * 60.0;
    let flat = peak <= base * 1.10 && per_minute.abs() <= base * 0.01;
    println!(
        "memory from t={:.0} s (all series present): {base:.1} MiB, peak {peak:.1} MiB (+{:.1}%), trend {per_minute:+.2} MiB/min: {}",
        steady[0].0,
        100.0 * (peak - base) / base,
        if flat { "FLAT" } else { "NOT FLAT" }
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("trireme-statsd-load-")
        .tempdir()?;
    let bridge = Bridge::start(&args, dir.path())
        .await
        .context("start statsd-bridge")?;
    println!(
        "statsd-bridge{}; Envoy-like lines (counters, gauges, timers as histograms, tagged and sampled lines), 10 series per simulated cluster",
        args.server_cpus
            .as_ref()
            .map(|c| format!(" on CPU(s) {c}"))
            .unwrap_or_default(),
    );
    match args.soak {
        Some(seconds) => soak(&args, &bridge, seconds).await?,
        None => {
            println!(
                "throughput: {} series, {} s per measurement after {} s of warm-up",
                args.series, args.duration, args.warmup
            );
            for &per_packet in &args.lines_per_packet {
                throughput(&args, &bridge, per_packet.max(1)).await?;
            }
        }
    }
    drop(bridge);
    Ok(())
}
