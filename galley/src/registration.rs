//! The ValidatingWebhookConfiguration Galley keeps registered, from
//! `--validation-webhook-config-file`: its `caBundle` set from
//! `--caCertFile`, owned by the deployment namespace (so it goes when the
//! install goes, and never outlives Galley to block config), and re-applied
//! whenever either file changes.
//!
//! Until the CA is known the webhooks are registered with `failurePolicy:
//! Ignore`: a webhook the API server cannot verify would otherwise refuse
//! every Istio object.

use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio_util::sync::CancellationToken;

const FIELD_MANAGER: &str = "galley";

/// The configuration to register: the file's, with `ca_bundle` in every
/// webhook and `owner` as its owner.
pub fn render(
    text: &str,
    ca_bundle: Option<&[u8]>,
    owner: Option<OwnerReference>,
) -> Result<ValidatingWebhookConfiguration, String> {
    let mut config: ValidatingWebhookConfiguration =
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    if config
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        return Err("metadata.name: required".into());
    }
    let webhooks = config.webhooks.get_or_insert_default();
    if webhooks.is_empty() {
        return Err("webhooks: at least one webhook is required".into());
    }
    for webhook in webhooks.iter_mut() {
        match ca_bundle {
            Some(ca) => webhook.client_config.ca_bundle = Some(ByteString(ca.to_vec())),
            None => webhook.failure_policy = Some("Ignore".into()),
        }
    }
    if let Some(owner) = owner {
        config.metadata.owner_references = Some(vec![owner]);
    }
    Ok(config)
}

/// Registers `config` (server-side apply: Galley owns the fields it sets).
pub async fn apply(
    client: &kube::Client,
    config: &ValidatingWebhookConfiguration,
) -> Result<(), kube::Error> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let name = config.metadata.name.clone().unwrap_or_default();
    let mut config = config.clone();
    config.metadata.managed_fields = None;
    config.metadata.resource_version = None;
    let body = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": config.metadata,
        "webhooks": config.webhooks,
    });
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}

/// Removes the registration (`--enable-validation=false`).
pub async fn remove(client: &kube::Client, text: &str) -> Result<(), String> {
    let config = render(text, None, None)?;
    let name = config.metadata.name.unwrap_or_default();
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    match api.delete(&name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

async fn owner(client: &kube::Client, namespace: &str) -> Option<OwnerReference> {
    let ns = Api::<Namespace>::all(client.clone()).get(namespace).await;
    match ns {
        Ok(ns) => Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: namespace.to_string(),
            uid: ns.metadata.uid.unwrap_or_default(),
            ..Default::default()
        }),
        Err(e) => {
            tracing::warn!(%namespace, "the webhook configuration gets no owner: {e}");
            None
        }
    }
}

/// Registers the configuration once the webhook serves its certificate
/// (`serving`), then again whenever the file or the CA changes, until
/// `shutdown`: a webhook registered before it can answer would refuse
/// every object. Without a Kubernetes API server (local mode) there is
/// nothing to register with, which is said once.
pub async fn keep_registered(
    file: PathBuf,
    ca_file: PathBuf,
    namespace: String,
    serving: std::sync::Arc<mesh::webhook::Reloading>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    while !serving.loaded() {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
    }
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(file = %file.display(), "no Kubernetes API server; the webhook configuration is not registered: {e}");
            return Ok(());
        }
    };
    let owner = owner(&client, &namespace).await;
    let register = || async {
        if let Err(e) = register_once(&client, &file, &ca_file, owner.clone()).await {
            tracing::error!(file = %file.display(), "webhook configuration not registered: {e}");
        }
    };
    let mut dirs = vec![
        mesh::webhook::parent(&file),
        mesh::webhook::parent(&ca_file),
    ];
    dirs.dedup();
    let watches = dirs.into_iter().map(|dir| {
        let shutdown = shutdown.clone();
        async move {
            if let Err(e) = mesh::dir::on_changes(&dir, shutdown, register).await {
                tracing::error!(dir = %dir.display(), "cannot watch; the webhook configuration is not kept current: {e}");
            }
        }
    });
    futures::future::join_all(watches).await;
    Ok(())
}

async fn register_once(
    client: &kube::Client,
    file: &Path,
    ca_file: &Path,
    owner: Option<OwnerReference>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let ca = std::fs::read(ca_file).ok().filter(|ca| !ca.is_empty());
    if ca.is_none() {
        tracing::warn!(ca = %ca_file.display(), "no CA yet: webhooks registered with failurePolicy Ignore");
    }
    let config = render(&text, ca.as_deref(), owner)?;
    apply(client, &config).await.map_err(|e| e.to_string())?;
    tracing::info!(name = ?config.metadata.name, ca = ca.is_some(), "webhook configuration registered");
    Ok(())
}
