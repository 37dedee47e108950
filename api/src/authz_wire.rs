//! Envoy's ext_authz `Check` as mixer-policy reads it: the request's
//! `AttributeContext` left as the bytes it arrived in, for the server's
//! in-place reader. On the wire this is exactly
//! `envoy.service.auth.v3.CheckRequest` (an embedded message and a `bytes`
//! field are framed alike); clients build `envoy-types`' generated type.

use bytes::Bytes;

/// `envoy.service.auth.v3.CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    /// An `AttributeContext` message.
    #[prost(bytes = "bytes", tag = "1")]
    pub attributes: Bytes,
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest as Sent};
    use prost::Message;

    use super::*;

    #[test]
    fn envoys_request_reads_with_its_attributes_as_bytes() {
        let attributes = AttributeContext {
            context_extensions: [("destination.uid".to_string(), "kubernetes://a".to_string())]
                .into(),
            ..Default::default()
        };
        let sent = Sent {
            attributes: Some(attributes.clone()),
        };
        let read = CheckRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read.attributes, attributes.encode_to_vec());
    }
}
