//! Referenced attributes: which attributes (and map keys) a decision read,
//! present or absent. Mixer returns them so a proxy can cache the answer for
//! every request that agrees on them; our own check cache keys on them too.

use std::cell::RefCell;
use std::sync::Arc;

use crate::attribute::{Attr, Attributes, Bag, Name, Value};

/// One attribute read: the whole attribute, or one key of a string map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Read {
    pub name: Name,
    pub key: Option<String>,
}

impl Read {
    /// Whether `bag` has what this read looked for.
    pub fn present(&self, bag: &Bag) -> bool {
        match &self.key {
            None => bag.get(&self.name).is_some(),
            Some(k) => bag.get_key(&self.name, k).is_some(),
        }
    }
}

/// A bag that records what is read from it.
pub struct Tracker<'a> {
    bag: &'a Bag,
    reads: RefCell<Vec<Read>>,
}

impl<'a> Tracker<'a> {
    pub fn new(bag: &'a Bag) -> Tracker<'a> {
        Tracker {
            bag,
            reads: RefCell::new(Vec::new()),
        }
    }

    /// Notes a read of `name` (and `key`), found in the bag as `found`.
    fn record(&self, name: &str, key: Option<&str>, found: Option<&Name>) {
        let mut reads = self.reads.borrow_mut();
        // A handful of reads per decision: a scan beats hashing.
        if !reads
            .iter()
            .any(|r| r.name.as_str() == name && r.key.as_deref() == key)
        {
            // An attribute the request has lends its shared name.
            let name = match found {
                Some(shared) => shared.clone(),
                None => Name::from(name.to_string()),
            };
            reads.push(Read {
                name,
                key: key.map(str::to_string),
            });
        }
    }

    /// The reads, sorted, so equal sets compare equal; shared, so a cached
    /// answer hands them out without copying.
    pub fn into_reads(self) -> Arc<[Read]> {
        let mut reads = self.reads.into_inner();
        reads.sort();
        reads.into()
    }
}

impl<'a> Tracker<'a> {
    fn read(&self, name: &str, found: Option<(&'a Name, &'a Value)>) -> Option<&'a Value> {
        self.record(name, None, found.map(|(n, _)| n));
        found.map(|(_, v)| v)
    }

    fn read_key(
        &self,
        name: &str,
        key: &str,
        found: Option<(&'a Name, &'a Value)>,
    ) -> Option<&'a str> {
        self.record(name, Some(key), found.map(|(n, _)| n));
        match found?.1 {
            Value::StringMap(m) => m.get(key).map(String::as_str),
            _ => None,
        }
    }
}

impl Attributes for Tracker<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.read(name, self.bag.get_named(name))
    }

    fn get_key(&self, name: &str, key: &str) -> Option<&str> {
        self.read_key(name, key, self.bag.get_named(name))
    }

    fn lookup(&self, attr: &Attr) -> Option<&Value> {
        self.read(attr.name(), self.bag.lookup_named(attr))
    }

    fn lookup_key(&self, attr: &Attr, key: &str) -> Option<&str> {
        self.read_key(attr.name(), key, self.bag.lookup_named(attr))
    }
}
