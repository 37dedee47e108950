//! One sink's stream, as a state machine with no I/O: what to send after
//! each request and after each new snapshot.
//!
//! Per collection: a push is sent only once the previous one was ACKed or
//! NACKed; after a NACK the next change is sent, never the refused snapshot
//! again; an incremental sink gets only what changed since what it ACKed.

use std::collections::BTreeMap;

use api::mcp::Collection;
use api::mcp::v1alpha1::{RequestResources, Resources};
use tonic::Status;

use crate::snapshot::Snapshot;

#[derive(Debug, Default)]
pub struct Stream {
    subscriptions: BTreeMap<&'static str, Subscription>,
    nonces: u64,
}

#[derive(Debug)]
struct Subscription {
    collection: &'static Collection,
    incremental: bool,
    /// Collection version of the last push (ACKed, NACKed or in flight).
    sent: Option<String>,
    /// Nonce of the push awaiting an answer.
    pending: Option<String>,
    /// What the sink holds as far as ACKs say: key → version.
    acked: BTreeMap<String, String>,
    /// What it will hold once the pending push is ACKed.
    in_flight: BTreeMap<String, String>,
}

/// What the stream learnt from one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Subscribed,
    Ack,
    Nack(String),
    /// A nonce that is not the pending one: an answer to an older push.
    Stale,
}

impl Stream {
    /// Handles one request; `Err` ends the stream with that status.
    pub fn on_request(
        &mut self,
        request: RequestResources,
        snapshot: &Snapshot,
    ) -> Result<(Answer, Option<Resources>), Status> {
        let collection = api::mcp::collection(&request.collection).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown collection {:?}: this source serves Istio 1.4's collections, such as istio/networking/v1alpha3/virtualservices",
                request.collection
            ))
        })?;
        let answer = if request.response_nonce.is_empty() {
            let acked = if request.incremental {
                request.initial_resource_versions.into_iter().collect()
            } else {
                BTreeMap::new()
            };
            self.subscriptions.insert(
                collection.name,
                Subscription {
                    collection,
                    incremental: request.incremental,
                    sent: None,
                    pending: None,
                    acked,
                    in_flight: BTreeMap::new(),
                },
            );
            Answer::Subscribed
        } else {
            let Some(sub) = self.subscriptions.get_mut(collection.name) else {
                return Err(Status::invalid_argument(format!(
                    "response_nonce {:?} for {}, which this stream never subscribed to",
                    request.response_nonce, collection.name
                )));
            };
            if sub.pending.as_deref() != Some(request.response_nonce.as_str()) {
                return Ok((Answer::Stale, None));
            }
            sub.pending = None;
            match request.error_detail {
                Some(error) => {
                    sub.in_flight.clear();
                    Answer::Nack(error.message)
                }
                None => {
                    sub.acked = std::mem::take(&mut sub.in_flight);
                    Answer::Ack
                }
            }
        };
        let push = self.push(collection.name, snapshot);
        Ok((answer, push))
    }

    /// What a new snapshot makes due: one push per collection that changed
    /// and has no push in flight.
    pub fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<Resources> {
        let names: Vec<&'static str> = self.subscriptions.keys().copied().collect();
        names
            .into_iter()
            .filter_map(|name| self.push(name, snapshot))
            .collect()
    }

    pub fn collections(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.subscriptions.keys().copied()
    }

    fn push(&mut self, name: &'static str, snapshot: &Snapshot) -> Option<Resources> {
        let sub = self.subscriptions.get_mut(name)?;
        if sub.pending.is_some() {
            return None;
        }
        let empty = Default::default();
        let state = snapshot.collections.get(name).unwrap_or(&empty);
        if sub.sent.as_deref() == Some(state.version.as_str()) {
            return None;
        }
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        if sub.incremental {
            for (key, entry) in &state.entries {
                if sub.acked.get(key) != Some(&entry.version) {
                    resources.push(entry.mcp.clone());
                }
            }
            removed = sub
                .acked
                .keys()
                .filter(|k| !state.entries.contains_key(*k))
                .cloned()
                .collect();
        } else {
            resources.extend(state.entries.values().map(|e| e.mcp.clone()));
        }
        sub.in_flight = state
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.version.clone()))
            .collect();
        sub.sent = Some(state.version.clone());
        sub.pending = Some(nonce.clone());
        Some(Resources {
            system_version_info: state.version.clone(),
            collection: sub.collection.name.to_string(),
            resources,
            removed_resources: removed,
            nonce,
            incremental: sub.incremental,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Checked, check_text};

    fn snapshot(yaml: &str, previous: &Snapshot) -> Snapshot {
        let checked: Vec<Checked> = check_text("t.yaml", yaml);
        crate::source::assemble(checked, previous)
    }

    fn vs(name: &str, host: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  http:\n  - route:\n    - destination: {{host: {host}}}\n---\n"
        )
    }

    const VS: &str = "istio/networking/v1alpha3/virtualservices";

    fn request(nonce: &str, incremental: bool) -> RequestResources {
        RequestResources {
            collection: VS.into(),
            response_nonce: nonce.into(),
            incremental,
            ..Default::default()
        }
    }

    #[test]
    fn pushes_wait_for_the_answer_to_the_previous_one() {
        let one = snapshot(&vs("a", "a"), &Snapshot::default());
        let mut stream = Stream::default();
        let (answer, push) = stream.on_request(request("", false), &one).unwrap();
        assert_eq!(answer, Answer::Subscribed);
        let push = push.expect("first push");
        assert_eq!(push.resources.len(), 1);
        assert_eq!(
            push.resources[0].metadata.as_ref().unwrap().name,
            "default/a"
        );
        let body = push.resources[0].body.as_ref().unwrap();
        assert_eq!(
            body.type_url,
            "type.googleapis.com/istio.networking.v1alpha3.VirtualService"
        );

        let two = snapshot(&(vs("a", "a") + &vs("b", "b")), &one);
        assert!(
            stream.on_snapshot(&two).is_empty(),
            "the first push is not answered yet"
        );
        let (answer, next) = stream
            .on_request(request(&push.nonce, false), &two)
            .unwrap();
        assert_eq!(answer, Answer::Ack);
        let next = next.expect("the change, once ACKed");
        assert_eq!(next.resources.len(), 2);
        assert_ne!(next.nonce, push.nonce);
        // An answer to an old push changes nothing.
        let (answer, none) = stream
            .on_request(request(&push.nonce, false), &two)
            .unwrap();
        assert_eq!((answer, none), (Answer::Stale, None));
    }

    #[test]
    fn a_nacked_snapshot_is_not_sent_again_but_the_next_change_is() {
        let one = snapshot(&vs("a", "a"), &Snapshot::default());
        let mut stream = Stream::default();
        let push = stream
            .on_request(request("", false), &one)
            .unwrap()
            .1
            .unwrap();
        let mut nack = request(&push.nonce, false);
        nack.error_detail = Some(api::google::rpc::Status {
            code: 3,
            message: "bad".into(),
            details: vec![],
        });
        let (answer, again) = stream.on_request(nack, &one).unwrap();
        assert_eq!((answer, again), (Answer::Nack("bad".into()), None));
        assert!(stream.on_snapshot(&one).is_empty());
        let two = snapshot(&vs("b", "b"), &one);
        assert_eq!(stream.on_snapshot(&two).len(), 1);
    }

    #[test]
    fn incremental_sinks_get_changes_and_removals_only() {
        let one = snapshot(&(vs("a", "a") + &vs("b", "b")), &Snapshot::default());
        let mut stream = Stream::default();
        let mut first = request("", true);
        // The sink already holds `a` at its current version.
        let a_version = one.get(VS, "default/a").unwrap().version.clone();
        first
            .initial_resource_versions
            .insert("default/a".into(), a_version);
        first
            .initial_resource_versions
            .insert("default/gone".into(), "1".into());
        let push = stream.on_request(first, &one).unwrap().1.unwrap();
        assert!(push.incremental);
        let names: Vec<_> = push
            .resources
            .iter()
            .map(|r| r.metadata.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(names, ["default/b"]);
        assert_eq!(push.removed_resources, ["default/gone"]);
        stream.on_request(request(&push.nonce, true), &one).unwrap();
        let two = snapshot(&(vs("a", "a") + &vs("b", "c")), &one);
        let pushes = stream.on_snapshot(&two);
        let names: Vec<_> = pushes[0]
            .resources
            .iter()
            .map(|r| r.metadata.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(names, ["default/b"]);
        assert!(pushes[0].removed_resources.is_empty());
    }

    #[test]
    fn an_unknown_collection_ends_the_stream() {
        let mut stream = Stream::default();
        let mut r = request("", false);
        r.collection = "istio/networking/v1alpha3/nonsense".into();
        let e = stream.on_request(r, &Snapshot::default()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("nonsense"));
    }
}
