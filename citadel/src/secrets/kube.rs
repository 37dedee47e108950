//! Secrets and ServiceAccounts on Kubernetes, through kube-rs: [`KubeStore`]
//! keeps Citadel's Secrets as API objects, and [`watch_accounts`] follows
//! the cluster's ServiceAccounts and namespace labels.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret as KubeSecret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Accounts, Secret, SecretStore, StoreError};
use crate::identity::Identity;

/// Citadel's name among the API server's field managers: it owns the
/// fields it applies and nothing else, so labels or owner references others
/// put on its Secrets survive a rotation.
const FIELD_MANAGER: &str = "citadel";

/// Secrets per LIST page, so that a cluster with thousands of
/// ServiceAccounts is not answered in one response the API server must
/// build in memory.
const PAGE: u32 = 500;

/// Events taken in one go before a snapshot is built: a relist or a burst of
/// namespace creations becomes one publish, and shutdown is still heard.
const BATCH: usize = 1024;

pub struct KubeStore {
    client: Client,
}

impl KubeStore {
    pub fn new(client: Client) -> KubeStore {
        KubeStore { client }
    }

    fn api(&self, namespace: &str) -> Api<KubeSecret> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

#[async_trait::async_trait]
impl SecretStore for KubeStore {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Secret>, StoreError> {
        let found = self
            .api(namespace)
            .get_opt(name)
            .await
            .map_err(|e| StoreError::new(namespace, name, api_error(&e)))?;
        Ok(found.map(from_kube))
    }

    async fn list(&self, kind: &str) -> Result<Vec<Secret>, StoreError> {
        let api: Api<KubeSecret> = Api::all(self.client.clone());
        let selector = format!("type={}", escape_selector_value(kind));
        let mut params = ListParams::default().fields(&selector).limit(PAGE);
        let mut secrets = Vec::new();
        loop {
            let page = api.list(&params).await.map_err(|e| {
                let message = format!("listing Secrets of type {kind}: {}", api_error(&e));
                StoreError::new("*", "*", message)
            })?;
            secrets.extend(page.items.into_iter().map(from_kube));
            match page.metadata.continue_ {
                Some(next) if !next.is_empty() => params = params.continue_token(&next),
                _ => return Ok(secrets),
            }
        }
    }

    async fn put(&self, secret: &Secret) -> Result<(), StoreError> {
        // Server-side apply creates and updates in one round trip, with no
        // window between a failed create and a replace for anyone to race.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api(&secret.namespace)
            .patch(&secret.name, &params, &Patch::Apply(to_kube(secret)))
            .await
            .map_err(|e| StoreError::new(&secret.namespace, &secret.name, api_error(&e)))?;
        Ok(())
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        match self
            .api(namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(e) => Err(StoreError::new(namespace, name, api_error(&e))),
        }
    }
}

fn from_kube(secret: KubeSecret) -> Secret {
    let data = secret.data.unwrap_or_default();
    Secret {
        namespace: secret.metadata.namespace.unwrap_or_default(),
        name: secret.metadata.name.unwrap_or_default(),
        // The API server fills in Opaque when a Secret is created without a
        // type; only a hand-written object could lack it.
        kind: secret.type_.unwrap_or_else(|| "Opaque".into()),
        annotations: secret.metadata.annotations.unwrap_or_default(),
        data: data.into_iter().map(|(k, v)| (k, v.0)).collect(),
    }
}

fn to_kube(secret: &Secret) -> KubeSecret {
    let data: BTreeMap<String, ByteString> = secret
        .data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone())))
        .collect();
    KubeSecret {
        metadata: ObjectMeta {
            namespace: Some(secret.namespace.clone()),
            name: Some(secret.name.clone()),
            // Left out when empty: applying none gives up the ones applied
            // before, as a replace would.
            annotations: (!secret.annotations.is_empty()).then(|| secret.annotations.clone()),
            ..Default::default()
        },
        type_: Some(secret.kind.clone()),
        data: Some(data),
        ..Default::default()
    }
}

/// A field selector's value escapes the characters that would end it.
fn escape_selector_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The API server's own words for a refusal (they name the user, verb and
/// resource), or the transport's error.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                "no message"
            } else {
                status.message.as_str()
            };
            format!("{message} (HTTP {} {})", status.code, status.reason)
        }
        other => other.to_string(),
    }
}

/// Follows every ServiceAccount and Namespace and publishes an [`Accounts`]
/// snapshot whenever either changes what it holds. The first is published
/// once both kinds have listed; a relist after a lost watch replaces a
/// kind's objects in one step, so no snapshot shows a cluster half listed.
/// Watch errors are logged and retried with backoff; this returns when
/// `shutdown` is cancelled.
pub async fn watch_accounts(
    client: Client,
    out: watch::Sender<Arc<Accounts>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (service_accounts, sa_writer) = reflector::store::<ServiceAccount>();
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    // Each event is tagged with its kind's place in `listed`.
    let events = futures::stream::select(
        follow(Api::all(client.clone()), sa_writer).map(|e| (0, e)),
        follow(Api::all(client), ns_writer).map(|e| (1, e)),
    );
    let mut events = pin!(events);
    let mut listed = [false, false];
    let mut published = false;
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = events.next() => next,
        };
        let mut changed = false;
        let mut next = first;
        let mut taken = 0;
        loop {
            let Some((kind, step)) = next else {
                anyhow::bail!("the ServiceAccount and Namespace watches ended");
            };
            match step {
                Step::Listed => {
                    listed[kind] = true;
                    changed = true;
                }
                Step::Changed => changed = true,
                Step::Nothing => {}
            }
            taken += 1;
            if taken == BATCH {
                break;
            }
            match events.next().now_or_never() {
                Some(more) => next = more,
                None => break,
            }
        }
        if !changed || !listed.iter().all(|l| *l) {
            continue;
        }
        let snapshot = snapshot(&service_accounts, &namespaces);
        if published && **out.borrow() == snapshot {
            continue;
        }
        if !published {
            tracing::info!(
                service_accounts = snapshot.service_accounts.len(),
                namespaces = snapshot.namespaces.len(),
                "ServiceAccounts and Namespaces listed"
            );
            published = true;
        }
        out.send_replace(Arc::new(snapshot));
    }
}

/// What one watch event means for the snapshot.
enum Step {
    /// A (re)list completed: the kind's store now holds exactly what was listed.
    Listed,
    Changed,
    /// A list in progress, or an error already logged and being retried.
    Nothing,
}

/// A reflector over every object of kind `K`: the store is written before
/// the event is passed on, so a snapshot built on [`Step::Changed`] holds it.
fn follow<K>(api: Api<K>, writer: reflector::store::Writer<K>) -> impl Stream<Item = Step> + Send
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        // Only names and labels are read; managed fields are most of an object.
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer)
        .map(|event| match event {
            Ok(Event::InitDone) => Step::Listed,
            Ok(Event::Apply(_) | Event::Delete(_)) => Step::Changed,
            Ok(Event::Init | Event::InitApply(_)) => Step::Nothing,
            Err(e) => {
                tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                Step::Nothing
            }
        })
}

fn snapshot(service_accounts: &Store<ServiceAccount>, namespaces: &Store<Namespace>) -> Accounts {
    Accounts {
        service_accounts: service_accounts
            .state()
            .iter()
            .filter_map(|sa| Some(Identity::new(sa.namespace()?, sa.name_any())))
            .collect(),
        namespaces: namespaces
            .state()
            .iter()
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selector_values_are_escaped() {
        assert_eq!(
            escape_selector_value("istio.io/key-and-cert"),
            "istio.io/key-and-cert"
        );
        assert_eq!(escape_selector_value(r"a=b,c\d"), r"a\=b\,c\\d");
    }

    #[test]
    fn secrets_convert_both_ways() {
        let secret = Secret {
            namespace: "default".into(),
            name: "istio.bookinfo-ratings".into(),
            kind: super::super::KEY_AND_CERT.into(),
            annotations: [(
                super::super::SERVICE_ACCOUNT_ANNOTATION.to_string(),
                "bookinfo-ratings".to_string(),
            )]
            .into(),
            data: [("key.pem".to_string(), b"\x00\xffkey".to_vec())].into(),
        };
        assert_eq!(from_kube(to_kube(&secret)), secret);
        let bare = Secret {
            annotations: BTreeMap::new(),
            ..secret
        };
        assert_eq!(to_kube(&bare).metadata.annotations, None);
    }
}
