//! Bytes off an MCP stream: a sink's request to Galley's stream state
//! machine, and a resource body to the codec, as Pilot and Mixer decode
//! what Galley (or any MCP source) pushes. Errors, never a panic.

#![no_main]

use std::sync::OnceLock;

use api::mcp::COLLECTIONS;
use api::mcp::v1alpha1::RequestResources;
use galley::mcp::stream::Stream;
use galley::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;
use prost::Message;

const SERVED: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n";

fuzz_target!(|data: &[u8]| {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    let snapshot = SNAPSHOT.get_or_init(|| {
        let checked = galley::validate::check_text("served.yaml", SERVED);
        galley::source::assemble(checked, &Snapshot::default())
    });
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let collection = &COLLECTIONS[usize::from(*first) % COLLECTIONS.len()];
    let body = prost_types::Any { type_url: collection.type_url(), value: rest.to_vec() };
    let _ = api::mcp::decode(collection, &body);
    if let Ok(request) = RequestResources::decode(rest) {
        let mut stream = Stream::default();
        if let Ok((_, Some(push))) = stream.on_request(request.clone(), snapshot) {
            let mut answer = request;
            answer.response_nonce = push.nonce;
            let _ = stream.on_request(answer, snapshot);
        }
    }
});
