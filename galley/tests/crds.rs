//! `deploy/crds/istio.yaml` is what `galley::crds::render` makes, and every
//! CRD in it parses as Kubernetes reads it. `UPDATE_GOLDENS=1` rewrites it.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;

#[test]
fn the_shipped_crds_are_the_rendered_ones() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/istio.yaml");
    let rendered = galley::crds::render();
    if std::env::var_os("UPDATE_GOLDENS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).expect("deploy/crds/istio.yaml");
    assert!(
        shipped == rendered,
        "{} is stale: run with UPDATE_GOLDENS=1",
        path.display()
    );
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&shipped) {
        let crd = CustomResourceDefinition::deserialize(doc).expect("a CRD");
        names.push(crd.metadata.name.unwrap());
    }
    assert_eq!(names.len(), api::mcp::COLLECTIONS.len());
    for name in [
        "virtualservices.networking.istio.io",
        "meshpolicies.authentication.istio.io",
        "clusterrbacconfigs.rbac.istio.io",
        "rules.config.istio.io",
        "deniers.config.istio.io",
        "authorizationpolicies.security.istio.io",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing");
    }
}
