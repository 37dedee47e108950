//! Any body POSTed to either webhook: an answer or a 400 reason, never a
//! panic. Mixer objects are judged with a served config of Mixer's kinds.

#![no_main]

use std::sync::OnceLock;

use galley::metrics::Metrics;
use galley::snapshot::Snapshot;
use galley::webhook::{Endpoint, review};
use libfuzzer_sys::fuzz_target;

const SERVED: &str = "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: denyall, namespace: istio-system}\nspec: {compiledAdapter: denier}\n---\napiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: denyrequest, namespace: istio-system}\nspec: {compiledTemplate: checknothing}\n";

fuzz_target!(|data: &[u8]| {
    static STATE: OnceLock<(Snapshot, Metrics)> = OnceLock::new();
    let (served, metrics) = STATE.get_or_init(|| {
        let checked = galley::validate::check_text("served.yaml", SERVED);
        (galley::source::assemble(checked, &Snapshot::default()), Metrics::new())
    });
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let endpoint = if first % 2 == 0 { Endpoint::Pilot } else { Endpoint::Mixer };
    let _ = review(endpoint, served, metrics, body);
});
