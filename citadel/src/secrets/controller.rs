//! Keeps an `istio.<sa>` Secret for every ServiceAccount of a managed
//! namespace: written when missing, re-issued inside its grace period or
//! when the trust bundle or trust domain changed, removed with its
//! ServiceAccount (or when its namespace opts out).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    Accounts, CERT_CHAIN, KEY, KEY_AND_CERT, ROOT_CERT, SERVICE_ACCOUNT_ANNOTATION, Secret,
    SecretStore,
};
use crate::authority::keys::Algorithm;
use crate::authority::{Authority, Ca};
use crate::identity::Identity;
use crate::ledger::{Entry, Ledger};
use crate::metrics::{Metrics, SecretLabels};

pub struct Settings {
    /// Where Citadel itself lives: matched against `ca.istio.io/env`.
    pub storage_namespace: String,
    /// `CITADEL_ENABLE_NAMESPACES_BY_DEFAULT`.
    pub enabled_by_default: bool,
    pub ttl: Duration,
    /// Re-issue once less than this share of the lifetime is left...
    pub grace_ratio: f64,
    /// ...or less than this.
    pub min_grace: Duration,
    pub algorithm: Algorithm,
    pub pkcs8: bool,
    /// Extra DNS SANs for some ServiceAccounts (the injector's, Galley's).
    pub dns_names: BTreeMap<Identity, Vec<String>>,
    /// How often every Secret is looked at even when nothing changed.
    pub check_interval: Duration,
}

pub struct Controller {
    pub store: Arc<dyn SecretStore>,
    pub authority: Authority,
    pub settings: Settings,
    pub metrics: Metrics,
    pub ledger: Ledger,
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub issued: usize,
    pub kept: usize,
    pub deleted: usize,
    pub failed: usize,
    /// The soonest a kept Secret enters its grace period.
    pub next_due: Option<Duration>,
}

impl Controller {
    pub async fn reconcile(&self, accounts: &Accounts) -> Pass {
        let mut pass = Pass::default();
        let ca = self.authority.current();
        let existing = match self.store.list(KEY_AND_CERT).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!("cannot list Secrets: {e}");
                self.metrics.secret_errors.inc();
                pass.failed += 1;
                return pass;
            }
        };
        let mut existing: BTreeMap<(String, String), Secret> = existing
            .into_iter()
            .map(|s| ((s.namespace.clone(), s.name.clone()), s))
            .collect();
        let s = &self.settings;
        let now = OffsetDateTime::now_utc();
        for identity in &accounts.service_accounts {
            if !accounts.managed(
                &identity.namespace,
                &s.storage_namespace,
                s.enabled_by_default,
            ) {
                continue;
            }
            let key = (identity.namespace.clone(), identity.secret_name());
            let current = existing.remove(&key);
            if let Some(due) = current
                .as_ref()
                .and_then(|c| self.still_good(&ca, identity, c, now))
            {
                pass.kept += 1;
                pass.next_due = Some(pass.next_due.map_or(due, |d| d.min(due)));
                continue;
            }
            match self.issue(&ca, identity).await {
                Ok(()) => pass.issued += 1,
                Err(e) => {
                    tracing::warn!(secret = %format!("{}/{}", key.0, key.1), "cannot write Secret: {e}");
                    self.metrics.secret_errors.inc();
                    pass.failed += 1;
                }
            }
        }
        // What is left has no ServiceAccount, or is in a namespace not ours.
        for ((namespace, name), _) in existing {
            match self.store.delete(&namespace, &name).await {
                Ok(()) => {
                    tracing::info!(secret = %format!("{namespace}/{name}"), "Secret removed: its ServiceAccount is gone");
                    self.metrics.secrets_deleted.inc();
                    self.metrics.workload_expiry.remove(&SecretLabels {
                        namespace,
                        secret: name,
                    });
                    pass.deleted += 1;
                }
                Err(e) => {
                    tracing::warn!("cannot remove Secret: {e}");
                    self.metrics.secret_errors.inc();
                    pass.failed += 1;
                }
            }
        }
        pass
    }

    /// How long until `secret` needs re-issuing, or None if it does now.
    fn still_good(
        &self,
        ca: &Ca,
        identity: &Identity,
        secret: &Secret,
        now: OffsetDateTime,
    ) -> Option<Duration> {
        if secret.data.get(ROOT_CERT).map(Vec::as_slice) != Some(ca.bundle().as_bytes()) {
            return None;
        }
        secret.data.get(KEY)?;
        let chain = secret.data.get(CERT_CHAIN)?;
        let leaf = CertificateDer::pem_slice_iter(chain).next()?.ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let spiffe = identity.spiffe(&ca.trust_domain);
        let names = cert.subject_alternative_name().ok()??;
        let named = names
            .value
            .general_names
            .iter()
            .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(u) if *u == spiffe));
        if !named {
            return None;
        }
        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        let lifetime: Duration = (not_after - not_before).try_into().ok()?;
        let grace = lifetime
            .mul_f64(self.settings.grace_ratio)
            .max(self.settings.min_grace);
        let left: Duration = (not_after - now).try_into().ok()?;
        self.metrics
            .workload_expiry
            .get_or_create(&SecretLabels {
                namespace: secret.namespace.clone(),
                secret: secret.name.clone(),
            })
            .set(not_after.unix_timestamp());
        left.checked_sub(grace).filter(|d| !d.is_zero())
    }

    async fn issue(&self, ca: &Ca, identity: &Identity) -> anyhow::Result<()> {
        let s = &self.settings;
        let dns = s
            .dns_names
            .get(identity)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (key, issued) = ca.issue(identity, dns, s.ttl, s.algorithm, s.pkcs8)?;
        let secret = Secret {
            namespace: identity.namespace.clone(),
            name: identity.secret_name(),
            kind: KEY_AND_CERT.to_string(),
            annotations: BTreeMap::from([(
                SERVICE_ACCOUNT_ANNOTATION.to_string(),
                identity.service_account.clone(),
            )]),
            data: BTreeMap::from([
                (
                    CERT_CHAIN.to_string(),
                    issued.chain[..issued.chain.len() - 1].concat().into_bytes(),
                ),
                (KEY.to_string(), key.pem.into_bytes()),
                (ROOT_CERT.to_string(), ca.bundle().as_bytes().to_vec()),
            ]),
        };
        self.store.put(&secret).await?;
        self.metrics.secrets_created.inc();
        self.metrics
            .workload_expiry
            .get_or_create(&SecretLabels {
                namespace: secret.namespace.clone(),
                secret: secret.name.clone(),
            })
            .set(issued.not_after.unix_timestamp());
        self.ledger.record(Entry {
            serial: issued.serial,
            identity: identity.spiffe(&ca.trust_domain),
            not_before: issued.not_before,
            not_after: issued.not_after,
            requester: "secret-controller".into(),
        });
        tracing::debug!(secret = %format!("{}/{}", secret.namespace, secret.name), "Secret written");
        Ok(())
    }

    /// Reconciles on every change of the accounts or of the CA, and when a
    /// Secret's grace period begins (at least every `check_interval`),
    /// until `shutdown`. Nothing happens before the first accounts arrive:
    /// an empty cluster must not look like one whose accounts all went.
    pub async fn run(
        self,
        mut accounts: watch::Receiver<Arc<Accounts>>,
        shutdown: CancellationToken,
    ) {
        let mut ca = self.authority.subscribe();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = accounts.changed() => if r.is_err() { return },
        }
        loop {
            let snapshot = accounts.borrow_and_update().clone();
            ca.mark_unchanged();
            let started = std::time::Instant::now();
            let pass = self.reconcile(&snapshot).await;
            if pass.issued + pass.deleted + pass.failed > 0 {
                tracing::info!(
                    issued = pass.issued,
                    kept = pass.kept,
                    deleted = pass.deleted,
                    failed = pass.failed,
                    took_ms = started.elapsed().as_millis() as u64,
                    "Secrets reconciled"
                );
            }
            let mut wait = pass
                .next_due
                .unwrap_or(self.settings.check_interval)
                .min(self.settings.check_interval);
            if pass.failed > 0 {
                wait = wait.min(Duration::from_secs(5));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = accounts.changed() => if r.is_err() { return },
                _ = ca.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::authority::selfsigned;
    use crate::secrets::OVERRIDE_LABEL;
    use crate::secrets::dir::DirStore;

    async fn controller(dir: &std::path::Path, ttl: Duration) -> Controller {
        let (key, cert) =
            selfsigned::create("cluster.local", Duration::from_secs(3600), Algorithm::Ecdsa)
                .unwrap();
        let ca = selfsigned::Stored::new(&key, cert)
            .ca("cluster.local")
            .unwrap();
        let registry = mesh::metrics::Metrics::default();
        let metrics = Metrics::new(&registry);
        let url = format!("sqlite://{}", dir.join("ledger.db").display());
        let (ledger, _) = Ledger::open(&url, metrics.clone()).await.unwrap();
        Controller {
            store: Arc::new(DirStore::new(dir.join("secrets"))),
            authority: Authority::new(ca),
            settings: Settings {
                storage_namespace: "istio-system".into(),
                enabled_by_default: true,
                ttl,
                grace_ratio: 0.5,
                min_grace: Duration::from_secs(1),
                algorithm: Algorithm::Ecdsa,
                pkcs8: false,
                dns_names: BTreeMap::from([(
                    Identity::new("istio-system", "istio-sidecar-injector-service-account"),
                    vec!["istio-sidecar-injector.istio-system.svc".to_string()],
                )]),
                check_interval: Duration::from_secs(60),
            },
            metrics,
            ledger,
        }
    }

    fn accounts(ids: &[(&str, &str)]) -> Accounts {
        Accounts {
            service_accounts: ids
                .iter()
                .map(|(n, s)| Identity::new(*n, *s))
                .collect::<BTreeSet<_>>(),
            namespaces: BTreeMap::from([(
                "legacy".to_string(),
                BTreeMap::from([(OVERRIDE_LABEL.to_string(), "false".to_string())]),
            )]),
        }
    }

    #[tokio::test]
    async fn secrets_follow_service_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path(), Duration::from_secs(3000)).await;
        let all = accounts(&[
            ("default", "bookinfo-reviews"),
            ("default", "default"),
            ("legacy", "old"),
            ("istio-system", "istio-sidecar-injector-service-account"),
        ]);
        let pass = c.reconcile(&all).await;
        assert_eq!(
            (pass.issued, pass.kept, pass.deleted, pass.failed),
            (3, 0, 0, 0)
        );
        let reviews = c
            .store
            .get("default", "istio.bookinfo-reviews")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            reviews.data[ROOT_CERT],
            c.authority.current().bundle().as_bytes()
        );
        assert!(
            c.store.get("legacy", "istio.old").await.unwrap().is_none(),
            "opted out"
        );
        let due = pass.next_due;
        assert_eq!(due, None);

        let again = c.reconcile(&all).await;
        assert_eq!((again.issued, again.kept), (0, 3), "nothing to do");
        let due = again.next_due.unwrap();
        assert!(
            due > Duration::from_secs(1400) && due <= Duration::from_secs(1500),
            "{due:?}"
        );

        let fewer = accounts(&[
            ("default", "default"),
            ("istio-system", "istio-sidecar-injector-service-account"),
        ]);
        let pass = c.reconcile(&fewer).await;
        assert_eq!((pass.issued, pass.kept, pass.deleted), (0, 2, 1));
        assert!(
            c.store
                .get("default", "istio.bookinfo-reviews")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(c.metrics.secrets_deleted.get(), 1);
    }

    #[tokio::test]
    async fn a_new_bundle_or_a_tampered_secret_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path(), Duration::from_secs(3000)).await;
        let one = accounts(&[("default", "a"), ("default", "b")]);
        c.reconcile(&one).await;
        let mut broken = c.store.get("default", "istio.b").await.unwrap().unwrap();
        broken.data.insert(CERT_CHAIN.into(), b"garbage".to_vec());
        c.store.put(&broken).await.unwrap();
        let pass = c.reconcile(&one).await;
        assert_eq!((pass.issued, pass.kept), (1, 1));

        let (key, cert) =
            selfsigned::create("cluster.local", Duration::from_secs(3600), Algorithm::Ecdsa)
                .unwrap();
        c.authority.replace(
            selfsigned::Stored::new(&key, cert)
                .ca("cluster.local")
                .unwrap(),
        );
        let pass = c.reconcile(&one).await;
        assert_eq!(pass.issued, 2, "every Secret gets the new bundle");
    }

    #[tokio::test]
    async fn certificates_inside_their_grace_period_are_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path(), Duration::from_secs(2)).await;
        let one = accounts(&[("default", "a")]);
        assert_eq!(c.reconcile(&one).await.issued, 1);
        // A 2 s certificate with a 1 s minimum grace: due within a second.
        let pass = c.reconcile(&one).await;
        let due = pass.next_due.unwrap_or_default();
        assert!(
            pass.issued == 1 || due <= Duration::from_secs(1),
            "{pass:?}"
        );
        tokio::time::sleep(due + Duration::from_millis(50)).await;
        assert_eq!(c.reconcile(&one).await.issued, 1);
    }
}
