//! A Prometheus summary: quantiles over a sliding window, sum and count over
//! all time (as client_golang's summaries, which statsd_exporter used).
//!
//! Quantiles come from a log-bucketed sketch (the DDSketch idea): a value
//! lands in the bucket `ceil(log_γ v)`, and a bucket stands for a value within
//! 1% of everything in it, so a quantile is within 1% of the true one whatever
//! the spread, with a few hundred buckets for latencies from microseconds to
//! minutes, and never more than [`MAX_BINS`]. The window is `age_buckets`
//! sketches, one per `max_age / age_buckets` step, plus their running total,
//! so a scrape reads one sketch and an observation touches two.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::mapping::SummaryOptions;

/// Relative accuracy of a quantile.
const ACCURACY: f64 = 0.01;
/// Buckets per sign before the lowest are folded together, bounding memory
/// whatever values arrive.
pub const MAX_BINS: usize = 1024;
/// Magnitudes below this count as zero.
const TINY: f64 = 1e-9;

fn gamma() -> f64 {
    (1.0 + ACCURACY) / (1.0 - ACCURACY)
}

fn bin_of(magnitude: f64) -> i32 {
    (magnitude.ln() / gamma().ln()).ceil() as i32
}

/// The value that stands for a bucket: within [`ACCURACY`] of its members.
fn value_of(bin: i32) -> f64 {
    2.0 * gamma().powi(bin) / (gamma() + 1.0)
}

/// Counts by bucket, sorted by bucket.
#[derive(Clone, Debug, Default, PartialEq)]
struct Bins(Vec<(i32, u64)>);

impl Bins {
    fn add(&mut self, bin: i32, n: u64) {
        match self.0.binary_search_by_key(&bin, |b| b.0) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(n),
            Err(i) => {
                self.0.insert(i, (bin, n));
                if self.0.len() > MAX_BINS {
                    // Fold the lowest bucket into the next: low quantiles lose
                    // accuracy, memory stays bounded.
                    let (_, lowest) = self.0.remove(0);
                    self.0[0].1 = self.0[0].1.saturating_add(lowest);
                }
            }
        }
    }

    /// Takes away what `expired` added. A bucket folded away here is found in
    /// the lowest one, where folding put it.
    fn subtract(&mut self, expired: &Bins) {
        for &(bin, n) in &expired.0 {
            let i = match self.0.binary_search_by_key(&bin, |b| b.0) {
                Ok(i) => i,
                Err(0) if !self.0.is_empty() => 0,
                Err(_) => continue,
            };
            self.0[i].1 = self.0[i].1.saturating_sub(n);
        }
        self.0.retain(|b| b.1 > 0);
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Sketch {
    positive: Bins,
    negative: Bins,
    zero: u64,
    count: u64,
}

impl Sketch {
    fn add(&mut self, v: f64, n: u64) {
        if v > TINY {
            self.positive.add(bin_of(v), n);
        } else if v < -TINY {
            self.negative.add(bin_of(-v), n);
        } else {
            self.zero = self.zero.saturating_add(n);
        }
        self.count = self.count.saturating_add(n);
    }

    fn subtract(&mut self, expired: &Sketch) {
        self.positive.subtract(&expired.positive);
        self.negative.subtract(&expired.negative);
        self.zero = self.zero.saturating_sub(expired.zero);
        self.count = self.count.saturating_sub(expired.count);
    }

    fn clear(&mut self) {
        self.positive.0.clear();
        self.negative.0.clear();
        self.zero = 0;
        self.count = 0;
    }

    /// The value at rank `q × (count − 1)`, NaN when empty (as client_golang
    /// reports an empty summary).
    fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        // From the most negative value up.
        for &(bin, n) in self.negative.0.iter().rev() {
            seen = seen.saturating_add(n);
            if seen > rank {
                return -value_of(bin);
            }
        }
        seen = seen.saturating_add(self.zero);
        if seen > rank {
            return 0.0;
        }
        for &(bin, n) in &self.positive.0 {
            seen = seen.saturating_add(n);
            if seen > rank {
                return value_of(bin);
            }
        }
        // Counts folded or saturated past the end: the largest there is.
        self.positive
            .0
            .last()
            .map_or(0.0, |&(bin, _)| value_of(bin))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    options: Arc<SummaryOptions>,
    windows: Box<[Sketch]>,
    /// The sum of `windows`.
    total: Sketch,
    current: usize,
    current_since: Instant,
    sum: f64,
    count: u64,
}

impl Summary {
    pub fn new(options: Arc<SummaryOptions>, now: Instant) -> Summary {
        let windows =
            vec![Sketch::default(); options.age_buckets.max(1) as usize].into_boxed_slice();
        Summary {
            options,
            windows,
            total: Sketch::default(),
            current: 0,
            current_since: now,
            sum: 0.0,
            count: 0,
        }
    }

    fn step(&self) -> Duration {
        (self.options.max_age / self.windows.len() as u32).max(Duration::from_millis(1))
    }

    /// Retires the windows that have aged out by `now`.
    fn advance(&mut self, now: Instant) {
        let step = self.step();
        let elapsed = now.saturating_duration_since(self.current_since);
        let steps = (elapsed.as_nanos() / step.as_nanos()) as usize;
        if steps == 0 {
            return;
        }
        if steps >= self.windows.len() {
            self.windows.iter_mut().for_each(Sketch::clear);
            self.total.clear();
            self.current_since = now;
            return;
        }
        for _ in 0..steps {
            self.current = (self.current + 1) % self.windows.len();
            let expired = std::mem::take(&mut self.windows[self.current]);
            self.total.subtract(&expired);
        }
        self.current_since += step * steps as u32;
    }

    pub fn observe(&mut self, v: f64, n: u64, now: Instant) {
        self.advance(now);
        self.windows[self.current].add(v, n);
        self.total.add(v, n);
        self.sum += v * n as f64;
        self.count = self.count.saturating_add(n);
    }

    /// `(quantile, value)` over the window as of `now`.
    pub fn quantiles(&mut self, now: Instant) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.advance(now);
        let total = &self.total;
        self.options
            .quantiles
            .iter()
            .map(move |q| (q.quantile, total.quantile(q.quantile)))
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Quantile;

    fn options(max_age: u64, buckets: u32) -> Arc<SummaryOptions> {
        Arc::new(SummaryOptions {
            quantiles: vec![
                Quantile {
                    quantile: 0.5,
                    error: 0.05,
                },
                Quantile {
                    quantile: 0.9,
                    error: 0.01,
                },
                Quantile {
                    quantile: 0.99,
                    error: 0.001,
                },
            ]
            .into(),
            max_age: Duration::from_secs(max_age),
            age_buckets: buckets,
        })
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * ACCURACY * 1.01
    }

    #[test]
    fn quantiles_within_one_percent() {
        let now = Instant::now();
        let mut s = Summary::new(options(600, 5), now);
        for i in 1..=1000 {
            s.observe(i as f64 / 1000.0, 1, now);
        }
        let q: Vec<_> = s.quantiles(now).collect();
        assert!(close(q[0].1, 0.5), "{q:?}");
        assert!(close(q[1].1, 0.9), "{q:?}");
        assert!(close(q[2].1, 0.99), "{q:?}");
        assert_eq!(s.count(), 1000);
        assert!((s.sum() - 500.5).abs() < 1e-6);
    }

    #[test]
    fn weights_negatives_and_zero() {
        let now = Instant::now();
        let mut s = Summary::new(options(600, 5), now);
        s.observe(-2.0, 10, now);
        s.observe(0.0, 10, now);
        s.observe(3.0, 80, now);
        let q: Vec<_> = s.quantiles(now).collect();
        assert!(close(q[0].1, 3.0), "{q:?}");
        let mut t = Summary::new(options(600, 5), now);
        t.observe(-2.0, 60, now);
        t.observe(0.0, 35, now);
        t.observe(3.0, 5, now);
        let q: Vec<_> = t.quantiles(now).collect();
        assert!(close(q[0].1, -2.0), "{q:?}");
        assert_eq!(q[1].1, 0.0);
        assert!(close(q[2].1, 3.0), "{q:?}");
    }

    #[test]
    fn old_observations_leave_the_window_but_not_the_count() {
        let start = Instant::now();
        let mut s = Summary::new(options(60, 3), start);
        s.observe(1.0, 100, start);
        // Two steps of 20 s later the first window is still in.
        s.observe(5.0, 1, start + Duration::from_secs(45));
        assert!(close(
            s.quantiles(start + Duration::from_secs(45))
                .next()
                .unwrap()
                .1,
            1.0
        ));
        // A third step retires it.
        let later = start + Duration::from_secs(61);
        assert!(close(s.quantiles(later).next().unwrap().1, 5.0));
        // Everything gone after max_age of silence: NaN, as client_golang.
        let silent = later + Duration::from_secs(120);
        assert!(s.quantiles(silent).all(|(_, v)| v.is_nan()));
        assert_eq!(s.count(), 101);
    }

    #[test]
    fn buckets_are_bounded_whatever_arrives() {
        let now = Instant::now();
        let mut s = Summary::new(options(600, 1), now);
        let mut v = 1e-8;
        while v < 1e300 {
            s.observe(v, 1, now);
            v *= 1.05;
        }
        assert!(s.total.positive.0.len() <= MAX_BINS);
        assert!(s.windows[0].positive.0.len() <= MAX_BINS);
        let top = s.quantiles(now).last().unwrap().1;
        assert!(top > 1e290, "{top}");
    }
}
