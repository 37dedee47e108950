//! The security kinds: `authentication.istio.io/v1alpha1` (`Policy`,
//! `MeshPolicy`: peer mutual TLS), `security.istio.io/v1beta1`
//! (`AuthorizationPolicy`, as in Istio 1.4), and the deprecated
//! `rbac.istio.io/v1alpha1` kinds, which Trireme validates but does not
//! enforce.
//!
//! What Trireme cannot verify yet (end-user JWT) loads, and fails closed:
//! a `Policy` with `origins` admits no HTTP request on the ports it covers,
//! and an authorization rule that reads JWT identities matches nothing.
//! Refusing the object instead would fall back to a weaker policy.

mod authentication;
mod authorization;
mod rbac;

pub use authentication::*;
pub use authorization::*;
pub use rbac::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, Document, Kind, Spec, parse_documents};

    fn one(text: &str) -> Result<Document, ConfigError> {
        let mut docs: Vec<_> = parse_documents(text).collect();
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    fn authn(text: &str) -> AuthenticationPolicy {
        match one(text) {
            Ok(Document::Config(o)) => match o.spec {
                Spec::Authentication(p) => p,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_mtls_block_is_strict_and_the_mesh_policy_has_no_namespace() {
        let text = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec:\n  peers:\n  - mtls: {}\n";
        let Ok(Document::Config(o)) = one(text) else {
            panic!()
        };
        assert_eq!(
            (o.kind, o.key().as_str()),
            (Kind::MeshPolicy, "MeshPolicy default")
        );
        assert_eq!(authn(text).mtls(), Some(MtlsMode::Strict));
        let bare = text.replace("mtls: {}", "mtls:");
        assert_eq!(authn(&bare).mtls(), Some(MtlsMode::Strict));
        let permissive = text.replace("mtls: {}", "mtls: {mode: PERMISSIVE}");
        assert_eq!(authn(&permissive).mtls(), Some(MtlsMode::Permissive));
        let none = "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: foo}\nspec: {}\n";
        assert_eq!(authn(none).mtls(), None);
    }

    #[test]
    fn end_user_jwt_loads_and_bad_names_are_refused_with_their_field() {
        let jwt = "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: foo}\nspec:\n  peers: [{mtls: {}}]\n  origins:\n  - jwt: {issuer: x}\n";
        let policy = authn(jwt);
        assert!(policy.needs_jwt() && policy.mtls() == Some(MtlsMode::Strict));
        let peer_jwt = jwt.replace("peers: [{mtls: {}}]", "peers: [{jwt: {issuer: x}}]");
        assert_eq!(one(&peer_jwt).unwrap_err().field, "spec.peers[0].jwt");
        let named = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: strict}\nspec: {peers: [{mtls: {}}]}\n";
        assert_eq!(one(named).unwrap_err().field, "metadata.name");
        let typo = "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  targets: [{name: reviews}]\n  peers: [{mtls: {mode: STRICT, allowTLS: true}}]\n";
        let e = one(typo).unwrap_err();
        assert!(e.field.starts_with("spec.peers[0]"), "{e}");
        let wide = "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: all}\nspec: {peers: [{mtls: {}}]}\n";
        assert_eq!(one(wide).unwrap_err().field, "spec.targets");
    }

    const AUTHZ: &str = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: reviews-viewer, namespace: default}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}\n    to:\n    - operation: {methods: [GET], paths: [/reviews*], ports: [\"9080\"]}\n    when:\n    - key: request.headers[version]\n      values: [v1, v2]\n";

    #[test]
    fn an_authorization_policy_parses_and_bad_fields_are_named() {
        let Ok(Document::Config(o)) = one(AUTHZ) else {
            panic!("{:?}", one(AUTHZ))
        };
        let Spec::AuthorizationPolicy(p) = o.spec else {
            panic!()
        };
        assert!(p.rules[0].is_http_only() && !p.rules[0].needs_jwt());
        // End-user JWT loads; its rules match nothing until it is verified.
        let jwt = AUTHZ.replace(
            "principals: [cluster.local/ns/default/sa/bookinfo-productpage]",
            "requestPrincipals: [\"*\"]",
        );
        let Ok(Document::Config(o)) = one(&jwt) else {
            panic!()
        };
        let Spec::AuthorizationPolicy(p) = o.spec else {
            panic!()
        };
        assert!(p.rules[0].needs_jwt());
        for (from, to, field) in [
            (
                "ports: [\"9080\"]",
                "ports: [\"http\"]",
                "spec.rules[0].to[0].operation.ports[0]",
            ),
            (
                "paths: [/reviews*]",
                "paths: [/re*views]",
                "spec.rules[0].to[0].operation.paths[0]",
            ),
            (
                "request.headers[version]",
                "source.pod",
                "spec.rules[0].when[0].key",
            ),
            (
                "principals: [cluster.local/ns/default/sa/bookinfo-productpage]",
                "ipBlocks: [10.0.0.0/33]",
                "spec.rules[0].from[0].source.ipBlocks[0]",
            ),
        ] {
            let e = one(&AUTHZ.replace(from, to)).unwrap_err();
            assert_eq!(e.field, field, "{to}: {e}");
        }
    }
}
