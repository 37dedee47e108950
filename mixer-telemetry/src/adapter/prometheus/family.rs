//! One mesh metric and its series. Label values are rendered into a scratch
//! buffer and looked up by reference, so updating an existing series
//! allocates nothing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mixer::attribute::Value;
use mixer::template::ValueMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Distribution,
}

/// What a family is: two handlers asking for equal definitions share it.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The exposed name, namespace prefix included (`istio_requests_total`).
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub labels: Vec<String>,
    /// Upper bounds, increasing, for distributions.
    pub buckets: Vec<f64>,
}

#[derive(Debug, Clone)]
pub(super) struct Series {
    /// Counter total, gauge value, or distribution sum.
    pub value: f64,
    pub count: u64,
    /// Per bucket, not cumulative.
    pub buckets: Vec<u64>,
    pub touched: Instant,
}

#[derive(Debug)]
pub struct Family {
    pub def: Definition,
    /// Keyed by the label values joined with `\u{1f}` (a character no
    /// sane label value holds), in `def.labels` order.
    pub(super) series: Mutex<HashMap<Box<str>, Series, foldhash::fast::RandomState>>,
    /// Series idle this long are dropped (the handler's expiry policy).
    pub(super) max_idle: Mutex<Option<Duration>>,
    /// Per label, where instances last had it among their dimensions.
    hints: Vec<AtomicU32>,
}

/// Joins label values into a series key.
pub(super) const SEP: char = '\u{1f}';

impl Family {
    pub fn new(def: Definition) -> Family {
        Family {
            hints: def.labels.iter().map(|_| AtomicU32::new(0)).collect(),
            def,
            series: Mutex::default(),
            max_idle: Mutex::default(),
        }
    }

    /// Records `value` for the series `key` (built by [`Family::key`]).
    pub fn record(&self, key: &str, value: f64, now: Instant) -> Result<(), String> {
        if !value.is_finite() {
            return Err(format!("{}: value {value} is not finite", self.def.name));
        }
        if self.def.kind == Kind::Counter && value < 0.0 {
            return Err(format!(
                "{}: a counter cannot go down (value {value})",
                self.def.name
            ));
        }
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = match series.get_mut(key) {
            Some(s) => s,
            None => series.entry(key.into()).or_insert_with(|| Series {
                value: 0.0,
                count: 0,
                buckets: vec![0; self.def.buckets.len()],
                touched: now,
            }),
        };
        s.touched = now;
        match self.def.kind {
            Kind::Counter => s.value += value,
            Kind::Gauge => s.value = value,
            Kind::Distribution => {
                s.value += value;
                s.count += 1;
                let i = self.def.buckets.partition_point(|b| *b < value);
                if let Some(b) = s.buckets.get_mut(i) {
                    *b += 1;
                }
            }
        }
        Ok(())
    }

    /// Writes the series key for `dims` into `buf` (cleared first): each
    /// label's value in the family's label order; a label the instance
    /// lacks is empty, which Prometheus reads as absent.
    pub fn key(&self, dims: Option<&ValueMap>, buf: &mut String) {
        buf.clear();
        for (i, label) in self.def.labels.iter().enumerate() {
            if i > 0 {
                buf.push(SEP);
            }
            if let Some(v) = dims.and_then(|d| self.find(d, i, label)) {
                match v.as_str() {
                    Some(s) => buf.push_str(s),
                    None => {
                        let _ = write!(buf, "{v}");
                    }
                }
            }
        }
    }

    /// `label` (the `i`th) in `dims`: where it was last time, else searched
    /// for and remembered, as instances of one shape keep their order.
    fn find<'d>(&self, dims: &'d ValueMap, i: usize, label: &str) -> Option<&'d Value> {
        let hint = self
            .hints
            .get(i)
            .map_or(0, |h| h.load(Ordering::Relaxed) as usize);
        if let Some((k, v)) = dims.at(hint)
            && k == label
        {
            return Some(v);
        }
        let (at, (_, v)) = dims.iter().enumerate().find(|(_, (k, _))| *k == label)?;
        if let Some(h) = self.hints.get(i) {
            h.store(at as u32, Ordering::Relaxed);
        }
        Some(v)
    }

    /// Drops series not updated for `max_idle`; returns how many.
    pub fn expire(&self, now: Instant, max_idle: Duration) -> usize {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let before = series.len();
        series.retain(|_, s| now.duration_since(s.touched) < max_idle);
        before - series.len()
    }

    pub fn len(&self) -> usize {
        self.series.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(kind: Kind, buckets: Vec<f64>) -> Family {
        Family::new(Definition {
            name: "istio_x".into(),
            help: String::new(),
            kind,
            labels: vec!["a".into(), "b".into()],
            buckets,
        })
    }

    #[test]
    fn keys_follow_label_order_and_missing_labels_are_empty() {
        let f = family(Kind::Counter, vec![]);
        let dims: ValueMap = [("b", Value::Int64(200)), ("zzz", Value::string("ignored"))]
            .into_iter()
            .collect();
        let mut buf = String::new();
        f.key(Some(&dims), &mut buf);
        assert_eq!(buf, "\u{1f}200");
        let dims: ValueMap = [("b", Value::Int64(200)), ("a", Value::string("x"))]
            .into_iter()
            .collect();
        f.key(Some(&dims), &mut buf);
        assert_eq!(buf, "x\u{1f}200");
        // Again, from where the labels were found.
        f.key(Some(&dims), &mut buf);
        assert_eq!(buf, "x\u{1f}200");
    }

    #[test]
    fn counters_add_gauges_set_distributions_bucket() {
        let now = Instant::now();
        let c = family(Kind::Counter, vec![]);
        c.record("k", 1.0, now).unwrap();
        c.record("k", 2.0, now).unwrap();
        assert!(c.record("k", -1.0, now).is_err());
        assert!(c.record("k", f64::NAN, now).is_err());
        assert_eq!(c.series.lock().unwrap()["k"].value, 3.0);

        let g = family(Kind::Gauge, vec![]);
        g.record("k", 5.0, now).unwrap();
        g.record("k", 2.0, now).unwrap();
        assert_eq!(g.series.lock().unwrap()["k"].value, 2.0);

        let d = family(Kind::Distribution, vec![0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 7.0] {
            d.record("k", v, now).unwrap();
        }
        let s = &d.series.lock().unwrap()["k"];
        // `le` is inclusive: 0.1 falls in the first bucket; 7 in none.
        assert_eq!((s.buckets.clone(), s.count), (vec![2, 1], 4));
        assert!((s.value - 7.65).abs() < 1e-9);
    }

    #[test]
    fn idle_series_expire() {
        let f = family(Kind::Counter, vec![]);
        let t0 = Instant::now();
        f.record("old", 1.0, t0).unwrap();
        f.record("new", 1.0, t0 + Duration::from_secs(50)).unwrap();
        assert_eq!(
            f.expire(t0 + Duration::from_secs(60), Duration::from_secs(30)),
            1
        );
        assert_eq!(f.len(), 1);
    }
}
