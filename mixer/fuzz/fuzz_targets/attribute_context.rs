//! Any bytes as Envoy's ext_authz `CheckRequest`: its `AttributeContext`
//! read in place against the standard vocabulary without a panic, whatever
//! the framing, texts and values. A bag that reads holds only declared
//! attributes, and its headers under lower-case keys.

#![no_main]

use std::sync::LazyLock;

use api::authz_wire::CheckRequest;
use libfuzzer_sys::fuzz_target;
use mixer::attribute::attribute_context::bag;
use mixer::attribute::{Value, Vocabulary};
use prost::Message;

static VOCAB: LazyLock<Vocabulary> = LazyLock::new(Vocabulary::standard);

fuzz_target!(|data: &[u8]| {
    let Ok(request) = CheckRequest::decode(data) else {
        return;
    };
    let Ok((bag, _)) = bag(&request.attributes, &VOCAB) else {
        return;
    };
    for (name, _) in bag.iter() {
        assert!(VOCAB.declaration(name).is_some(), "`{name}` is not declared");
    }
    if let Some(Value::StringMap(headers)) = bag.get("request.headers") {
        for key in headers.keys() {
            assert_eq!(*key, key.to_ascii_lowercase(), "a header key kept its case");
        }
    }
});
