//! Generated attributes remembered per instance. A kubernetesenv answer
//! depends only on its instance (a request's source and destination uids
//! and addresses) and on the Pods the handler knows, and Istio's bindings
//! read only `$out`: so what one instance binds is worked out once per
//! version of the Pods and reused by every request between the same Pods.

use std::sync::{Arc, RwLock};

use super::{FieldValue, Instance};
use crate::attribute::{Attr, Value, write_key_text};
use crate::bounded::BoundedMap;

/// The attributes one instance's bindings produced.
pub type Bound = Arc<[(Attr, Value)]>;

/// Distinct instances kept for one version; a mesh has about one per pair
/// of Pods that talk. Past this, each new one takes an older one's room.
const CAPACITY: usize = 16_384;

pub struct Remembered(RwLock<Table>);

struct Table {
    version: u64,
    bound: BoundedMap<Box<[u8]>, Bound>,
}

impl Default for Remembered {
    fn default() -> Remembered {
        Remembered(RwLock::new(Table {
            version: 0,
            bound: BoundedMap::new(CAPACITY),
        }))
    }
}

impl Remembered {
    pub fn get(&self, key: &[u8], version: u64) -> Option<Bound> {
        let table = self.0.read().unwrap_or_else(|p| p.into_inner());
        if table.version != version {
            return None;
        }
        table.bound.get(key).cloned()
    }

    pub fn put(&self, key: &[u8], version: u64, bound: Bound) {
        // Declared before the lock, so dropped after it is let go: a new
        // version of the Pods forgets thousands of instances, and no
        // request should wait for that.
        let _stale;
        let mut table = self.0.write().unwrap_or_else(|p| p.into_inner());
        if table.version != version {
            // A request that read an older version may still be storing;
            // the newest version wins and older answers are never kept.
            if table.version > version {
                return;
            }
            _stale = table.bound.take();
            table.version = version;
        }
        table.bound.insert(key.into(), bound, |_| false);
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).bound.len()
    }
}

impl std::fmt::Debug for Remembered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remembered({} instances)", self.len())
    }
}

/// `instance`'s field values as bytes: two instances of one builder have
/// the same key exactly when their values are equal.
pub fn key(instance: &Instance) -> Vec<u8> {
    // Room for two uids and two addresses, so the key is not regrown.
    let mut out = Vec::with_capacity(192);
    for (_, field) in &instance.fields {
        match field {
            FieldValue::Value(v) => v.write_key(&mut out),
            FieldValue::Map(m) => {
                out.push(b'm');
                out.extend_from_slice(&(m.len() as u32).to_le_bytes());
                for (k, v) in m {
                    write_key_text(k, &mut out);
                    v.write_key(&mut out);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;

    fn instance(values: &[Value]) -> Instance {
        Instance {
            name: "k.kubernetes.istio-system".into(),
            template: Template::Kubernetes,
            fields: values
                .iter()
                .map(|v| ("sourceUid", FieldValue::Value(v.clone())))
                .collect(),
        }
    }

    fn key_of(values: &[Value]) -> Vec<u8> {
        key(&instance(values))
    }

    #[test]
    fn keys_differ_where_values_do() {
        let s = Value::string;
        // The same text split differently, or typed differently, is another key.
        assert_ne!(key_of(&[s("ab"), s("c")]), key_of(&[s("a"), s("bc")]));
        assert_ne!(key_of(&[s("a.b")]), key_of(&[Value::DnsName("a.b".into())]));
        assert_ne!(
            key_of(&[Value::IpAddress("10.0.0.1".parse().unwrap())]),
            key_of(&[Value::IpAddress("10.0.0.2".parse().unwrap())])
        );
        assert_ne!(key_of(&[Value::Int64(1)]), key_of(&[Value::Double(1.0)]));
        assert_eq!(
            key_of(&[s("a"), Value::IpAddress("::1".parse().unwrap())]),
            key_of(&[s("a"), Value::IpAddress("::1".parse().unwrap())])
        );
    }

    #[test]
    fn a_new_version_forgets_and_an_old_one_is_not_stored() {
        let memo = Remembered::default();
        let name = crate::attribute::Attr::new(
            "source.workload.name".into(),
            &crate::attribute::Vocabulary::standard(),
        );
        let bound: Bound = Arc::new([(name, Value::string("a"))]);
        memo.put(b"k", 1, bound.clone());
        assert_eq!(memo.get(b"k", 1), Some(bound.clone()));
        assert_eq!(memo.get(b"k", 2), None);
        memo.put(b"j", 2, bound.clone());
        assert_eq!(
            memo.get(b"k", 2),
            None,
            "the old version's answers are gone"
        );
        memo.put(b"k", 1, bound.clone());
        assert_eq!(memo.get(b"k", 1), None, "a late store of an old version");
        assert_eq!(memo.len(), 1);
    }
}
