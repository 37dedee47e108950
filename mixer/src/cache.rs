//! Mixer's server-side check cache. A decision depends only on the attributes
//! it read, so it is stored under those reads' values (presence included)
//! and found again for any request that agrees on them, until its valid
//! duration or use count runs out or the config changes.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tokio::time::Instant;
use xxhash_rust::xxh3::Xxh3;

use crate::attribute::{Attributes, Bag, Value};
use crate::referenced::Read;

/// Distinct sets of reads kept; config with more shapes than this is rare,
/// and a decision whose shape does not fit is simply not cached.
const MAX_SHAPES: usize = 256;

pub struct CheckCache<T> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
}

struct Inner<T> {
    generation: u64,
    shapes: Vec<Arc<[Read]>>,
    entries: HashMap<(usize, u64), Entry<T>>,
}

struct Entry<T> {
    value: T,
    expires: Instant,
    uses_left: i32,
}

impl<T: Clone> CheckCache<T> {
    pub fn new(capacity: usize) -> CheckCache<T> {
        CheckCache {
            inner: Mutex::new(Inner {
                generation: 0,
                shapes: Vec::new(),
                entries: HashMap::new(),
            }),
            capacity,
        }
    }

    /// A live decision for `bag` under config `generation`, using it once.
    pub fn get(&self, generation: u64, bag: &Bag) -> Option<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.generation != generation {
            inner.reset(generation);
            return None;
        }
        let now = Instant::now();
        for i in 0..inner.shapes.len() {
            let key = (i, hash(&inner.shapes[i], bag));
            let Some(entry) = inner.entries.get_mut(&key) else {
                continue;
            };
            if entry.expires <= now || entry.uses_left <= 0 {
                inner.entries.remove(&key);
                continue;
            }
            entry.uses_left -= 1;
            return Some(entry.value.clone());
        }
        None
    }

    /// Stores a decision that read `reads`.
    pub fn put(
        &self,
        generation: u64,
        bag: &Bag,
        reads: &[Read],
        value: T,
        valid_for: Duration,
        uses: i32,
    ) {
        if valid_for.is_zero() || uses <= 0 || self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.generation != generation {
            inner.reset(generation);
        }
        let shape = match inner.shapes.iter().position(|s| **s == *reads) {
            Some(i) => i,
            None if inner.shapes.len() < MAX_SHAPES => {
                inner.shapes.push(reads.into());
                inner.shapes.len() - 1
            }
            None => return,
        };
        let now = Instant::now();
        if inner.entries.len() >= self.capacity {
            inner
                .entries
                .retain(|_, e| e.expires > now && e.uses_left > 0);
            if inner.entries.len() >= self.capacity {
                // Still full of live entries: start over rather than track
                // recency on every hit.
                inner.entries.clear();
            }
        }
        let key = (shape, hash(reads, bag));
        inner.entries.insert(
            key,
            Entry {
                value,
                expires: now + valid_for,
                uses_left: uses,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Inner<T> {
    fn reset(&mut self, generation: u64) {
        self.generation = generation;
        self.shapes.clear();
        self.entries.clear();
    }
}

fn hash(reads: &[Read], bag: &Bag) -> u64 {
    let mut h = Xxh3::new();
    for r in reads {
        match &r.key {
            Some(k) => match bag.get_key(&r.name, k) {
                Some(v) => {
                    h.write_u8(1);
                    h.write(v.as_bytes());
                    h.write_u8(0xff);
                }
                None => h.write_u8(0),
            },
            None => match bag.get(&r.name) {
                Some(v) => {
                    h.write_u8(1);
                    hash_value(v, &mut h);
                }
                None => h.write_u8(0),
            },
        }
    }
    h.finish()
}

fn hash_value(v: &Value, h: &mut Xxh3) {
    h.write_u8(v.value_type() as u8);
    match v {
        Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => {
            h.write(s.as_bytes());
            h.write_u8(0xff);
        }
        Value::Int64(i) => h.write_i64(*i),
        Value::Double(d) => h.write_u64(d.to_bits()),
        Value::Bool(b) => h.write_u8(*b as u8),
        Value::Timestamp(t) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            h.write_u64(d.as_secs());
            h.write_u32(d.subsec_nanos());
        }
        Value::Duration(d) => {
            h.write_u64(d.as_secs());
            h.write_u32(d.subsec_nanos());
        }
        Value::IpAddress(ip) => match ip {
            std::net::IpAddr::V4(a) => h.write(&a.octets()),
            std::net::IpAddr::V6(a) => h.write(&a.octets()),
        },
        Value::StringMap(m) => {
            h.write_usize(m.len());
            for (k, v) in m.iter() {
                h.write(k.as_bytes());
                h.write_u8(0xfe);
                h.write(v.as_bytes());
                h.write_u8(0xff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str) -> Read {
        Read {
            name: name.into(),
            key: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hits_on_referenced_values_only_until_expiry_or_uses() {
        let cache = CheckCache::new(100);
        let mut bag = Bag::new();
        bag.set("source.name", Value::string("a"));
        bag.set("request.id", Value::string("1"));
        let reads = [read("source.name"), read("destination.name")];
        cache.put(1, &bag, &reads, "deny", Duration::from_secs(5), 2);

        // Another request id, same referenced values: a hit.
        bag.set("request.id", Value::string("2"));
        assert_eq!(cache.get(1, &bag), Some("deny"));
        // Absent before, present now: a miss.
        bag.set("destination.name", Value::string("b"));
        assert_eq!(cache.get(1, &bag), None);
        bag.remove("destination.name");
        assert_eq!(cache.get(1, &bag), Some("deny"));
        // Two uses were granted and both are spent.
        assert_eq!(cache.get(1, &bag), None);

        cache.put(1, &bag, &reads, "deny", Duration::from_secs(5), 10);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(cache.get(1, &bag), None);

        // A new config generation voids everything.
        cache.put(1, &bag, &reads, "deny", Duration::from_secs(5), 10);
        assert_eq!(cache.get(2, &bag), None);
    }

    #[tokio::test]
    async fn map_keys_are_part_of_the_key() {
        let cache = CheckCache::new(100);
        let mut bag = Bag::new();
        let headers = |user: &str| {
            Value::StringMap(Arc::new(
                [("x-user".to_string(), user.to_string())]
                    .into_iter()
                    .collect(),
            ))
        };
        bag.set("request.headers", headers("jason"));
        let reads = [Read {
            name: "request.headers".into(),
            key: Some("x-user".into()),
        }];
        cache.put(1, &bag, &reads, 403, Duration::from_secs(5), 10);
        assert_eq!(cache.get(1, &bag), Some(403));
        bag.set("request.headers", headers("other"));
        assert_eq!(cache.get(1, &bag), None);
    }
}
