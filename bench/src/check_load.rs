//! Check load tool: the real mixer-policy, 20 rules, Checks that miss its cache.
//!
//! Starts `mixer-policy server` on its own loopback address with a config
//! directory of 20 rules as an Istio 1.x mesh might hold them (denier rules on
//! headers, paths, hosts and services; listchecker rules on the source address,
//! the caller's principal, the user agent and the user), then drives Check over
//! a few HTTP/2 connections:
//!
//! - closed loop: `--concurrency` Checks in flight for `--duration` seconds:
//!   Checks/s, and mixer-policy's CPU seconds from `/proc/<pid>/stat`, so
//!   Checks per CPU-second;
//! - open loop: a fixed rate (`--rate`, by default half the closed-loop
//!   figure) for `--duration` seconds: latency percentiles, timed from the
//!   moment each Check was due, so a stall of the tool or the server counts.
//!
//! Every Check carries its own request id, trace id and `x-user` header, and
//! the rules read `x-user`, so each one misses mixer-policy's check cache;
//! with `--hit-ratio 0.8` that share of Checks repeats the user of an earlier
//! Check instead (the hit ratio mixer-policy reports is printed). Both Istio's
//! Mixer API (`istio.mixer.v1.Mixer/Check`, compressed attributes) and Envoy's
//! ext_authz (`envoy.service.auth.v3.Authorization/Check`, the same request as
//! an `AttributeContext`) are measured, one after the other.
//!
//! `--server-cpus 0` runs mixer-policy under `taskset -c 0`; run the tool
//! itself on the other core (`taskset -c 1 check-load ...`) to measure one core
//! of mixer-policy against a load generator that does not compete with it.
//!
//! `--floor` loads `check-floor` instead, which serves both Checks as
//! mixer-policy does and admits them unread: the same figures for everything
//! but the policy (this tool, HTTP/2, the kernel and the machine's stalls).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use api::mixer::{
    CheckRequest as MixerRequest, CheckResponse as MixerResponse, CompressedAttributes,
};
use clap::{Parser, ValueEnum};
use envoy_types::ext_authz::v3::pb::{
    CheckRequest as AuthzRequest, CheckResponse as AuthzResponse, HttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use mixer::attribute::compressed::encode;
use mixer::attribute::{Bag, Value, Vocabulary, dictionary};
use trireme_bench::unary::Unary;
use trireme_bench::{cpu_seconds, machine_cpu_seconds, sum};
use trireme_tests::mesh::next_subnet;
use trireme_tests::process::Proc;

#[derive(Parser)]
struct Args {
    /// Seconds per measurement (closed loop, then open loop).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of closed-loop load before the measurements, per API.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// HTTP/2 connections to mixer-policy.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Checks in flight in the closed loop, spread over the connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Share of Checks (0 to 1) that repeat the user of an earlier Check.
    #[arg(long, default_value_t = 0.0)]
    hit_ratio: f64,
    /// Open-loop rate in Checks/s; half the closed-loop rate when not given.
    #[arg(long)]
    rate: Option<u64>,
    /// Which APIs to measure; both when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    api: Vec<Api>,
    /// Shortest sleep of the open loop's pacing thread, in µs: each wake-up
    /// costs this tool a context switch; each Check waits for at most that
    /// long (the lag shows as the difference of "from when due" and "from
    /// when sent").
    #[arg(long, default_value_t = 50)]
    pace: u64,
    /// Run mixer-policy under `taskset -c <CPUS>`.
    #[arg(long)]
    server_cpus: Option<String>,
    /// Worker threads of this tool's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// mixer-policy's `--numCheckCacheEntries`.
    #[arg(long, default_value_t = 100_000)]
    cache_entries: usize,
    /// mixer-policy binary; defaults to the one next to this tool.
    #[arg(long)]
    mixer_policy: Option<PathBuf>,
    /// Load `check-floor` instead of mixer-policy: the same HTTP/2 serving,
    /// every Check admitted unread ([`trireme_bench::floor`]). What it
    /// measures is the part of mixer-policy's figures that is not policy.
    #[arg(long)]
    floor: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Api {
    /// istio.mixer.v1.Mixer/Check
    Mixer,
    /// envoy.service.auth.v3.Authorization/Check
    Authz,
}

/// Twenty rules over four listchecker handlers and one denier. For the
/// requests this tool sends, no denier rule matches and the four list rules
/// all admit: every Check is evaluated in full and answered OK.
const RULES: &str = include_str!("../config/policy-20-rules.yaml");

/// Placeholders in the request template, replaced per Check.
const ID: &str = "@request-id@";
const USER: &str = "@user@";
const TRACE: &str = "@trace-id@";

const USER_AGENT: &str = "python-requests/2.21.0";
const PATH: &str = "/reviews/0";
const HOST: &str = "reviews:9080";

/// productpage-v1 calling reviews-v1, as the inbound sidecar of reviews-v1
/// reports it: 30 attributes, 12 headers.
fn request_bag() -> Bag {
    let json = serde_json::from_str(include_str!("../config/reviews-request.json"))
        .expect("bench/config/reviews-request.json is JSON");
    let mut b = Bag::from_json(&json, &Vocabulary::standard())
        .expect("bench/config/reviews-request.json holds attributes");
    let headers = headers(ID, USER, TRACE)
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    b.set("request.headers", Value::StringMap(Arc::new(headers)));
    b.set("request.id", Value::string(ID));
    b.set("request.time", Value::Timestamp(SystemTime::now()));
    b
}

fn headers<'a>(id: &'a str, user: &'a str, trace: &'a str) -> [(&'a str, &'a str); 12] {
    [
        (":authority", HOST),
        (":method", "GET"),
        (":path", PATH),
        ("accept", "application/json"),
        ("user-agent", USER_AGENT),
        ("x-forwarded-proto", "http"),
        ("x-request-id", id),
        ("x-b3-traceid", trace),
        ("x-b3-spanid", "a1b2c3d4e5f60718"),
        ("x-b3-sampled", "1"),
        ("x-user", user),
        ("content-length", "0"),
    ]
}

/// Builds each Check's attributes from a template: the varying words are
/// written into a copy, never re-encoded.
struct Requests {
    mixer: CompressedAttributes,
    /// Positions of the placeholders in the template's words.
    id_word: usize,
    user_word: usize,
    trace_word: usize,
    authz: AttributeContext,
    hit_per_mille: u64,
    next: AtomicU64,
}

/// One Check's varying values.
struct Key {
    id: String,
    user: String,
    trace: String,
}

impl Requests {
    fn new(hit_ratio: f64) -> anyhow::Result<Requests> {
        let mixer = encode(&request_bag());
        let word = |w: &str| {
            mixer
                .words
                .iter()
                .position(|x| x == w)
                .with_context(|| format!("{w} is not a word of the template"))
        };
        let (id_word, user_word, trace_word) = (word(ID)?, word(USER)?, word(TRACE)?);
        Ok(Requests {
            id_word,
            user_word,
            trace_word,
            mixer,
            authz: authz_context(),
            hit_per_mille: (hit_ratio.clamp(0.0, 1.0) * 1000.0).round() as u64,
            next: AtomicU64::new(0),
        })
    }

    /// A repeat when `n`'s hash falls under the hit ratio.
    fn is_repeat(&self, n: u64) -> bool {
        mix(n) % 1000 < self.hit_per_mille
    }

    /// The next Check's values. A repeat takes the user of a Check that was
    /// not itself a repeat, 1,000 to 5,000 Checks back: long enough ago to be
    /// answered and cached, recent enough to still be in the cache.
    fn next_key(&self) -> Key {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut user = n;
        if self.is_repeat(n) && n > 5_000 {
            let mut m = n - 1_000 - mix(n ^ 0x5bd1_e995) % 4_000;
            // Bounded: with a hit ratio of 0.8, 200 repeats in a row is 1e-19.
            for _ in 0..200 {
                if !self.is_repeat(m) {
                    user = m;
                    break;
                }
                m -= 1;
            }
        }
        Key {
            id: format!("{:08x}-bench-{n:012x}", mix(n) as u32),
            user: format!("user-{user}"),
            trace: format!("{:016x}", mix(n.wrapping_add(7))),
        }
    }

    fn mixer_request(&self, key: &Key) -> MixerRequest {
        let mut attributes = self.mixer.clone();
        attributes.words[self.id_word].clone_from(&key.id);
        attributes.words[self.user_word].clone_from(&key.user);
        attributes.words[self.trace_word].clone_from(&key.trace);
        MixerRequest {
            attributes: Some(attributes),
            global_word_count: dictionary::words().len() as u32,
            deduplication_id: key.id.clone(),
            quotas: HashMap::new(),
        }
    }

    fn authz_request(&self, key: &Key) -> AuthzRequest {
        let mut ctx = self.authz.clone();
        if let Some(http) = ctx.request.as_mut().and_then(|r| r.http.as_mut()) {
            http.id.clone_from(&key.id);
            for (k, v) in headers(&key.id, &key.user, &key.trace) {
                if k.starts_with(':') {
                    continue;
                }
                http.headers.insert(k.to_string(), v.to_string());
            }
        }
        AuthzRequest {
            attributes: Some(ctx),
        }
    }
}

/// The same request as Envoy's ext_authz filter on reviews-v1 sends it, with
/// the `context_extensions` Pilot configures for the route.
fn authz_context() -> AttributeContext {
    let peer = |ip: &str, port: u32, principal: &str| Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        principal: principal.into(),
        ..Default::default()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let extensions = [
        (
            "destination.service.host",
            "reviews.default.svc.cluster.local",
        ),
        ("destination.service.name", "reviews"),
        ("destination.service.namespace", "default"),
        ("destination.workload.name", "reviews-v1"),
        ("destination.workload.namespace", "default"),
        ("destination.namespace", "default"),
        (
            "destination.uid",
            "kubernetes://reviews-v1-5f9c7f8d6b-2lqvn.default",
        ),
        ("destination.labels", r#"{"app":"reviews","version":"v1"}"#),
    ];
    AttributeContext {
        source: Some(peer(
            "10.1.0.5",
            45322,
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        )),
        destination: Some(peer(
            "10.1.0.9",
            9080,
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
        )),
        request: Some(Request {
            time: Some(timestamp(now)),
            http: Some(HttpRequest {
                method: "GET".into(),
                path: PATH.into(),
                host: HOST.into(),
                scheme: "http".into(),
                protocol: "HTTP/1.1".into(),
                size: 0,
                ..Default::default()
            }),
        }),
        context_extensions: extensions
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn timestamp(since_epoch: Duration) -> envoy_types::pb::google::protobuf::Timestamp {
    envoy_types::pb::google::protobuf::Timestamp {
        seconds: since_epoch.as_secs() as i64,
        nanos: since_epoch.subsec_nanos() as i32,
    }
}

/// splitmix64's finaliser: a cheap, well-spread hash of a counter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// How one Check ended.
enum Outcome {
    Admitted,
    Denied(String),
    Failed(String),
}

const MIXER_CHECK: &str = "/istio.mixer.v1.Mixer/Check";
const AUTHZ_CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

async fn check_once(api: Api, conn: &Unary, requests: &Requests) -> Outcome {
    let key = requests.next_key();
    match api {
        Api::Mixer => match conn
            .call::<_, MixerResponse>(MIXER_CHECK, &requests.mixer_request(&key))
            .await
        {
            Ok(r) => {
                let status = r.precondition.and_then(|p| p.status).unwrap_or_default();
                if status.code == 0 {
                    Outcome::Admitted
                } else {
                    Outcome::Denied(format!("{}: {}", status.code, status.message))
                }
            }
            Err(e) => Outcome::Failed(e),
        },
        Api::Authz => match conn
            .call::<_, AuthzResponse>(AUTHZ_CHECK, &requests.authz_request(&key))
            .await
        {
            Ok(r) => match r.http_response {
                Some(HttpResponse::OkResponse(_)) => Outcome::Admitted,
                Some(HttpResponse::DeniedResponse(d)) => Outcome::Denied(d.body),
                other => Outcome::Failed(format!("unexpected answer {other:?}")),
            },
            Err(e) => Outcome::Failed(e),
        },
    }
}

/// What a run collected.
#[derive(Default)]
struct Tally {
    /// Nanoseconds per admitted Check.
    latencies: Vec<u64>,
    /// Open loop: nanoseconds from when a task started sending its Check
    /// until the answer; the difference to `latencies` is this tool's lag.
    from_sent: Vec<u64>,
    denied: u64,
    failed: u64,
    first_problem: Option<String>,
}

impl Tally {
    fn record(&mut self, outcome: Outcome, nanos: u64) {
        match outcome {
            Outcome::Admitted => self.latencies.push(nanos),
            Outcome::Denied(why) => {
                self.denied += 1;
                self.first_problem.get_or_insert(format!("denied: {why}"));
            }
            Outcome::Failed(why) => {
                self.failed += 1;
                self.first_problem.get_or_insert(format!("failed: {why}"));
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.from_sent.extend(other.from_sent);
        self.denied += other.denied;
        self.failed += other.failed;
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
    }

    fn checks(&self) -> u64 {
        self.latencies.len() as u64 + self.denied + self.failed
    }

    fn percentiles(&mut self) -> String {
        percentiles(&mut self.latencies)
    }

    /// Open loop: latency from when each Check was sent, not due.
    fn sent_percentiles(&mut self) -> String {
        percentiles(&mut self.from_sent)
    }

    fn problems(&self) -> String {
        match &self.first_problem {
            None => String::new(),
            Some(p) => format!(
                "; {} denied, {} failed (first: {p})",
                self.denied, self.failed
            ),
        }
    }
}

fn percentiles(v: &mut [u64]) -> String {
    if v.is_empty() {
        return "no admitted Checks".into();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    let ms = |n: u64| n as f64 / 1e6;
    format!(
        "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(at(1.0)),
    )
}

/// The server under test and what is read from it.
struct Server {
    /// `mixer-policy` or `check-floor`.
    name: &'static str,
    proc: Proc,
    /// mixer-policy's metrics; the floor has none.
    metrics_url: Option<String>,
    http: reqwest::Client,
}

impl Server {
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.proc.pid())
    }

    /// mixer-policy's check-duration histogram: (upper bound in seconds,
    /// cumulative count), from decoding the request to its answer, quotas
    /// included; HTTP/2 and the wait for a worker thread are not in it.
    async fn buckets(&self) -> Vec<(f64, f64)> {
        const PREFIX: &str = "mixer_check_duration_seconds_bucket{le=\"";
        let text = self.metrics().await.unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix(PREFIX))
            .filter_map(|l| l.split_once("\"} "))
            .filter_map(|(le, n)| Some((le.parse().ok()?, n.trim().parse().ok()?)))
            .collect()
    }

    /// The sum of counter `name`, or NaN when mixer-policy's metrics could
    /// not be read: a figure made of it then says so instead of looking
    /// plausible.
    async fn counter(&self, name: &str) -> f64 {
        self.metrics().await.map_or(f64::NAN, |t| sum(&t, name))
    }

    async fn metrics(&self) -> Option<String> {
        let response = self.http.get(self.metrics_url.as_ref()?).send().await;
        response.ok()?.text().await.ok()
    }
}

/// CPU and counters over one measurement.
struct Window {
    /// mixer-policy's CPU seconds.
    cpu: f64,
    /// This tool's CPU seconds.
    tool: f64,
    /// CPU seconds every process on the machine used.
    machine: f64,
    checks: f64,
    hits: f64,
    buckets: Vec<(f64, f64)>,
}

impl Window {
    /// The histogram bound under which `q` of the Checks were handled
    /// inside mixer-policy.
    fn server_quantile(&self, q: f64) -> String {
        let total = self.buckets.last().map_or(0.0, |b| b.1);
        match self.buckets.iter().find(|(_, n)| *n >= q * total) {
            Some((le, _)) if le.is_finite() => format!("≤ {:.2} ms", le * 1e3),
            _ => "over the largest bucket".into(),
        }
    }

    /// Checks per CPU-second of the server, and mixer-policy's cache hits.
    /// The floor counts nothing: there the Checks are those this tool saw
    /// admitted.
    fn per_cpu_second(&self, server: &str, admitted: u64) -> String {
        if self.checks.is_nan() {
            let n = admitted as f64 / self.cpu.max(0.01);
            return format!("{n:.0} Checks per {server} CPU-second");
        }
        format!(
            "{:.0} Checks per {server} CPU-second; cache hits {:.1}%",
            self.checks / self.cpu.max(0.01),
            100.0 * self.hits / self.checks.max(1.0)
        )
    }

    /// Time inside mixer-policy, from its histogram.
    fn server_side(&self) -> String {
        if self.buckets.is_empty() {
            return "no time measured inside the server".into();
        }
        format!(
            "inside mixer-policy p50 {}, p99 {}, p99.9 {}",
            self.server_quantile(0.5),
            self.server_quantile(0.99),
            self.server_quantile(0.999)
        )
    }

    /// The CPU figures, as cores over `elapsed`: the server, this tool, and
    /// what other processes took (they share the machine's cores).
    fn cores(&self, server: &str, elapsed: Duration) -> String {
        let s = elapsed.as_secs_f64();
        format!(
            "{server} {:.2} cores, this tool {:.2}, other processes {:.2}",
            self.cpu / s,
            self.tool / s,
            (self.machine - self.cpu - self.tool).max(0.0) / s
        )
    }
}

async fn window_start(server: &Server) -> Window {
    Window {
        cpu: server.cpu_seconds(),
        tool: cpu_seconds(std::process::id()),
        machine: machine_cpu_seconds(),
        checks: server.counter("mixer_checks_total").await,
        hits: server.counter("mixer_check_cache_hits_total").await,
        buckets: server.buckets().await,
    }
}

async fn window_end(server: &Server, start: Window) -> Window {
    Window {
        cpu: server.cpu_seconds() - start.cpu,
        tool: cpu_seconds(std::process::id()) - start.tool,
        machine: machine_cpu_seconds() - start.machine,
        checks: server.counter("mixer_checks_total").await - start.checks,
        hits: server.counter("mixer_check_cache_hits_total").await - start.hits,
        buckets: server
            .buckets()
            .await
            .into_iter()
            .zip(&start.buckets)
            .map(|((le, n), (_, before))| (le, n - before))
            .collect(),
    }
}

/// `concurrency` loops, each sending its next Check when the last is answered.
async fn closed_loop(
    api: Api,
    conns: &[Unary],
    requests: &Arc<Requests>,
    concurrency: usize,
    duration: Duration,
) -> (Tally, Duration) {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let conn = conns[i % conns.len()].clone();
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let outcome = check_once(api, &conn, &requests).await;
                    tally.record(outcome, t.elapsed().as_nanos() as u64);
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        if let Ok(tally) = t.await {
            total.merge(tally);
        }
    }
    (total, started.elapsed())
}

/// Checks at a fixed rate, each timed from when it was due. A pacing thread
/// (sleeping until the next is due, `--pace` to 1 ms, finer than the
/// runtime's 1 ms timer) hands the due Checks to the runtime. At most
/// `max_in_flight` are outstanding; a Check due beyond that is counted as
/// dropped, not sent.
async fn open_loop(
    api: Api,
    conns: &[Unary],
    requests: &Arc<Requests>,
    rate: u64,
    duration: Duration,
    max_in_flight: usize,
    pace: Duration,
) -> (Tally, u64, Duration) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let handle = tokio::runtime::Handle::current();
    let total = rate * duration.as_secs();
    let started = Instant::now();
    let pacer = {
        let conns = conns.to_vec();
        let requests = requests.clone();
        let tally = tally.clone();
        let in_flight = in_flight.clone();
        let dropped = dropped.clone();
        std::thread::spawn(move || {
            let mut sent: u64 = 0;
            while sent < total {
                // Check i is due at i / rate: those up to elapsed × rate are.
                let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
                while sent < due {
                    let at = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                    sent += 1;
                    if in_flight.load(Ordering::Relaxed) >= max_in_flight {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    let conn = conns[(sent as usize) % conns.len()].clone();
                    let requests = requests.clone();
                    let tally = tally.clone();
                    let in_flight = in_flight.clone();
                    handle.spawn(async move {
                        let sent = Instant::now();
                        let outcome = check_once(api, &conn, &requests).await;
                        let nanos = at.elapsed().as_nanos() as u64;
                        let admitted = matches!(outcome, Outcome::Admitted);
                        let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                        tally.record(outcome, nanos);
                        if admitted {
                            tally.from_sent.push(sent.elapsed().as_nanos() as u64);
                        }
                        drop(tally);
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                // Until the next Check is due: at least `pace`, at most 1 ms.
                let next = Duration::from_secs_f64(sent as f64 / rate as f64);
                let wait = next.saturating_sub(started.elapsed());
                std::thread::sleep(wait.clamp(pace, Duration::from_millis(1).max(pace)));
            }
        })
    };
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    // Wait for the stragglers, for at most 10 s.
    let drain = Instant::now();
    while in_flight.load(Ordering::Relaxed) > 0 && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    (tally, dropped.load(Ordering::Relaxed), elapsed)
}

async fn start_server(args: &Args, dir: &Path) -> anyhow::Result<(Server, String)> {
    let ip = format!("127.{}.0.10", next_subnet());
    if args.floor {
        return start_floor(args, dir, ip).await;
    }
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("policy.yaml"), RULES)?;
    let binary = args
        .mixer_policy
        .clone()
        .unwrap_or_else(|| trireme_tests::bin("mixer-policy"));
    let server_args: Vec<String> = vec![
        "server".into(),
        "--configStoreURL".into(),
        format!("fs://{}", config.display()),
        "--address".into(),
        format!("tcp://{ip}:9091"),
        "--monitoringPort".into(),
        "15014".into(),
        "--numCheckCacheEntries".into(),
        args.cache_entries.to_string(),
    ];
    let (proc, http) = trireme_bench::start_server(
        "mixer-policy",
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
    let rules = configz["rules"].as_array().map_or(0, Vec::len);
    let errors = &configz["errors"];
    if rules != 20 || errors.as_array().is_some_and(|e| !e.is_empty()) {
        bail!("mixer-policy loaded {rules} rules, errors: {errors}");
    }
    let server = Server {
        name: "mixer-policy",
        proc,
        metrics_url: Some(format!("http://{ip}:15014/metrics")),
        http,
    };
    Ok((server, ip))
}

async fn start_floor(args: &Args, dir: &Path, ip: String) -> anyhow::Result<(Server, String)> {
    let address = format!("{ip}:9091");
    let (program, flags) = trireme_bench::pinned(
        &trireme_tests::bin("check-floor"),
        vec!["--address".into(), address.clone()],
        args.server_cpus.as_deref(),
    );
    let proc = Proc::spawn(
        "check-floor",
        &program,
        &flags,
        &[],
        &dir.join("check-floor.log"),
    );
    trireme_bench::floor::wait_accepting(&address, Duration::from_secs(20)).await?;
    let server = Server {
        name: "check-floor",
        proc,
        metrics_url: None,
        http: reqwest::Client::new(),
    };
    Ok((server, ip))
}

async fn connect(ip: &str, n: usize) -> anyhow::Result<Vec<Unary>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let conn = Unary::connect(&format!("{ip}:9091"))
            .await
            .context("connect to the server")?;
        conns.push(conn);
    }
    Ok(conns)
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
        vec![Api::Mixer, Api::Authz]
    } else {
        args.api.clone()
    };
    let dir = tempfile::Builder::new()
        .prefix("trireme-check-load-")
        .tempdir()?;
    let (server, ip) = start_server(&args, dir.path()).await?;
    let conns = connect(&ip, args.connections.max(1)).await?;
    let duration = Duration::from_secs(args.duration.max(1));
    let pace = Duration::from_micros(args.pace.max(1));
    let policy = if args.floor {
        "check-floor: every Check admitted unread".to_string()
    } else {
        format!(
            "mixer-policy: 20 rules (16 denier, 4 listchecker), check cache {} entries",
            args.cache_entries
        )
    };
    println!(
        "{policy}{}; {} connections, {} in flight, hit ratio asked {:.2}; {} s per measurement; this tool: {} thread(s)",
        args.server_cpus
            .as_ref()
            .map(|c| format!(", on CPU(s) {c}"))
            .unwrap_or_default(),
        conns.len(),
        args.concurrency,
        args.hit_ratio,
        duration.as_secs(),
        args.client_threads,
    );
    for api in apis {
        // A fresh key space per API, so neither finds the other's answers cached.
        let requests = Arc::new(Requests::new(args.hit_ratio)?);
        let name = match api {
            Api::Mixer => "Mixer Check",
            Api::Authz => "ext_authz Check",
        };
        // One Check, to see the config admits the request.
        let mut probe = Tally::default();
        probe.record(check_once(api, &conns[0], &requests).await, 0);
        if let Some(p) = probe.first_problem {
            bail!("{name}: the first Check was not admitted: {p}");
        }
        closed_loop(
            api,
            &conns,
            &requests,
            args.concurrency,
            Duration::from_secs(args.warmup),
        )
        .await;

        let start = window_start(&server).await;
        let (mut tally, elapsed) =
            closed_loop(api, &conns, &requests, args.concurrency, duration).await;
        let w = window_end(&server, start).await;
        let rate = tally.checks() as f64 / elapsed.as_secs_f64();
        println!(
            "{name}, closed loop: {} Checks in {:.2} s = {:.0} Checks/s = {}; CPU: {}; latency {}{}",
            tally.checks(),
            elapsed.as_secs_f64(),
            rate,
            w.per_cpu_second(server.name, tally.checks()),
            w.cores(server.name, elapsed),
            tally.percentiles(),
            tally.problems(),
        );

        let target = args.rate.unwrap_or((rate / 2.0) as u64).max(1);
        let start = window_start(&server).await;
        let (mut tally, dropped, elapsed) =
            open_loop(api, &conns, &requests, target, duration, 20_000, pace).await;
        let w = window_end(&server, start).await;
        println!(
            "{name}, open loop at {target} Checks/s: {} answered, {dropped} dropped (over 20,000 in flight); {}; CPU: {}; latency from when due: {}; from when sent: {}; {}{}",
            tally.checks(),
            w.per_cpu_second(server.name, tally.checks()),
            w.cores(server.name, elapsed),
            tally.percentiles(),
            tally.sent_percentiles(),
            w.server_side(),
            tally.problems(),
        );
    }
    drop(server);
    Ok(())
}
