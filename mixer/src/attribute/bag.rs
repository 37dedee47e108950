use std::collections::HashMap;

use super::Value;

/// A request's attributes by name. Hashed with foldhash: every rule match
/// looks names up, and SipHash's flood resistance buys nothing for names the
/// vocabulary already bounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bag(HashMap<String, Value, foldhash::fast::RandomState>);

impl Bag {
    pub fn new() -> Bag {
        Bag::default()
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn set(&mut self, name: impl Into<String>, value: Value) {
        self.0.insert(name.into(), value);
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl FromIterator<(String, Value)> for Bag {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Bag(iter.into_iter().collect())
    }
}

/// What an evaluation reads. The dispatcher wraps a [`Bag`] to record which
/// attributes a decision depended on (Mixer's referenced attributes).
pub trait Attributes {
    fn get(&self, name: &str) -> Option<&Value>;

    /// Reads one key of a string-map attribute. Separate from [`get`] so that
    /// a decision depends on that key only, not on the whole map.
    ///
    /// [`get`]: Attributes::get
    fn get_key(&self, name: &str, key: &str) -> Option<&str> {
        match self.get(name)? {
            Value::StringMap(m) => m.get(key).map(String::as_str),
            _ => None,
        }
    }
}

impl Attributes for Bag {
    fn get(&self, name: &str) -> Option<&Value> {
        Bag::get(self, name)
    }
}
