//! Unary gRPC served straight on h2, for mixer-policy's Checks.
//!
//! tonic puts each call through hyper's stream task, axum's router, tower's
//! timeout and error layers and a boxed, streamed body each way: for a Check
//! of 130,000 instructions that was about 20,000 (docs/benchmarks.md). A
//! unary call needs none of it: one request message in, one answer or a
//! status out. Here each HTTP/2 stream is read whole, handed to the service
//! by method path, and answered with headers, one DATA frame and trailers;
//! h2 still does all of HTTP/2 (framing, HPACK, flow control, resets).
//!
//! What tonic's server did and this keeps: `grpc-timeout` is a deadline
//! (DEADLINE_EXCEEDED); a message over 4 MiB is RESOURCE_EXHAUSTED; an
//! unknown method is UNIMPLEMENTED; a compressed message or a `grpc-encoding`
//! other than identity is UNIMPLEMENTED, as nothing is compressed here; a
//! request that is not gRPC gets HTTP 415; `grpc-message` is
//! percent-encoded.

use std::future::Future;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

/// The largest request message taken, as tonic's default.
pub const MAX_MESSAGE: usize = 4 << 20;

/// Streams a client may have open at once on one connection, as hyper's
/// server allowed.
const MAX_STREAMS: u32 = 200;

/// Flow-control windows, as hyper's server opened them: a client may send a
/// megabyte before waiting for the window to reopen.
const WINDOW: u32 = 1 << 20;

/// The most header bytes a request may carry, as hyper allowed.
const MAX_HEADER_LIST: u32 = 16 << 10;

// Known when compiling, so a call never parses them.
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// A service of unary calls.
pub trait Unary: Clone + Send + Sync + 'static {
    /// Answers one call of `method` (`/package.Service/Method`) whose request
    /// message is `message`: the answer framed by [`frame`], or a status.
    fn call(
        &self,
        method: &str,
        message: Bytes,
    ) -> impl Future<Output = Result<Bytes, Status>> + Send;
}

/// `message` as one gRPC message frame: uncompressed, length-prefixed.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    message
        .encode(&mut buf)
        .expect("a buffer sized for the message");
    buf.freeze()
}

/// Decodes a request message, or INVALID_ARGUMENT naming what it should
/// have been.
pub fn decode<M: prost::Message + Default>(message: Bytes, what: &str) -> Result<M, Status> {
    M::decode(message)
        .map_err(|e| Status::invalid_argument(format!("the request is not a valid {what}: {e}")))
}

/// Serves one connection until the peer closes it or `shutdown` is
/// cancelled; then lets the calls in flight finish.
pub async fn serve_connection<S: Unary>(io: TcpStream, service: S, shutdown: CancellationToken) {
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_STREAMS)
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake::<_, Bytes>(io);
    let mut connection = tokio::select! {
        c = handshake => match c {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("HTTP/2 handshake failed: {e}");
                return;
            }
        },
        _ = shutdown.cancelled() => return,
    };
    let mut closing = false;
    loop {
        tokio::select! {
            next = connection.accept() => match next {
                Some(Ok((request, respond))) => {
                    tokio::spawn(answer(service.clone(), request, respond));
                }
                Some(Err(e)) => {
                    tracing::debug!("HTTP/2 connection ended: {e}");
                    break;
                }
                None => break,
            },
            // Streams open go on; the connection ends when they have.
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                connection.graceful_shutdown();
            }
        }
    }
}

async fn answer<S: Unary>(
    service: S,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let (head, body) = request.into_parts();
    if !is_grpc(&head.headers) {
        let refusal = Response::builder()
            .status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .body(())
            .expect("a fixed response");
        let _ = respond.send_response(refusal, true);
        return;
    }
    let outcome = match deadline(&head.headers) {
        Ok(deadline) => {
            let call = async {
                let message = read_message(body, &head.headers).await?;
                service.call(head.uri.path(), message).await
            };
            match deadline {
                Some(d) => tokio::time::timeout(d, call).await.unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded("the call's deadline passed"))
                }),
                None => call.await,
            }
        }
        Err(status) => Err(status),
    };
    match outcome {
        Ok(answer) => {
            let Ok(mut stream) = respond.send_response(grpc_head(), false) else {
                return;
            };
            if stream.send_data(answer, false).is_ok() {
                let _ = stream.send_trailers(status_headers(Code::Ok, ""));
            }
        }
        Err(status) => {
            // Trailers-only: the status in the one HEADERS frame.
            let mut head = grpc_head();
            head.headers_mut()
                .extend(status_headers(status.code(), status.message()));
            let _ = respond.send_response(head, true);
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The call's `grpc-timeout`, if it set one.
fn deadline(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get(GRPC_TIMEOUT) else {
        return Ok(None);
    };
    let bad = || Status::invalid_argument(format!("grpc-timeout {value:?} is not a timeout"));
    let text = value.to_str().map_err(|_| bad())?;
    // At most eight digits and a unit, as gRPC's wire format says.
    if text.len() < 2 || text.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    };
    Ok(Some(d))
}

/// Reads the request's one message, handing flow-control capacity back as
/// it arrives. A message that came in one DATA frame is not copied.
async fn read_message(mut body: RecvStream, headers: &HeaderMap) -> Result<Bytes, Status> {
    if let Some(encoding) = headers.get(GRPC_ENCODING)
        && encoding != "identity"
    {
        return Err(Status::unimplemented(format!(
            "grpc-encoding {encoding:?} is not supported: send messages uncompressed"
        )));
    }
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk =
            chunk.map_err(|e| Status::cancelled(format!("the request stream failed: {e}")))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        let had = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if had + chunk.len() > MAX_MESSAGE + 5 {
            return Err(too_large(had + chunk.len() - 5));
        }
        match first.take() {
            None if joined.is_empty() => first = Some(chunk),
            earlier => {
                if let Some(earlier) = earlier {
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&chunk);
            }
        }
    }
    let mut data = first.unwrap_or_else(|| joined.freeze());
    if data.len() < 5 {
        return Err(Status::invalid_argument(format!(
            "the request holds {} bytes, not a gRPC message",
            data.len()
        )));
    }
    let compressed = data.get_u8();
    let len = data.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::unimplemented(
            "the request message is compressed: send messages uncompressed",
        ));
    }
    if len > MAX_MESSAGE {
        return Err(too_large(len));
    }
    if data.len() != len {
        return Err(Status::invalid_argument(format!(
            "the request's message frame says {len} bytes and {} follow: a unary call takes one message",
            data.len()
        )));
    }
    Ok(data)
}

fn too_large(len: usize) -> Status {
    Status::resource_exhausted(format!(
        "a request message of {len} bytes is over the limit of {MAX_MESSAGE}"
    ))
}

fn grpc_head() -> Response<()> {
    let mut head = Response::new(());
    head.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    head
}

fn status_headers(code: Code, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    let status = match code {
        Code::Ok => HeaderValue::from_static("0"),
        _ => HeaderValue::from(code as i32),
    };
    headers.insert(GRPC_STATUS, status);
    if !message.is_empty()
        && let Ok(v) = HeaderValue::from_str(&percent_encode(message))
    {
        headers.insert(GRPC_MESSAGE, v);
    }
    headers
}

/// gRPC's encoding of `grpc-message`: printable ASCII but `%` as is, every
/// other byte of the UTF-8 as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn timeouts_read_in_every_unit() {
        let cases = [
            ("200m", Duration::from_millis(200)),
            ("1S", Duration::from_secs(1)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("15u", Duration::from_micros(15)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ];
        for (text, want) in cases {
            let h = headers(&[("grpc-timeout", text)]);
            assert_eq!(deadline(&h).unwrap(), Some(want), "{text}");
        }
        assert_eq!(deadline(&HeaderMap::new()).unwrap(), None);
        for bad in ["", "m", "10", "10x", "123456789m", "-1S"] {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_str(bad).unwrap());
            let e = deadline(&h).expect_err(bad);
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains("grpc-timeout"), "{}", e.message());
        }
    }

    #[test]
    fn messages_are_percent_encoded_as_grpc_says() {
        assert_eq!(percent_encode("plain text: ok"), "plain text: ok");
        assert_eq!(percent_encode("50% off"), "50%25 off");
        assert_eq!(percent_encode("naïve\n"), "na%C3%AFve%0A");
    }

    #[test]
    fn only_grpc_content_is_taken() {
        assert!(is_grpc(&headers(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&headers(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        assert!(!is_grpc(&headers(&[("content-type", "application/json")])));
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
