//! The CustomResourceDefinitions of every kind Galley serves, rendered from
//! the collections themselves so the two cannot drift apart;
//! `deploy/crds/istio.yaml` is this text (a test keeps it so).

use std::fmt::Write;

use api::mcp::COLLECTIONS;

use crate::source::kube::api_resource;

/// Every CRD, one YAML document each.
pub fn render() -> String {
    let mut out = String::from(
        "# Istio 1.4's CRDs, as Galley watches them (rendered by galley::crds;\n# do not edit by hand). Specs are validated by Galley's webhook, not by\n# schemas here, so every error names the object and field the same way.\n",
    );
    for c in COLLECTIONS {
        let r = api_resource(c);
        let singular = r.kind.to_lowercase();
        let scope = if c.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        };
        let _ = write!(
            out,
            "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{group}\n  labels: {{app: istio-pilot, chart: istio, heritage: Tiller, release: istio}}\nspec:\n  group: {group}\n  names:\n    kind: {kind}\n    listKind: {kind}List\n    plural: {plural}\n    singular: {singular}\n    categories: [istio-io]\n  scope: {scope}\n  versions:\n  - name: {version}\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n",
            plural = r.plural,
            group = r.group,
            kind = r.kind,
            version = r.version,
        );
    }
    out
}
