//! Config change → real Envoy updated.
//!
//! Runs the local-mode mesh of the end-to-end tests (pilot-discovery, reviews
//! v1/v2 and a client, each behind pilot-agent + Envoy), then rewrites the
//! VirtualService `--edits` times. Each edit sets a new request header value on
//! the route; the time is from the file's rename to the moment the client's
//! Envoy shows that value in its `/config_dump`. Prints median, p90, p99, max.

use std::time::{Duration, Instant};

use clap::Parser;
use trireme_tests::mesh::Mesh;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    edits: usize,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mesh = Mesh::start(&["v1", "v2"], &[("vs.yaml", &virtual_service(0))]).await;
    let admin = format!(
        "http://{}:15000/config_dump?resource=dynamic_route_configs",
        mesh.pod("client").ip
    );
    let mut times = Vec::with_capacity(args.edits);
    for edit in 1..=args.edits {
        let marker = format!("edit-{edit}");
        let started = Instant::now();
        mesh.write_config("vs.yaml", &virtual_service(edit));
        loop {
            let dump = mesh.http.get(&admin).send().await?.text().await?;
            if dump.contains(&marker) {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "edit {edit} did not reach Envoy in 10s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(started.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "{} edits, VirtualService file → client Envoy config_dump: median {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms (PILOT_DEBOUNCE_AFTER 100 ms included)",
        times.len(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.9).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        at(1.0).as_secs_f64() * 1000.0
    );
    Ok(())
}
