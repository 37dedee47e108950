use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{Value, Vocabulary};

/// An attribute's name as a bag keeps it: a literal of the code that set it,
/// or shared with the vocabulary or a compiled config. Either way, setting
/// an attribute allocates nothing for its name.
#[derive(Debug, Clone)]
pub enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    pub fn as_str(&self) -> &str {
        match self {
            Name::Static(s) => s,
            Name::Shared(s) => s,
        }
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

// Hashed and compared as the text, so a bag can be read with a `&str`.
impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for Name {
    fn from(s: &'static str) -> Name {
        Name::Static(s)
    }
}

impl From<Arc<str>> for Name {
    fn from(s: Arc<str>) -> Name {
        Name::Shared(s)
    }
}

impl From<&Arc<str>> for Name {
    fn from(s: &Arc<str>) -> Name {
        Name::Shared(s.clone())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name::Shared(s.into())
    }
}

/// A request's attributes by name. Hashed with foldhash: every rule match
/// looks names up, and SipHash's flood resistance buys nothing for names the
/// vocabulary already bounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bag(HashMap<Name, Value, foldhash::fast::RandomState>);

impl Bag {
    pub fn new() -> Bag {
        Bag::default()
    }

    /// A bag with room for `n` attributes, so decoding a set of known
    /// size does not grow it step by step.
    pub fn with_capacity(n: usize) -> Bag {
        Bag(HashMap::with_capacity_and_hasher(n, Default::default()))
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// The attribute with the name the bag keeps for it.
    pub fn get_named(&self, name: &str) -> Option<(&Name, &Value)> {
        self.0.get_key_value(name)
    }

    pub fn set(&mut self, name: impl Into<Name>, value: Value) {
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

impl Bag {
    /// A bag from JSON as people write attributes down: each value as its
    /// text (or a JSON number, boolean or, for a string map, object), typed
    /// by `vocab`. For fixtures, tools and benchmarks.
    pub fn from_json(json: &serde_json::Value, vocab: &Vocabulary) -> Result<Bag, String> {
        let object = json.as_object().ok_or("attributes must be a JSON object")?;
        let mut bag = Bag::new();
        for (name, v) in object {
            let ty = vocab
                .type_of(name)
                .ok_or_else(|| format!("`{name}` is not a declared attribute"))?;
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let value = Value::parse_as(ty, &text).map_err(|e| format!("`{name}`: {e}"))?;
            bag.set(name.clone(), value);
        }
        Ok(bag)
    }
}

impl<K: Into<Name>> FromIterator<(K, Value)> for Bag {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Bag(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::ValueType;

    #[test]
    fn from_json_types_values_by_the_vocabulary() {
        let json = serde_json::json!({
            "source.ip": "10.1.0.5",
            "destination.port": 9080,
            "connection.mtls": true,
            "destination.labels": {"app": "reviews"},
        });
        let bag = Bag::from_json(&json, &Vocabulary::standard()).unwrap();
        assert_eq!(
            bag.get("source.ip").map(Value::value_type),
            Some(ValueType::IpAddress)
        );
        assert_eq!(bag.get("destination.port"), Some(&Value::Int64(9080)));
        assert_eq!(bag.get("connection.mtls"), Some(&Value::Bool(true)));
        assert_eq!(bag.get_key("destination.labels", "app"), Some("reviews"));
        let err = Bag::from_json(
            &serde_json::json!({"no.such": "x"}),
            &Vocabulary::standard(),
        );
        assert!(err.unwrap_err().contains("no.such"));
    }
}
