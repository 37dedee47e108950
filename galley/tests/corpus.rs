//! Mixer's kinds as Galley validates them (Pilot's kinds have their corpus
//! in `api/tests/corpus`): every valid file passes, and every invalid file
//! fails with exactly the errors its `# error:` lines state, in order.

use std::path::{Path, PathBuf};

use galley::validate::validate_files;

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> (String, String) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    (name, std::fs::read_to_string(path).unwrap())
}

#[test]
fn valid_mixer_config_passes_together() {
    let texts: Vec<_> = files("valid").iter().map(|p| read(p)).collect();
    let report = validate_files(&texts);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert!(report.valid >= 19, "{}", report.valid);
}

#[test]
fn invalid_mixer_config_fails_with_the_stated_errors() {
    let mut failures = Vec::new();
    for path in files("invalid") {
        let (name, text) = read(&path);
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# error: "))
            .collect();
        assert!(!expected.is_empty(), "{name}: no `# error:` line");
        let actual: Vec<String> = validate_files(&[(name.clone(), text.clone())])
            .errors
            .iter()
            .map(ToString::to_string)
            .collect();
        if actual != expected {
            failures.push(format!(
                "{name}:\n  expected {expected:#?}\n  actual   {actual:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
