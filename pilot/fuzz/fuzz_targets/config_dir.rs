//! Any bytes as a file of the config directory: parsed, validated and turned
//! into the service model without a panic, whatever the file holds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot::config::dir::snapshot_from_texts;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let snapshot = snapshot_from_texts(&[("fuzz.yaml", text)]);
    let _ = snapshot.cluster.to_model("cluster.local");
});
