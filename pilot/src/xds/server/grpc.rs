//! ADS over gRPC, written against `http` directly for the response side.
//!
//! tonic's generated server encodes every message into a per-stream buffer that
//! keeps the capacity of the largest message it ever held, a megabyte or more
//! per proxy for a large mesh's CDS. Here each response is framed on the fly:
//! the few bytes of protobuf framing are written fresh, and every sizeable
//! resource is handed to HTTP/2 as the same reference-counted [`Bytes`] the push
//! context marshalled once, so a push to a thousand proxies copies no resource
//! and no stream keeps a buffer between pushes. Requests are decoded with
//! tonic's own streaming decoder.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use api::xds::{DiscoveryRequest, DiscoveryResponse};
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codec::{Codec, Streaming};
use tonic::server::NamedService;
use tonic::{Code, Status};

use crate::xds::server::DiscoveryServer;

const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Requests carry no resources; 4 MiB is gRPC's usual limit.
const MAX_REQUEST: usize = 4 << 20;
/// Resources at least this large are sent by reference; smaller ones are copied
/// into chunks, since every chunk costs HTTP/2 a frame and queue entry.
const SHARE_AT: usize = 16 * 1024;
const CHUNK: usize = 32 * 1024;

#[derive(Clone)]
pub struct AdsService {
    server: DiscoveryServer,
}

impl AdsService {
    pub fn new(server: DiscoveryServer) -> AdsService {
        AdsService { server }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl tower_service::Service<Request<Body>> for AdsService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let server = self.server.clone();
        Box::pin(async move {
            let response = match req.uri().path() {
                SOTW => {
                    let peer = req
                        .extensions()
                        .get::<tonic::transport::server::TcpConnectInfo>()
                        .and_then(|i| i.remote_addr())
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    let mut codec = tonic_prost::ProstCodec::<DiscoveryResponse, DiscoveryRequest>::default();
                    let requests = Streaming::new_request(codec.decoder(), req.into_body(), None, Some(MAX_REQUEST));
                    let responses = server.open_stream(peer, requests);
                    let mut response = Response::new(Body::new(ResponseBody::new(responses)));
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                    response
                }
                DELTA => Status::unimplemented(
                    "delta xDS is not served yet; configure the proxy for state-of-the-world ADS (api_type GRPC)",
                )
                .into_http(),
                other => Status::unimplemented(format!("unknown method {other}")).into_http(),
            };
            Ok(response)
        })
    }
}

/// The response stream: gRPC-framed responses, then the status in trailers.
struct ResponseBody {
    rx: mpsc::Receiver<Result<DiscoveryResponse, Status>>,
    current: Option<Framer>,
    done: bool,
}

impl ResponseBody {
    fn new(rx: mpsc::Receiver<Result<DiscoveryResponse, Status>>) -> ResponseBody {
        ResponseBody {
            rx,
            current: None,
            done: false,
        }
    }

    fn trailers(status: &Status) -> HeaderMap {
        let mut trailers = HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            trailers.insert("grpc-status", HeaderValue::from(Code::Internal as i32));
        }
        trailers
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if let Some(framer) = self.current.as_mut() {
                match framer.next_chunk() {
                    Some(chunk) => return Poll::Ready(Some(Ok(Frame::data(chunk)))),
                    None => self.current = None,
                }
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(response))) => self.current = Some(Framer::new(response)),
                Poll::Ready(Some(Err(status))) => {
                    self.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(Self::trailers(&status)))));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(Self::trailers(&Status::ok(""))))));
                }
            }
        }
    }
}

/// One response as the chunks of gRPC framing that go to HTTP/2.
pub fn frame(response: DiscoveryResponse) -> impl Iterator<Item = Bytes> {
    let mut framer = Framer::new(response);
    std::iter::from_fn(move || framer.next_chunk())
}

fn string_field_len(tag: u32, s: &str) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
}

fn put_string(buf: &mut BytesMut, tag: u32, s: &str) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(s.len() as u64, buf);
    buf.put_slice(s.as_bytes());
}

/// Writes one gRPC message (5-byte prefix, then the protobuf
/// `DiscoveryResponse`) a chunk at a time, as HTTP/2 asks for more: small
/// resources are copied into chunks of about [`CHUNK`] bytes, large ones are
/// sent as the marshalled bytes themselves. Only what HTTP/2 has accepted and
/// not yet written is ever buffered for a stream.
struct Framer {
    response: DiscoveryResponse,
    next: usize,
    /// A large resource to send by reference right after the current chunk.
    shared: Option<Bytes>,
}

impl Framer {
    fn new(response: DiscoveryResponse) -> Framer {
        Framer {
            response,
            next: 0,
            shared: None,
        }
    }

    fn any_len(&self, value: &Bytes) -> usize {
        string_field_len(1, &self.response.type_url)
            + prost::encoding::key_len(2)
            + encoded_len_varint(value.len() as u64)
            + value.len()
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(shared) = self.shared.take() {
            return Some(shared);
        }
        let r = &self.response;
        if self.next > r.resources.len() {
            return None;
        }
        let mut buf = BytesMut::with_capacity(CHUNK + 256);
        if self.next == 0 {
            let mut len = string_field_len(1, &r.version_info)
                + string_field_len(4, &r.type_url)
                + string_field_len(5, &r.nonce);
            for any in &r.resources {
                let l = self.any_len(&any.value);
                len += prost::encoding::key_len(2) + encoded_len_varint(l as u64) + l;
            }
            buf.put_u8(0);
            buf.put_u32(len as u32);
            put_string(&mut buf, 1, &r.version_info);
            put_string(&mut buf, 4, &r.type_url);
            put_string(&mut buf, 5, &r.nonce);
        }
        while self.next < r.resources.len() && buf.len() < CHUNK {
            let value = &r.resources[self.next].value;
            self.next += 1;
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(self.any_len(value) as u64, &mut buf);
            put_string(&mut buf, 1, &r.type_url);
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(value.len() as u64, &mut buf);
            if value.len() >= SHARE_AT {
                self.shared = Some(value.clone());
                break;
            }
            buf.put_slice(value);
        }
        if self.next == r.resources.len() && self.shared.is_none() {
            self.next += 1;
        }
        (!buf.is_empty()).then(|| buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use api::xds::Any;
    use prost::Message;

    use super::*;

    #[test]
    fn framing_matches_prost_encoding() {
        let response = DiscoveryResponse {
            version_info: "v1".into(),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            nonce: "7-3".into(),
            resources: [10usize, 600, 3, 50_000, 0, 40_000, 20_000]
                .iter()
                .map(|n| Any {
                    type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                    value: Bytes::from(vec![7u8; *n]),
                })
                .collect(),
        };
        let mut framer = Framer::new(response.clone());
        let wire: Vec<u8> = std::iter::from_fn(|| framer.next_chunk())
            .flat_map(|c| c.to_vec())
            .collect();
        assert_eq!(wire[0], 0, "uncompressed");
        let len = u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize;
        assert_eq!(len, wire.len() - 5);
        let decoded = DiscoveryResponse::decode(&wire[5..]).unwrap();
        assert_eq!(decoded, response);
    }

    #[test]
    fn large_resources_are_shared_not_copied() {
        let body = Bytes::from(vec![1u8; 40_000]);
        let response = DiscoveryResponse {
            resources: vec![Any {
                type_url: "t".into(),
                value: body.clone(),
            }],
            ..Default::default()
        };
        let mut framer = Framer::new(response);
        let chunks: Vec<Bytes> = std::iter::from_fn(|| framer.next_chunk()).collect();
        assert!(
            chunks.iter().any(|c| c.as_ptr() == body.as_ptr()),
            "the marshalled bytes themselves are sent"
        );
    }
}
