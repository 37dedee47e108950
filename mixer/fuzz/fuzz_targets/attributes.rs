//! Any bytes as a Mixer `CheckRequest`: its compressed attributes decoded
//! in place against the standard vocabulary without a panic, whatever the
//! framing, indexes, words and values. A bag that decodes is encoded again, carried through
//! protobuf once more, and must decode to the same bag.

#![no_main]

use std::sync::LazyLock;

use api::mixer::CheckRequest;
use libfuzzer_sys::fuzz_target;
use mixer::attribute::compressed::{self, Raw, Words};
use mixer::attribute::{Bag, Value, Vocabulary};
use prost::Message;

static VOCAB: LazyLock<Vocabulary> = LazyLock::new(Vocabulary::standard);

/// Whether `value` can be compared after the round trip: NaN is not equal
/// to itself.
fn comparable(value: &Value) -> bool {
    !matches!(value, Value::Double(d) if d.is_nan())
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = api::mixer_wire::CheckRequest::decode(data) else {
        return;
    };
    let Ok(raw) = Raw::parse(&request.attributes) else {
        return;
    };
    let Ok(words) = Words::new(request.global_word_count, raw.words()) else {
        return;
    };
    let mut bag = Bag::for_vocabulary(&VOCAB);
    if compressed::decode(&raw, &words, &VOCAB, &mut bag).is_err() {
        return;
    }

    // As a client of our own would send it: the whole dictionary known.
    let resent = CheckRequest {
        attributes: Some(compressed::encode(&bag)),
        ..Default::default()
    }
    .encode_to_vec();
    let resent = api::mixer_wire::CheckRequest::decode(resent.as_slice())
        .expect("an encoded request decodes");
    let raw = Raw::parse(&resent.attributes)
        .unwrap_or_else(|e| panic!("the framing of an encoded bag: {e}"));
    let words = Words::new(resent.global_word_count, raw.words())
        .unwrap_or_else(|e| panic!("the words of an encoded bag: {e}"));
    let mut back = Bag::new();
    let stats = compressed::decode(&raw, &words, &VOCAB, &mut back)
        .unwrap_or_else(|e| panic!("an encoded bag does not decode: {e}\nbag: {bag:?}"));
    assert_eq!(
        stats.undeclared, 0,
        "an encoded bag holds only declared attributes"
    );
    assert_eq!(back.len(), bag.len(), "{bag:?}\nbecame {back:?}");
    for (name, value) in bag.iter() {
        let again = back
            .get(name)
            .unwrap_or_else(|| panic!("`{name}` was lost in the round trip"));
        if comparable(value) {
            assert_eq!(again, value, "`{name}` changed in the round trip");
        } else {
            assert_eq!(again.value_type(), value.value_type(), "`{name}`");
        }
    }
});
