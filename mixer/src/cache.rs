//! Mixer's server-side check cache. A decision depends only on the attributes
//! it read, so it is stored under those reads' values (presence included)
//! and found again for any request that agrees on them, until its valid
//! duration or use count runs out or the config changes.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::attribute::{Bag, write_key_text};
use crate::bounded::BoundedMap;
use crate::referenced::Read;

/// Distinct sets of reads kept; config with more shapes than this is rare,
/// and a decision whose shape does not fit is simply not cached.
const MAX_SHAPES: usize = 256;

/// The referenced values of `shape` as `bag` has them, as bytes into
/// `out`: presence included, so that an absent attribute and an empty one
/// differ. Two requests agree on a decision's reads exactly when these
/// bytes are equal; an entry keeps them in one block.
fn write_key(shape: &[Read], bag: &Bag, out: &mut Vec<u8>) {
    out.clear();
    for read in shape {
        match &read.key {
            Some(k) => match read.text(bag, k) {
                Some(text) => {
                    out.push(1);
                    write_key_text(text, out);
                }
                None => out.push(0),
            },
            None => match read.value(bag) {
                Some(value) => {
                    out.push(2);
                    value.write_key(out);
                }
                None => out.push(0),
            },
        }
    }
}

/// Room for a score of short referenced values, so a key is rarely regrown.
const KEY_ROOM: usize = 512;

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
    /// The referenced values, as [`write_key`] writes them.
    key: Box<[u8]>,
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
        let mut key = Vec::with_capacity(KEY_ROOM);
        for (i, shape) in shapes.iter().enumerate() {
            write_key(shape, bag, &mut key);
            let at = (i, self.hasher.hash_one(&key[..]));
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let Some(entry) = entries.get_mut(&at) else {
                continue;
            };
            if *entry.key != key[..] {
                continue;
            }
            if !entry.live(now) {
                entries.remove(&at);
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
        let mut key = Vec::with_capacity(KEY_ROOM);
        write_key(reads, bag, &mut key);
        let at = (shape, self.hasher.hash_one(&key[..]));
        let entry = Entry {
            key: key.into_boxed_slice(),
            value,
            expires,
            uses_left: uses,
        };
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(at, entry, |e| !e.live(now));
    }

    /// `reads` as an earlier decision of `generation` made them, shared: an
    /// answer stored with them then keeps no copy of its own to free when
    /// it is evicted.
    pub fn shared(&self, generation: u64, reads: Arc<[Read]>) -> Arc<[Read]> {
        let current = self.shapes.read().unwrap_or_else(|p| p.into_inner());
        if current.0 == generation
            && let Some(shape) = current.1.iter().find(|s| s[..] == reads[..])
        {
            return shape.clone();
        }
        reads
    }

    /// The index of `reads` among the shapes of `generation`, found under
    /// the read lock: after the first few requests, every store finds it.
    fn known_shape(&self, generation: u64, reads: &[Read]) -> Option<usize> {
        let current = self.shapes.read().unwrap_or_else(|p| p.into_inner());
        if current.0 != generation {
            return None;
        }
        // Reads made [`shared`](Self::shared) are the shape itself.
        current
            .1
            .iter()
            .position(|s| std::ptr::eq(&**s, reads) || **s == *reads)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::Value;

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
    async fn keys_tell_absent_from_empty_and_split_texts_apart() {
        let cache = CheckCache::new(100);
        let reads = [read("source.name"), read("destination.name")];
        let bag_of = |source: Option<&str>, destination: &str| {
            let mut bag = Bag::new();
            if let Some(s) = source {
                bag.set("source.name", Value::string(s));
            }
            bag.set("destination.name", Value::string(destination));
            bag
        };
        cache.put(
            1,
            &bag_of(Some("ab"), "c"),
            &reads,
            1,
            Duration::from_secs(5),
            10,
        );
        cache.put(1, &bag_of(None, "c"), &reads, 2, Duration::from_secs(5), 10);
        let found = |bag: &Bag| cache.get(1, bag).map(|h| h.value);
        assert_eq!(found(&bag_of(Some("ab"), "c")), Some(1));
        assert_eq!(found(&bag_of(None, "c")), Some(2));
        assert_eq!(found(&bag_of(Some(""), "c")), None, "empty is not absent");
        assert_eq!(
            found(&bag_of(Some("a"), "bc")),
            None,
            "the same text split elsewhere"
        );
        // Another type with the same text is another value.
        let mut dns = bag_of(None, "c");
        dns.set("source.name", Value::DnsName("ab".into()));
        assert_eq!(found(&dns), None);
    }

    #[tokio::test]
    async fn equal_reads_share_the_shape_the_cache_keeps() {
        let cache = CheckCache::new(100);
        let reads: Arc<[Read]> = Arc::new([read("source.name")]);
        let again: Arc<[Read]> = Arc::new([read("source.name")]);
        // Not known yet: handed back as they came.
        assert!(Arc::ptr_eq(&cache.shared(1, again.clone()), &again));
        cache.put(1, &Bag::new(), &reads, (), Duration::from_secs(5), 10);
        let kept = cache.shared(1, again.clone());
        assert!(!Arc::ptr_eq(&kept, &again), "the cache's own, shared");
        assert!(Arc::ptr_eq(&cache.shared(1, reads.clone()), &kept));
        assert_eq!(*kept, *reads);
        // Another generation's shapes are not shared.
        assert!(Arc::ptr_eq(&cache.shared(2, again.clone()), &again));
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
