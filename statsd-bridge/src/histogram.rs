//! A Prometheus histogram: fixed upper bounds, counts, sum.

use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: Arc<[f64]>,
    /// One per bound, then one for `+Inf`; not cumulative (the exposition
    /// adds them up).
    counts: Box<[u64]>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: Arc<[f64]>) -> Histogram {
        let counts = vec![0; bounds.len() + 1].into_boxed_slice();
        Histogram {
            bounds,
            counts,
            sum: 0.0,
            count: 0,
        }
    }

    /// `n` observations of `v` at once: a sampled timer stands for 1/rate.
    pub fn observe(&mut self, v: f64, n: u64) {
        // `le` is inclusive: the first bound at or above `v`.
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] = self.counts[i].saturating_add(n);
        self.sum += v * n as f64;
        self.count = self.count.saturating_add(n);
    }

    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// `(upper bound, cumulative count)`, ending with `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        bounds.zip(self.counts.iter().scan(0u64, |total, c| {
            *total = total.saturating_add(*c);
            Some(*total)
        }))
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

    #[test]
    fn bounds_are_inclusive_and_counts_cumulative() {
        let mut h = Histogram::new(vec![0.1, 0.5, 1.0].into());
        h.observe(0.1, 1);
        h.observe(0.2, 1);
        h.observe(0.7, 3);
        h.observe(5.0, 1);
        let c: Vec<_> = h.cumulative().collect();
        assert_eq!(c, vec![(0.1, 1), (0.5, 2), (1.0, 5), (f64::INFINITY, 6)]);
        assert_eq!(h.count(), 6);
        assert!((h.sum() - (0.1 + 0.2 + 2.1 + 5.0)).abs() < 1e-9);
    }
}
