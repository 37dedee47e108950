//! gRPC served by threads that each run a current-thread runtime of their
//! own, for services whose every request is a small unary call answered at
//! once (mixer-policy's Check and Envoy's ext_authz), through [`unary`].
//!
//! Why not tokio's multi-thread scheduler, as everywhere else: there, a
//! finished stream wakes its connection's task into the worker's LIFO slot,
//! so the connection runs straight away and writes that one answer with a
//! `writev` of its own, about one system call per Check. On a current-thread
//! runtime the woken connection waits behind the streams already ready, and
//! writes their answers together. mixer-policy answered 30% more Checks per
//! CPU-second this way (docs/benchmarks.md).

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::unary::{self, Unary};

/// Accepts on `listener` and hands the connections in turn to `threads`
/// threads, each serving `service`, until `shutdown` is cancelled; then lets
/// every thread finish its in-flight calls. Accepted sockets have Nagle's
/// algorithm off, so an answer written in two pieces never waits for the
/// peer's delayed ACK (~40 ms).
pub async fn serve_per_thread<S: Unary>(
    name: &str,
    listener: TcpListener,
    threads: usize,
    shutdown: CancellationToken,
    service: S,
) -> anyhow::Result<()> {
    let mut workers = Vec::new();
    let mut finished = Vec::new();
    for i in 0..threads.max(1) {
        let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done, result) = oneshot::channel();
        let (service, shutdown) = (service.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                let _ = done.send(serve_thread(rx, shutdown, service));
            })
            .with_context(|| format!("starting thread {name}-{i}"))?;
        workers.push(tx);
        finished.push(result);
    }
    tracing::debug!(threads = workers.len(), "{name}: serving gRPC");

    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors, say: accepting again at once
                // would spin on the same error.
                tracing::warn!("{name}: accepting a connection failed: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        // A peer gone already: its connection alone is dropped.
        let stream = match stream.set_nodelay(true).and_then(|()| stream.into_std()) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("{name}: dropping a new connection: {e}");
                continue;
            }
        };
        // A thread stops before the senders are dropped only when its
        // server failed: stop them all and report it, rather than close
        // every n-th connection from now on.
        if workers[next % workers.len()].send(stream).is_err() {
            shutdown.cancel();
            break;
        }
        next += 1;
    }
    drop(listener);
    drop(workers);
    let mut first_error = None;
    for result in finished {
        let outcome = result
            .await
            .map_err(|_| anyhow::anyhow!("a {name} thread panicked"))
            .and_then(|r| r);
        if let Err(e) = outcome {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn serve_thread<S: Unary>(
    mut connections: mpsc::UnboundedReceiver<std::net::TcpStream>,
    shutdown: CancellationToken,
    service: S,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a gRPC thread's runtime")?;
    runtime.block_on(async move {
        let mut served = JoinSet::new();
        loop {
            let next = tokio::select! {
                next = connections.recv() => next,
                _ = shutdown.cancelled() => None,
                // Reap finished connections as they go.
                Some(_) = served.join_next(), if !served.is_empty() => continue,
            };
            let Some(stream) = next else { break };
            match tokio::net::TcpStream::from_std(stream) {
                Ok(io) => {
                    served.spawn(unary::serve_connection(
                        io,
                        service.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(e) => tracing::debug!("dropping a new connection: {e}"),
            }
        }
        // Each connection ends once its calls in flight are answered.
        while served.join_next().await.is_some() {}
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use api::google::rpc::Status as RpcStatus;
    use api::mixer::check_response::PreconditionResult;
    use api::mixer::mixer_client::MixerClient;
    use api::mixer::{CheckRequest, CheckResponse};
    use bytes::Bytes;
    use tonic::{Code, Status};

    use super::*;

    /// Answers each Check with the name of the thread that served it, once
    /// the test lets it (so a Check can be held in flight).
    #[derive(Clone)]
    struct ThreadName {
        entered: mpsc::UnboundedSender<()>,
        release: Arc<tokio::sync::Semaphore>,
    }

    impl Unary for ThreadName {
        async fn call(&self, method: &str, message: Bytes) -> Result<Bytes, Status> {
            if method != "/istio.mixer.v1.Mixer/Check" {
                return Err(Status::unimplemented(format!("no method {method} here")));
            }
            let _: CheckRequest = unary::decode(message, "CheckRequest")?;
            let _ = self.entered.send(());
            let _permit = self.release.acquire().await.expect("semaphore open");
            let name = std::thread::current()
                .name()
                .unwrap_or_default()
                .to_string();
            Ok(unary::frame(&CheckResponse {
                precondition: Some(PreconditionResult {
                    status: Some(RpcStatus {
                        code: 0,
                        message: name,
                        details: Vec::new(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }))
        }
    }

    async fn served_by(client: &mut MixerClient<tonic::transport::Channel>) -> String {
        let answer = client
            .check(CheckRequest::default())
            .await
            .expect("Check answered");
        answer
            .into_inner()
            .precondition
            .unwrap()
            .status
            .unwrap()
            .message
    }

    #[tokio::test]
    async fn connections_take_turns_and_in_flight_checks_finish_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (entered, mut checks) = mpsc::unbounded_channel();
        let service = ThreadName {
            entered,
            release: release.clone(),
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_per_thread(
            "test",
            listener,
            2,
            shutdown.clone(),
            service,
        ));
        release.add_permits(1_000);

        let mut clients = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..4 {
            let mut client = MixerClient::connect(url.clone()).await.unwrap();
            threads.push(served_by(&mut client).await);
            clients.push(client);
        }
        // Each connection stays on the thread it was given, in turn.
        assert_eq!(threads, ["test-0", "test-1", "test-0", "test-1"]);
        for (client, thread) in clients.iter_mut().zip(&threads) {
            assert_eq!(&served_by(client).await, thread);
        }
        let all: BTreeSet<_> = threads.into_iter().collect();
        assert_eq!(all.len(), 2);

        // A Check in flight when shutdown begins is still answered.
        release.forget_permits(usize::MAX);
        while checks.try_recv().is_ok() {}
        let mut held = clients.pop().unwrap();
        let in_flight = tokio::spawn(async move { served_by(&mut held).await });
        checks.recv().await.expect("the Check reached the service");
        shutdown.cancel();
        release.add_permits(1);
        assert_eq!(in_flight.await.unwrap(), "test-1");
        server.await.unwrap().expect("served and stopped cleanly");
        assert!(
            MixerClient::connect(url).await.is_err(),
            "no longer accepting"
        );
    }

    /// A server on two threads answering every Check at once.
    async fn started() -> (String, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (entered, _) = mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Semaphore::new(1_000_000));
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_per_thread(
            "test",
            listener,
            2,
            shutdown.clone(),
            ThreadName { entered, release },
        ));
        (addr, shutdown)
    }

    /// One call over a bare HTTP/2 connection: the HTTP status, and the
    /// answer's headers with its trailers.
    async fn raw(
        addr: &str,
        content_type: &str,
        timeout: Option<&str>,
        body: &[u8],
    ) -> (u16, http::HeaderMap) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut head = http::Request::post(format!("http://{addr}/istio.mixer.v1.Mixer/Check"))
            .header("content-type", content_type);
        if let Some(t) = timeout {
            head = head.header("grpc-timeout", t);
        }
        let head = head.body(()).unwrap();
        let mut send = send.ready().await.unwrap();
        let (answer, mut stream) = send.send_request(head, false).unwrap();
        stream
            .send_data(Bytes::copy_from_slice(body), true)
            .unwrap();
        let answer = answer.await.unwrap();
        let status = answer.status().as_u16();
        let mut headers = answer.headers().clone();
        let mut body = answer.into_body();
        while let Some(chunk) = body.data().await {
            chunk.unwrap();
        }
        if let Some(trailers) = body.trailers().await.unwrap() {
            headers.extend(trailers);
        }
        (status, headers)
    }

    fn grpc_status(headers: &http::HeaderMap) -> (i32, String) {
        let code = headers["grpc-status"].to_str().unwrap().parse().unwrap();
        let message = headers
            .get("grpc-message")
            .map(|m| m.to_str().unwrap().to_string())
            .unwrap_or_default();
        (code, message)
    }

    #[tokio::test]
    async fn unknown_methods_and_deadlines_answer_as_grpc_says() {
        let (addr, shutdown) = started().await;
        let mut client = MixerClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let report = client
            .report(api::mixer::ReportRequest::default())
            .await
            .expect_err("no Report here");
        assert_eq!(report.code(), Code::Unimplemented);
        assert!(report.message().contains("/istio.mixer.v1.Mixer/Report"));

        // A Check held past its grpc-timeout (sent by hand: tonic's client
        // would give up on its own at the same moment).
        let (entered, _) = mpsc::unbounded_channel();
        let held = ThreadName {
            entered,
            release: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let held_addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve_per_thread(
            "held",
            listener,
            1,
            shutdown.clone(),
            held,
        ));
        let empty_check = [0u8; 5];
        let (status, headers) =
            raw(&held_addr, "application/grpc", Some("50m"), &empty_check).await;
        assert_eq!(status, 200);
        assert_eq!(grpc_status(&headers).0, Code::DeadlineExceeded as i32);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn malformed_requests_get_a_status_naming_the_fault() {
        let (addr, shutdown) = started().await;
        let framed = |flag: u8, declared: u32, message: &[u8]| {
            let mut b = vec![flag];
            b.extend_from_slice(&declared.to_be_bytes());
            b.extend_from_slice(message);
            b
        };
        let cases: [(&[u8], i32, &str); 5] = [
            (
                &framed(0, 3, b"\xff\xff\xff"),
                3,
                "not a valid CheckRequest",
            ),
            (&framed(1, 0, b""), 12, "compressed"),
            (&framed(0, 10, b"ab"), 3, "says 10 bytes and 2 follow"),
            (&framed(0, 64 << 20, b""), 8, "over the limit"),
            (b"\x00\x00", 3, "holds 2 bytes"),
        ];
        for (body, code, says) in cases {
            let (status, headers) = raw(&addr, "application/grpc", None, body).await;
            assert_eq!(status, 200);
            let (got, message) = grpc_status(&headers);
            assert_eq!(got, code, "{message}");
            assert!(message.contains(says), "{message} should say {says}");
        }
        let (status, _) = raw(&addr, "application/json", None, b"{}").await;
        assert_eq!(status, 415, "not gRPC");

        // The same connection path still answers a good Check.
        let (status, headers) = raw(&addr, "application/grpc", None, &framed(0, 0, b"")).await;
        assert_eq!(status, 200);
        assert_eq!(grpc_status(&headers).0, 0);
        shutdown.cancel();
    }
}
