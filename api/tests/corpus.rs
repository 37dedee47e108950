//! The config corpus: every file under `corpus/valid` parses with no error,
//! and every file under `corpus/invalid` holds one object whose leading
//! `# error: ` comment lines are exactly the errors it gets, in order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use trireme_api::config::{ConfigError, Document, Kind, parse_documents_all};

fn corpus(dir: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, text)
        })
        .collect()
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn valid_files_parse_without_error() {
    let mut kinds = BTreeSet::new();
    let mut problems = Vec::new();
    for (path, text) in corpus("valid") {
        for (i, doc) in parse_documents_all(&text).enumerate() {
            match doc {
                Ok(Document::Config(obj)) => {
                    kinds.insert(obj.kind);
                }
                Ok(Document::Other(other)) => problems.push(format!(
                    "{} document {}: {} is not an Istio kind",
                    name(&path),
                    i + 1,
                    other.kind
                )),
                Err(errors) => problems.extend(
                    errors
                        .iter()
                        .map(|e| format!("{} document {}: {e}", name(&path), i + 1)),
                ),
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    let missing: Vec<_> = Kind::ALL.iter().filter(|k| !kinds.contains(k)).collect();
    assert!(missing.is_empty(), "no valid example of {missing:?}");
}

#[test]
fn invalid_files_get_exactly_the_errors_they_list() {
    let files = corpus("invalid");
    assert!(files.len() >= 40, "only {} invalid cases", files.len());
    let mut kinds = BTreeSet::new();
    let mut problems = Vec::new();
    for (path, text) in files {
        let expected: Vec<&str> = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# error: "))
            .collect();
        let docs: Vec<_> = parse_documents_all(&text).collect();
        let got: Vec<String> = match docs.as_slice() {
            [Err(errors)] => errors.iter().map(ConfigError::to_string).collect(),
            [Ok(_)] => Vec::new(),
            _ => {
                problems.push(format!(
                    "{}: holds {} documents, not one",
                    name(&path),
                    docs.len()
                ));
                continue;
            }
        };
        if let Some(kind) = Kind::ALL.into_iter().find(|k| {
            got.first()
                .is_some_and(|e| e.starts_with(&format!("{} ", k.name())))
        }) {
            kinds.insert(kind);
        }
        if expected.is_empty() {
            problems.push(format!("{}: lists no `# error: ` line", name(&path)));
        }
        if got != expected {
            problems.push(format!(
                "{}:\n  expected:\n    {}\n  got:\n    {}",
                name(&path),
                expected.join("\n    "),
                got.join("\n    ")
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    let missing: Vec<_> = Kind::ALL.iter().filter(|k| !kinds.contains(k)).collect();
    assert!(missing.is_empty(), "no invalid example of {missing:?}");
}
