//! A statsd set: how many distinct members arrived per window, exposed as a
//! gauge holding the count of the last complete window (statsd's flush
//! interval), or of the current one until a window has completed.
//!
//! Members are counted with a 256-register HyperLogLog, so a set costs the
//! same few hundred bytes however many members an untrusted sender invents:
//! exact for a handful of members, within one or two for a few dozen, and
//! within about 6.5% for thousands.

use std::hash::BuildHasher;
use std::time::Duration;

use tokio::time::Instant;

const REGISTER_BITS: u32 = 8;
const REGISTERS: usize = 1 << REGISTER_BITS;

#[derive(Clone, Debug, PartialEq)]
struct Sketch {
    registers: Box<[u8; REGISTERS]>,
}

impl Sketch {
    fn new() -> Sketch {
        Sketch {
            registers: Box::new([0; REGISTERS]),
        }
    }

    fn insert(&mut self, hash: u64) {
        let register = (hash >> (64 - REGISTER_BITS)) as usize;
        let rank = ((hash << REGISTER_BITS) | (1 << (REGISTER_BITS - 1))).leading_zeros() as u8 + 1;
        let r = &mut self.registers[register];
        *r = (*r).max(rank);
    }

    fn clear(&mut self) {
        self.registers.fill(0);
    }

    fn estimate(&self) -> f64 {
        let m = REGISTERS as f64;
        let zeros = self.registers.iter().filter(|&&r| r == 0).count();
        if zeros == REGISTERS {
            return 0.0;
        }
        let harmonic: f64 = self
            .registers
            .iter()
            .map(|&r| 2f64.powi(-i32::from(r)))
            .sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / harmonic;
        if raw <= 2.5 * m && zeros > 0 {
            // Linear counting: near-exact while most registers are empty.
            (m * (m / zeros as f64).ln()).round()
        } else {
            raw.round()
        }
    }
}

fn hash(member: &str) -> u64 {
    // A fixed seed: the same member must land in the same register in every
    // window.
    foldhash::quality::FixedState::with_seed(0x5e7_5e7).hash_one(member)
}

#[derive(Clone, Debug, PartialEq)]
pub struct Set {
    current: Sketch,
    /// The last complete window's count, once there is one.
    last: Option<f64>,
    since: Instant,
}

impl Set {
    pub fn new(now: Instant) -> Set {
        Set {
            current: Sketch::new(),
            last: None,
            since: now,
        }
    }

    fn advance(&mut self, now: Instant, window: Duration) {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < window {
            return;
        }
        // A window that passed with nothing in it counts as zero.
        self.last = Some(if elapsed < window * 2 {
            self.current.estimate()
        } else {
            0.0
        });
        self.current.clear();
        let windows = (elapsed.as_nanos() / window.as_nanos().max(1)) as u32;
        self.since += window * windows;
    }

    pub fn insert(&mut self, member: &str, now: Instant, window: Duration) {
        self.advance(now, window);
        self.current.insert(hash(member));
    }

    pub fn value(&mut self, now: Instant, window: Duration) -> f64 {
        self.advance(now, window);
        self.last.unwrap_or_else(|| self.current.estimate())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    #[test]
    fn distinct_members_per_window() {
        let t0 = Instant::now();
        let mut s = Set::new(t0);
        for m in ["alice", "bob", "alice", "carol", "bob"] {
            s.insert(m, t0, W);
        }
        assert_eq!(s.value(t0, W), 3.0, "the first window so far");
        s.insert("dave", t0 + Duration::from_secs(11), W);
        assert_eq!(
            s.value(t0 + Duration::from_secs(12), W),
            3.0,
            "the last complete window"
        );
        assert_eq!(s.value(t0 + Duration::from_secs(21), W), 1.0);
        assert_eq!(
            s.value(t0 + Duration::from_secs(45), W),
            0.0,
            "silence counts as none"
        );
    }

    #[test]
    fn large_sets_are_estimated_in_bounded_memory() {
        let t0 = Instant::now();
        let mut s = Set::new(t0);
        for i in 0..100_000 {
            s.insert(&format!("user-{i}"), t0, W);
        }
        let v = s.value(t0, W);
        assert!((v - 100_000.0).abs() < 100_000.0 * 0.2, "{v}");
        for (n, slack) in [(1usize, 0.0), (10, 0.0), (40, 2.0)] {
            let mut s = Set::new(t0);
            for i in 0..n {
                s.insert(&format!("m{i}"), t0, W);
            }
            let v = s.value(t0, W);
            assert!((v - n as f64).abs() <= slack, "{n} members counted as {v}");
        }
    }
}
