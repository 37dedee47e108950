//! What the load tools share: CPU accounting from /proc, a server pinned to
//! chosen cores, counters scraped from Prometheus text, and request
//! latency through a mesh ([`latency`]), and a server with no policy in it to
//! measure against ([`floor`]).

pub mod floor;
pub mod latency;
pub mod unary;

use std::path::{Path, PathBuf};

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Busy CPU seconds of the whole machine, from the first line of /proc/stat
/// (user, nice, system, irq, softirq, steal; not idle or iowait).
pub fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    busy / 100.0
}

/// The program and arguments that run `binary` with `args`, on `cpus`
/// (taskset's list) when given.
pub fn pinned(binary: &Path, args: Vec<String>, cpus: Option<&str>) -> (PathBuf, Vec<String>) {
    match cpus {
        Some(cpus) => {
            let mut wrapped = vec![
                "-c".to_string(),
                cpus.to_string(),
                binary.display().to_string(),
            ];
            wrapped.extend(args);
            (PathBuf::from("taskset"), wrapped)
        }
        None => (binary.to_path_buf(), args),
    }
}

/// The sum of every sample of `name` (any labels) in Prometheus text.
pub fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// Starts `name` (`binary` with `args`, on `cpus` when given, quiet but for
/// warnings, its log in `dir`) and waits until `ready` answers.
pub async fn start_server(
    name: &str,
    binary: &Path,
    args: Vec<String>,
    cpus: Option<&str>,
    dir: &Path,
    ready: &str,
) -> (trireme_tests::process::Proc, reqwest::Client) {
    let (program, args) = pinned(binary, args, cpus);
    let proc = trireme_tests::process::Proc::spawn(
        name,
        &program,
        &args,
        &[("RUST_LOG", "warn".into())],
        &dir.join(format!("{name}.log")),
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client");
    trireme_tests::mesh::wait_ok(
        &http,
        ready,
        &format!("{name} ready"),
        std::time::Duration::from_secs(20),
    )
    .await;
    (proc, http)
}
