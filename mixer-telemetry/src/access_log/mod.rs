//! Envoy's access-log entries as Mixer attributes, mapped as the ext_authz
//! front of mixer-policy maps a check: peers, request, response, and for
//! TCP the connection. Who reports comes from the stream's node (its first
//! message); which side it is from the logger's name (`inbound` or
//! `outbound`, as Pilot names them) or else the upstream cluster's prefix;
//! the destination service from the upstream cluster's Istio name, or, for
//! requests Envoy answered itself (no cluster), the route's name, which
//! Pilot sets to the destination service's host. Entries are read in place
//! ([`entry`]).

pub mod entry;

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use envoy_types::pb::envoy::config::core::v3::RequestMethod;
use envoy_types::pb::envoy::data::accesslog::v3::AccessLogType;
use mixer::attribute::compressed::timestamp;
use mixer::attribute::{Bag, Declaration, Value, Vocabulary};

use entry::{Common, HttpEntry, Peer, TcpEntry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// The proxy whose entries a stream carries, from its node identifier
/// (`sidecar~10.1.0.5~reviews-v1-7f9.default~default.svc.cluster.local`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reporter {
    pub ip: Option<IpAddr>,
    /// `kubernetes://<pod>.<namespace>`.
    pub uid: Option<Arc<str>>,
    pub namespace: Option<String>,
    /// The logger's name: `inbound`, `outbound`, or anything else.
    pub direction: Option<Direction>,
}

impl Reporter {
    pub fn new(node_id: &str, log_name: &str) -> Reporter {
        let parts: Vec<&str> = node_id.split('~').collect();
        let (ip, pod) = match parts.as_slice() {
            [_, ip, pod, ..] => (ip.parse().ok(), Some(*pod).filter(|p| p.contains('.'))),
            _ => (None, None),
        };
        Reporter {
            ip,
            uid: pod.map(|p| Arc::from(format!("kubernetes://{p}"))),
            namespace: pod
                .and_then(|p| p.split_once('.'))
                .map(|(_, ns)| ns.to_string()),
            direction: match log_name {
                "inbound" => Some(Direction::Inbound),
                "outbound" => Some(Direction::Outbound),
                _ => None,
            },
        }
    }
}

/// Declares the attributes entries map to: [`At`] names one, [`NAMES`]
/// holds its name at the same index.
macro_rules! mapped {
    ($($at:ident = $name:literal,)*) => {
        #[derive(Debug, Clone, Copy)]
        enum At { $($at,)* }
        const NAMES: &[&str] = &[$($name,)*];
    };
}

mapped! {
    ContextProtocol = "context.protocol",
    ContextReporterKind = "context.reporter.kind",
    ContextProxyErrorCode = "context.proxy_error_code",
    SourceIp = "source.ip",
    SourcePort = "source.port",
    SourceUid = "source.uid",
    SourcePrincipal = "source.principal",
    DestinationIp = "destination.ip",
    DestinationPort = "destination.port",
    DestinationUid = "destination.uid",
    DestinationPrincipal = "destination.principal",
    DestinationServiceHost = "destination.service.host",
    DestinationServiceName = "destination.service.name",
    DestinationServiceNamespace = "destination.service.namespace",
    DestinationServiceSubset = "destination.service.subset",
    RequestMethod = "request.method",
    RequestScheme = "request.scheme",
    RequestHost = "request.host",
    RequestPath = "request.path",
    RequestUrlPath = "request.url_path",
    RequestUseragent = "request.useragent",
    RequestReferer = "request.referer",
    RequestId = "request.id",
    RequestSize = "request.size",
    RequestTotalSize = "request.total_size",
    RequestHeaders = "request.headers",
    RequestTime = "request.time",
    ResponseCode = "response.code",
    ResponseSize = "response.size",
    ResponseTotalSize = "response.total_size",
    ResponseHeaders = "response.headers",
    ResponseDuration = "response.duration",
    ResponseTime = "response.time",
    ConnectionMtls = "connection.mtls",
    ConnectionRequestedServerName = "connection.requested_server_name",
    ConnectionReceivedBytes = "connection.received.bytes",
    ConnectionSentBytes = "connection.sent.bytes",
    ConnectionReceivedBytesTotal = "connection.received.bytes_total",
    ConnectionSentBytesTotal = "connection.sent.bytes_total",
    ConnectionEvent = "connection.event",
    ConnectionDuration = "connection.duration",
    ConnectionId = "connection.id",
}

/// Maps entries into bags for one vocabulary. Each mapped attribute is
/// looked up in it once, when a message's entries are mapped, rather than
/// by name for every value set.
pub struct Mapper<'v> {
    vocab: &'v Vocabulary,
    declared: Vec<Option<Declaration<'v>>>,
    reads: Vec<bool>,
    /// The destination of the last entry: a proxy's entries mostly repeat
    /// their upstream cluster and route, so each is parsed once and its
    /// texts shared.
    last: RefCell<Option<Seen>>,
}

impl<'v> Mapper<'v> {
    pub fn new(vocab: &'v Vocabulary) -> Mapper<'v> {
        Mapper {
            vocab,
            declared: NAMES.iter().map(|n| vocab.declaration(n)).collect(),
            reads: NAMES.iter().map(|n| vocab.reads(n)).collect(),
            last: RefCell::default(),
        }
    }

    fn bag(&self) -> Bag {
        Bag::for_vocabulary(self.vocab)
    }

    #[inline]
    fn set(&self, bag: &mut Bag, at: At, value: Value) {
        match &self.declared[at as usize] {
            Some(declared) => bag.set_declared(declared, value),
            None => bag.set(NAMES[at as usize], value),
        }
    }

    /// Whether the config may read `at` (see [`Vocabulary::reads`]).
    fn reads(&self, at: At) -> bool {
        self.reads[at as usize]
    }

    /// An HTTP entry's attributes. The request's texts and header maps that
    /// the config never reads are left out: building them was a good part
    /// of an entry's cost, and no rule could see them.
    pub fn http(&self, entry: &HttpEntry, reporter: &Reporter) -> Bag {
        let mut bag = self.bag();
        let request = &entry.request;
        let content_type = request.headers.iter().find(|(k, _)| *k == "content-type");
        let protocol = match content_type {
            Some((_, ct)) if ct.starts_with("application/grpc") => &SHARED.grpc,
            _ => &SHARED.http,
        };
        self.common(&entry.common, reporter, protocol, &mut bag);
        let text = |bag: &mut Bag, at: At, v: &str| {
            if !v.is_empty() && self.reads(at) {
                self.set(bag, at, Value::string(v));
            }
        };
        if let Some(Some(method)) = SHARED.methods.get(request.method as usize) {
            self.set(&mut bag, At::RequestMethod, method.clone());
        }
        text(&mut bag, At::RequestScheme, request.scheme);
        text(&mut bag, At::RequestHost, request.authority);
        text(&mut bag, At::RequestPath, request.path);
        let url_path = request.path.split('?').next().unwrap_or("");
        text(&mut bag, At::RequestUrlPath, url_path);
        text(&mut bag, At::RequestUseragent, request.user_agent);
        text(&mut bag, At::RequestReferer, request.referer);
        text(&mut bag, At::RequestId, request.request_id);
        let sizes = [At::RequestSize, At::RequestTotalSize];
        self.sizes(&mut bag, sizes, request.headers_bytes, request.body_bytes);
        self.headers(&mut bag, At::RequestHeaders, &request.headers);
        if let Some(response) = &entry.response {
            if let Some(code) = response.code {
                self.set(&mut bag, At::ResponseCode, Value::Int64(i64::from(code)));
            }
            let sizes = [At::ResponseSize, At::ResponseTotalSize];
            self.sizes(&mut bag, sizes, response.headers_bytes, response.body_bytes);
            self.headers(&mut bag, At::ResponseHeaders, &response.headers);
        }
        bag
    }

    /// A TCP entry's attributes (Envoy logs a connection when it closes).
    pub fn tcp(&self, entry: &TcpEntry, reporter: &Reporter) -> Bag {
        let mut bag = self.bag();
        let common = &entry.common;
        self.common(common, reporter, &SHARED.tcp, &mut bag);
        let (received, sent) = (entry.received_bytes as i64, entry.sent_bytes as i64);
        for (at, n) in [
            (At::ConnectionReceivedBytes, received),
            (At::ConnectionSentBytes, sent),
            (At::ConnectionReceivedBytesTotal, received),
            (At::ConnectionSentBytesTotal, sent),
        ] {
            self.set(&mut bag, at, Value::Int64(n));
        }
        let event = match AccessLogType::try_from(common.access_log_type) {
            Ok(AccessLogType::TcpConnectionStart | AccessLogType::TcpUpstreamConnected) => "open",
            Ok(AccessLogType::TcpPeriodic) => "continue",
            _ => "close",
        };
        self.set(&mut bag, At::ConnectionEvent, Value::string(event));
        if let Some(d) = common.duration {
            self.set(&mut bag, At::ConnectionDuration, Value::Duration(d));
        }
        if !common.stream_id.is_empty() {
            self.set(&mut bag, At::ConnectionId, Value::string(common.stream_id));
        }
        bag
    }

    /// `<side>.size` (the body) and `<side>.total_size` (headers too).
    fn sizes(&self, bag: &mut Bag, [size, total]: [At; 2], header_bytes: u64, body_bytes: u64) {
        self.set(bag, size, Value::Int64(body_bytes as i64));
        let both = header_bytes.saturating_add(body_bytes);
        self.set(bag, total, Value::Int64(both as i64));
    }

    fn headers(&self, bag: &mut Bag, at: At, logged: &[(&str, &str)]) {
        if !logged.is_empty() && self.reads(at) {
            let map = logged
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            self.set(bag, at, Value::StringMap(Arc::new(map)));
        }
    }

    fn common(&self, c: &Common, reporter: &Reporter, protocol: &Value, bag: &mut Bag) {
        self.set(bag, At::ContextProtocol, protocol.clone());
        let destination = self.destination(c.upstream_cluster, c.route_name);
        let direction = reporter.direction.or(destination.direction);
        let reporter_uid = reporter.uid.as_ref().map(|u| Value::String(u.clone()));
        let (remote, local, upstream) =
            (c.downstream_remote, c.downstream_local, c.upstream_remote);
        let reporter_ip = reporter.ip.map(|ip| (ip, 0));
        match direction {
            Some(Direction::Inbound) => {
                self.set(bag, At::ContextReporterKind, SHARED.inbound.clone());
                self.peer(bag, SOURCE, remote);
                self.peer(bag, DESTINATION, local.or(reporter_ip));
                if let Some(uid) = reporter_uid {
                    self.set(bag, At::DestinationUid, uid);
                }
            }
            Some(Direction::Outbound) => {
                self.set(bag, At::ContextReporterKind, SHARED.outbound.clone());
                self.peer(bag, SOURCE, reporter_ip);
                self.peer(bag, DESTINATION, upstream);
                if let Some(uid) = reporter_uid {
                    self.set(bag, At::SourceUid, uid);
                }
            }
            None => {
                self.peer(bag, SOURCE, remote);
                self.peer(bag, DESTINATION, upstream.or(local));
            }
        }
        for (at, value) in [
            (At::DestinationServiceName, destination.name),
            (At::DestinationServiceNamespace, destination.namespace),
            (At::DestinationServiceHost, destination.host),
            (At::DestinationServiceSubset, destination.subset),
        ] {
            if let Some(value) = value {
                self.set(bag, at, value);
            }
        }
        let start = c.start_time.and_then(|(seconds, nanos)| {
            timestamp(&prost_types::Timestamp { seconds, nanos }).ok()
        });
        if let Some(start) = start {
            self.set(bag, At::RequestTime, Value::Timestamp(start));
            if let Some(d) = c.time_to_last_downstream_tx_byte.or(c.duration) {
                self.set(bag, At::ResponseDuration, Value::Duration(d));
                self.set(bag, At::ResponseTime, Value::Timestamp(start + d));
            }
        }
        let flags = match c.response_flags {
            0 => SHARED.no_flags.clone(),
            bits => Value::string(&flags(bits)),
        };
        self.set(bag, At::ContextProxyErrorCode, flags);
        let Some(tls) = &c.tls else {
            self.set(bag, At::ConnectionMtls, Value::Bool(false));
            return;
        };
        let (peer, own) = (tls.peer_uri, tls.local_uri);
        self.set(bag, At::ConnectionMtls, Value::Bool(peer.is_some()));
        let (source, destination) = match direction {
            Some(Direction::Outbound) => (own, peer),
            _ => (peer, own),
        };
        if let Some(p) = source {
            self.set(bag, At::SourcePrincipal, Value::string(p));
        }
        if let Some(p) = destination {
            self.set(bag, At::DestinationPrincipal, Value::string(p));
        }
        if !tls.sni.is_empty() {
            let sni = Value::string(tls.sni);
            self.set(bag, At::ConnectionRequestedServerName, sni);
        }
    }

    /// What `cluster` and `route` say of the destination: the last
    /// entry's, when they are the same.
    fn destination(&self, cluster: &str, route: &str) -> Destination {
        let mut last = self.last.borrow_mut();
        match &*last {
            Some(seen) if *seen.cluster == *cluster && *seen.route == *route => {
                seen.destination.clone()
            }
            _ => {
                let destination = Destination::new(cluster, route);
                *last = Some(Seen {
                    cluster: cluster.into(),
                    route: route.into(),
                    destination: destination.clone(),
                });
                destination
            }
        }
    }

    /// `source.ip`/`source.port` or the destination's.
    fn peer(&self, bag: &mut Bag, [ip_at, port_at]: [At; 2], peer: Option<Peer>) {
        if let Some((ip, port)) = peer {
            self.set(bag, ip_at, Value::IpAddress(ip));
            if port != 0 {
                self.set(bag, port_at, Value::Int64(i64::from(port)));
            }
        }
    }
}

const SOURCE: [At; 2] = [At::SourceIp, At::SourcePort];
const DESTINATION: [At; 2] = [At::DestinationIp, At::DestinationPort];

/// A route Pilot named after its destination service's host. Envoy's own
/// names (`allow_any`, `block_all`, a port number) are no service.
fn service_host(route_name: &str) -> Option<&str> {
    let host = route_name.rsplit_once(':').map_or(route_name, |(h, _)| h);
    (host.contains('.') && !host.contains(['|', ' '])).then_some(host)
}

/// An upstream cluster with an Istio name: `outbound|9080|v1|reviews.default.svc.cluster.local`
/// or `inbound|9080|http|reviews.default.svc.cluster.local`.
struct IstioCluster<'a> {
    direction: Direction,
    subset: Option<&'a str>,
    host: &'a str,
}

impl<'a> IstioCluster<'a> {
    fn parse(name: &'a str) -> Option<IstioCluster<'a>> {
        let mut parts = name.split('|');
        let direction = match parts.next()? {
            "outbound" => Direction::Outbound,
            "inbound" => Direction::Inbound,
            _ => return None,
        };
        let _port = parts.next()?;
        let third = parts.next()?;
        let host = parts.next().filter(|h| !h.is_empty())?;
        Some(IstioCluster {
            direction,
            subset: (direction == Direction::Outbound && !third.is_empty()).then_some(third),
            host,
        })
    }
}

/// The destination service an entry names, as attribute values.
#[derive(Clone, Default)]
struct Destination {
    /// From an Istio cluster name's prefix.
    direction: Option<Direction>,
    name: Option<Value>,
    namespace: Option<Value>,
    host: Option<Value>,
    subset: Option<Value>,
}

impl Destination {
    /// From the upstream cluster when it has an Istio name, else from the
    /// route's name.
    fn new(cluster: &str, route: &str) -> Destination {
        let cluster = IstioCluster::parse(cluster);
        let Some(host) = cluster
            .as_ref()
            .map(|c| c.host)
            .or_else(|| service_host(route))
        else {
            return Destination::default();
        };
        let mut labels = host.split('.');
        let (name, namespace) = (labels.next(), labels.next());
        Destination {
            direction: cluster.as_ref().map(|c| c.direction),
            name: name.map(Value::string),
            namespace: namespace
                .filter(|_| host.contains(".svc."))
                .map(Value::string),
            host: Some(Value::string(host)),
            subset: cluster.and_then(|c| c.subset).map(Value::string),
        }
    }
}

/// An upstream cluster and route name, and the destination they name.
struct Seen {
    cluster: Box<str>,
    route: Box<str>,
    destination: Destination,
}

/// Texts that most entries carry, made once and shared by them all.
struct Shared {
    http: Value,
    grpc: Value,
    tcp: Value,
    inbound: Value,
    outbound: Value,
    no_flags: Value,
    /// `request.method` at each `RequestMethod` number; none for
    /// METHOD_UNSPECIFIED.
    methods: Vec<Option<Value>>,
}

static SHARED: LazyLock<Shared> = LazyLock::new(|| Shared {
    http: Value::string("http"),
    grpc: Value::string("grpc"),
    tcp: Value::string("tcp"),
    inbound: Value::string("inbound"),
    outbound: Value::string("outbound"),
    no_flags: Value::string("-"),
    methods: (0..)
        .map_while(|n| RequestMethod::try_from(n).ok())
        .map(|m| (m != RequestMethod::MethodUnspecified).then(|| Value::string(m.as_str_name())))
        .collect(),
});

/// Envoy's short response flags, at the number of the `ResponseFlags` field
/// that sets each.
const FLAGS: [&str; 29] = [
    "", "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
    "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DR",
];

/// The flags set in `bits` (see [`Common::response_flags`]) as Istio's
/// `context.proxy_error_code`, the metrics' `response_flags`: `UH`,
/// `UF,URX`, or `-` for none.
pub fn flags(bits: u32) -> String {
    let mut text = String::new();
    for (n, code) in FLAGS.iter().enumerate().skip(1) {
        if bits & (1 << n) != 0 {
            if !text.is_empty() {
                text.push(',');
            }
            text.push_str(code);
        }
    }
    if text.is_empty() {
        text.push('-');
    }
    text
}

#[cfg(test)]
mod tests {

    use envoy_types::pb::envoy::data::accesslog::v3::{
        AccessLogCommon, ConnectionProperties, HttpAccessLogEntry, HttpRequestProperties,
        HttpResponseProperties, ResponseFlags, TcpAccessLogEntry, TlsProperties,
        tls_properties::CertificateProperties,
        tls_properties::certificate_properties::SubjectAltName,
        tls_properties::certificate_properties::subject_alt_name::San,
    };
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
    use prost::Message;

    use super::entry::tests::socket;
    use super::*;

    /// What the server does with an entry: encoded as Envoy sends it, read
    /// in place, mapped.
    fn http_bag(entry: &HttpAccessLogEntry, reporter: &Reporter, vocab: &Vocabulary) -> Bag {
        let bytes = entry.encode_to_vec();
        Mapper::new(vocab).http(&HttpEntry::decode(&bytes).unwrap(), reporter)
    }

    fn tcp_bag(entry: &TcpAccessLogEntry, reporter: &Reporter) -> Bag {
        let bytes = entry.encode_to_vec();
        let vocab = Vocabulary::standard();
        Mapper::new(&vocab).tcp(&TcpEntry::decode(&bytes).unwrap(), reporter)
    }

    fn common(cluster: &str, route: &str) -> AccessLogCommon {
        AccessLogCommon {
            downstream_remote_address: socket("10.1.0.1", 40000),
            downstream_local_address: socket("10.1.0.2", 9080),
            upstream_remote_address: socket("10.1.0.2", 9080),
            upstream_cluster: cluster.into(),
            route_name: route.into(),
            start_time: Some(envoy_types::pb::google::protobuf::Timestamp {
                seconds: 1_600_000_000,
                nanos: 0,
            }),
            time_to_last_downstream_tx_byte: Some(PbDuration {
                seconds: 0,
                nanos: 2_500_000,
            }),
            ..Default::default()
        }
    }

    fn get(bag: &Bag, name: &str) -> Option<String> {
        bag.get(name).map(|v| v.to_string())
    }

    #[test]
    fn an_inbound_http_entry_names_both_peers_and_the_service() {
        let reporter = Reporter::new(
            "sidecar~10.1.0.2~reviews-v1-abc.default~default.svc.cluster.local",
            "inbound",
        );
        let entry = HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                tls_properties: Some(TlsProperties {
                    peer_certificate_properties: Some(CertificateProperties {
                        subject_alt_name: vec![SubjectAltName {
                            san: Some(San::Uri(
                                "spiffe://cluster.local/ns/default/sa/productpage".into(),
                            )),
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..common("inbound|9080|http|reviews.default.svc.cluster.local", "")
            }),
            request: Some(HttpRequestProperties {
                request_method: RequestMethod::Get as i32,
                authority: "reviews:9080".into(),
                path: "/reviews/1?x=1".into(),
                request_id: "abc".into(),
                request_body_bytes: 0,
                request_headers_bytes: 120,
                ..Default::default()
            }),
            response: Some(HttpResponseProperties {
                response_code: Some(UInt32Value { value: 200 }),
                response_body_bytes: 300,
                ..Default::default()
            }),
            ..Default::default()
        };
        let bag = http_bag(&entry, &reporter, &Vocabulary::standard());
        for (name, want) in [
            ("context.reporter.kind", "inbound"),
            ("context.protocol", "http"),
            ("source.ip", "10.1.0.1"),
            ("source.port", "40000"),
            ("destination.ip", "10.1.0.2"),
            ("destination.port", "9080"),
            ("destination.uid", "kubernetes://reviews-v1-abc.default"),
            (
                "destination.service.host",
                "reviews.default.svc.cluster.local",
            ),
            ("destination.service.name", "reviews"),
            ("destination.service.namespace", "default"),
            (
                "source.principal",
                "spiffe://cluster.local/ns/default/sa/productpage",
            ),
            ("connection.mtls", "true"),
            ("request.method", "GET"),
            ("request.host", "reviews:9080"),
            ("request.path", "/reviews/1?x=1"),
            ("request.url_path", "/reviews/1"),
            ("request.total_size", "120"),
            ("response.code", "200"),
            ("response.size", "300"),
            ("response.duration", "2.5ms"),
            ("context.proxy_error_code", "-"),
        ] {
            assert_eq!(get(&bag, name).as_deref(), Some(want), "{name}");
        }
        assert_eq!(get(&bag, "destination.service.subset"), None);

        // A config that reads neither the path nor the headers: left out.
        let mut with_headers = entry.clone();
        if let Some(r) = with_headers.request.as_mut() {
            r.request_headers.insert("x-user".into(), "u".into());
        }
        let full = http_bag(&with_headers, &reporter, &Vocabulary::standard());
        assert_eq!(
            get(&full, "request.headers").as_deref(),
            Some("{x-user: u}")
        );
        let vocab = Vocabulary::standard().reading([("request.host", None)]);
        let bag = http_bag(&with_headers, &reporter, &vocab);
        assert_eq!(get(&bag, "request.host").as_deref(), Some("reviews:9080"));
        for name in [
            "request.path",
            "request.url_path",
            "request.id",
            "request.headers",
        ] {
            assert_eq!(get(&bag, name), None, "{name}");
        }
    }

    #[test]
    fn an_outbound_entry_envoy_answered_itself_takes_the_service_from_the_route() {
        let reporter = Reporter::new(
            "sidecar~10.1.0.1~productpage-v1-x.default~default.svc.cluster.local",
            "outbound",
        );
        let entry = HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                upstream_remote_address: None,
                response_flags: Some(ResponseFlags {
                    no_healthy_upstream: true,
                    ..Default::default()
                }),
                ..common("", "reviews.default.svc.cluster.local:9080")
            }),
            response: Some(HttpResponseProperties {
                response_code: Some(UInt32Value { value: 503 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bag = http_bag(&entry, &reporter, &Vocabulary::standard());
        assert_eq!(
            get(&bag, "context.reporter.kind").as_deref(),
            Some("outbound")
        );
        assert_eq!(get(&bag, "source.ip").as_deref(), Some("10.1.0.1"));
        assert_eq!(
            get(&bag, "source.uid").as_deref(),
            Some("kubernetes://productpage-v1-x.default")
        );
        assert_eq!(get(&bag, "destination.ip"), None);
        assert_eq!(
            get(&bag, "destination.service.name").as_deref(),
            Some("reviews")
        );
        assert_eq!(get(&bag, "context.proxy_error_code").as_deref(), Some("UH"));
    }

    #[test]
    fn a_plain_envoy_is_understood_from_its_cluster_names() {
        // No node id Pilot made, a logger named by hand: the cluster says it all.
        let reporter = Reporter::new("my-envoy", "access");
        let entry = TcpAccessLogEntry {
            common_properties: Some(common("outbound|3306|v2|mysql.db.svc.cluster.local", "")),
            connection_properties: Some(ConnectionProperties {
                received_bytes: 10,
                sent_bytes: 20,
            }),
        };
        let bag = tcp_bag(&entry, &reporter);
        for (name, want) in [
            ("context.reporter.kind", "outbound"),
            ("context.protocol", "tcp"),
            ("destination.ip", "10.1.0.2"),
            ("destination.service.name", "mysql"),
            ("destination.service.namespace", "db"),
            ("destination.service.subset", "v2"),
            ("connection.received.bytes", "10"),
            ("connection.sent.bytes", "20"),
            ("connection.event", "close"),
            ("connection.mtls", "false"),
        ] {
            assert_eq!(get(&bag, name).as_deref(), Some(want), "{name}");
        }
        assert_eq!(
            reporter,
            Reporter {
                direction: None,
                ..Default::default()
            }
        );
    }

    #[test]
    fn routes_envoy_names_are_no_service() {
        for r in ["allow_any", "block_all", "9080", "", "a b.c"] {
            assert_eq!(service_host(r), None, "{r}");
        }
        assert_eq!(
            service_host("reviews.default.svc.cluster.local:9080"),
            Some("reviews.default.svc.cluster.local")
        );
    }

    #[test]
    fn response_flags_become_envoys_short_codes() {
        let cases = [
            (ResponseFlags::default(), "-"),
            (
                ResponseFlags {
                    upstream_connection_failure: true,
                    upstream_retry_limit_exceeded: true,
                    ..Default::default()
                },
                "UF,URX",
            ),
            (
                ResponseFlags {
                    unauthorized_details: Some(Default::default()),
                    ..Default::default()
                },
                "UAEX",
            ),
            (
                ResponseFlags {
                    downstream_remote_reset: true,
                    ..Default::default()
                },
                "DR",
            ),
        ];
        for (response_flags, want) in cases {
            let entry = HttpAccessLogEntry {
                common_properties: Some(AccessLogCommon {
                    response_flags: Some(response_flags),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let bag = http_bag(&entry, &Reporter::default(), &Vocabulary::standard());
            assert_eq!(get(&bag, "context.proxy_error_code").as_deref(), Some(want));
        }
    }

    #[test]
    fn grpc_is_told_by_the_logged_content_type() {
        let mut entry = HttpAccessLogEntry {
            request: Some(HttpRequestProperties {
                request_headers: [("content-type".into(), "application/grpc+proto".into())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let standard = Vocabulary::standard();
        let bag = http_bag(&entry, &Reporter::default(), &standard);
        assert_eq!(get(&bag, "context.protocol").as_deref(), Some("grpc"));
        entry.request = None;
        let bag = http_bag(&entry, &Reporter::default(), &standard);
        assert_eq!(get(&bag, "context.protocol").as_deref(), Some("http"));
    }

    #[test]
    fn entries_of_one_message_each_keep_their_own_destination_and_method() {
        // One mapper, as for one message: the destination worked out for an
        // entry is reused only while the cluster and route stay the same.
        let standard = Vocabulary::standard();
        let mapper = Mapper::new(&standard);
        let reporter = Reporter::default();
        let entries = [
            (
                "outbound|9080|v1|reviews.default.svc.cluster.local",
                "",
                RequestMethod::Get,
            ),
            (
                "outbound|9080|v1|reviews.default.svc.cluster.local",
                "",
                RequestMethod::Post,
            ),
            (
                "outbound|9080|v2|reviews.default.svc.cluster.local",
                "",
                RequestMethod::Get,
            ),
            (
                "",
                "ratings.prod.svc.cluster.local:9080",
                RequestMethod::Patch,
            ),
            ("", "allow_any", RequestMethod::MethodUnspecified),
            (
                "outbound|9080|v1|reviews.default.svc.cluster.local",
                "",
                RequestMethod::Get,
            ),
        ];
        let expected = [
            (Some("reviews"), Some("default"), Some("v1"), Some("GET")),
            (Some("reviews"), Some("default"), Some("v1"), Some("POST")),
            (Some("reviews"), Some("default"), Some("v2"), Some("GET")),
            (Some("ratings"), Some("prod"), None, Some("PATCH")),
            (None, None, None, None),
            (Some("reviews"), Some("default"), Some("v1"), Some("GET")),
        ];
        for (i, ((cluster, route, method), want)) in entries.iter().zip(expected).enumerate() {
            let entry = HttpAccessLogEntry {
                common_properties: Some(common(cluster, route)),
                request: Some(HttpRequestProperties {
                    request_method: *method as i32,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let bytes = entry.encode_to_vec();
            let bag = mapper.http(&HttpEntry::decode(&bytes).unwrap(), &reporter);
            let got = [
                "destination.service.name",
                "destination.service.namespace",
                "destination.service.subset",
                "request.method",
            ]
            .map(|name| get(&bag, name));
            let want = [want.0, want.1, want.2, want.3].map(|v| v.map(str::to_string));
            assert_eq!(got, want, "entry {i}");
            let kind = get(&bag, "context.reporter.kind");
            let outbound = cluster
                .starts_with("outbound|")
                .then(|| "outbound".to_string());
            assert_eq!(kind, outbound, "entry {i}");
        }
    }
}
