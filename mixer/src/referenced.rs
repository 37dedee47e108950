//! Referenced attributes: which attributes (and map keys) a decision read,
//! present or absent. Mixer returns them so a proxy can cache the answer for
//! every request that agrees on them; our own check cache keys on them too.

use std::cell::RefCell;

use crate::attribute::{Attributes, Bag, Value};

/// One attribute read: the whole attribute, or one key of a string map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Read {
    pub name: String,
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

    fn record(&self, name: &str, key: Option<&str>) {
        let mut reads = self.reads.borrow_mut();
        // A handful of reads per decision: a scan beats hashing.
        if !reads
            .iter()
            .any(|r| r.name == name && r.key.as_deref() == key)
        {
            reads.push(Read {
                name: name.to_string(),
                key: key.map(str::to_string),
            });
        }
    }

    /// The reads, sorted, so equal sets compare equal.
    pub fn into_reads(self) -> Vec<Read> {
        let mut reads = self.reads.into_inner();
        reads.sort();
        reads
    }
}

impl Attributes for Tracker<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.record(name, None);
        self.bag.get(name)
    }

    fn get_key(&self, name: &str, key: &str) -> Option<&str> {
        self.record(name, Some(key));
        self.bag.get_key(name, key)
    }
}
