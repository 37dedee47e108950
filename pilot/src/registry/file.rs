//! The File registry (`--registries File`): the Kubernetes objects found in
//! `--configDir` stand for the cluster. The directory itself is read and watched
//! by [`crate::config::dir`], which hands each Kubernetes object to
//! [`add_object`]; this adapter republishes the cluster part.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use api::config::{ConfigError, OtherDocument};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use serde::de::DeserializeOwned;

use super::state::{PodInfo, key};
use super::{ClusterState, ServiceRegistry};
use crate::config::dir::{DirSnapshot, project};

pub struct FileRegistry {
    dir: watch::Receiver<Option<Arc<DirSnapshot>>>,
}

impl FileRegistry {
    pub fn new(dir: watch::Receiver<Option<Arc<DirSnapshot>>>) -> FileRegistry {
        FileRegistry { dir }
    }
}

impl ServiceRegistry for FileRegistry {
    fn name(&self) -> &'static str {
        "File"
    }

    fn run(
        self: Box<Self>,
        out: watch::Sender<Option<Arc<ClusterState>>>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        project(self.dir, out, |s| s.cluster.clone(), shutdown).boxed()
    }
}

/// Which object of the cluster state a document stands for: its kind and key.
pub struct ObjectId {
    kind: String,
    key: String,
}

impl ObjectId {
    pub fn of(doc: &OtherDocument) -> ObjectId {
        let text = |pointer| doc.value.pointer(pointer).and_then(|v| v.as_str());
        let name = text("/metadata/name").unwrap_or_default();
        let key = if doc.kind == "Node" {
            name.to_string()
        } else {
            format!(
                "{}/{name}",
                text("/metadata/namespace").unwrap_or("default")
            )
        };
        ObjectId {
            kind: doc.kind.clone(),
            key,
        }
    }

    /// Puts `previous`'s version of the object back: a bad edit of a
    /// Service or Endpoints keeps the last good one, as for Istio kinds.
    pub fn keep(&self, cluster: &mut ClusterState, previous: &ClusterState) {
        fn copy<V: Clone>(
            to: &mut imbl::OrdMap<String, V>,
            from: &imbl::OrdMap<String, V>,
            key: &str,
        ) {
            if let Some(v) = from.get(key) {
                to.insert(key.to_string(), v.clone());
            }
        }
        match self.kind.as_str() {
            "Service" => copy(&mut cluster.services, &previous.services, &self.key),
            "Endpoints" => copy(&mut cluster.endpoints, &previous.endpoints, &self.key),
            "Pod" => copy(&mut cluster.pods, &previous.pods, &self.key),
            "Node" => copy(&mut cluster.nodes, &previous.nodes, &self.key),
            _ => {}
        }
    }
}

/// Adds one Kubernetes object of the directory to the cluster state, or says
/// which field of which object is wrong.
pub fn add_object(cluster: &mut ClusterState, doc: OtherDocument) -> Result<(), ConfigError> {
    let object = format!(
        "{} {}",
        doc.kind,
        doc.value
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or("(unnamed)")
    );
    fn typed<T: DeserializeOwned>(doc: &OtherDocument, object: &str) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(&doc.value).map_err(|e| ConfigError {
            object: object.to_string(),
            field: e.path().to_string(),
            message: e.into_inner().to_string(),
        })
    }
    match (doc.api_version.as_str(), doc.kind.as_str()) {
        ("v1", "Service") => {
            let s: Service = typed(&doc, &object)?;
            let ports = s.spec.iter().flat_map(|s| s.ports.iter().flatten());
            for (i, p) in ports.enumerate() {
                check_port(&object, &format!("spec.ports[{i}].port"), p.port)?;
            }
            cluster.services.insert(key(&s.metadata), s);
        }
        ("v1", "Endpoints") => {
            let e: Endpoints = typed(&doc, &object)?;
            for (i, subset) in e.subsets.iter().flatten().enumerate() {
                for (j, p) in subset.ports.iter().flatten().enumerate() {
                    check_port(&object, &format!("subsets[{i}].ports[{j}].port"), p.port)?;
                }
            }
            cluster.endpoints.insert(key(&e.metadata), e);
        }
        ("v1", "Pod") => {
            let p: Pod = typed(&doc, &object)?;
            cluster.pods.insert(key(&p.metadata), PodInfo::from(&p));
        }
        ("v1", "Node") => {
            let n: Node = typed(&doc, &object)?;
            cluster
                .nodes
                .insert(n.metadata.name.clone().unwrap_or_default(), n);
        }
        // Read by other components (Citadel, the injector), not Pilot.
        ("v1", "ServiceAccount" | "Namespace" | "ConfigMap" | "Secret") => {}
        (api_version, kind) => {
            return Err(ConfigError {
                object,
                field: "apiVersion".into(),
                message: format!("{api_version} {kind} is not a kind Pilot reads"),
            });
        }
    }
    Ok(())
}

fn check_port(object: &str, field: &str, port: i32) -> Result<(), ConfigError> {
    if (1..=65535).contains(&port) {
        return Ok(());
    }
    Err(ConfigError {
        object: object.to_string(),
        field: field.to_string(),
        message: format!("port {port} is not in 1..65535"),
    })
}
