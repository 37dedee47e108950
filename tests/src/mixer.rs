//! Mixer config the tests share, as operators write it.

/// A denier (PERMISSION_DENIED, "Not allowed") for requests whose `x-user`
/// header is `blocked`, mesh-wide.
pub const DENY_BLOCKED_USER: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyall, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: Not allowed}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-blocked, namespace: istio-system}
spec:
  match: request.headers["x-user"] == "blocked"
  actions:
  - handler: denyall
    instances: [denyrequest]
"#;
