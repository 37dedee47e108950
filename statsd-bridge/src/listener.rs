//! statsd over UDP (a datagram of lines) and TCP (a stream of lines), into
//! the registry. Buffers are fixed: a datagram fits in 64 KiB by
//! definition, and a TCP line longer than [`MAX_LINE`] is counted and
//! skipped up to its newline, never buffered whole.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::line::ParseError;
use crate::registry::Registry;

/// The registry as the listeners and the web server share it.
pub type Shared = Arc<Mutex<Registry>>;

/// A panic elsewhere must not stop ingestion: the registry's state is
/// consistent between samples, so a poisoned lock is taken as is.
pub fn lock(shared: &Shared) -> MutexGuard<'_, Registry> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Longest TCP line kept.
pub const MAX_LINE: usize = 64 * 1024;

/// Datagrams taken under one hold of the lock when more are already queued:
/// fewer lock round trips under load, a short wait for a scrape at most.
const UDP_BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on UDP {addr} (--statsd.listen-udp): {source}")]
pub struct UdpBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds the UDP socket, with the kernel's receive buffer at `read_buffer`
/// bytes when given (bounded by `net.core.rmem_max`).
pub async fn bind_udp(
    addr: SocketAddr,
    read_buffer: Option<usize>,
) -> Result<UdpSocket, UdpBindError> {
    let fail = |source| UdpBindError { addr, source };
    let socket = UdpSocket::bind(addr).await.map_err(fail)?;
    if let Some(bytes) = read_buffer {
        socket2::SockRef::from(&socket)
            .set_recv_buffer_size(bytes)
            .map_err(fail)?;
    }
    Ok(socket)
}

pub async fn serve_udp(socket: UdpSocket, shared: Shared, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let n = match received {
            Ok((n, _)) => n,
            Err(e) => {
                // ICMP errors from earlier sends and the like; nothing to do
                // but go on, without spinning if they repeat.
                tracing::debug!("UDP receive: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let now = Instant::now();
        let mut registry = lock(&shared);
        registry.stats.udp_packets += 1;
        registry.ingest(&buf[..n], now);
        for _ in 1..UDP_BATCH {
            match socket.try_recv_from(&mut buf) {
                Ok((n, _)) => {
                    registry.stats.udp_packets += 1;
                    registry.ingest(&buf[..n], now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
    }
}

pub async fn serve_tcp(
    listener: TcpListener,
    shared: Shared,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: wait a little rather
                        // than spin on the same error.
                        tracing::warn!("TCP accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        lock(&shared).stats.tcp_connections += 1;
                        connections.spawn(serve_connection(stream, shared.clone(), permit, shutdown.clone()));
                    }
                    Err(_) => {
                        lock(&shared).stats.tcp_connections_refused += 1;
                        drop(stream);
                    }
                }
            }
        }
    }
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    mut stream: TcpStream,
    shared: Shared,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let mut lines = LineBuffer::new(MAX_LINE);
    loop {
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = stream.read(lines.spare()) => r,
        };
        match read {
            Ok(0) => {
                // A last line without its newline still counts.
                if let Some(rest) = lines.finish() {
                    lock(&shared).ingest(rest, Instant::now());
                }
                return;
            }
            Ok(n) => {
                let now = Instant::now();
                let mut registry = lock(&shared);
                lines.push(n, |chunk| match chunk {
                    Chunk::Lines(bytes) => registry.ingest(bytes, now),
                    Chunk::TooLong => {
                        registry.stats.lines += 1;
                        registry.stats.tcp_too_long_lines += 1;
                        registry.stats.parse_error(ParseError::LineTooLong);
                    }
                });
            }
            Err(e) => {
                tracing::debug!("TCP read: {e}");
                lock(&shared).stats.tcp_connection_errors += 1;
                return;
            }
        }
    }
}

/// What a read into a [`LineBuffer`] completed.
#[derive(Debug, PartialEq)]
pub enum Chunk<'a> {
    /// One or more whole lines, newline-separated.
    Lines(&'a [u8]),
    /// A line that filled the buffer; it is skipped up to its newline.
    TooLong,
}

/// A byte stream cut into whole lines in a buffer of fixed size.
pub struct LineBuffer {
    buf: Box<[u8]>,
    filled: usize,
    /// Inside a line already reported too long.
    skipping: bool,
}

impl LineBuffer {
    pub fn new(max_line: usize) -> LineBuffer {
        LineBuffer {
            buf: vec![0; max_line.max(1)].into_boxed_slice(),
            filled: 0,
            skipping: false,
        }
    }

    /// Where the next read goes; never empty.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.filled..]
    }

    /// Takes `n` bytes just read into [`spare`](Self::spare).
    pub fn push(&mut self, n: usize, mut on: impl FnMut(Chunk<'_>)) {
        self.filled = (self.filled + n).min(self.buf.len());
        let data = &self.buf[..self.filled];
        let mut start = 0;
        if self.skipping {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    start = i + 1;
                    self.skipping = false;
                }
                None => {
                    self.filled = 0;
                    return;
                }
            }
        }
        let rest = match memchr::memrchr(b'\n', &data[start..]) {
            Some(i) => {
                let end = start + i;
                if end > start {
                    on(Chunk::Lines(&data[start..end]));
                }
                end + 1
            }
            None => start,
        };
        self.buf.copy_within(rest..self.filled, 0);
        self.filled -= rest;
        if self.filled == self.buf.len() {
            on(Chunk::TooLong);
            self.skipping = true;
            self.filled = 0;
        }
    }

    /// At the end of the stream: an unfinished last line, if any.
    pub fn finish(&mut self) -> Option<&[u8]> {
        (!self.skipping && self.filled > 0).then(|| &self.buf[..self.filled])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in reads of `step` bytes; returns what came out.
    fn feed(max_line: usize, input: &[u8], step: usize) -> (Vec<String>, usize, Option<String>) {
        let mut lines = LineBuffer::new(max_line);
        let mut out = Vec::new();
        let mut too_long = 0;
        let mut rest = input;
        while !rest.is_empty() {
            let spare = lines.spare();
            let n = step.min(spare.len()).min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            lines.push(n, |c| match c {
                Chunk::Lines(b) => {
                    out.extend(String::from_utf8_lossy(b).split('\n').map(str::to_string))
                }
                Chunk::TooLong => too_long += 1,
            });
        }
        let last = lines
            .finish()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        (out, too_long, last)
    }

    #[test]
    fn lines_across_reads() {
        for step in [1, 3, 7, 100] {
            let (lines, too_long, last) = feed(16, b"a:1|c\nb:2|g\n\nc:3|ms\nlast:1|c", step);
            let lines: Vec<_> = lines.into_iter().filter(|l| !l.is_empty()).collect();
            assert_eq!(lines, vec!["a:1|c", "b:2|g", "c:3|ms"], "step {step}");
            assert_eq!(
                (too_long, last.as_deref()),
                (0, Some("last:1|c")),
                "step {step}"
            );
        }
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_kept() {
        for step in [1, 5, 64] {
            let input = b"ok:1|c\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx:1|c\nfine:2|c\n";
            let (lines, too_long, last) = feed(16, input, step);
            let lines: Vec<_> = lines.into_iter().filter(|l| !l.is_empty()).collect();
            assert_eq!(lines, vec!["ok:1|c", "fine:2|c"], "step {step}");
            assert_eq!((too_long, last), (1, None), "step {step}");
        }
        // A stream that ends inside an overlong line leaves nothing behind.
        let (_, too_long, last) = feed(8, b"yyyyyyyyyyyyyyyyyyyy", 4);
        assert_eq!((too_long, last), (1, None));
    }

    #[test]
    fn a_line_exactly_the_buffer_size_is_too_long() {
        // The newline does not fit: there is no telling where the line ends.
        let (lines, too_long, _) = feed(8, b"12345678\nab:1|c\n", 8);
        assert_eq!(too_long, 1);
        assert!(lines.contains(&"ab:1|c".to_string()));
    }
}
