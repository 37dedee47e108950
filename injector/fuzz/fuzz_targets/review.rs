//! Any body POSTed to the webhook: an answer or a 400 reason, never a panic.

#![no_main]

use std::sync::OnceLock;

use injector::config::Config;
use injector::metrics::Metrics;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static STATE: OnceLock<(Config, Metrics)> = OnceLock::new();
    let (config, metrics) = STATE.get_or_init(|| (Config::builtin(), Metrics::new()));
    let _ = injector::webhook::review(config, metrics, data);
});
