//! What each proxy was last sent, per type: the subscribed names, a hash per
//! resource and the version. The protocol state machine
//! ([`crate::xds::server::connection`]) decides *when* to answer; this decides *what* an
//! answer holds, and whether there is anything to say at all.

use std::sync::Arc;

use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use crate::xds::resource::{Resource, XdsType};

/// How much of a type a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything subscribed: a first answer, a subscription change, or the
    /// answer Envoy's warming clusters and listeners wait for.
    All,
    /// Only what changed since the last response; nothing when nothing did.
    /// For the wildcard types (CDS, LDS) SotW has no partial answer, so any
    /// change sends the whole set.
    Changed,
}

/// One response's worth of resources.
#[derive(Debug)]
pub struct Update {
    pub version: String,
    pub resources: Vec<Resource>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeCache {
    /// The subscription (for RDS and EDS); shared with the `/debug/syncz` copy,
    /// since an EDS subscription names every cluster.
    pub names: Arc<Vec<String>>,
    pub sent_version: String,
    /// How many resources the proxy holds of this type.
    pub resources: usize,
    /// For RDS and EDS one hash per name of `names` (0: none sent); for CDS
    /// and LDS a single hash of the whole set. Shared with the `/debug/syncz`
    /// copy, like `names`.
    #[serde(skip)]
    hashes: Arc<Vec<u64>>,
}

impl TypeCache {
    /// Records a new subscription. Whatever was sent for the old names no
    /// longer lines up, so the next update is answered in full.
    pub fn subscribe(&mut self, names: Vec<String>) {
        self.names = Arc::new(names);
        self.hashes = Arc::default();
    }

    /// Compares freshly generated `resources` with what was sent and returns
    /// the response to send, if any. `resources` are in `names` order for the
    /// named types, as the generators produce them.
    pub fn update(
        &mut self,
        kind: XdsType,
        resources: Vec<Resource>,
        scope: Scope,
    ) -> Option<Update> {
        if kind.is_wildcard() {
            let hash = set_hash(&resources);
            if scope == Scope::Changed && self.hashes.as_slice() == [hash] {
                return None;
            }
            self.hashes = Arc::new(vec![hash]);
            return Some(self.record(hash, resources));
        }
        let mut hashes = vec![0; self.names.len()];
        let mut send = Vec::new();
        let mut generated = resources.into_iter().peekable();
        for (i, name) in self.names.iter().enumerate() {
            let Some(r) = generated.next_if(|r| &r.name == name) else {
                continue;
            };
            hashes[i] = r.hash;
            if scope == Scope::All || self.hashes.get(i) != Some(&r.hash) {
                send.push(r);
            }
        }
        // What the proxy holds, sent now or before.
        let held = hashes.iter().filter(|h| **h != 0).count();
        let mut version = Xxh3::new();
        for h in &hashes {
            version.update(&h.to_le_bytes());
        }
        self.hashes = Arc::new(hashes);
        if send.is_empty() && scope == Scope::Changed {
            self.resources = held;
            return None;
        }
        let update = self.record(version.digest(), send);
        self.resources = held;
        Some(update)
    }

    fn record(&mut self, hash: u64, resources: Vec<Resource>) -> Update {
        self.sent_version = format!("{hash:016x}");
        self.resources = resources.len();
        Update {
            version: self.sent_version.clone(),
            resources,
        }
    }
}

fn set_hash(resources: &[Resource]) -> u64 {
    let mut h = Xxh3::new();
    for r in resources {
        h.update(r.name.as_bytes());
        h.update(&r.hash.to_le_bytes());
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, body: &str) -> Resource {
        Resource::encode(name, &body.to_string())
    }

    fn names(u: &Update) -> Vec<&str> {
        u.resources.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn named_types_send_only_changed_resources() {
        let mut c = TypeCache::default();
        c.subscribe(vec!["a".into(), "b".into(), "c".into()]);
        let all = c
            .update(
                XdsType::Endpoint,
                vec![res("a", "1"), res("b", "1"), res("c", "1")],
                Scope::Changed,
            )
            .unwrap();
        assert_eq!(names(&all), ["a", "b", "c"]);
        assert!(
            c.update(
                XdsType::Endpoint,
                vec![res("a", "1"), res("b", "1"), res("c", "1")],
                Scope::Changed
            )
            .is_none()
        );
        let one = c
            .update(
                XdsType::Endpoint,
                vec![res("a", "1"), res("b", "2"), res("c", "1")],
                Scope::Changed,
            )
            .unwrap();
        assert_eq!(names(&one), ["b"]);
        assert_ne!(
            one.version, all.version,
            "the version covers every resource held"
        );
        assert_eq!(c.resources, 3);
        let forced = c
            .update(
                XdsType::Endpoint,
                vec![res("a", "1"), res("b", "2"), res("c", "1")],
                Scope::All,
            )
            .unwrap();
        assert_eq!(names(&forced), ["a", "b", "c"]);
        assert_eq!(forced.version, one.version);
    }

    #[test]
    fn missing_resources_are_skipped_and_a_new_subscription_is_answered_whole() {
        let mut c = TypeCache::default();
        c.subscribe(vec!["a".into(), "b".into()]);
        let u = c
            .update(XdsType::Route, vec![res("b", "1")], Scope::All)
            .unwrap();
        assert_eq!(names(&u), ["b"]);
        assert_eq!(c.resources, 1);
        c.subscribe(vec!["b".into(), "c".into()]);
        let u = c
            .update(
                XdsType::Route,
                vec![res("b", "1"), res("c", "1")],
                Scope::Changed,
            )
            .unwrap();
        assert_eq!(names(&u), ["b", "c"]);
    }

    #[test]
    fn wildcard_types_are_sent_whole_on_any_change() {
        let mut c = TypeCache::default();
        let first = vec![res("x", "1"), res("y", "1")];
        assert!(
            c.update(XdsType::Cluster, first.clone(), Scope::Changed)
                .is_some()
        );
        assert!(c.update(XdsType::Cluster, first, Scope::Changed).is_none());
        let u = c
            .update(
                XdsType::Cluster,
                vec![res("x", "2"), res("y", "1")],
                Scope::Changed,
            )
            .unwrap();
        assert_eq!(names(&u), ["x", "y"]);
    }
}
