//! Mixer's requests as its servers read them: each attribute set left as
//! the bytes it arrived in, for `mixer`'s in-place decoder, and
//! `istio.mixer.v1.Mixer` served over them. On the wire these are exactly
//! Istio's `CheckRequest` and `ReportRequest` (an embedded message and a
//! `bytes` field are framed alike); clients build the generated
//! [`crate::mixer`] types.

use std::collections::HashMap;

use bytes::Bytes;

use crate::mixer::check_request::QuotaParams;

/// `istio.mixer.v1.CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    /// A `CompressedAttributes` message.
    #[prost(bytes = "bytes", tag = "1")]
    pub attributes: Bytes,
    #[prost(uint32, tag = "2")]
    pub global_word_count: u32,
    #[prost(string, tag = "3")]
    pub deduplication_id: String,
    #[prost(map = "string, message", tag = "4")]
    pub quotas: HashMap<String, QuotaParams>,
}

/// `istio.mixer.v1.ReportRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReportRequest {
    /// `CompressedAttributes` messages.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub attributes: Vec<Bytes>,
    #[prost(string, repeated, tag = "2")]
    pub default_words: Vec<String>,
    #[prost(uint32, tag = "3")]
    pub global_word_count: u32,
    #[prost(
        enumeration = "crate::mixer::report_request::RepeatedAttributesSemantics",
        tag = "4"
    )]
    pub repeated_attributes_semantics: i32,
}

include!(concat!(env!("OUT_DIR"), "/istio.mixer.v1.Mixer.rs"));

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::mixer::{self, CompressedAttributes};

    #[test]
    fn istio_requests_read_with_their_attributes_as_bytes() {
        let attributes = CompressedAttributes {
            words: vec!["/reviews/1".into()],
            ..Default::default()
        };
        let check = mixer::CheckRequest {
            attributes: Some(attributes.clone()),
            global_word_count: 222,
            deduplication_id: "id-1".into(),
            quotas: [(
                "requestcount".to_string(),
                QuotaParams {
                    amount: 2,
                    best_effort: true,
                },
            )]
            .into(),
        };
        let read = CheckRequest::decode(check.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read.attributes, attributes.encode_to_vec());
        assert_eq!(read.global_word_count, 222);
        assert_eq!(read.deduplication_id, "id-1");
        assert_eq!(read.quotas, check.quotas);

        let report = mixer::ReportRequest {
            attributes: vec![attributes.clone(), CompressedAttributes::default()],
            default_words: vec!["GET".into()],
            global_word_count: 200,
            repeated_attributes_semantics: 1,
        };
        let read = ReportRequest::decode(report.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read.attributes.len(), 2);
        assert_eq!(read.attributes[0], attributes.encode_to_vec());
        assert!(read.attributes[1].is_empty());
        assert_eq!(read.default_words, ["GET"]);
        assert_eq!(
            (read.global_word_count, read.repeated_attributes_semantics),
            (200, 1)
        );
    }
}
