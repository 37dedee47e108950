//! Mixer's server-side check cache. A decision depends only on the attributes
//! it read, so it is stored under those reads' values (presence included)
//! and found again for any request that agrees on them, until its valid
//! duration or use count runs out or the config changes.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::attribute::{Bag, Value};
use crate::bounded::BoundedMap;
use crate::referenced::Read;

/// Distinct sets of reads kept; config with more shapes than this is rare,
/// and a decision whose shape does not fit is simply not cached.
const MAX_SHAPES: usize = 256;

/// One referenced value as the cache keeps it, compared exactly on a hit
/// (the hash only finds candidates).
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Absent,
    Value(Value),
    Text(String),
}

/// One referenced value as a request has it, borrowed: a lookup hashes and
/// compares these, and allocates nothing.
#[derive(Clone, Copy)]
enum Seen<'a> {
    Absent,
    Value(&'a Value),
    Text(&'a str),
}

impl<'a> Seen<'a> {
    fn of(read: &Read, bag: &'a Bag) -> Seen<'a> {
        match &read.key {
            Some(k) => read.text(bag, k).map_or(Seen::Absent, Seen::Text),
            None => read.value(bag).map_or(Seen::Absent, Seen::Value),
        }
    }
}

impl Part {
    fn kept(seen: Seen) -> Part {
        match seen {
            Seen::Absent => Part::Absent,
            Seen::Value(v) => Part::Value(v.clone()),
            Seen::Text(t) => Part::Text(t.to_string()),
        }
    }

    fn is(&self, seen: Seen) -> bool {
        match (self, seen) {
            (Part::Absent, Seen::Absent) => true,
            (Part::Value(a), Seen::Value(b)) => a == b,
            (Part::Text(a), Seen::Text(b)) => a == b,
            _ => false,
        }
    }
}

/// A cached answer and how much of its validity is left.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit<T> {
    pub value: T,
    pub valid_for: Duration,
    pub uses_left: i32,
}

/// A config generation and the distinct sets of reads its decisions made.
type Shapes = (u64, Arc<Vec<Arc<[Read]>>>);

pub struct CheckCache<T> {
    /// The shapes of the current generation, read without the entry lock.
    shapes: RwLock<Shapes>,
    /// Keyed by shape and the hash of its values. Two value sets that
    /// collide share one slot, the later replacing the earlier: a collision
    /// costs a miss, never a chain, so neither hash needs flood resistance.
    entries: Mutex<BoundedMap<(usize, u64), Entry<T>>>,
    capacity: usize,
    /// Seeded per process.
    hasher: foldhash::fast::RandomState,
}

struct Entry<T> {
    parts: Vec<Part>,
    value: T,
    expires: Instant,
    uses_left: i32,
}

impl<T> Entry<T> {
    fn live(&self, now: Instant) -> bool {
        self.expires > now && self.uses_left > 0
    }
}

impl<T: Clone> CheckCache<T> {
    pub fn new(capacity: usize) -> CheckCache<T> {
        CheckCache {
            shapes: RwLock::new((0, Arc::new(Vec::new()))),
            entries: Mutex::new(BoundedMap::new(capacity)),
            capacity,
            hasher: Default::default(),
        }
    }

    /// A live decision for `bag` under config `generation`, using it once.
    pub fn get(&self, generation: u64, bag: &Bag) -> Option<Hit<T>> {
        let shapes = {
            let current = self.shapes.read().unwrap_or_else(|p| p.into_inner());
            if current.0 != generation {
                return None;
            }
            current.1.clone()
        };
        let now = Instant::now();
        for (i, shape) in shapes.iter().enumerate() {
            let key = (i, self.hash(shape.iter().map(|r| Seen::of(r, bag))));
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let Some(entry) = entries.get_mut(&key) else {
                continue;
            };
            let same = entry.parts.len() == shape.len()
                && entry
                    .parts
                    .iter()
                    .zip(shape.iter())
                    .all(|(p, r)| p.is(Seen::of(r, bag)));
            if !same {
                continue;
            }
            if !entry.live(now) {
                entries.remove(&key);
                continue;
            }
            entry.uses_left -= 1;
            return Some(Hit {
                value: entry.value.clone(),
                valid_for: entry.expires - now,
                uses_left: entry.uses_left + 1,
            });
        }
        None
    }

    /// Stores a decision that read `reads`. A decision of an older config
    /// generation than the cache's is dropped; a newer one starts afresh.
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
        let now = Instant::now();
        let Some(expires) = now.checked_add(valid_for) else {
            return;
        };
        let Some(shape) =
            (self.known_shape(generation, reads)).or_else(|| self.add_shape(generation, reads))
        else {
            return;
        };
        // Each referenced value looked up once, for both the key and the entry.
        let seen: Vec<Seen> = reads.iter().map(|r| Seen::of(r, bag)).collect();
        let key = (shape, self.hash(seen.iter().copied()));
        let parts = seen.into_iter().map(Part::kept).collect();
        let entry = Entry {
            parts,
            value,
            expires,
            uses_left: uses,
        };
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, entry, |e| !e.live(now));
    }

    /// The index of `reads` among the shapes of `generation`, found under
    /// the read lock: after the first few requests, every store finds it.
    fn known_shape(&self, generation: u64, reads: &[Read]) -> Option<usize> {
        let current = self.shapes.read().unwrap_or_else(|p| p.into_inner());
        if current.0 != generation {
            return None;
        }
        current.1.iter().position(|s| **s == *reads)
    }

    /// Adds `reads` as a shape of `generation` (starting afresh for a newer
    /// generation), unless the generation is older or there are too many.
    fn add_shape(&self, generation: u64, reads: &[Read]) -> Option<usize> {
        // Declared before the lock, so dropped after it is let go.
        let _stale;
        let mut current = self.shapes.write().unwrap_or_else(|p| p.into_inner());
        if generation < current.0 {
            return None;
        }
        if generation > current.0 {
            *current = (generation, Arc::new(Vec::new()));
            _stale = self
                .entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
        // Another store may have added it since the read lock was let go.
        if let Some(i) = current.1.iter().position(|s| **s == *reads) {
            return Some(i);
        }
        if current.1.len() >= MAX_SHAPES {
            return None;
        }
        let mut shapes = (*current.1).clone();
        shapes.push(reads.into());
        current.1 = Arc::new(shapes);
        Some(current.1.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn hash<'a>(&self, values: impl Iterator<Item = Seen<'a>>) -> u64 {
        let mut h = self.hasher.build_hasher();
        for seen in values {
            match seen {
                Seen::Absent => h.write_u8(0),
                Seen::Text(t) => {
                    h.write_u8(1);
                    h.write(t.as_bytes());
                    h.write_u8(0xff);
                }
                Seen::Value(v) => {
                    h.write_u8(2);
                    hash_value(v, &mut h);
                }
            }
        }
        h.finish()
    }
}

fn hash_value(v: &Value, h: &mut impl Hasher) {
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
            let ts = crate::attribute::compressed::to_timestamp(*t);
            h.write_i64(ts.seconds);
            h.write_i32(ts.nanos);
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

    fn read(name: &'static str) -> Read {
        Read::new(name, None)
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
        let hit = cache.get(1, &bag).unwrap();
        assert_eq!((hit.value, hit.uses_left), ("deny", 2));
        // Absent before, present now: a miss.
        bag.set("destination.name", Value::string("b"));
        assert_eq!(cache.get(1, &bag), None);
        bag.remove("destination.name");
        assert_eq!(cache.get(1, &bag).map(|h| h.uses_left), Some(1));
        // Two uses were granted and both are spent.
        assert_eq!(cache.get(1, &bag), None);

        cache.put(1, &bag, &reads, "deny", Duration::from_secs(5), 10);
        tokio::time::advance(Duration::from_secs(2)).await;
        // What is left of the validity, not all of it again.
        assert_eq!(
            cache.get(1, &bag).map(|h| h.valid_for),
            Some(Duration::from_secs(3))
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(cache.get(1, &bag), None);

        // A new config generation voids everything; a late answer of the
        // old one does not come back.
        cache.put(1, &bag, &reads, "deny", Duration::from_secs(5), 10);
        cache.put(2, &bag, &reads, "allow", Duration::from_secs(5), 10);
        cache.put(1, &bag, &reads, "deny", Duration::from_secs(5), 10);
        assert_eq!(cache.get(2, &bag).map(|h| h.value), Some("allow"));
        assert_eq!(cache.get(1, &bag), None);
        // A validity too long to add to now is not cached, not a panic.
        cache.put(3, &bag, &reads, "x", Duration::MAX, 10);
        assert_eq!(cache.get(3, &bag), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_makes_room_a_few_entries_at_a_time_spent_ones_first() {
        let cache = CheckCache::new(10);
        let reads = [read("source.name")];
        let bag_of = |i: usize| {
            let mut bag = Bag::new();
            bag.set("source.name", Value::string(&format!("s{i}")));
            bag
        };
        let store = |i: usize, valid: u64| {
            cache.put(1, &bag_of(i), &reads, i, Duration::from_secs(valid), 5);
        };
        // Ten that expire soon, then ten that last: each of the later ones
        // takes the room of a spent one, never of a live one.
        (0..10).for_each(|i| store(i, 1));
        tokio::time::advance(Duration::from_secs(2)).await;
        (10..20).for_each(|i| store(i, 60));
        assert_eq!(cache.len(), 10);
        for i in 10..20 {
            assert_eq!(
                cache.get(1, &bag_of(i)).map(|h| h.value),
                Some(i),
                "entry {i}"
            );
        }
        // With every entry live, each store costs one of them, and the
        // cache never holds more than its capacity.
        for i in 20..45 {
            store(i, 60);
            assert_eq!(cache.len(), 10);
            assert_eq!(cache.get(1, &bag_of(i)).map(|h| h.value), Some(i));
        }
        let kept = (10..45)
            .filter(|&i| cache.get(1, &bag_of(i)).is_some())
            .count();
        assert_eq!(kept, 10);
        // Storing what is already there again takes no one's room.
        store(44, 60);
        assert_eq!(
            (10..45)
                .filter(|&i| cache.get(1, &bag_of(i)).is_some())
                .count(),
            10
        );
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
        let reads = [Read::new("request.headers", Some("x-user".into()))];
        cache.put(1, &bag, &reads, 403, Duration::from_secs(5), 10);
        assert_eq!(cache.get(1, &bag).map(|h| h.value), Some(403));
        bag.set("request.headers", headers("other"));
        assert_eq!(cache.get(1, &bag), None);
    }
}
