//! Workload identities: the SPIFFE ID a ServiceAccount is known by, and the
//! forms it is read from (a token's `sub`, a certificate's URI SAN).

use std::fmt;

/// A ServiceAccount in a namespace: whom a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    pub fn new(namespace: impl Into<String>, service_account: impl Into<String>) -> Identity {
        Identity {
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`, the only SAN a workload
    /// certificate carries.
    pub fn spiffe(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    /// The identity a SPIFFE ID names, if it is in `trust_domain`.
    pub fn from_spiffe(uri: &str, trust_domain: &str) -> Option<Identity> {
        let path = uri
            .strip_prefix("spiffe://")?
            .strip_prefix(trust_domain)?
            .strip_prefix("/ns/")?;
        let (namespace, sa) = path.split_once("/sa/")?;
        valid(namespace, sa).then(|| Identity::new(namespace, sa))
    }

    /// A service-account token's subject: `system:serviceaccount:<ns>:<sa>`.
    pub fn from_token_subject(sub: &str) -> Option<Identity> {
        let (namespace, sa) = sub
            .strip_prefix("system:serviceaccount:")?
            .split_once(':')?;
        valid(namespace, sa).then(|| Identity::new(namespace, sa))
    }

    /// The Secret Citadel keeps this identity's key and certificate in.
    pub fn secret_name(&self) -> String {
        format!("istio.{}", self.service_account)
    }
}

fn valid(namespace: &str, sa: &str) -> bool {
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    part(namespace) && part(sa)
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip_only_in_their_trust_domain() {
        let id = Identity::new("default", "bookinfo-reviews");
        let uri = id.spiffe("cluster.local");
        assert_eq!(uri, "spiffe://cluster.local/ns/default/sa/bookinfo-reviews");
        assert_eq!(Identity::from_spiffe(&uri, "cluster.local"), Some(id));
        assert_eq!(Identity::from_spiffe(&uri, "example.com"), None);
        assert_eq!(
            Identity::from_spiffe("spiffe://cluster.local/ns//sa/x", "cluster.local"),
            None
        );
    }

    #[test]
    fn token_subjects_name_service_accounts() {
        assert_eq!(
            Identity::from_token_subject("system:serviceaccount:shop:cart"),
            Some(Identity::new("shop", "cart"))
        );
        assert_eq!(Identity::from_token_subject("system:node:worker-1"), None);
        assert_eq!(
            Identity::from_token_subject("system:serviceaccount:shop:a:b"),
            None
        );
    }
}
