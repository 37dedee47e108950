//! Keeping the CA current: the self-signed root loaded or made at start and
//! rolled on schedule, a plugged-in CA re-read when its files change, and
//! loud warnings before the signing root expires.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::authority::Authority;
use crate::authority::keys::Algorithm;
use crate::authority::plugged::Files;
use crate::authority::selfsigned::{self, Step, Stored};
use crate::secrets::{CA_ROOT, CA_SECRET, Secret, SecretStore};

pub struct RootKeeper {
    pub store: Arc<dyn SecretStore>,
    pub namespace: String,
    pub trust_domain: String,
    pub ttl: Duration,
    pub grace_percent: u32,
    pub algorithm: Algorithm,
}

impl RootKeeper {
    async fn save(&self, stored: &Stored) -> anyhow::Result<()> {
        self.store
            .put(&Secret {
                namespace: self.namespace.clone(),
                name: CA_SECRET.to_string(),
                kind: CA_ROOT.to_string(),
                annotations: BTreeMap::new(),
                data: stored.to_data(),
            })
            .await?;
        Ok(())
    }

    /// Reads istio-ca-secret, or makes the root and writes it.
    pub async fn start(&self) -> anyhow::Result<Authority> {
        let stored = match self.store.get(&self.namespace, CA_SECRET).await? {
            Some(secret) => {
                let stored = Stored::from_data(&secret.data)?;
                tracing::info!(secret = %format!("{}/{CA_SECRET}", self.namespace), "self-signed root loaded");
                stored
            }
            None => {
                let (key, cert) = selfsigned::create(&self.trust_domain, self.ttl, self.algorithm)?;
                let stored = Stored::new(&key, cert);
                self.save(&stored).await?;
                tracing::info!(secret = %format!("{}/{CA_SECRET}", self.namespace), ttl = ?self.ttl, "self-signed root created");
                stored
            }
        };
        let stored = self.roll(stored).await?;
        Ok(Authority::new(stored.ca(&self.trust_domain)?))
    }

    /// Takes every step the roll calls for now, saving each before use.
    async fn roll(&self, mut stored: Stored) -> anyhow::Result<Stored> {
        // Bounded: a roll has at most three steps.
        for _ in 0..4 {
            let now = OffsetDateTime::now_utc();
            let step = selfsigned::plan(&stored, now, self.grace_percent)?;
            if step == Step::Keep {
                break;
            }
            stored = selfsigned::apply(
                &stored,
                step,
                &self.trust_domain,
                self.ttl,
                self.algorithm,
                now,
            )?;
            self.save(&stored).await?;
            tracing::warn!(?step, "self-signed root roll");
        }
        Ok(stored)
    }

    /// Checks the roll every `interval` until `shutdown`; the Secret is
    /// re-read each time, so a root rolled by another replica is taken up.
    pub async fn run(self, authority: Authority, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let result = async {
                let secret = self
                    .store
                    .get(&self.namespace, CA_SECRET)
                    .await?
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}/{CA_SECRET} is gone; keeping the root in memory",
                            self.namespace
                        )
                    })?;
                let before = Stored::from_data(&secret.data)?;
                let after = self.roll(before.clone()).await?;
                let ca = after.ca(&self.trust_domain)?;
                if ca.bundle() != authority.current().bundle() || after != before {
                    authority.replace(ca);
                    tracing::info!("CA updated from istio-ca-secret");
                }
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::error!("root check failed: {e:#}");
            }
        }
    }
}

/// Re-reads a plugged-in CA when any of its files changes; a broken set of
/// files keeps the CA in force.
pub async fn watch_plugged(
    files: Files,
    trust_domain: String,
    authority: Authority,
    shutdown: CancellationToken,
) {
    let dirs: Vec<PathBuf> = files.dirs();
    let watches = dirs.into_iter().map(|dir| {
        let files = files.clone();
        let trust_domain = trust_domain.clone();
        let authority = authority.clone();
        let shutdown = shutdown.clone();
        async move {
            let watched = dir.clone();
            let result = mesh::dir::on_changes(&dir, shutdown, || {
                let files = files.clone();
                let trust_domain = trust_domain.clone();
                let authority = authority.clone();
                async move {
                    match files.load(&trust_domain) {
                        Ok(ca) if ca.bundle() != authority.current().bundle() || ca.signer_not_after() != authority.current().signer_not_after() => {
                            tracing::warn!("plugged-in CA files changed; signing with the new CA");
                            authority.replace(ca);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!("plugged-in CA files unusable, keeping the CA in force: {e}"),
                    }
                }
            })
            .await;
            if let Err(e) = result {
                tracing::error!(dir = %watched.display(), "cannot watch the plugged-in CA files: {e}");
            }
        }
    });
    futures::future::join_all(watches).await;
}

/// Warns every hour once the signing root has less than 30 days left (and
/// says so at start), so an expiring root is never a surprise.
pub async fn warn_before_expiry(authority: Authority, shutdown: CancellationToken) {
    loop {
        let left = authority.current().signer_not_after() - OffsetDateTime::now_utc();
        if left < time::Duration::days(30) {
            tracing::warn!(
                seconds_left = left.whole_seconds(),
                "the signing root expires soon"
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
