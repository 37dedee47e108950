//! Envoy's access-log entries (`envoy.data.accesslog.v3`) read in place:
//! texts are borrowed from the message, addresses parsed as they are met,
//! and nothing the mapping does not use is built. Every field that is read
//! is checked; an error names the field.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use api::wire::{Field, Fields, WireError};

/// What is wrong with an entry, and in which field (`request.path`; empty
/// for the entry's own framing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    pub field: &'static str,
    pub problem: Problem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Wire(WireError),
    NotUtf8,
    OutOfRange,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        match self.problem {
            Problem::Wire(e) => write!(f, "{e}"),
            Problem::NotUtf8 => f.write_str("not UTF-8"),
            Problem::OutOfRange => f.write_str("out of range"),
        }
    }
}

type Result<T> = std::result::Result<T, Malformed>;

/// Names the field a wire error was met in.
trait In<T> {
    fn within(self, field: &'static str) -> Result<T>;
}

impl<T> In<T> for std::result::Result<T, WireError> {
    #[inline]
    fn within(self, field: &'static str) -> Result<T> {
        self.map_err(|e| Malformed {
            field,
            problem: Problem::Wire(e),
        })
    }
}

/// `HTTPAccessLogEntry`.
#[derive(Debug, Default)]
pub struct HttpEntry<'a> {
    pub common: Common<'a>,
    pub request: Request<'a>,
    pub response: Option<Response<'a>>,
}

/// `TCPAccessLogEntry`.
#[derive(Debug, Default)]
pub struct TcpEntry<'a> {
    pub common: Common<'a>,
    pub received_bytes: u64,
    pub sent_bytes: u64,
}

/// `AccessLogCommon`: what the mapping reads of it.
#[derive(Debug, Default)]
pub struct Common<'a> {
    pub downstream_remote: Option<Peer>,
    pub downstream_local: Option<Peer>,
    pub upstream_remote: Option<Peer>,
    pub tls: Option<Tls<'a>>,
    /// Seconds and nanoseconds since the epoch, as sent.
    pub start_time: Option<(i64, i32)>,
    pub time_to_last_downstream_tx_byte: Option<Duration>,
    pub duration: Option<Duration>,
    pub upstream_cluster: &'a str,
    pub route_name: &'a str,
    pub stream_id: &'a str,
    /// Bit n set for `ResponseFlags`' field n.
    pub response_flags: u32,
    pub access_log_type: i32,
}

/// A socket address's IP and port (0 when it has none).
pub type Peer = (IpAddr, u32);

/// `TLSProperties`: the first URI SAN of each certificate.
#[derive(Debug, Default)]
pub struct Tls<'a> {
    pub sni: &'a str,
    pub local_uri: Option<&'a str>,
    pub peer_uri: Option<&'a str>,
}

/// `HTTPRequestProperties`.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub method: i32,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub user_agent: &'a str,
    pub referer: &'a str,
    pub request_id: &'a str,
    pub headers_bytes: u64,
    pub body_bytes: u64,
    pub headers: Vec<(&'a str, &'a str)>,
}

/// `HTTPResponseProperties`.
#[derive(Debug, Default)]
pub struct Response<'a> {
    pub code: Option<u32>,
    pub headers_bytes: u64,
    pub body_bytes: u64,
    pub headers: Vec<(&'a str, &'a str)>,
}

impl<'a> HttpEntry<'a> {
    pub fn decode(message: &'a [u8]) -> Result<HttpEntry<'a>> {
        let mut entry = HttpEntry::default();
        for field in Fields::new(message) {
            match field.within("")? {
                (1, f) => entry.common = Common::decode(f.bytes().within("common_properties")?)?,
                (3, f) => entry.request = Request::decode(f.bytes().within("request")?)?,
                (4, f) => entry.response = Some(Response::decode(f.bytes().within("response")?)?),
                _ => {}
            }
        }
        Ok(entry)
    }
}

impl<'a> TcpEntry<'a> {
    pub fn decode(message: &'a [u8]) -> Result<TcpEntry<'a>> {
        let mut entry = TcpEntry::default();
        for field in Fields::new(message) {
            match field.within("")? {
                (1, f) => entry.common = Common::decode(f.bytes().within("common_properties")?)?,
                (2, f) => {
                    const AT: &str = "connection_properties";
                    for field in Fields::new(f.bytes().within(AT)?) {
                        match field.within(AT)? {
                            (1, f) => entry.received_bytes = f.varint().within(AT)?,
                            (2, f) => entry.sent_bytes = f.varint().within(AT)?,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(entry)
    }
}

impl<'a> Common<'a> {
    fn decode(message: &'a [u8]) -> Result<Common<'a>> {
        const AT: &str = "common_properties";
        let mut c = Common::default();
        for field in Fields::new(message) {
            match field.within(AT)? {
                (2, f) => {
                    c.downstream_remote = peer(f, "common_properties.downstream_remote_address")?
                }
                (3, f) => {
                    c.downstream_local = peer(f, "common_properties.downstream_local_address")?
                }
                (4, f) => {
                    c.tls = Some(Tls::decode(
                        f.bytes().within("common_properties.tls_properties")?,
                    )?)
                }
                (5, f) => c.start_time = Some(seconds_nanos(f, "common_properties.start_time")?),
                (12, f) => {
                    c.time_to_last_downstream_tx_byte =
                        duration(f, "common_properties.time_to_last_downstream_tx_byte")?
                }
                (13, f) => {
                    c.upstream_remote = peer(f, "common_properties.upstream_remote_address")?
                }
                (15, f) => c.upstream_cluster = text(f, "common_properties.upstream_cluster")?,
                (16, f) => c.response_flags = flags(f)?,
                (19, f) => c.route_name = text(f, "common_properties.route_name")?,
                (23, f) => c.duration = duration(f, "common_properties.duration")?,
                (26, f) => c.stream_id = text(f, "common_properties.stream_id")?,
                (33, f) => {
                    c.access_log_type =
                        f.varint().within("common_properties.access_log_type")? as i32
                }
                _ => {}
            }
        }
        Ok(c)
    }
}

impl<'a> Tls<'a> {
    fn decode(message: &'a [u8]) -> Result<Tls<'a>> {
        const AT: &str = "common_properties.tls_properties";
        let mut tls = Tls::default();
        for field in Fields::new(message) {
            match field.within(AT)? {
                (3, f) => tls.sni = text(f, "common_properties.tls_properties.tls_sni_hostname")?,
                (4, f) => {
                    const CERT: &str =
                        "common_properties.tls_properties.local_certificate_properties";
                    tls.local_uri = uri_san(f.bytes().within(CERT)?, CERT)?;
                }
                (5, f) => {
                    const CERT: &str =
                        "common_properties.tls_properties.peer_certificate_properties";
                    tls.peer_uri = uri_san(f.bytes().within(CERT)?, CERT)?;
                }
                _ => {}
            }
        }
        Ok(tls)
    }
}

/// A certificate's first URI SAN.
fn uri_san<'a>(certificate: &'a [u8], at: &'static str) -> Result<Option<&'a str>> {
    for field in Fields::new(certificate) {
        if let (1, san) = field.within(at)? {
            for field in Fields::new(san.bytes().within(at)?) {
                if let (1, uri) = field.within(at)? {
                    return text(uri, at).map(Some);
                }
            }
        }
    }
    Ok(None)
}

impl<'a> Request<'a> {
    fn decode(message: &'a [u8]) -> Result<Request<'a>> {
        let mut r = Request::default();
        for field in Fields::new(message) {
            match field.within("request")? {
                (1, f) => r.method = f.varint().within("request.request_method")? as i32,
                (2, f) => r.scheme = text(f, "request.scheme")?,
                (3, f) => r.authority = text(f, "request.authority")?,
                (5, f) => r.path = text(f, "request.path")?,
                (6, f) => r.user_agent = text(f, "request.user_agent")?,
                (7, f) => r.referer = text(f, "request.referer")?,
                (9, f) => r.request_id = text(f, "request.request_id")?,
                (11, f) => r.headers_bytes = f.varint().within("request.request_headers_bytes")?,
                (12, f) => r.body_bytes = f.varint().within("request.request_body_bytes")?,
                (13, f) => r.headers.push(header(f, "request.request_headers")?),
                _ => {}
            }
        }
        Ok(r)
    }
}

impl<'a> Response<'a> {
    fn decode(message: &'a [u8]) -> Result<Response<'a>> {
        let mut r = Response::default();
        for field in Fields::new(message) {
            match field.within("response")? {
                (1, f) => {
                    const AT: &str = "response.response_code";
                    let mut code = 0;
                    for field in Fields::new(f.bytes().within(AT)?) {
                        if let (1, v) = field.within(AT)? {
                            code = v.varint().within(AT)? as u32;
                        }
                    }
                    r.code = Some(code);
                }
                (2, f) => r.headers_bytes = f.varint().within("response.response_headers_bytes")?,
                (3, f) => r.body_bytes = f.varint().within("response.response_body_bytes")?,
                (4, f) => r.headers.push(header(f, "response.response_headers")?),
                _ => {}
            }
        }
        Ok(r)
    }
}

fn text<'a>(f: Field<'a>, at: &'static str) -> Result<&'a str> {
    std::str::from_utf8(f.bytes().within(at)?).map_err(|_| Malformed {
        field: at,
        problem: Problem::NotUtf8,
    })
}

/// One `map<string, string>` entry.
fn header<'a>(f: Field<'a>, at: &'static str) -> Result<(&'a str, &'a str)> {
    let (mut key, mut value) = ("", "");
    for field in Fields::new(f.bytes().within(at)?) {
        match field.within(at)? {
            (1, k) => key = text(k, at)?,
            (2, v) => value = text(v, at)?,
            _ => {}
        }
    }
    Ok((key, value))
}

/// An `Address` that is a socket address with an IP; a pipe, an internal
/// address or a name is no peer.
fn peer(f: Field<'_>, at: &'static str) -> Result<Option<Peer>> {
    let mut found = None;
    for field in Fields::new(f.bytes().within(at)?) {
        if let (1, socket) = field.within(at)? {
            let (mut ip, mut port) = ("", 0);
            for field in Fields::new(socket.bytes().within(at)?) {
                match field.within(at)? {
                    (2, a) => ip = text(a, at)?,
                    (3, p) => port = p.varint().within(at)? as u32,
                    _ => {}
                }
            }
            found = ip.parse().ok().map(|ip| (ip, port));
        }
    }
    Ok(found)
}

/// A `Timestamp` or `Duration`'s fields.
fn seconds_nanos(f: Field<'_>, at: &'static str) -> Result<(i64, i32)> {
    let (mut seconds, mut nanos) = (0, 0);
    for field in Fields::new(f.bytes().within(at)?) {
        match field.within(at)? {
            (1, s) => seconds = s.varint().within(at)? as i64,
            (2, n) => nanos = n.varint().within(at)? as i32,
            _ => {}
        }
    }
    Ok((seconds, nanos))
}

/// A `Duration`; a negative one is no time taken.
fn duration(f: Field<'_>, at: &'static str) -> Result<Option<Duration>> {
    let (seconds, nanos) = seconds_nanos(f, at)?;
    if nanos >= 1_000_000_000 {
        return Err(Malformed {
            field: at,
            problem: Problem::OutOfRange,
        });
    }
    Ok((seconds >= 0 && nanos >= 0).then(|| Duration::new(seconds as u64, nanos as u32)))
}

/// `ResponseFlags` as a bit per field: its booleans, and
/// `unauthorized_details` (field 13) set when present.
fn flags(f: Field<'_>) -> Result<u32> {
    const AT: &str = "common_properties.response_flags";
    let mut bits = 0u32;
    for field in Fields::new(f.bytes().within(AT)?) {
        let (n, value) = field.within(AT)?;
        let on = match value {
            Field::Varint(v) => v != 0,
            Field::Bytes(_) => n == 13,
            _ => false,
        };
        if n < 32 && on {
            bits |= 1 << n;
        } else if n < 32 {
            bits &= !(1 << n);
        }
    }
    Ok(bits)
}

#[cfg(test)]
pub(super) mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, Metadata, Pipe, RequestMethod, SocketAddress, address, socket_address,
    };
    use envoy_types::pb::envoy::data::accesslog::v3::{
        AccessLogCommon, ConnectionProperties, HttpAccessLogEntry, HttpRequestProperties,
        HttpResponseProperties, ResponseFlags, TcpAccessLogEntry, TlsProperties,
        tls_properties::CertificateProperties,
        tls_properties::certificate_properties::SubjectAltName,
        tls_properties::certificate_properties::subject_alt_name::San,
    };
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, Timestamp, UInt32Value};
    use prost::Message;

    use super::*;

    /// A socket address as Envoy logs a peer.
    pub(in crate::access_log) fn socket(ip: &str, port: u32) -> Option<Address> {
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        })
    }

    fn certificate(sans: &[San]) -> Option<CertificateProperties> {
        Some(CertificateProperties {
            subject_alt_name: sans
                .iter()
                .map(|s| SubjectAltName {
                    san: Some(s.clone()),
                })
                .collect(),
            subject: "CN=x".into(),
            ..Default::default()
        })
    }

    fn full_entry() -> HttpAccessLogEntry {
        HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                sample_rate: 1.0,
                downstream_remote_address: socket("10.1.0.1", 40000),
                downstream_local_address: socket("fd00::2", 9080),
                upstream_remote_address: Some(Address {
                    address: Some(address::Address::Pipe(Pipe {
                        path: "/tmp/s".into(),
                        mode: 0,
                    })),
                }),
                tls_properties: Some(TlsProperties {
                    tls_sni_hostname: "reviews.default".into(),
                    local_certificate_properties: certificate(&[
                        San::Dns("reviews".into()),
                        San::Uri("spiffe://cluster.local/ns/default/sa/reviews".into()),
                    ]),
                    peer_certificate_properties: certificate(&[]),
                    ..Default::default()
                }),
                start_time: Some(Timestamp {
                    seconds: 1_600_000_000,
                    nanos: 5,
                }),
                time_to_last_downstream_tx_byte: Some(PbDuration {
                    seconds: 1,
                    nanos: 2_500_000,
                }),
                duration: Some(PbDuration {
                    seconds: -1,
                    nanos: 0,
                }),
                upstream_cluster: "inbound|9080|http|reviews.default.svc.cluster.local".into(),
                response_flags: Some(ResponseFlags {
                    no_healthy_upstream: true,
                    no_route_found: true,
                    ..Default::default()
                }),
                metadata: Some(Metadata::default()),
                route_name: "reviews.default.svc.cluster.local:9080".into(),
                custom_tags: [("team".to_string(), "a".to_string())].into(),
                stream_id: "s-1".into(),
                access_log_type: 4,
                ..Default::default()
            }),
            protocol_version: 2,
            request: Some(HttpRequestProperties {
                request_method: RequestMethod::Post as i32,
                scheme: "https".into(),
                authority: "reviews:9080".into(),
                path: "/reviews/1?x=ü".into(),
                user_agent: "curl/8".into(),
                referer: "http://a/".into(),
                forwarded_for: "10.0.0.1".into(),
                request_id: "id-1".into(),
                request_headers_bytes: 120,
                request_body_bytes: 7,
                request_headers: [
                    ("content-type".to_string(), "text/plain".to_string()),
                    ("x-b3-sampled".to_string(), "1".to_string()),
                ]
                .into(),
                ..Default::default()
            }),
            response: Some(HttpResponseProperties {
                response_code: Some(UInt32Value { value: 503 }),
                response_headers_bytes: 90,
                response_body_bytes: 300,
                response_headers: [("server".to_string(), "envoy".to_string())].into(),
                response_code_details: "via_upstream".into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn an_http_entry_reads_as_envoy_encoded_it() {
        let bytes = full_entry().encode_to_vec();
        let e = HttpEntry::decode(&bytes).unwrap();
        let c = &e.common;
        assert_eq!(
            c.downstream_remote,
            Some(("10.1.0.1".parse().unwrap(), 40000))
        );
        assert_eq!(c.downstream_local, Some(("fd00::2".parse().unwrap(), 9080)));
        assert_eq!(c.upstream_remote, None, "a pipe is no peer");
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.sni, "reviews.default");
        assert_eq!(
            tls.local_uri,
            Some("spiffe://cluster.local/ns/default/sa/reviews")
        );
        assert_eq!(tls.peer_uri, None);
        assert_eq!(c.start_time, Some((1_600_000_000, 5)));
        assert_eq!(
            c.time_to_last_downstream_tx_byte,
            Some(Duration::new(1, 2_500_000))
        );
        assert_eq!(c.duration, None, "a negative duration is no time taken");
        assert_eq!(
            c.upstream_cluster,
            "inbound|9080|http|reviews.default.svc.cluster.local"
        );
        assert_eq!(c.route_name, "reviews.default.svc.cluster.local:9080");
        assert_eq!(c.stream_id, "s-1");
        assert_eq!(c.access_log_type, 4);
        assert_eq!(c.response_flags, 1 << 2 | 1 << 9);

        let r = &e.request;
        assert_eq!(r.method, RequestMethod::Post as i32);
        assert_eq!(
            (
                r.scheme,
                r.authority,
                r.path,
                r.user_agent,
                r.referer,
                r.request_id
            ),
            (
                "https",
                "reviews:9080",
                "/reviews/1?x=ü",
                "curl/8",
                "http://a/",
                "id-1"
            )
        );
        assert_eq!((r.headers_bytes, r.body_bytes), (120, 7));
        let mut headers = r.headers.clone();
        headers.sort();
        assert_eq!(
            headers,
            [("content-type", "text/plain"), ("x-b3-sampled", "1")]
        );

        let response = e.response.as_ref().unwrap();
        assert_eq!(response.code, Some(503));
        assert_eq!((response.headers_bytes, response.body_bytes), (90, 300));
        assert_eq!(response.headers, [("server", "envoy")]);
    }

    #[test]
    fn a_tcp_entry_reads_as_envoy_encoded_it() {
        let entry = TcpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                upstream_remote_address: socket("10.1.0.9", 3306),
                ..Default::default()
            }),
            connection_properties: Some(ConnectionProperties {
                received_bytes: 10,
                sent_bytes: 1 << 40,
            }),
        };
        let bytes = entry.encode_to_vec();
        let e = TcpEntry::decode(&bytes).unwrap();
        assert_eq!(
            e.common.upstream_remote,
            Some(("10.1.0.9".parse().unwrap(), 3306))
        );
        assert_eq!((e.received_bytes, e.sent_bytes), (10, 1 << 40));
    }

    #[test]
    fn a_broken_entry_names_its_field() {
        let bytes = full_entry().encode_to_vec();
        // Every cut is read or refused, never a panic; without its last
        // byte the response (field 4) is shorter than announced.
        for n in 0..bytes.len() {
            let _ = HttpEntry::decode(&bytes[..n]);
        }
        let cut = HttpEntry::decode(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(cut.to_string().starts_with("field 4: "), "{cut}");
        // Nor does any byte changed to a length, a key or a continuation
        // byte it was not.
        for at in 0..bytes.len() {
            for b in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[at] = b;
                let _ = HttpEntry::decode(&changed);
                let _ = TcpEntry::decode(&changed);
            }
        }

        let mut entry = full_entry();
        entry.request.as_mut().unwrap().path = "/\u{7f}\u{7f}".into();
        let mut bytes = entry.encode_to_vec();
        let at = bytes.windows(3).position(|w| w == b"/\x7f\x7f").unwrap();
        bytes[at + 1..at + 3].copy_from_slice(&[0xff, 0xfe]);
        let e = HttpEntry::decode(&bytes).unwrap_err();
        assert_eq!(e.to_string(), "request.path: not UTF-8");

        let entry = HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                duration: Some(PbDuration {
                    seconds: 1,
                    nanos: 2_000_000_000,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = HttpEntry::decode(&entry.encode_to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "common_properties.duration: out of range");

        // Field 3, the request, announced as a varint.
        let e = HttpEntry::decode(&[0x18, 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "request: expected a length-delimited value, found a varint"
        );
    }
}
