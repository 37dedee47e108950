//! ADS load tool: N simulated sidecars against a real pilot-discovery.
//!
//! Starts `pilot-discovery` on a generated mesh (services × endpoints, a
//! DestinationRule and VirtualService per service), connects N ADS clients that
//! behave like Envoy (CDS and LDS first, then EDS for the EDS clusters and RDS
//! for the routes the listeners name, ACKing every response), and reports:
//! time until every client has ACKed all four types, Pilot's CPU seconds and
//! peak RSS, and then the time for one VirtualService edit to reach (be ACKed
//! by) every client.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::xds::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use api::xds::{DiscoveryRequest, DiscoveryResponse, Node};
use clap::Parser;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use pilot::xds::fixtures::mesh_yaml;
use pilot::xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use trireme_tests::mesh::{pilot_args, wait_ok};
use trireme_tests::process::Proc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// pilot-discovery binary; defaults to the one next to this tool.
    #[arg(long)]
    pilot: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config)?;
    // The cluster in one file, routing in another: the edit below touches only routing.
    let (routing, cluster) = split_routing(&mesh_yaml(args.services, args.endpoints));
    std::fs::write(config.join("cluster.yaml"), cluster)?;
    std::fs::write(config.join("routing.yaml"), &routing)?;
    let pilot_bin = args
        .pilot
        .clone()
        .unwrap_or_else(|| trireme_tests::bin("pilot-discovery"));
    let ip = "127.0.66.1";
    let pilot_args = pilot_args(ip, &config, Path::new("/nonexistent"));
    let pilot = Proc::spawn(
        "pilot-discovery",
        &pilot_bin,
        &pilot_args,
        &[("RUST_LOG", "warn".into())],
        &dir.path().join("pilot.log"),
    );
    let started = Instant::now();
    let ready = format!("http://{ip}:8080/ready");
    wait_ok(
        &reqwest::Client::new(),
        &ready,
        "pilot-discovery /ready",
        Duration::from_secs(args.timeout),
    )
    .await;
    println!(
        "mesh: {} services x {} endpoints; pilot-discovery ready in {:.2}s, RSS {:.0} MiB",
        args.services,
        args.endpoints,
        started.elapsed().as_secs_f64(),
        rss_kib(pilot.pid(), "VmRSS") as f64 / 1024.0
    );

    let cpu_before = cpu_seconds(pilot.pid());
    let (edit_tx, edit_rx) = watch::channel(0u64);
    let (done_tx, mut done_rx) = mpsc::channel::<(usize, u32, Duration)>(args.clients * 4);
    let t0 = Instant::now();
    for i in 0..args.clients.min(args.services) {
        let node = Node {
            id: format!(
                "sidecar~10.{}.{}.2~svc-{i}-0.default~default.svc.cluster.local",
                100 + i / 250,
                i % 250
            ),
            ..Default::default()
        };
        tokio::spawn(client(
            i,
            node,
            format!("http://{ip}:15010"),
            done_tx.clone(),
            edit_rx.clone(),
        ));
    }
    drop(done_tx);
    let clients = args.clients.min(args.services);
    let deadline = Duration::from_secs(args.timeout);
    let mut synced = 0;
    while synced < clients {
        match tokio::time::timeout(deadline.saturating_sub(t0.elapsed()), done_rx.recv()).await {
            Ok(Some((_, 0, _))) => synced += 1,
            Ok(Some(_)) => {}
            Ok(None) => bail!("clients ended early"),
            Err(_) => bail!("only {synced}/{clients} clients synced within {deadline:?}"),
        }
    }
    let sync_time = t0.elapsed();
    let cpu_sync = cpu_seconds(pilot.pid()) - cpu_before;
    println!(
        "{clients} ADS clients fully ACKed (CDS, EDS, LDS, RDS) in {:.3}s; pilot CPU {:.2}s; pilot peak RSS {:.0} MiB",
        sync_time.as_secs_f64(),
        cpu_sync,
        rss_kib(pilot.pid(), "VmHWM") as f64 / 1024.0
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "pilot RSS 2s after sync: {:.0} MiB",
        rss_kib(pilot.pid(), "VmRSS") as f64 / 1024.0
    );

    // One VirtualService edit, pushed to every client.
    let vs =
        routing
            .replacen("weight: 90", "weight: 80", 1)
            .replacen("weight: 10", "weight: 20", 1);
    let t1 = Instant::now();
    edit_tx.send_replace(1);
    std::fs::write(config.join(".tmp"), vs)?;
    std::fs::rename(config.join(".tmp"), config.join("routing.yaml"))?;
    let mut updated = Vec::new();
    while updated.len() < clients {
        match tokio::time::timeout(deadline, done_rx.recv()).await {
            Ok(Some((_, 1, _))) => updated.push(t1.elapsed()),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                bail!("only {}/{clients} clients received the edit", updated.len())
            }
        }
    }
    updated.sort();
    println!(
        "VirtualService edit ACKed by all {clients} clients in {:.3}s (first {:.3}s; includes the 100 ms debounce)",
        updated[updated.len() - 1].as_secs_f64(),
        updated[0].as_secs_f64()
    );
    println!(
        "pilot CPU total {:.2}s, peak RSS {:.0} MiB",
        cpu_seconds(pilot.pid()) - cpu_before,
        rss_kib(pilot.pid(), "VmHWM") as f64 / 1024.0
    );
    drop(pilot);
    Ok(())
}

/// One simulated Envoy. Reports `(id, 0, t)` when first fully ACKed and
/// `(id, n, t)` when it ACKs an RDS update after edit `n`.
async fn client(
    id: usize,
    node: Node,
    addr: String,
    done: mpsc::Sender<(usize, u32, Duration)>,
    edit: watch::Receiver<u64>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut grpc = AggregatedDiscoveryServiceClient::connect(addr)
        .await
        .context("connect")?;
    grpc = grpc.max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(16);
    let mut first = true;
    let mut request = |type_url: &str, names: Vec<String>, r: Option<&DiscoveryResponse>| {
        let req = DiscoveryRequest {
            node: first.then(|| node.clone()),
            type_url: type_url.to_string(),
            resource_names: names,
            version_info: r.map(|r| r.version_info.clone()).unwrap_or_default(),
            response_nonce: r.map(|r| r.nonce.clone()).unwrap_or_default(),
            error_detail: None,
        };
        first = false;
        req
    };
    tx.send(request(CLUSTER, vec![], None)).await?;
    tx.send(request(LISTENER, vec![], None)).await?;
    let mut responses = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut acked: BTreeSet<&str> = BTreeSet::new();
    let mut eds_names = Vec::new();
    let mut rds_names = Vec::new();
    // The last response of each named type: as Envoy does, a subscription
    // change is sent as a request carrying that response's version and nonce.
    let mut last_eds: Option<DiscoveryResponse> = None;
    let mut last_rds: Option<DiscoveryResponse> = None;
    let mut reported = false;
    while let Some(resp) = responses.next().await {
        let resp = resp?;
        match resp.type_url.as_str() {
            CLUSTER => {
                tx.send(request(CLUSTER, vec![], Some(&resp))).await?;
                let names: Vec<String> = resp
                    .resources
                    .iter()
                    .filter_map(|a| Cluster::decode(a.value.clone()).ok())
                    .filter(|c| {
                        c.cluster_discovery_type
                            == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
                    })
                    .map(|c| c.name)
                    .collect();
                if names != eds_names {
                    eds_names = names;
                    tx.send(request(ENDPOINT, eds_names.clone(), last_eds.as_ref()))
                        .await?;
                }
                acked.insert(CLUSTER);
            }
            LISTENER => {
                tx.send(request(LISTENER, vec![], Some(&resp))).await?;
                let mut names: Vec<String> = resp
                    .resources
                    .iter()
                    .filter_map(|a| Listener::decode(a.value.clone()).ok())
                    .flat_map(|l| l.filter_chains.into_iter().flat_map(|c| c.filters))
                    .filter_map(|f| match f.config_type {
                        Some(ConfigType::TypedConfig(any)) => {
                            HttpConnectionManager::decode(any.value.as_slice()).ok()
                        }
                        _ => None,
                    })
                    .filter_map(|h| match h.route_specifier {
                        Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
                        _ => None,
                    })
                    .collect();
                names.sort();
                names.dedup();
                if names != rds_names {
                    rds_names = names;
                    tx.send(request(ROUTE, rds_names.clone(), last_rds.as_ref()))
                        .await?;
                }
                acked.insert(LISTENER);
            }
            t @ (ENDPOINT | ROUTE) => {
                let names = if t == ENDPOINT {
                    eds_names.clone()
                } else {
                    rds_names.clone()
                };
                tx.send(request(t, names, Some(&resp))).await?;
                if t == ENDPOINT {
                    last_eds = Some(resp);
                    acked.insert(ENDPOINT);
                } else {
                    let edits = *edit.borrow();
                    if acked.contains(ROUTE) && edits > 0 {
                        let _ = done.send((id, edits as u32, started.elapsed())).await;
                    }
                    acked.insert(ROUTE);
                    last_rds = Some(resp);
                }
            }
            other => bail!("unexpected type {other}"),
        }
        if !reported && acked.len() == 4 {
            reported = true;
            let _ = done.send((id, 0, started.elapsed())).await;
        }
    }
    Ok(())
}

/// (Istio documents, Kubernetes documents) of a multi-document YAML text.
fn split_routing(yaml: &str) -> (String, String) {
    let (istio, kube): (Vec<&str>, Vec<&str>) = yaml
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .partition(|d| d.contains("networking.istio.io"));
    (istio.join("---\n"), kube.join("---\n"))
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
