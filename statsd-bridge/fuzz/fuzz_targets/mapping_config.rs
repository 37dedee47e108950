//! Any text as a mapping config: refused with an error or accepted, never a
//! panic; an accepted config resolves names of every type without one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use statsd_bridge::line::MetricType;
use statsd_bridge::mapping::{self, Resolution};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mapper) = mapping::from_yaml(text, "fuzz") else {
        return;
    };
    for name in ["a.b.c", "envoy.cluster.x.upstream_rq_200", "", "a", "a..b", "9.x-y"] {
        for t in [MetricType::Counter, MetricType::Gauge, MetricType::Observer] {
            if let Resolution::Map { name, .. } = mapper.resolve(name, t) {
                assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name:?}");
            }
        }
    }
});
