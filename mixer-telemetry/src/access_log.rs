//! Envoy's access-log entries as Mixer attributes, mapped as the ext_authz
//! front of mixer-policy maps a check: peers, request, response, and for
//! TCP the connection. Who reports comes from the stream's node (its first
//! message); which side it is from the logger's name (`inbound` or
//! `outbound`, as Pilot names them) or else the upstream cluster's prefix;
//! the destination service from the upstream cluster's Istio name, or, for
//! requests Envoy answered itself (no cluster), the route's name, which
//! Pilot sets to the destination service's host.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Address, RequestMethod, address, socket_address};
use envoy_types::pb::envoy::data::accesslog::v3::{
    AccessLogCommon, AccessLogType, HttpAccessLogEntry, HttpRequestProperties, ResponseFlags,
    TcpAccessLogEntry, tls_properties::CertificateProperties,
    tls_properties::certificate_properties::subject_alt_name::San,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use mixer::attribute::compressed::timestamp;
use mixer::attribute::{Bag, Value, Vocabulary};

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

/// An HTTP entry's attributes. The request's texts and header maps that
/// `vocab`'s config never reads are left out: building them was a good part
/// of an entry's cost, and no rule could see them.
pub fn http(entry: &HttpAccessLogEntry, reporter: &Reporter, vocab: &Vocabulary) -> Bag {
    let mut bag = Bag::for_vocabulary(vocab);
    let (no_common, no_request) = (AccessLogCommon::default(), HttpRequestProperties::default());
    let common = entry.common_properties.as_ref().unwrap_or(&no_common);
    let request = entry.request.as_ref().unwrap_or(&no_request);
    let protocol = match request.request_headers.get("content-type") {
        Some(ct) if ct.starts_with("application/grpc") => "grpc",
        _ => "http",
    };
    common_attributes(common, reporter, protocol, &mut bag);
    let text = |bag: &mut Bag, name: &'static str, v: &str| {
        if !v.is_empty() && vocab.reads(name) {
            bag.set(name, Value::string(v));
        }
    };
    if let Ok(m) = RequestMethod::try_from(request.request_method)
        && m != RequestMethod::MethodUnspecified
    {
        bag.set("request.method", Value::string(m.as_str_name()));
    }
    text(&mut bag, "request.scheme", &request.scheme);
    text(&mut bag, "request.host", &request.authority);
    text(&mut bag, "request.path", &request.path);
    text(
        &mut bag,
        "request.url_path",
        request.path.split('?').next().unwrap_or(""),
    );
    text(&mut bag, "request.useragent", &request.user_agent);
    text(&mut bag, "request.referer", &request.referer);
    text(&mut bag, "request.id", &request.request_id);
    sizes(
        &mut bag,
        ["request.size", "request.total_size"],
        request.request_headers_bytes,
        request.request_body_bytes,
    );
    headers(&mut bag, "request.headers", &request.request_headers, vocab);
    if let Some(response) = &entry.response {
        if let Some(code) = response.response_code {
            bag.set("response.code", Value::Int64(i64::from(code.value)));
        }
        sizes(
            &mut bag,
            ["response.size", "response.total_size"],
            response.response_headers_bytes,
            response.response_body_bytes,
        );
        headers(
            &mut bag,
            "response.headers",
            &response.response_headers,
            vocab,
        );
    }
    bag
}

/// `<side>.size` (the body) and `<side>.total_size` (headers too).
fn sizes(bag: &mut Bag, [size, total]: [&'static str; 2], header_bytes: u64, body_bytes: u64) {
    bag.set(size, Value::Int64(body_bytes as i64));
    bag.set(total, Value::Int64((header_bytes + body_bytes) as i64));
}

fn headers(
    bag: &mut Bag,
    name: &'static str,
    logged: &std::collections::HashMap<String, String>,
    vocab: &Vocabulary,
) {
    if !logged.is_empty() && vocab.reads(name) {
        let map = logged.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        bag.set(name, Value::StringMap(Arc::new(map)));
    }
}

/// A TCP entry's attributes (Envoy logs a connection when it closes).
pub fn tcp(entry: &TcpAccessLogEntry, reporter: &Reporter, vocab: &Vocabulary) -> Bag {
    let mut bag = Bag::for_vocabulary(vocab);
    let no_common = AccessLogCommon::default();
    let common = entry.common_properties.as_ref().unwrap_or(&no_common);
    common_attributes(common, reporter, "tcp", &mut bag);
    let conn = entry.connection_properties.unwrap_or_default();
    bag.set(
        "connection.received.bytes",
        Value::Int64(conn.received_bytes as i64),
    );
    bag.set(
        "connection.sent.bytes",
        Value::Int64(conn.sent_bytes as i64),
    );
    bag.set(
        "connection.received.bytes_total",
        Value::Int64(conn.received_bytes as i64),
    );
    bag.set(
        "connection.sent.bytes_total",
        Value::Int64(conn.sent_bytes as i64),
    );
    let event = match AccessLogType::try_from(common.access_log_type) {
        Ok(AccessLogType::TcpConnectionStart | AccessLogType::TcpUpstreamConnected) => "open",
        Ok(AccessLogType::TcpPeriodic) => "continue",
        _ => "close",
    };
    bag.set("connection.event", Value::string(event));
    if let Some(d) = common.duration.as_ref().and_then(duration) {
        bag.set("connection.duration", Value::Duration(d));
    }
    if !common.stream_id.is_empty() {
        bag.set("connection.id", Value::string(&common.stream_id));
    }
    bag
}

fn common_attributes(c: &AccessLogCommon, reporter: &Reporter, protocol: &str, bag: &mut Bag) {
    bag.set("context.protocol", Value::string(protocol));
    let cluster = IstioCluster::parse(&c.upstream_cluster);
    let direction = reporter.direction.or(cluster.as_ref().map(|c| c.direction));
    let remote = c.downstream_remote_address.as_ref().and_then(socket);
    let local = c.downstream_local_address.as_ref().and_then(socket);
    let upstream = c.upstream_remote_address.as_ref().and_then(socket);
    let reporter_uid = reporter.uid.as_ref().map(|u| Value::String(u.clone()));
    match direction {
        Some(Direction::Inbound) => {
            bag.set("context.reporter.kind", Value::string("inbound"));
            set_peer(bag, SOURCE, remote);
            set_peer(bag, DESTINATION, local.or(reporter.ip.map(|ip| (ip, 0))));
            if let Some(uid) = reporter_uid {
                bag.set("destination.uid", uid);
            }
        }
        Some(Direction::Outbound) => {
            bag.set("context.reporter.kind", Value::string("outbound"));
            set_peer(bag, SOURCE, reporter.ip.map(|ip| (ip, 0)));
            set_peer(bag, DESTINATION, upstream);
            if let Some(uid) = reporter_uid {
                bag.set("source.uid", uid);
            }
        }
        None => {
            set_peer(bag, SOURCE, remote);
            set_peer(bag, DESTINATION, upstream.or(local));
        }
    }
    let host = cluster
        .as_ref()
        .map(|c| c.host.to_string())
        .or_else(|| service_host(&c.route_name));
    if let Some(host) = host {
        let mut labels = host.split('.');
        let (name, namespace) = (labels.next(), labels.next());
        if let Some(name) = name {
            bag.set("destination.service.name", Value::string(name));
        }
        if let Some(ns) = namespace.filter(|_| host.contains(".svc.")) {
            bag.set("destination.service.namespace", Value::string(ns));
        }
        bag.set("destination.service.host", Value::string(&host));
    }
    if let Some(subset) = cluster.as_ref().and_then(|c| c.subset) {
        bag.set("destination.service.subset", Value::string(subset));
    }
    let start = c.start_time.as_ref().and_then(|t| {
        timestamp(&prost_types::Timestamp {
            seconds: t.seconds,
            nanos: t.nanos,
        })
        .ok()
    });
    if let Some(start) = start {
        bag.set("request.time", Value::Timestamp(start));
        let taken = c
            .time_to_last_downstream_tx_byte
            .as_ref()
            .or(c.duration.as_ref())
            .and_then(duration);
        if let Some(d) = taken {
            bag.set("response.duration", Value::Duration(d));
            bag.set("response.time", Value::Timestamp(start + d));
        }
    }
    bag.set(
        "context.proxy_error_code",
        Value::string(&flags(c.response_flags.as_ref())),
    );
    if let Some(tls) = &c.tls_properties {
        let peer = tls.peer_certificate_properties.as_ref().and_then(uri_san);
        let own = tls.local_certificate_properties.as_ref().and_then(uri_san);
        bag.set("connection.mtls", Value::Bool(peer.is_some()));
        let (source, destination) = match direction {
            Some(Direction::Outbound) => (own, peer),
            _ => (peer, own),
        };
        if let Some(p) = source {
            bag.set("source.principal", Value::string(&p));
        }
        if let Some(p) = destination {
            bag.set("destination.principal", Value::string(&p));
        }
        if !tls.tls_sni_hostname.is_empty() {
            bag.set(
                "connection.requested_server_name",
                Value::string(&tls.tls_sni_hostname),
            );
        }
    } else {
        bag.set("connection.mtls", Value::Bool(false));
    }
}

/// `source.ip`/`source.port` or the destination's.
fn set_peer(bag: &mut Bag, [ip_name, port_name]: [&'static str; 2], peer: Option<(IpAddr, u32)>) {
    if let Some((ip, port)) = peer {
        bag.set(ip_name, Value::IpAddress(ip));
        if port != 0 {
            bag.set(port_name, Value::Int64(i64::from(port)));
        }
    }
}

const SOURCE: [&str; 2] = ["source.ip", "source.port"];
const DESTINATION: [&str; 2] = ["destination.ip", "destination.port"];

fn socket(a: &Address) -> Option<(IpAddr, u32)> {
    let Some(address::Address::SocketAddress(s)) = &a.address else {
        return None;
    };
    let ip = s.address.parse().ok()?;
    let port = match s.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => p,
        _ => 0,
    };
    Some((ip, port))
}

fn duration(d: &PbDuration) -> Option<Duration> {
    (d.seconds >= 0 && d.nanos >= 0).then(|| Duration::new(d.seconds as u64, d.nanos as u32))
}

fn uri_san(cert: &CertificateProperties) -> Option<String> {
    cert.subject_alt_name.iter().find_map(|s| match &s.san {
        Some(San::Uri(u)) => Some(u.clone()),
        _ => None,
    })
}

/// A route Pilot named after its destination service's host. Envoy's own
/// names (`allow_any`, `block_all`, a port number) are no service.
fn service_host(route_name: &str) -> Option<String> {
    let host = route_name.rsplit_once(':').map_or(route_name, |(h, _)| h);
    (host.contains('.') && !host.contains(['|', ' '])).then(|| host.to_string())
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

/// Envoy's short response flags (`UH`, `NR`, `UF,URX`), `-` for none, as
/// Istio's `context.proxy_error_code` (the metrics' `response_flags`).
pub fn flags(f: Option<&ResponseFlags>) -> String {
    let Some(f) = f else {
        return "-".into();
    };
    let all = [
        (f.failed_local_healthcheck, "LH"),
        (f.no_healthy_upstream, "UH"),
        (f.upstream_request_timeout, "UT"),
        (f.local_reset, "LR"),
        (f.upstream_remote_reset, "UR"),
        (f.upstream_connection_failure, "UF"),
        (f.upstream_connection_termination, "UC"),
        (f.upstream_overflow, "UO"),
        (f.no_route_found, "NR"),
        (f.delay_injected, "DI"),
        (f.fault_injected, "FI"),
        (f.rate_limited, "RL"),
        (f.unauthorized_details.is_some(), "UAEX"),
        (f.rate_limit_service_error, "RLSE"),
        (f.downstream_connection_termination, "DC"),
        (f.upstream_retry_limit_exceeded, "URX"),
        (f.stream_idle_timeout, "SI"),
        (f.invalid_envoy_request_headers, "IH"),
        (f.downstream_protocol_error, "DPE"),
        (f.upstream_max_stream_duration_reached, "UMSDR"),
        (f.response_from_cache_filter, "RFCF"),
        (f.no_filter_config_found, "NFCF"),
        (f.duration_timeout, "DT"),
        (f.upstream_protocol_error, "UPE"),
        (f.no_cluster_found, "NC"),
        (f.overload_manager, "OM"),
        (f.dns_resolution_failure, "DF"),
    ];
    let set: Vec<&str> = all.iter().filter(|(on, _)| *on).map(|(_, s)| *s).collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.join(",")
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::SocketAddress;
    use envoy_types::pb::envoy::data::accesslog::v3::{
        ConnectionProperties, HttpResponseProperties, TlsProperties,
        tls_properties::certificate_properties::SubjectAltName,
    };
    use envoy_types::pb::google::protobuf::UInt32Value;

    use super::*;

    fn addr(ip: &str, port: u32) -> Option<Address> {
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        })
    }

    fn common(cluster: &str, route: &str) -> AccessLogCommon {
        AccessLogCommon {
            downstream_remote_address: addr("10.1.0.1", 40000),
            downstream_local_address: addr("10.1.0.2", 9080),
            upstream_remote_address: addr("10.1.0.2", 9080),
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
        let bag = http(&entry, &reporter, &Vocabulary::standard());
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
        let full = http(&with_headers, &reporter, &Vocabulary::standard());
        assert_eq!(
            get(&full, "request.headers").as_deref(),
            Some("{x-user: u}")
        );
        let vocab = Vocabulary::standard().reading([("request.host", None)]);
        let bag = http(&with_headers, &reporter, &vocab);
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
        let bag = http(&entry, &reporter, &Vocabulary::standard());
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
        let bag = tcp(&entry, &reporter, &Vocabulary::standard());
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
            service_host("reviews.default.svc.cluster.local:9080").as_deref(),
            Some("reviews.default.svc.cluster.local")
        );
    }
}
