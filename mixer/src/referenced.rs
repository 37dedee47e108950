//! Referenced attributes: which attributes (and map keys) a decision read,
//! present or absent. Mixer returns them so a proxy can cache the answer for
//! every request that agrees on them; our own check cache keys on them too.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::attribute::{Attr, Attributes, Bag, Located, Name, Slot, Value};

/// One attribute read: the whole attribute, or one key of a string map.
/// A read of a bag made for a vocabulary carries the attribute's slot
/// there: reads are then compared, ordered and looked up again by slot,
/// not by name.
#[derive(Debug, Clone)]
pub struct Read {
    pub name: Name,
    pub key: Option<String>,
    slot: Option<Slot>,
}

impl Read {
    pub fn new(name: impl Into<Name>, key: Option<String>) -> Read {
        Read {
            name: name.into(),
            key,
            slot: None,
        }
    }

    /// Whether `bag` has what this read looked for.
    pub fn present(&self, bag: &Bag) -> bool {
        match &self.key {
            None => self.value(bag).is_some(),
            Some(k) => self.text(bag, k).is_some(),
        }
    }

    /// The value read, as `bag` has it.
    pub fn value<'b>(&self, bag: &'b Bag) -> Option<&'b Value> {
        bag.at(self.slot, &self.name)
    }

    /// The text at `key` of the map read, as `bag` has it.
    pub fn text<'b>(&self, bag: &'b Bag, key: &str) -> Option<&'b str> {
        self.value(bag)?.at_key(key)
    }

    /// The same attribute: one slot names one attribute.
    fn same_attribute(&self, name: &str, slot: Option<Slot>) -> bool {
        match (self.slot, slot) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.name.as_str() == name,
            _ => false,
        }
    }
}

impl PartialEq for Read {
    fn eq(&self, other: &Read) -> bool {
        self.same_attribute(&other.name, other.slot) && self.key == other.key
    }
}

impl Eq for Read {}

impl PartialOrd for Read {
    fn partial_cmp(&self, other: &Read) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Slotted reads first, by slot; then the others by name.
impl Ord for Read {
    fn cmp(&self, other: &Read) -> std::cmp::Ordering {
        let attribute = match (self.slot, other.slot) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => self.name.cmp(&other.name),
        };
        attribute.then_with(|| self.key.cmp(&other.key))
    }
}

/// A bag that records what is read from it.
pub struct Tracker<'a> {
    bag: &'a Bag,
    reads: RefCell<Vec<Read>>,
    /// The whole-attribute reads of the first 128 slots, by slot: most
    /// reads are told apart from those before them without a scan.
    slots_read: Cell<u128>,
}

impl<'a> Tracker<'a> {
    pub fn new(bag: &'a Bag) -> Tracker<'a> {
        Tracker {
            bag,
            // Room for what a config of a score of rules reads, grown once.
            reads: RefCell::new(Vec::with_capacity(16)),
            slots_read: Cell::new(0),
        }
    }

    /// Notes a read of `name` (and `key`), kept at `slot` of the bag and
    /// found there as `found`.
    fn record(&self, name: &str, slot: Option<Slot>, key: Option<&str>, found: Option<&Name>) {
        let bit = match (slot, key) {
            (Some(s), None) if s.index < 128 => 1u128 << s.index,
            _ => 0,
        };
        let mut reads = self.reads.borrow_mut();
        let known = if bit != 0 {
            let seen = self.slots_read.get();
            self.slots_read.set(seen | bit);
            seen & bit != 0
        } else {
            // A score of reads per decision at most: a scan beats hashing.
            reads
                .iter()
                .any(|r| r.same_attribute(name, slot) && r.key.as_deref() == key)
        };
        if !known {
            // An attribute the request has lends its shared name.
            let name = match found {
                Some(shared) => shared.clone(),
                None => Name::from(name.to_string()),
            };
            reads.push(Read {
                name,
                key: key.map(str::to_string),
                slot,
            });
        }
    }

    /// The reads, sorted, so equal sets compare equal; shared, so a cached
    /// answer hands them out without copying.
    pub fn into_reads(self) -> Arc<[Read]> {
        let mut reads = self.reads.into_inner();
        reads.sort_unstable();
        reads.into()
    }
}

impl<'a> Tracker<'a> {
    fn read(&self, name: &str, found: Located<'a>) -> Option<&'a Value> {
        let (slot, found) = found;
        self.record(name, slot, None, found.map(|(n, _)| n));
        found.map(|(_, v)| v)
    }

    fn read_key(&self, name: &str, key: &str, found: Located<'a>) -> Option<&'a str> {
        let (slot, found) = found;
        self.record(name, slot, Some(key), found.map(|(n, _)| n));
        found?.1.at_key(key)
    }
}

impl Attributes for Tracker<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.read(name, self.bag.locate(name))
    }

    fn get_key(&self, name: &str, key: &str) -> Option<&str> {
        self.read_key(name, key, self.bag.locate(name))
    }

    fn lookup(&self, attr: &Attr) -> Option<&Value> {
        self.read(attr.name(), self.bag.locate_attr(attr))
    }

    fn lookup_key(&self, attr: &Attr, key: &str) -> Option<&str> {
        self.read_key(attr.name(), key, self.bag.locate_attr(attr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::Vocabulary;

    #[test]
    fn reads_by_name_and_by_slot_are_one_read() {
        let vocab = Vocabulary::standard();
        let mut bag = Bag::for_vocabulary(&vocab);
        bag.set("source.name", Value::string("a"));
        bag.set("not.declared", Value::Int64(1));
        let tracker = Tracker::new(&bag);
        let source = Attr::new("source.name".into(), &vocab);
        let headers = Attr::new("request.headers".into(), &vocab);
        assert!(tracker.lookup(&source).is_some());
        assert!(tracker.get("source.name").is_some());
        assert!(tracker.get("not.declared").is_some());
        assert!(tracker.lookup_key(&headers, "x-user").is_none());
        let reads = tracker.into_reads();
        assert_eq!(reads.len(), 3, "{reads:?}");
        // Slotted reads first; the undeclared one is read by name.
        assert_eq!(reads[2], Read::new("not.declared", None));
        assert!(reads[..2].iter().all(|r| r.slot.is_some()));
        assert!(reads.iter().all(|r| r.present(&bag) == (r.key.is_none())));

        // The same reads from a plain bag name the same attributes, but
        // compare unequal: slots are only good in their own table.
        let plain: Bag = bag
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let read = reads.iter().find(|r| r.name.as_str() == "source.name");
        let read = read.expect("source.name was read");
        assert_eq!(read.value(&plain), Some(&Value::string("a")));
        assert_ne!(*read, Read::new("source.name", None));
    }
}
