//! A lean gRPC client for unary calls, straight on `h2`.
//!
//! tonic's `Channel` puts every call through a tower buffer task and hyper's
//! client before h2; driving one core of mixer-policy at half its load took
//! most of the load tool's own core that way, and the tool's queueing then
//! showed in the latency it measured. Here a call is an HTTP/2 stream opened
//! on a shared connection, one DATA frame of an already encoded message, and
//! the answer read back with its trailers.

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use mesh::unary::frame;
use prost::Message;
use tokio::net::TcpStream;

/// One HTTP/2 connection to a gRPC server; clones share it.
#[derive(Clone)]
pub struct Unary {
    send: SendRequest<Bytes>,
    authority: String,
}

/// Flow-control windows the tool opens to the server's answers.
const WINDOW: u32 = 1 << 20;

impl Unary {
    /// Connects to `addr` (host:port) with Nagle's algorithm off; the
    /// connection is driven by a task of the current runtime.
    pub async fn connect(addr: &str) -> anyhow::Result<Unary> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        // h2 sends a connection away (ENHANCE_YOUR_CALM) once the small
        // DATA frames it holds unread pass a budget, by default about 128 of
        // them. Every answer is one small frame, and an open loop whose tool
        // falls behind during a stall holds more than that: answers it asked
        // for, not a flood.
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .data_frame_budget(4 * WINDOW as usize)
            .handshake(tcp)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("HTTP/2 connection to the server ended: {e}");
            }
        });
        Ok(Unary {
            send,
            authority: addr.to_string(),
        })
    }

    /// Calls `path` (`/package.Service/Method`) with `request` and decodes
    /// the answer; a non-zero `grpc-status` is an error naming it.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        path: &str,
        request: &Req,
    ) -> Result<Resp, String> {
        let body = frame(request);
        let head = http::Request::post(format!("http://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| e.to_string())?;
        let mut send = self.send.clone().ready().await.map_err(|e| e.to_string())?;
        let (answer, mut stream) = send.send_request(head, false).map_err(|e| e.to_string())?;
        stream.send_data(body, true).map_err(|e| e.to_string())?;
        let answer = answer.await.map_err(|e| e.to_string())?;
        if answer.status() != http::StatusCode::OK {
            return Err(format!("HTTP status {}", answer.status()));
        }
        // A failed call may come as headers alone (trailers-only).
        let mut status = grpc_status(answer.headers());
        let mut body = answer.into_body();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        if let Some(trailers) = body.trailers().await.map_err(|e| e.to_string())? {
            status = status.or_else(|| grpc_status(&trailers));
        }
        match status {
            Some((0, _)) => {}
            Some((code, message)) => return Err(format!("gRPC status {code}: {message}")),
            None => return Err("no grpc-status in the answer".into()),
        }
        if data.len() < 5 {
            return Err(format!("an answer of {} bytes", data.len()));
        }
        Resp::decode(&data[5..]).map_err(|e| e.to_string())
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<(i32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((code, message))
}
