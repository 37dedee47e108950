use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::vocabulary::{Slot, Slots};
use super::{Declaration, Value, Vocabulary};

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

/// An attribute as compiled config names it: with its slot in bags made
/// for the vocabulary it was compiled against, so reading such a bag is an
/// index, and by name in any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    name: Arc<str>,
    slot: Option<Slot>,
}

impl Attr {
    pub fn new(name: Arc<str>, vocab: &Vocabulary) -> Attr {
        let slot = vocab.slot(&name);
        Attr { name, slot }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
}

/// Where a bag keeps an attribute (its slot, when it has one) and the
/// attribute with the name the bag keeps for it, when present.
pub type Located<'a> = (Option<Slot>, Option<(&'a Name, &'a Value)>);

/// A request's attributes. A bag made for a vocabulary keeps each declared
/// attribute in its slot; names it does not declare, and every name in a
/// bag made for none, are hashed (with foldhash: SipHash's flood
/// resistance buys nothing for names the vocabulary already bounds).
#[derive(Clone, Default)]
pub struct Bag {
    slots: Option<Arc<Slots>>,
    values: Vec<Option<Value>>,
    /// How many of `values` are set.
    set: usize,
    others: HashMap<Name, Value, foldhash::fast::RandomState>,
}

impl Bag {
    pub fn new() -> Bag {
        Bag::default()
    }

    /// A bag that keeps `vocab`'s attributes in their slots.
    pub fn for_vocabulary(vocab: &Vocabulary) -> Bag {
        let slots = vocab.slots();
        let mut values = Vec::with_capacity(slots.len());
        // Not `vec![None; n]`, which clones its `None` into every slot.
        values.resize_with(slots.len(), || None);
        Bag {
            values,
            slots: Some(slots.clone()),
            set: 0,
            others: HashMap::default(),
        }
    }

    /// Where this bag keeps `slot`'s attribute, if it keeps slots of its
    /// vocabulary.
    #[inline]
    fn index(&self, slot: Option<Slot>) -> Option<usize> {
        match (slot, &self.slots) {
            (Some(s), Some(table)) if s.table == table.id() => Some(s.index as usize),
            _ => None,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.get_named(name).map(|(_, v)| v)
    }

    /// The attribute with the name the bag keeps for it.
    pub fn get_named(&self, name: &str) -> Option<(&Name, &Value)> {
        self.locate(name).1
    }

    /// [`get_named`](Self::get_named) for a compiled attribute.
    #[inline]
    pub fn lookup_named(&self, attr: &Attr) -> Option<(&Name, &Value)> {
        self.locate_attr(attr).1
    }

    /// Where this bag keeps `name` (its slot, if it has one) and what it
    /// holds for it.
    pub fn locate(&self, name: &str) -> Located<'_> {
        match self.slots.as_ref().and_then(|t| Some((t, t.index(name)?))) {
            Some((table, i)) => self.slotted(table, i),
            None => (None, self.others.get_key_value(name)),
        }
    }

    /// [`locate`](Self::locate) for a compiled attribute.
    #[inline]
    pub fn locate_attr(&self, attr: &Attr) -> Located<'_> {
        match (self.index(attr.slot), &self.slots) {
            (Some(i), Some(table)) => self.slotted(table, i),
            _ => self.locate(&attr.name),
        }
    }

    #[inline]
    fn slotted<'a>(&'a self, table: &'a Slots, i: usize) -> Located<'a> {
        let slot = Slot {
            table: table.id(),
            index: i as u32,
        };
        let found = self.values[i].as_ref().map(|v| (table.name(i), v));
        (Some(slot), found)
    }

    /// The attribute at `slot` when this bag keeps that slot, else by name.
    #[inline]
    pub fn at(&self, slot: Option<Slot>, name: &str) -> Option<&Value> {
        match self.index(slot) {
            Some(i) => self.values[i].as_ref(),
            None => self.get(name),
        }
    }

    pub fn set(&mut self, name: impl Into<Name>, value: Value) {
        let name = name.into();
        match self.slots.as_ref().and_then(|t| t.index(&name)) {
            Some(i) => self.put(i, value),
            None => {
                self.others.insert(name, value);
            }
        }
    }

    /// Sets a declared attribute: in its slot when this bag was made for
    /// the declaring vocabulary.
    #[inline]
    pub fn set_declared(&mut self, declared: &Declaration, value: Value) {
        match self.index(Some(declared.slot)) {
            Some(i) => self.put(i, value),
            None => self.set(declared.name.clone(), value),
        }
    }

    /// Sets a compiled attribute.
    pub fn set_attr(&mut self, attr: &Attr, value: Value) {
        match self.index(attr.slot) {
            Some(i) => self.put(i, value),
            None => self.set(attr.name.clone(), value),
        }
    }

    #[inline]
    fn put(&mut self, i: usize, value: Value) {
        if self.values[i].replace(value).is_none() {
            self.set += 1;
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        match self.slots.as_ref().and_then(|t| t.index(name)) {
            Some(i) => {
                let old = self.values[i].take();
                self.set -= usize::from(old.is_some());
                old
            }
            None => self.others.remove(name),
        }
    }

    pub fn len(&self) -> usize {
        self.set + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        let slotted = self.slots.iter().flat_map(|table| {
            self.values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| Some((table.name(i).as_str(), v.as_ref()?)))
        });
        slotted.chain(self.others.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

/// Bags are equal when they hold the same attributes, however they keep them.
impl PartialEq for Bag {
    fn eq(&self, other: &Bag) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl std::fmt::Debug for Bag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sorted: Vec<_> = self.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        f.debug_map().entries(sorted).finish()
    }
}

impl Bag {
    /// A bag from JSON as people write attributes down: each value as its
    /// text (or a JSON number, boolean or, for a string map, object), typed
    /// by `vocab`. For fixtures, tools and benchmarks.
    pub fn from_json(json: &serde_json::Value, vocab: &Vocabulary) -> Result<Bag, String> {
        let object = json.as_object().ok_or("attributes must be a JSON object")?;
        let mut bag = Bag::for_vocabulary(vocab);
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
        let mut bag = Bag::new();
        for (k, v) in iter {
            bag.set(k, v);
        }
        bag
    }
}

/// What an evaluation reads. The dispatcher wraps a [`Bag`] to record which
/// attributes a decision depended on (Mixer's referenced attributes).
pub trait Attributes {
    fn get(&self, name: &str) -> Option<&Value>;

    /// [`get`](Attributes::get) for an attribute of compiled config, which
    /// a bag made for its vocabulary finds by slot.
    fn lookup(&self, attr: &Attr) -> Option<&Value> {
        self.get(attr.name())
    }

    /// [`get_key`](Attributes::get_key) for an attribute of compiled config.
    fn lookup_key(&self, attr: &Attr, key: &str) -> Option<&str> {
        self.get_key(attr.name(), key)
    }

    /// Reads one key of a string-map attribute. Separate from [`get`] so that
    /// a decision depends on that key only, not on the whole map.
    ///
    /// [`get`]: Attributes::get
    fn get_key(&self, name: &str, key: &str) -> Option<&str> {
        self.get(name)?.at_key(key)
    }
}

impl Attributes for Bag {
    fn get(&self, name: &str) -> Option<&Value> {
        Bag::get(self, name)
    }

    #[inline]
    fn lookup(&self, attr: &Attr) -> Option<&Value> {
        self.lookup_named(attr).map(|(_, v)| v)
    }

    fn lookup_key(&self, attr: &Attr, key: &str) -> Option<&str> {
        self.lookup(attr)?.at_key(key)
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

    #[test]
    fn slots_set_replaced_and_removed_in_any_order_keep_their_values() {
        let vocab = Vocabulary::standard();
        let mut bag = Bag::for_vocabulary(&vocab);
        let names = ["request.path", "source.ip", "response.code", "request.id"];
        for (i, name) in names.iter().enumerate() {
            bag.set(*name, Value::Int64(i as i64));
        }
        bag.set("source.ip", Value::Int64(10));
        assert_eq!(bag.remove("request.path"), Some(Value::Int64(0)));
        assert_eq!(bag.remove("request.path"), None);
        assert_eq!(bag.remove("request.id"), Some(Value::Int64(3)));
        bag.set("request.path", Value::Int64(20));
        assert_eq!(bag.len(), 3);
        for (name, want) in [
            ("request.path", Some(20)),
            ("source.ip", Some(10)),
            ("response.code", Some(2)),
            ("request.id", None),
        ] {
            assert_eq!(bag.get(name), want.map(Value::Int64).as_ref(), "{name}");
        }
        let mut seen: Vec<_> = bag.iter().map(|(n, _)| n).collect();
        seen.sort();
        assert_eq!(seen, ["request.path", "response.code", "source.ip"]);
    }

    #[test]
    fn declared_attributes_live_in_slots_and_read_alike_by_name() {
        let vocab = Vocabulary::standard();
        let path = Attr::new("request.path".into(), &vocab);
        let mut slotted = Bag::for_vocabulary(&vocab);
        slotted.set("request.path", Value::string("/a"));
        slotted.set("not.declared", Value::Int64(1));
        assert_eq!(slotted.len(), 2);
        assert_eq!(slotted.lookup(&path), Some(&Value::string("/a")));
        assert_eq!(slotted.get("not.declared"), Some(&Value::Int64(1)));
        assert_eq!(
            slotted.get_named("request.path").unwrap().0.as_str(),
            "request.path"
        );

        // A plain bag, and an attribute compiled against another
        // vocabulary, are read by name.
        let plain: Bag = [("request.path", Value::string("/a"))]
            .into_iter()
            .collect();
        assert_eq!(plain.lookup(&path), Some(&Value::string("/a")));
        let other = vocab.with([("my.attr".to_string(), ValueType::Bool)]);
        let elsewhere = Attr::new("request.path".into(), &other);
        assert_ne!(elsewhere, path, "another table, another slot");
        assert_eq!(slotted.lookup(&elsewhere), Some(&Value::string("/a")));
        let mut theirs = Bag::for_vocabulary(&other);
        theirs.set_attr(&path, Value::string("/b"));
        assert_eq!(theirs.lookup(&elsewhere), Some(&Value::string("/b")));

        // However they keep them, bags with the same attributes are equal.
        slotted.remove("not.declared");
        assert_eq!(slotted, plain);
        assert_eq!(slotted.remove("request.path"), Some(Value::string("/a")));
        assert!(slotted.is_empty() && slotted.lookup(&path).is_none());
        assert_ne!(slotted, plain);
    }
}
