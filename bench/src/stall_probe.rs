//! How long this machine takes a running thread off its core.
//!
//! Reads the monotonic clock in a tight loop for `--duration` seconds and
//! counts the gaps between consecutive readings: a gap is time the thread did
//! not run at all (the kernel or, on a virtual machine, the host ran something
//! else). A latency percentile under load can be no better than the share of
//! time lost this way, so the figures of `check-load`'s open loop are read
//! against it. Run it pinned on an otherwise idle core
//! (`taskset -c 0 stall-probe`); it keeps that core busy while it runs.

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Seconds to watch.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

/// Gap bounds reported, in µs.
const BOUNDS: [u64; 5] = [100, 1_000, 5_000, 20_000, 100_000];

fn main() {
    let args = Args::parse();
    let duration = Duration::from_secs(args.duration.max(1));
    let started = Instant::now();
    let mut last = started;
    let mut over = [0u64; BOUNDS.len()];
    let mut lost = Duration::ZERO;
    let mut longest = Duration::ZERO;
    loop {
        let now = Instant::now();
        let gap = now - last;
        last = now;
        if gap >= Duration::from_micros(BOUNDS[0]) {
            lost += gap;
            longest = longest.max(gap);
            for (n, bound) in over.iter_mut().zip(BOUNDS) {
                if gap >= Duration::from_micros(bound) {
                    *n += 1;
                }
            }
        }
        if now - started >= duration {
            break;
        }
    }
    let watched = started.elapsed();
    let counts: Vec<String> = BOUNDS
        .iter()
        .zip(over)
        .map(|(bound, n)| format!("≥ {} ms: {n}", *bound as f64 / 1e3))
        .collect();
    println!(
        "stalls in {:.1} s: {}; longest {:.2} ms; {:.3}% of the time lost in stalls of 0.1 ms or more",
        watched.as_secs_f64(),
        counts.join(", "),
        longest.as_secs_f64() * 1e3,
        100.0 * lost.as_secs_f64() / watched.as_secs_f64(),
    );
}
