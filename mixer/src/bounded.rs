//! A map of bounded size that makes room a few entries at a time. Sweeping
//! or clearing a large map when it fills up drops thousands of entries at
//! once under the lock that guards it, and every request waits: the check
//! cache did so for 15–25 ms at 100,000 entries (docs/benchmarks.md).

use std::hash::Hash;

use indexmap::{Equivalent, IndexMap};

/// Entries a full map looks at to make room for one more: an insert costs
/// at most this many, however large the map.
const PROBES: usize = 8;

pub struct BoundedMap<K, V> {
    /// Indexed by position too, so that a few entries can be looked at
    /// where the hand points.
    map: IndexMap<K, V, foldhash::fast::RandomState>,
    /// Where the next look for room starts.
    hand: usize,
    capacity: usize,
}

impl<K: Hash + Eq, V> BoundedMap<K, V> {
    /// A map of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> BoundedMap<K, V> {
        BoundedMap {
            map: IndexMap::default(),
            hand: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn get<Q: ?Sized + Hash + Equivalent<K>>(&self, key: &Q) -> Option<&V> {
        self.map.get(key)
    }

    pub fn get_mut<Q: ?Sized + Hash + Equivalent<K>>(&mut self, key: &Q) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub fn remove<Q: ?Sized + Hash + Equivalent<K>>(&mut self, key: &Q) -> Option<V> {
        self.map.swap_remove(key)
    }

    /// Stores `value` at `key`. A full map first makes room: of the next
    /// few entries from the hand, those `spent` says are spent go; if none
    /// is, the one at the hand goes. The hand goes round the whole map in
    /// turn, so a spent entry is found within one turn, and a live one that
    /// goes is the one the hand has not passed for the longest time.
    pub fn insert(&mut self, key: K, value: V, spent: impl Fn(&V) -> bool) {
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.make_room(spent);
        }
        self.map.insert(key, value);
    }

    fn make_room(&mut self, spent: impl Fn(&V) -> bool) {
        let start = self.hand % self.map.len();
        let mut at = start;
        let mut removed = false;
        for _ in 0..PROBES.min(self.map.len()) {
            if at >= self.map.len() {
                at = 0;
            }
            if spent(&self.map[at]) {
                // The last entry moves to `at`: it is looked at next.
                self.map.swap_remove_index(at);
                removed = true;
                if self.map.is_empty() {
                    break;
                }
            } else {
                at += 1;
            }
        }
        if !removed {
            // The newest entry moves to `start`: the hand passes it by.
            self.map.swap_remove_index(start);
            at = start + 1;
        }
        self.hand = at;
    }

    /// Everything stored, leaving this map empty: the caller drops it once
    /// it has let go of any lock, so no one waits for thousands of drops.
    pub fn take(&mut self) -> BoundedMap<K, V> {
        std::mem::replace(self, BoundedMap::new(self.capacity))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(map: &BoundedMap<u32, u32>, keys: std::ops::Range<u32>) -> Vec<u32> {
        keys.filter(|k| map.get(k).is_some()).collect()
    }

    #[test]
    fn spent_entries_make_room_before_live_ones() {
        let mut map = BoundedMap::new(10);
        // Odd values are spent.
        let spent = |v: &u32| v % 2 == 1;
        (0..10).for_each(|k| map.insert(k, k, spent));
        (10..15).for_each(|k| map.insert(k, 2 * k, spent));
        assert_eq!(map.len(), 10);
        // The five odd keys gave way; the five even ones and the new ones stay.
        assert_eq!(kept(&map, 0..15), vec![0, 2, 4, 6, 8, 10, 11, 12, 13, 14]);
    }

    #[test]
    fn a_full_map_of_live_entries_stays_full_and_keeps_the_newest() {
        let mut map = BoundedMap::new(10);
        for k in 0..100 {
            map.insert(k, k, |_| false);
            assert_eq!(map.len(), (k as usize + 1).min(10));
            assert_eq!(map.get(&k), Some(&k), "the newest is kept");
        }
        // The hand went round: what is left is mostly the latest.
        assert!(kept(&map, 80..100).len() >= 8, "{:?}", kept(&map, 0..100));
        // Storing a key already there takes no one's room.
        map.insert(99, 0, |_| false);
        assert_eq!(kept(&map, 0..100).len(), 10);
        assert_eq!(map.get(&99), Some(&0));
    }

    #[test]
    fn removed_and_taken_entries_are_gone() {
        let mut map = BoundedMap::new(4);
        (0..4).for_each(|k| map.insert(k, k, |_| false));
        assert_eq!(map.remove(&2), Some(2));
        *map.get_mut(&3).unwrap() = 30;
        let old = map.take();
        assert!(map.is_empty());
        assert_eq!(kept(&old, 0..4), vec![0, 1, 3]);
        assert_eq!(old.get(&3), Some(&30));
        // The emptied map keeps its capacity.
        (0..6).for_each(|k| map.insert(k, k, |_| false));
        assert_eq!(map.len(), 4);
    }
}
