use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use super::{Name, ValueType, dictionary};

/// Which attributes exist and their types: Istio's standard manifests
/// (`istioproxy` and `kubernetes`) plus whatever `attributemanifest` objects
/// declare. Expressions are type-checked against it and decoded attributes
/// are validated by it. Names are kept shared: a decoded bag keys its
/// values with the vocabulary's own names instead of a copy per attribute.
#[derive(Debug, Clone)]
pub struct Vocabulary(Arc<Declared>);

#[derive(Debug)]
struct Declared {
    slots: Arc<Slots>,
    /// The slot of each word of the global dictionary that is declared, by
    /// index: what a proxy names by index is found without hashing the name.
    by_global_word: Vec<Option<u32>>,
    /// By slot, what a config may read of the attribute, when it said (see
    /// [`Vocabulary::reading`]); `None`: all of every one.
    read: Option<Box<[Reading]>>,
}

/// What a config may read of one attribute.
#[derive(Debug, Clone, PartialEq)]
enum Reading {
    Nothing,
    /// Only these keys of a string map, each with a constant key
    /// (`request.headers["x-user"]`).
    Keys(Vec<Box<str>>),
    All,
}

/// The declared attributes numbered, in declaration order. A bag made for a
/// vocabulary ([`Bag::for_vocabulary`](super::Bag::for_vocabulary)) keeps
/// each value at its attribute's number, and expressions compiled against
/// it carry the number: reading an attribute indexes, it does not hash.
pub struct Slots {
    /// Tells tables apart: a number is only good in the table it came from.
    id: u64,
    names: Box<[Name]>,
    types: Box<[ValueType]>,
    index: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slots#{} ({} attributes)", self.id, self.names.len())
    }
}

impl Slots {
    /// Numbers `pairs` in order; a later declaration of a name replaces the
    /// type of the earlier one and keeps its number.
    fn new(pairs: impl IntoIterator<Item = (Arc<str>, ValueType)>) -> Slots {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let mut names = Vec::new();
        let mut types = Vec::new();
        let mut index = HashMap::default();
        for (name, ty) in pairs {
            match index.get(&name) {
                Some(&i) => types[i as usize] = ty,
                None => {
                    index.insert(name.clone(), names.len() as u32);
                    names.push(Name::Shared(name));
                    types.push(ty);
                }
            }
        }
        Slots {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            names: names.into(),
            types: types.into(),
            index,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.index.get(name).map(|&i| i as usize)
    }

    pub(crate) fn name(&self, index: usize) -> &Name {
        &self.names[index]
    }

    fn pairs(&self) -> impl Iterator<Item = (Arc<str>, ValueType)> + '_ {
        self.names.iter().zip(&self.types).map(|(n, t)| match n {
            Name::Shared(n) => (n.clone(), *t),
            Name::Static(n) => (Arc::from(*n), *t),
        })
    }
}

/// Where a bag made for one vocabulary keeps an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    pub(crate) table: u64,
    pub(crate) index: u32,
}

impl Declared {
    fn new(slots: Arc<Slots>, read: Option<Box<[Reading]>>) -> Declared {
        let by_global_word = dictionary::words()
            .iter()
            .map(|w| slots.index(w).map(|i| i as u32))
            .collect();
        Declared {
            slots,
            by_global_word,
            read,
        }
    }

    #[inline]
    fn declaration(&self, index: usize) -> Declaration<'_> {
        let read = !matches!(
            self.read.as_ref().map(|r| &r[index]),
            Some(Reading::Nothing)
        );
        Declaration {
            name: &self.slots.names[index],
            ty: self.slots.types[index],
            read,
            slot: Slot {
                table: self.slots.id,
                index: index as u32,
            },
        }
    }
}

/// A declared attribute as a decoder meets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Declaration<'a> {
    pub name: &'a Name,
    pub ty: ValueType,
    /// Whether the config may read it at all: an attribute nothing reads
    /// is checked as it arrives and then dropped instead of kept.
    pub read: bool,
    pub slot: Slot,
}

impl Vocabulary {
    /// Istio 1.4's standard attributes, which every proxy may send.
    pub fn standard() -> Vocabulary {
        static STANDARD: LazyLock<Vocabulary> = LazyLock::new(parse_standard);
        STANDARD.clone()
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, ValueType)>) -> Vocabulary {
        let slots = Slots::new(pairs.into_iter().map(|(n, t)| (Arc::from(n), t)));
        Vocabulary(Arc::new(Declared::new(Arc::new(slots), None)))
    }

    /// This vocabulary with `more` declared as well; a later declaration of
    /// a name replaces the earlier one, as Istio's manifests merged.
    pub fn with(&self, more: impl IntoIterator<Item = (String, ValueType)>) -> Vocabulary {
        let more = more.into_iter().map(|(n, t)| (Arc::from(n), t));
        let slots = Slots::new(self.0.slots.pairs().chain(more));
        Vocabulary(Arc::new(Declared::new(Arc::new(slots), None)))
    }

    /// This vocabulary for a config that reads `reads` and nothing else
    /// (every attribute its expressions mention, and those the dispatcher
    /// reads itself; with a key, that key of a string map only): what
    /// decoding may drop. The attributes keep their slots, so what was
    /// compiled against this vocabulary reads bags made for that.
    pub fn reading<'n>(
        &self,
        reads: impl IntoIterator<Item = (&'n str, Option<&'n str>)>,
    ) -> Vocabulary {
        let mut read = vec![Reading::Nothing; self.0.slots.len()].into_boxed_slice();
        for (name, key) in reads {
            let Some(i) = self.0.slots.index(name) else {
                continue;
            };
            match (&mut read[i], key) {
                (Reading::All, _) => {}
                (r, None) => *r = Reading::All,
                (Reading::Keys(keys), Some(k)) => {
                    if !keys.iter().any(|known| &**known == k) {
                        keys.push(k.into());
                    }
                }
                (r, Some(k)) => *r = Reading::Keys(vec![k.into()]),
            }
        }
        Vocabulary(Arc::new(Declared::new(self.0.slots.clone(), Some(read))))
    }

    pub fn type_of(&self, name: &str) -> Option<ValueType> {
        Some(self.0.slots.types[self.0.slots.index(name)?])
    }

    /// Where bags made for this vocabulary keep `name`.
    pub fn slot(&self, name: &str) -> Option<Slot> {
        Some(self.declaration(name)?.slot)
    }

    pub(crate) fn slots(&self) -> &Arc<Slots> {
        &self.0.slots
    }

    /// The declaration of word `index` of the global dictionary.
    // Inlined into the decoder, which asks for every attribute it reads.
    #[inline]
    pub fn global_word(&self, index: usize) -> Option<Declaration<'_>> {
        let slot = (*self.0.by_global_word.get(index)?)?;
        Some(self.0.declaration(slot as usize))
    }

    /// For a string map the config reads only at constant keys, those
    /// keys: a decoder checks the other entries and drops them.
    pub fn keys(&self, declared: &Declaration) -> Option<&[Box<str>]> {
        match &self.0.read.as_ref()?[declared.slot.index as usize] {
            Reading::Keys(keys) => Some(keys),
            _ => None,
        }
    }

    /// Whether the config may read `name` (see [`reading`](Self::reading)).
    pub fn reads(&self, name: &str) -> bool {
        self.0.read.is_none() || self.declaration(name).is_some_and(|d| d.read)
    }

    /// The declaration of `name`, as [`global_word`](Self::global_word)
    /// gives it for a name sent as a word of the message's own.
    pub fn declaration(&self, name: &str) -> Option<Declaration<'_>> {
        Some(self.0.declaration(self.0.slots.index(name)?))
    }

    pub fn len(&self) -> usize {
        self.0.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.slots.len() == 0
    }
}

impl Default for Vocabulary {
    fn default() -> Self {
        Vocabulary::standard()
    }
}

/// Istio's `istioproxy` and `kubernetes` attribute manifests, kept as the
/// YAML an operator would deploy.
const STANDARD_MANIFESTS: &str = include_str!("../../../deploy/config/attributes.yaml");

fn parse_standard() -> Vocabulary {
    let mut pairs = Vec::new();
    for object in crate::config::parse_file("attributes.yaml", STANDARD_MANIFESTS, "istio-system") {
        let spec: crate::config::kinds::AttributeManifestSpec = object
            .and_then(|o| o.spec())
            .expect("the standard attribute manifests are valid");
        for (name, info) in spec.attributes {
            let ty = ValueType::parse(&info.value_type).expect("standard value types are known");
            pairs.push((name, ty));
        }
    }
    Vocabulary::from_pairs(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_types() {
        let v = Vocabulary::standard();
        assert_eq!(v.type_of("source.ip"), Some(ValueType::IpAddress));
        assert_eq!(v.type_of("request.headers"), Some(ValueType::StringMap));
        assert_eq!(v.type_of("response.duration"), Some(ValueType::Duration));
        assert_eq!(v.type_of("no.such"), None);
        assert_eq!(v.len(), 87);
        let more = v.with([("my.attr".to_string(), ValueType::Bool)]);
        assert_eq!(more.type_of("my.attr"), Some(ValueType::Bool));
        assert_eq!(v.type_of("my.attr"), None);
        let ip = dictionary::index_of("source.ip").unwrap() as usize;
        assert_eq!(
            v.global_word(ip).map(|d| (&**d.name, d.ty, d.read)),
            Some(("source.ip", ValueType::IpAddress, true))
        );
        // A global word that is not an attribute, and an index past them all.
        let get = dictionary::index_of("GET").unwrap() as usize;
        assert_eq!(v.global_word(get), None);
        assert_eq!(v.global_word(100_000), None);
    }

    #[test]
    fn a_config_that_reads_some_attributes_marks_the_rest_unread() {
        let v = Vocabulary::standard().reading([
            ("source.ip", None),
            ("no.such", None),
            ("request.headers", Some("x-user")),
            ("source.labels", Some("app")),
            ("source.labels", None),
        ]);
        let keys = |name| v.keys(&v.declaration(name).unwrap()).map(<[_]>::to_vec);
        assert_eq!(keys("request.headers"), Some(vec!["x-user".into()]));
        assert_eq!(keys("source.labels"), None, "read whole as well");
        assert_eq!(keys("source.ip"), None);
        let word = |w| dictionary::index_of(w).unwrap() as usize;
        assert!(v.global_word(word("source.ip")).unwrap().read);
        assert!(!v.global_word(word("request.path")).unwrap().read);
        assert!(v.declaration("source.ip").unwrap().read);
        assert!(!v.declaration("request.path").unwrap().read);
        assert!(v.reads("source.ip") && !v.reads("request.path"));
        assert!(Vocabulary::standard().reads("request.path"));
        assert_eq!(v.declaration("no.such"), None);
        // Declaring more starts from everything read again.
        let more = v.with([("my.attr".to_string(), ValueType::Bool)]);
        assert!(more.declaration("request.path").unwrap().read);
    }
}
