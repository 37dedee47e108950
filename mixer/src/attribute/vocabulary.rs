use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use super::ValueType;

/// Which attributes exist and their types: Istio's standard manifests
/// (`istioproxy` and `kubernetes`) plus whatever `attributemanifest` objects
/// declare. Expressions are type-checked against it and decoded attributes
/// are validated by it. Names are kept shared: a decoded bag keys its
/// values with the vocabulary's own names instead of a copy per attribute.
#[derive(Debug, Clone)]
pub struct Vocabulary(Arc<HashMap<Arc<str>, ValueType, foldhash::fast::RandomState>>);

impl Vocabulary {
    /// Istio 1.4's standard attributes, which every proxy may send.
    pub fn standard() -> Vocabulary {
        static STANDARD: LazyLock<Vocabulary> = LazyLock::new(parse_standard);
        STANDARD.clone()
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, ValueType)>) -> Vocabulary {
        Vocabulary(Arc::new(
            pairs.into_iter().map(|(n, t)| (Arc::from(n), t)).collect(),
        ))
    }

    /// This vocabulary with `more` declared as well; a later declaration of
    /// a name replaces the earlier one, as Istio's manifests merged.
    pub fn with(&self, more: impl IntoIterator<Item = (String, ValueType)>) -> Vocabulary {
        let mut map = (*self.0).clone();
        map.extend(more.into_iter().map(|(n, t)| (Arc::from(n), t)));
        Vocabulary(Arc::new(map))
    }

    pub fn type_of(&self, name: &str) -> Option<ValueType> {
        self.0.get(name).copied()
    }

    /// The declared name, shared, with its type.
    pub fn entry(&self, name: &str) -> Option<(&Arc<str>, ValueType)> {
        self.0.get_key_value(name).map(|(n, t)| (n, *t))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
    }
}
