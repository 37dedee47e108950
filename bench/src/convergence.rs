//! Config change → real Envoy updated.
//!
//! Runs the local-mode mesh of the end-to-end tests (pilot-discovery, reviews
//! v1/v2 and a client, each behind pilot-agent + Envoy), then makes `--edits`
//! changes of each kind asked for, and times each from the file's rename to
//! the moment the client's Envoy shows it in `/config_dump`:
//! - `vs`: a VirtualService edit (a new request header value on the route);
//! - `dr`: a DestinationRule edit (a new connection limit), timed until every
//!   rewritten cluster is active, not warming;
//! - `endpoints`: an Endpoints edit (one more address), an endpoint-only push.
//!
//! Prints median, p90, p99 and max per kind. With `--galley`, Galley reads
//! the directory and Pilot takes its config over MCP.

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use trireme_tests::mesh::{Mesh, Options};
use trireme_tests::topology::{REVIEWS_PORT, Topology};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    edits: usize,
    /// Which changes to time; all of them when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    change: Vec<Change>,
    /// Through Galley: Pilot reads the config directory over MCP.
    #[arg(long)]
    galley: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Change {
    Vs,
    Dr,
    Endpoints,
}

impl Change {
    /// The file to rewrite, its content for `edit`, and what the client's
    /// config_dump shows once Envoy has it: (resource, text, times it appears).
    fn edit(self, topology: &Topology, edit: usize) -> (&'static str, String, Probe) {
        match self {
            Change::Vs => (
                "vs.yaml",
                virtual_service(edit),
                Probe {
                    resource: "dynamic_route_configs",
                    marker: format!("edit-{edit}"),
                    count: 1,
                },
            ),
            Change::Dr => (
                "dr.yaml",
                topology.destination_rule_yaml(&format!(
                    "  trafficPolicy:\n    connectionPool:\n      tcp: {{maxConnections: {}}}\n",
                    1000 + edit
                )),
                // The plain cluster and both subsets.
                Probe {
                    resource: "dynamic_active_clusters",
                    marker: format!("\"max_connections\":{}", 1000 + edit),
                    count: 3,
                },
            ),
            Change::Endpoints => {
                let extra = format!("10.99.{}.{}", edit / 250, edit % 250 + 1);
                // The Endpoints' port line, after its addresses.
                let ports = format!("  ports: [{{name: http, port: {REVIEWS_PORT}}}]");
                let yaml = topology.cluster_yaml().replacen(
                    &ports,
                    &format!("  - ip: {extra}\n{ports}"),
                    1,
                );
                (
                    "cluster.yaml",
                    yaml,
                    Probe {
                        resource: "dynamic_endpoint_configs&include_eds",
                        marker: format!("\"address\":\"{extra}\""),
                        count: 1,
                    },
                )
            }
        }
    }
}

struct Probe {
    resource: &'static str,
    marker: String,
    count: usize,
}

fn virtual_service(edit: usize) -> String {
    let (v1, v2) = if edit.is_multiple_of(2) {
        (80, 20)
    } else {
        (20, 80)
    };
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n  - headers:\n      request:\n        set: {{x-edit: edit-{edit}}}\n    route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: {v1}\n    - destination: {{host: reviews, subset: v2}}\n      weight: {v2}\n"
    )
}

async fn time_edits(mesh: &Mesh, change: Change, edits: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(edits);
    for edit in 1..=edits {
        let (file, yaml, probe) = change.edit(&mesh.topology, edit);
        let admin = format!(
            "http://{}:15000/config_dump?resource={}",
            mesh.pod("client").ip,
            probe.resource
        );
        let started = Instant::now();
        mesh.write_config(file, &yaml);
        loop {
            let dump: serde_json::Value = mesh.http.get(&admin).send().await?.json().await?;
            if dump.to_string().matches(&probe.marker).count() >= probe.count {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(20),
                "{change:?} edit {edit} did not reach Envoy in 20s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let changes = if args.change.is_empty() {
        vec![Change::Vs, Change::Dr, Change::Endpoints]
    } else {
        args.change
    };
    let options = Options {
        galley: args.galley,
        ..Default::default()
    };
    let mesh = Mesh::start_with(&["v1", "v2"], &[("vs.yaml", &virtual_service(0))], options).await;
    for change in changes {
        let times = time_edits(&mesh, change, args.edits).await?;
        let at =
            |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{change:?}: {} edits, file → client Envoy config_dump: median {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            times.len(),
            ms(at(0.5)),
            ms(at(0.9)),
            ms(at(0.99)),
            ms(at(1.0)),
        );
    }
    Ok(())
}
