use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use super::{ValueType, dictionary};

/// Which attributes exist and their types: Istio's standard manifests
/// (`istioproxy` and `kubernetes`) plus whatever `attributemanifest` objects
/// declare. Expressions are type-checked against it and decoded attributes
/// are validated by it. Names are kept shared: a decoded bag keys its
/// values with the vocabulary's own names instead of a copy per attribute.
#[derive(Debug, Clone)]
pub struct Vocabulary(Arc<Declared>);

type Names<T> = HashMap<Arc<str>, T, foldhash::fast::RandomState>;

#[derive(Debug)]
struct Declared {
    by_name: Names<ValueType>,
    /// The declaration of each word of the global dictionary, by index:
    /// what a proxy names by index is found without hashing the name.
    by_global_word: Vec<Option<(Arc<str>, ValueType, bool)>>,
    /// The attributes a config may read, when it said (see
    /// [`Vocabulary::reading`]); `None`: all of them.
    read: Option<HashSet<Arc<str>, foldhash::fast::RandomState>>,
}

impl Declared {
    fn new(
        by_name: Names<ValueType>,
        read: Option<HashSet<Arc<str>, foldhash::fast::RandomState>>,
    ) -> Declared {
        let by_global_word = dictionary::words()
            .iter()
            .map(|w| {
                let (n, t) = by_name.get_key_value(*w)?;
                let read = read.as_ref().is_none_or(|r| r.contains(*w));
                Some((n.clone(), *t, read))
            })
            .collect();
        Declared {
            by_name,
            by_global_word,
            read,
        }
    }
}

/// A declared attribute as a decoder meets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Declaration<'a> {
    pub name: &'a Arc<str>,
    pub ty: ValueType,
    /// Whether the config may read it at all: an attribute nothing reads
    /// is checked as it arrives and then dropped instead of kept.
    pub read: bool,
}

impl Vocabulary {
    /// Istio 1.4's standard attributes, which every proxy may send.
    pub fn standard() -> Vocabulary {
        static STANDARD: LazyLock<Vocabulary> = LazyLock::new(parse_standard);
        STANDARD.clone()
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, ValueType)>) -> Vocabulary {
        Vocabulary(Arc::new(Declared::new(
            pairs.into_iter().map(|(n, t)| (Arc::from(n), t)).collect(),
            None,
        )))
    }

    /// This vocabulary with `more` declared as well; a later declaration of
    /// a name replaces the earlier one, as Istio's manifests merged.
    pub fn with(&self, more: impl IntoIterator<Item = (String, ValueType)>) -> Vocabulary {
        let mut map = self.0.by_name.clone();
        map.extend(more.into_iter().map(|(n, t)| (Arc::from(n), t)));
        Vocabulary(Arc::new(Declared::new(map, None)))
    }

    /// This vocabulary for a config that reads `names` and nothing else
    /// (every name its expressions mention, and those the dispatcher reads
    /// itself): what decoding may drop.
    pub fn reading<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> Vocabulary {
        let read = names
            .into_iter()
            .filter_map(|n| self.0.by_name.get_key_value(n).map(|(k, _)| k.clone()))
            .collect();
        Vocabulary(Arc::new(Declared::new(self.0.by_name.clone(), Some(read))))
    }

    pub fn type_of(&self, name: &str) -> Option<ValueType> {
        self.0.by_name.get(name).copied()
    }

    /// The declaration of word `index` of the global dictionary.
    pub fn global_word(&self, index: usize) -> Option<Declaration<'_>> {
        match self.0.by_global_word.get(index) {
            Some(Some((name, ty, read))) => Some(Declaration {
                name,
                ty: *ty,
                read: *read,
            }),
            _ => None,
        }
    }

    /// Whether the config may read `name` (see [`reading`](Self::reading)).
    pub fn reads(&self, name: &str) -> bool {
        self.0.read.as_ref().is_none_or(|r| r.contains(name))
    }

    /// The declaration of `name`, as [`global_word`](Self::global_word)
    /// gives it for a name sent as a word of the message's own.
    pub fn declaration(&self, name: &str) -> Option<Declaration<'_>> {
        let (name, ty) = self.0.by_name.get_key_value(name)?;
        Some(Declaration {
            name,
            ty: *ty,
            read: self.reads(name),
        })
    }

    pub fn len(&self) -> usize {
        self.0.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.by_name.is_empty()
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
        let v = Vocabulary::standard().reading(["source.ip", "no.such"]);
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
