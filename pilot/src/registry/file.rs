//! The File registry (`--registries File`): the Kubernetes objects found in
//! `--configDir` stand for the cluster. The directory itself is read and watched
//! by [`crate::config::dir`]; this adapter republishes its cluster part.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{ClusterState, ServiceRegistry};
use crate::config::dir::DirSnapshot;

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
        let mut dir = self.dir;
        async move {
            loop {
                let cluster = dir.borrow_and_update().as_ref().map(|s| s.cluster.clone());
                if let Some(cluster) = cluster {
                    out.send_if_modified(|cur| {
                        let changed = cur.as_ref() != Some(&cluster);
                        if changed {
                            *cur = Some(cluster);
                        }
                        changed
                    });
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    r = dir.changed() => if r.is_err() { return Ok(()) },
                }
            }
        }
        .boxed()
    }
}
