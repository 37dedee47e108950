//! `statsd-bridge`: prom/statsd-exporter's flags, checked before anything is
//! bound; then the listeners, the expiry ticker, reloads and the web port.

use std::convert::Infallible;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use clap::{ArgAction, Parser};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::exposition::{self, Build, Exposition};
use crate::listener::{self, Shared, lock};
use crate::mapping::{self, Mapper};
use crate::registry::{Limits, Registry};

pub const INFO: mesh::version::Info =
    mesh::version::Info::new("statsd-bridge", env!("CARGO_PKG_VERSION"));

/// The flags keep statsd_exporter's names; `--flag=value` and `--flag value`
/// both work.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "statsd-bridge",
    version,
    about = "Trireme's istio-statsd-prom-bridge: statsd (UDP and TCP) in, Prometheus exposition out"
)]
pub struct Args {
    /// UDP address for statsd lines; ":9125" is every interface, "" turns UDP off.
    #[arg(long = "statsd.listen-udp", default_value = ":9125")]
    pub listen_udp: String,
    /// TCP address for statsd lines; "" turns TCP off.
    #[arg(long = "statsd.listen-tcp", default_value = ":9125")]
    pub listen_tcp: String,
    /// Address for the exposition, /version and the health paths.
    #[arg(long = "web.listen-address", default_value = ":9102")]
    pub web_listen_address: String,
    /// Path of the Prometheus exposition.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    pub telemetry_path: String,
    /// Serve POST /-/reload (re-read the mapping config) and POST /-/quit.
    #[arg(long = "web.enable-lifecycle")]
    pub enable_lifecycle: bool,
    /// statsd_exporter's mapping YAML; re-read on SIGHUP.
    #[arg(long = "statsd.mapping-config")]
    pub mapping_config: Option<PathBuf>,
    /// The UDP socket's kernel receive buffer in bytes (capped by net.core.rmem_max).
    #[arg(long = "statsd.read-buffer")]
    pub read_buffer: Option<usize>,
    /// Distinct statsd names (with their tags) whose mapping is remembered;
    /// keep it above the series in use, or mapping runs again and again.
    #[arg(long = "statsd.cache-size", default_value_t = 200_000)]
    pub cache_size: usize,
    /// Accepted for statsd_exporter's command lines; both keep what is in use
    /// and start over when full.
    #[arg(long = "statsd.cache-type", default_value = "lru", value_parser = ["lru", "random"])]
    pub cache_type: String,
    /// Series kept at most; samples for further series are dropped and counted.
    #[arg(long = "statsd.max-series", default_value_t = 100_000)]
    pub max_series: usize,
    /// How long a statsd set counts distinct members before starting over.
    #[arg(long = "statsd.set-window", default_value = "10s", value_parser = parse_window)]
    pub set_window: Duration,
    /// TCP connections served at once; more are closed on arrival.
    #[arg(long = "statsd.tcp-max-connections", default_value_t = 1024)]
    pub tcp_max_connections: usize,
    /// Turn DogStatsD tags (`|#k:v`) into labels.
    #[arg(
        long = "statsd.parse-dogstatsd-tags",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = true,
        default_missing_value = "true"
    )]
    pub dogstatsd_tags: bool,
    /// kingpin's negative form of --statsd.parse-dogstatsd-tags.
    #[arg(long = "no-statsd.parse-dogstatsd-tags", hide = true)]
    pub no_dogstatsd_tags: bool,
    /// debug, info, warn or error (RUST_LOG, when set, wins).
    #[arg(long = "log.level", default_value = "info", value_parser = ["debug", "info", "warn", "error"])]
    pub log_level: String,
    /// logfmt (text) or json.
    #[arg(long = "log.format", default_value = "logfmt", value_parser = ["logfmt", "json"])]
    pub log_format: String,
    /// Check the flags and the mapping config, then exit.
    #[arg(long = "check-config")]
    pub check_config: bool,
}

fn parse_window(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s)?;
    if d.is_zero() {
        return Err("must be positive".into());
    }
    Ok(d)
}

/// Everything checked before a socket is bound.
pub struct Validated {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub web: SocketAddr,
    pub telemetry_path: String,
    pub mapping_config: Option<PathBuf>,
    pub mapper: Mapper,
    pub limits: Limits,
    pub read_buffer: Option<usize>,
    pub tcp_max_connections: usize,
    pub enable_lifecycle: bool,
}

/// `:port` is every interface (Go's reading); `host:port` one address.
pub fn parse_address(flag: &str, value: &str) -> anyhow::Result<SocketAddr> {
    let full = match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_string(),
    };
    if let Ok(addr) = full.parse() {
        return Ok(addr);
    }
    full.to_socket_addrs()
        .with_context(|| format!("--{flag} {value:?}: expected host:port or :port"))?
        .next()
        .with_context(|| format!("--{flag} {value:?}: the name has no address"))
}

pub fn validate(args: &Args) -> anyhow::Result<Validated> {
    let optional = |flag: &str, v: &str| -> anyhow::Result<Option<SocketAddr>> {
        if v.is_empty() {
            Ok(None)
        } else {
            parse_address(flag, v).map(Some)
        }
    };
    let udp = optional("statsd.listen-udp", &args.listen_udp)?;
    let tcp = optional("statsd.listen-tcp", &args.listen_tcp)?;
    if udp.is_none() && tcp.is_none() {
        bail!(
            "--statsd.listen-udp and --statsd.listen-tcp are both empty: nothing would receive statsd"
        );
    }
    let web = parse_address("web.listen-address", &args.web_listen_address)?;
    let path = &args.telemetry_path;
    if !path.starts_with('/') || path.len() < 2 {
        bail!("--web.telemetry-path {path:?}: expected a path such as /metrics");
    }
    if ["/version", "/-/ready", "/-/healthy", "/-/reload", "/-/quit"].contains(&path.as_str()) {
        bail!("--web.telemetry-path {path:?}: that path serves something else");
    }
    if args.max_series == 0 {
        bail!("--statsd.max-series: must be at least 1");
    }
    if args.tcp_max_connections == 0 {
        bail!("--statsd.tcp-max-connections: must be at least 1");
    }
    if args.read_buffer == Some(0) {
        bail!("--statsd.read-buffer: must be positive");
    }
    let mapper = match &args.mapping_config {
        Some(p) => mapping::load(p)?,
        None => Mapper::empty(),
    };
    Ok(Validated {
        udp,
        tcp,
        web,
        telemetry_path: path.clone(),
        mapping_config: args.mapping_config.clone(),
        mapper,
        limits: Limits {
            max_series: args.max_series,
            cache_size: args.cache_size,
            set_window: args.set_window,
            dogstatsd_tags: args.dogstatsd_tags && !args.no_dogstatsd_tags,
        },
        read_buffer: args.read_buffer,
        tcp_max_connections: args.tcp_max_connections,
        enable_lifecycle: args.enable_lifecycle,
    })
}

/// Re-reads the mapping config: a good one applies to what arrives next, a
/// bad one is logged and counted and the rules in use stay.
fn reload(shared: &Shared, path: Option<&PathBuf>) -> Result<usize, String> {
    let Some(path) = path else {
        return Err("no --statsd.mapping-config to reload".into());
    };
    match mapping::load(path) {
        Ok(mapper) => {
            let n = mapper.len();
            let mut registry = lock(shared);
            registry.set_mapper(Arc::new(mapper));
            registry.stats.config_reloads[0] += 1;
            tracing::info!(mappings = n, "mapping config reloaded");
            Ok(n)
        }
        Err(e) => {
            lock(shared).stats.config_reloads[1] += 1;
            tracing::error!("mapping config not reloaded, the rules in use stay: {e}");
            Err(e.to_string())
        }
    }
}

pub async fn run(valid: Validated, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mappings = valid.mapper.len();
    let shared: Shared = Arc::new(Mutex::new(Registry::new(
        Arc::new(valid.mapper),
        valid.limits.clone(),
    )));

    // Everything is bound before anything is served, so a taken port fails
    // startup naming its flag.
    let udp = match valid.udp {
        Some(addr) => Some(listener::bind_udp(addr, valid.read_buffer).await?),
        None => None,
    };
    let tcp = match valid.tcp {
        Some(addr) => Some(mesh::server::bind(&addr.to_string(), "statsd.listen-tcp").await?),
        None => None,
    };
    let web = mesh::server::bind(&valid.web.to_string(), "web.listen-address").await?;
    let bound = |a: Option<std::io::Result<SocketAddr>>| {
        a.and_then(Result::ok)
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into())
    };
    tracing::info!(
        udp = %bound(udp.as_ref().map(|s| s.local_addr())),
        tcp = %bound(tcp.as_ref().map(|s| s.local_addr())),
        web = %bound(Some(web.local_addr())),
        mappings,
        max_series = valid.limits.max_series,
        "accepting statsd"
    );

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(socket) = udp {
        tasks.spawn(listener::serve_udp(
            socket,
            shared.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(l) = tcp {
        tasks.spawn(listener::serve_tcp(
            l,
            shared.clone(),
            valid.tcp_max_connections,
            shutdown.clone(),
        ));
    }
    tasks.spawn(expire_every_second(shared.clone(), shutdown.clone()));
    tasks.spawn(reload_on_sighup(
        shared.clone(),
        valid.mapping_config.clone(),
        shutdown.clone(),
    ));

    let web_config = Web {
        telemetry_path: valid.telemetry_path.clone(),
        mapping_config: valid.mapping_config.clone(),
        enable_lifecycle: valid.enable_lifecycle,
    };
    let router = web_routes(&web_config, shared.clone(), started, shutdown.clone());
    mesh::server::serve_http(web, router, shutdown.clone())
        .await
        .context("web server")?;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

async fn expire_every_second(shared: Shared, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let removed = lock(&shared).expire(Instant::now());
                if removed > 0 {
                    tracing::debug!(removed, "series expired");
                }
            }
        }
    }
}

async fn reload_on_sighup(shared: Shared, path: Option<PathBuf>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; the mapping config will not be reloaded on it");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {
                // The outcome is logged and counted inside.
                let _ = reload(&shared, path.as_ref());
            }
        }
    }
}

/// What the web port needs from the flags.
struct Web {
    telemetry_path: String,
    mapping_config: Option<PathBuf>,
    enable_lifecycle: bool,
}

fn web_routes(valid: &Web, shared: Shared, started: f64, shutdown: CancellationToken) -> Router {
    let metrics = {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move {
                // Copying the numbers out holds the lock; sorting and writing
                // 100,000 series' text does not, and runs on a blocking thread
                // so that the listeners keep their worker meanwhile, even on
                // one core. The text streams out as it is written; the thread
                // ends with the response (the channel closes).
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(4);
                tokio::task::spawn_blocking(move || {
                    let snapshot = lock(&shared).snapshot(Instant::now());
                    let build = Build {
                        version: INFO.version,
                        revision: INFO.git_revision,
                    };
                    for chunk in Exposition::new(snapshot, crate::process::read(), started, build) {
                        if tx.blocking_send(Ok(chunk)).is_err() {
                            break;
                        }
                    }
                });
                let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
                ([(CONTENT_TYPE, exposition::CONTENT_TYPE)], body)
            }
        }
    };
    let landing = format!(
        "<html><head><title>statsd-bridge</title></head><body><h1>statsd-bridge</h1>\
         <p><a href=\"{0}\">{0}</a> · <a href=\"/version\">/version</a></p></body></html>",
        valid.telemetry_path
    );
    let mut router = Router::new()
        .route(&valid.telemetry_path, get(metrics))
        .route("/version", get(|| async { axum::Json(INFO.to_json()) }))
        .route("/-/ready", get(|| async { "OK" }))
        .route("/-/healthy", get(|| async { "OK" }))
        .route("/", get(move || async move { Html(landing) }));
    if valid.enable_lifecycle {
        let path = valid.mapping_config.clone();
        router = router
            .route(
                "/-/reload",
                post(move || {
                    let shared = shared.clone();
                    let path = path.clone();
                    async move {
                        match reload(&shared, path.as_ref()) {
                            Ok(n) => {
                                (StatusCode::OK, format!("reloaded {n} mappings\n")).into_response()
                            }
                            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
                        }
                    }
                }),
            )
            .route(
                "/-/quit",
                post(move || async move {
                    tracing::info!("asked to quit over HTTP");
                    shutdown.cancel();
                    "quitting\n"
                }),
            );
    }
    router
}
