//! Every valid object of the corpus survives MCP: encoded as Istio's own
//! protobuf message and decoded again, it reads exactly as the YAML did.
//! This is what a sink (Pilot, Mixer) sees against what Galley validated.

use std::path::Path;

use api::config::{Document, parse_value};
use galley::validate::{Checked, check_text};

fn corpus(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

fn round_trip(name: &str, text: &str) -> usize {
    let mut n = 0;
    for checked in check_text(name, text) {
        let resource = match checked {
            Checked::Valid(r) => r,
            Checked::Invalid { errors, .. } => panic!("{name}: {errors:?}"),
            Checked::Workload(_) | Checked::Other => continue,
        };
        let label = resource.label();
        let body = api::mcp::encode(resource.collection, &resource.spec)
            .unwrap_or_else(|e| panic!("{label}: encode: {e}"));
        let spec = api::mcp::decode(resource.collection, &body)
            .unwrap_or_else(|e| panic!("{label}: decode: {e}"));
        match &resource.typed {
            Some(typed) => {
                let mut doc = serde_json::json!({
                    "apiVersion": resource.collection.api_version,
                    "kind": resource.collection.kind,
                    "metadata": {"name": resource.name, "namespace": resource.namespace},
                    "spec": spec,
                });
                if typed.meta.labels.is_empty() && typed.meta.annotations.is_empty() {
                } else {
                    doc["metadata"]["labels"] = serde_json::to_value(&typed.meta.labels).unwrap();
                    doc["metadata"]["annotations"] =
                        serde_json::to_value(&typed.meta.annotations).unwrap();
                }
                let value = serde_yaml::to_value(&doc).unwrap();
                let Ok(Document::Config(back)) = parse_value(value, &label) else {
                    panic!("{label}: the decoded spec does not parse: {spec:#}")
                };
                if back.spec != typed.spec {
                    // Proto3 does not tell an enum at its zero value from an
                    // absent one (`mode: PASSTHROUGH` from no mode): such
                    // differences must vanish on the wire, and nothing else.
                    let wire = |spec: &api::config::Spec| {
                        let json = serde_json::to_value(spec).unwrap();
                        let body = api::mcp::encode(resource.collection, &json)
                            .unwrap_or_else(|e| panic!("{label}: re-encode {json:#}: {e}"));
                        api::mcp::decode(resource.collection, &body).unwrap()
                    };
                    assert_eq!(
                        wire(&back.spec),
                        wire(&typed.spec),
                        "{label}: decoded {spec:#}"
                    );
                    assert_eq!(wire(&back.spec), spec, "{label}");
                }
            }
            None => {
                // Mixer reads its specs as JSON: the decoded one must equal the written one.
                let mut written = resource.spec.clone();
                if written.is_null() {
                    written = serde_json::json!({});
                }
                assert_eq!(spec, written, "{label}");
            }
        }
        n += 1;
    }
    n
}

#[test]
fn pilot_kinds_read_the_same_after_mcp() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/tests/corpus/valid");
    let n: usize = corpus(&dir)
        .iter()
        .map(|(name, text)| round_trip(name, text))
        .sum();
    assert!(n >= 20, "only {n} objects in the corpus");
}

#[test]
fn mixer_kinds_read_the_same_after_mcp() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/valid");
    let n: usize = corpus(&dir)
        .iter()
        .map(|(name, text)| round_trip(name, text))
        .sum();
    assert!(n >= 8, "only {n} objects in the corpus");
}
