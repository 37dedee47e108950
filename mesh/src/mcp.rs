//! The sink side of MCP, as Pilot and Mixer use it: dial the source
//! (Galley), ask for collections, keep each collection's objects as last
//! pushed, ACK what decodes and NACK what does not.
//!
//! The state survives the source: when Galley goes away the last state
//! stays published, the sink redials with backoff, and the first full push
//! of each collection after that replaces what it held.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::google::rpc::Status as RpcStatus;
use api::mcp::Collection;
use api::mcp::v1alpha1::resource_source_client::ResourceSourceClient;
use api::mcp::v1alpha1::{RequestResources, Resources, SinkNode};
use serde_json::Value as Json;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// One object as pushed, turned back into the document operators write.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub collection: &'static Collection,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    pub version: String,
    /// `{apiVersion, kind, metadata, spec}`.
    pub document: Json,
}

/// Objects by collection name, then MCP name (`namespace/name`).
pub type State = BTreeMap<&'static str, BTreeMap<String, Arc<Object>>>;

pub struct Sink {
    /// `host:port`, or a URL (`mcp://host:port`).
    pub address: String,
    /// Who this sink is (`SinkNode.id`), for Galley's logs.
    pub node_id: String,
    pub collections: Vec<&'static Collection>,
    /// Mutual TLS with these certificates (Istio's `mcps://` and
    /// `ISTIO_MUTUAL`); read again at every connection, so rotated ones
    /// are used. The source's name is checked against the address's host.
    pub tls: Option<crate::tls::MountedCerts>,
}

impl Sink {
    /// Publishes the state once every collection has been pushed once, then
    /// after every push, until `shutdown`. Never returns an error: a source
    /// that cannot be reached is retried.
    pub async fn run(self, out: watch::Sender<Option<Arc<State>>>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.stream(&out) => r,
            };
            if let Err(e) = result {
                tracing::warn!(address = %self.address, "MCP stream ended; the last config stays: {e}");
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn endpoint(&self) -> Result<tonic::transport::Endpoint, String> {
        let host = ["mcps://", "mcp://", "tcp://"]
            .iter()
            .find_map(|scheme| self.address.strip_prefix(scheme))
            .unwrap_or(&self.address);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{host}"))
            .map_err(|e| format!("{}: {e}", self.address))?;
        let Some(certs) = &self.tls else {
            return Ok(endpoint);
        };
        let read =
            |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&certs.ca)?))
            .identity(tonic::transport::Identity::from_pem(
                read(&certs.cert)?,
                read(&certs.key)?,
            ))
            .domain_name(name.trim_start_matches('[').trim_end_matches(']'));
        endpoint
            .tls_config(tls)
            .map_err(|e| format!("{}: {e}", self.address))
    }

    async fn stream(&self, out: &watch::Sender<Option<Arc<State>>>) -> Result<(), String> {
        let channel = self
            .endpoint()?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.address))?;
        let mut client = ResourceSourceClient::new(channel).max_decoding_message_size(1 << 30);
        let (tx, rx) = mpsc::channel(self.collections.len() + 16);
        let node = SinkNode {
            id: self.node_id.clone(),
            annotations: Default::default(),
        };
        // Incremental: after the first push of each collection (all of it,
        // as this stream starts from nothing), only what changed.
        for c in &self.collections {
            let _ = tx
                .send(RequestResources {
                    sink_node: Some(node.clone()),
                    collection: c.name.to_string(),
                    incremental: true,
                    ..Default::default()
                })
                .await;
        }
        let mut inbound = client
            .establish_resource_stream(ReceiverStream::new(rx))
            .await
            .map_err(|e| format!("{}: {}", self.address, e.message()))?
            .into_inner();
        tracing::info!(address = %self.address, collections = self.collections.len(), "MCP stream open");
        // What this stream has pushed; published over the last state once
        // every collection is in, so a reconnect never publishes a partial view.
        let mut fresh: State = BTreeMap::new();
        let mut whole = false;
        loop {
            let resources = match inbound.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return Err("the source closed the stream".into()),
                Err(e) => return Err(format!("{:?}: {}", e.code(), e.message())),
            };
            let collection = resources.collection.clone();
            let nonce = resources.nonce.clone();
            let error = match self.collections.iter().find(|c| c.name == collection) {
                None => Some(format!("collection {collection:?} was not asked for")),
                Some(c) => match apply(c, fresh.get(c.name), resources) {
                    Ok(objects) => {
                        fresh.insert(c.name, objects);
                        None
                    }
                    Err(e) => {
                        // Refused as this stream's first push of the
                        // collection: what the sink held before stands in,
                        // never an empty collection.
                        if !fresh.contains_key(c.name)
                            && let Some(before) =
                                out.borrow().as_ref().and_then(|s| s.get(c.name).cloned())
                        {
                            fresh.insert(c.name, before);
                        }
                        Some(e)
                    }
                },
            };
            if let Some(e) = &error {
                tracing::warn!(%collection, "push refused (NACK): {e}");
            }
            let refused = error.is_some();
            let _ = tx
                .send(RequestResources {
                    sink_node: Some(node.clone()),
                    collection,
                    response_nonce: nonce,
                    error_detail: error.map(|message| RpcStatus {
                        code: tonic::Code::InvalidArgument as i32,
                        message,
                        details: Vec::new(),
                    }),
                    ..Default::default()
                })
                .await;
            if !whole && self.collections.iter().all(|c| fresh.contains_key(c.name)) {
                whole = true;
                tracing::info!(address = %self.address, objects = fresh.values().map(BTreeMap::len).sum::<usize>(), "MCP config synced");
            }
            // The source pushes only what changed; a refused push changed nothing.
            if whole && !refused {
                out.send_replace(Some(Arc::new(fresh.clone())));
            }
        }
    }
}

/// What the collection holds after `push`: all of it applied, or an error.
fn apply(
    c: &'static Collection,
    held: Option<&BTreeMap<String, Arc<Object>>>,
    push: Resources,
) -> Result<BTreeMap<String, Arc<Object>>, String> {
    let mut held = match (push.incremental, held) {
        (true, Some(held)) => held.clone(),
        _ => BTreeMap::new(),
    };
    for name in &push.removed_resources {
        held.remove(name);
    }
    for r in push.resources {
        let meta = r.metadata.unwrap_or_default();
        let body = r
            .body
            .ok_or_else(|| format!("{}: resource without a body", meta.name))?;
        let spec = api::mcp::decode(c, &body).map_err(|e| format!("{}: {e}", meta.name))?;
        let (namespace, name) = match meta.name.split_once('/') {
            Some((ns, n)) => (ns.to_string(), n.to_string()),
            None if c.namespaced => {
                return Err(format!(
                    "{}: a {} needs a namespace/name",
                    meta.name, c.kind
                ));
            }
            None => (String::new(), meta.name.clone()),
        };
        let mut metadata = serde_json::json!({"name": name});
        if !namespace.is_empty() {
            metadata["namespace"] = Json::from(namespace.clone());
        }
        if !meta.labels.is_empty() {
            metadata["labels"] = serde_json::to_value(&meta.labels).unwrap_or_default();
        }
        if !meta.annotations.is_empty() {
            metadata["annotations"] = serde_json::to_value(&meta.annotations).unwrap_or_default();
        }
        if !meta.version.is_empty() {
            metadata["resourceVersion"] = Json::from(meta.version.clone());
        }
        let document = serde_json::json!({
            "apiVersion": c.api_version,
            "kind": c.kind,
            "metadata": metadata,
            "spec": spec,
        });
        held.insert(
            meta.name.clone(),
            Arc::new(Object {
                collection: c,
                namespace,
                name,
                version: meta.version,
                document,
            }),
        );
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::mcp::v1alpha1::{Metadata, Resource};

    fn vs() -> &'static Collection {
        api::mcp::collection("istio/networking/v1alpha3/virtualservices").unwrap()
    }

    fn resource(name: &str, subset: &str) -> Resource {
        let spec = serde_json::json!({"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r", "subset": subset}}]}]});
        Resource {
            metadata: Some(Metadata {
                name: name.into(),
                version: subset.into(),
                ..Default::default()
            }),
            body: Some(api::mcp::encode(vs(), &spec).unwrap()),
        }
    }

    fn push(resources: Vec<Resource>, removed: &[&str], incremental: bool) -> Resources {
        Resources {
            collection: vs().name.into(),
            resources,
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            incremental,
            ..Default::default()
        }
    }

    #[test]
    fn full_pushes_replace_and_incremental_ones_amend() {
        let first = apply(
            vs(),
            None,
            push(
                vec![resource("default/a", "v1"), resource("default/b", "v1")],
                &[],
                false,
            ),
        )
        .unwrap();
        assert_eq!(first.len(), 2);
        let a = &first["default/a"];
        assert_eq!(
            (a.namespace.as_str(), a.name.as_str(), a.version.as_str()),
            ("default", "a", "v1")
        );
        assert_eq!(
            a.document["spec"]["http"][0]["route"][0]["destination"]["subset"],
            "v1"
        );
        assert_eq!(a.document["kind"], "VirtualService");
        let amended = apply(
            vs(),
            Some(&first),
            push(vec![resource("default/a", "v2")], &["default/b"], true),
        )
        .unwrap();
        assert_eq!(amended.keys().collect::<Vec<_>>(), ["default/a"]);
        assert_eq!(amended["default/a"].version, "v2");
        let replaced = apply(
            vs(),
            Some(&first),
            push(vec![resource("default/c", "v1")], &[], false),
        )
        .unwrap();
        assert_eq!(replaced.keys().collect::<Vec<_>>(), ["default/c"]);
    }

    #[test]
    fn a_push_that_does_not_decode_is_refused_whole() {
        let mut bad = resource("default/b", "v1");
        bad.body.as_mut().unwrap().value = vec![0xff, 0xff, 0xff];
        let e = apply(
            vs(),
            None,
            push(vec![resource("default/a", "v1"), bad], &[], false),
        )
        .unwrap_err();
        assert!(e.starts_with("default/b: "), "{e}");
        let mut wrong = resource("default/c", "v1");
        wrong.body.as_mut().unwrap().type_url =
            "type.googleapis.com/istio.networking.v1alpha3.Gateway".into();
        let e = apply(vs(), None, push(vec![wrong], &[], false)).unwrap_err();
        assert!(
            e.contains("expected type.googleapis.com/istio.networking.v1alpha3.VirtualService"),
            "{e}"
        );
        let unnamed = Resource {
            metadata: Some(Metadata {
                name: "a".into(),
                ..Default::default()
            }),
            ..resource("x", "v1")
        };
        let e = apply(vs(), None, push(vec![unnamed], &[], false)).unwrap_err();
        assert!(e.contains("needs a namespace/name"), "{e}");
    }
}
