//! Envoy's `AttributeContext` (ext_authz v3) read in place into a bag, as
//! mixer-policy takes Envoy's Checks. Texts are borrowed from the request
//! while it is read, and only what the bag keeps is copied: each header
//! once, into `request.headers`. Decoding it into `envoy-types`' message
//! first built a hash map of the headers and one of the context extensions,
//! a `String` for every key and value, and then copied the headers again.
//! An error names the field it found broken.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use api::wire::{Field, Fields, entry};

use super::{Bag, Value, Vocabulary, compressed};

const SOURCE: [&str; 3] = ["source.ip", "source.port", "source.principal"];
const DESTINATION: [&str; 3] = [
    "destination.ip",
    "destination.port",
    "destination.principal",
];

/// The attributes of one ext_authz request, from its `AttributeContext`,
/// and how many context extensions named no declared attribute (ignored,
/// as Istio did). An error starts with the path of the field it found
/// broken, as `attributes.request.http.headers`.
pub fn bag(ctx: &[u8], vocab: &Vocabulary) -> Result<(Bag, u64), String> {
    let mut bag = Bag::for_vocabulary(vocab);
    let mut undeclared = 0;
    for field in Fields::new(ctx) {
        match field.map_err(|e| format!("attributes: {e}"))? {
            (1, f) => peer(f, "attributes.source", SOURCE, &mut bag)?,
            (2, f) => peer(f, "attributes.destination", DESTINATION, &mut bag)?,
            (4, f) => request(f, &mut bag)?,
            (10, f) => {
                let (key, text) =
                    text_entry(f).map_err(|e| format!("attributes.context_extensions: {e}"))?;
                let Some(declared) = vocab.declaration(key) else {
                    undeclared += 1;
                    continue;
                };
                let value = Value::parse_as(declared.ty, text)
                    .map_err(|e| format!("context_extensions[{key}]: {e}"))?;
                bag.set_declared(&declared, value);
            }
            _ => {}
        }
    }
    Ok((bag, undeclared))
}

/// `Peer` at `path`: its socket address (field 1) and principal (4).
fn peer(
    f: Field<'_>,
    path: &str,
    [ip_name, port_name, principal_name]: [&'static str; 3],
    bag: &mut Bag,
) -> Result<(), String> {
    let within = |e| format!("{path}: {e}");
    for field in Fields::new(f.bytes().map_err(within)?) {
        match field.map_err(within)? {
            (1, f) => {
                if let Some((ip, port)) = socket(f).map_err(|e| format!("{path}.address: {e}"))? {
                    bag.set(ip_name, Value::IpAddress(ip));
                    bag.set(port_name, Value::Int64(i64::from(port)));
                }
            }
            (4, f) => {
                let principal = text(f).map_err(|e| format!("{path}.principal: {e}"))?;
                if !principal.is_empty() {
                    bag.set(principal_name, Value::string(principal));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `Address`: the IP and port of its `socket_address` (field 1; its
/// `address` is field 2, `port_value` field 3). A pipe, or an address that
/// is no IP, gives none.
fn socket(f: Field<'_>) -> Result<Option<(IpAddr, u32)>, String> {
    let mut socket = None;
    for field in Fields::new(f.bytes()?) {
        if let (1, f) = field? {
            socket = Some(f.bytes()?);
        }
    }
    let Some(socket) = socket else {
        return Ok(None);
    };
    let (mut ip, mut port) = ("", 0);
    for field in Fields::new(socket) {
        match field? {
            (2, f) => ip = text(f)?,
            (3, f) => port = f.varint()? as u32,
            _ => {}
        }
    }
    Ok(ip.parse().ok().map(|ip| (ip, port)))
}

/// `AttributeContext.Request`: its time (field 1) and HTTP request (2).
fn request(f: Field<'_>, bag: &mut Bag) -> Result<(), String> {
    let within = |e| format!("attributes.request: {e}");
    for field in Fields::new(f.bytes().map_err(within)?) {
        match field.map_err(within)? {
            (1, f) => {
                let time = timestamp(f).map_err(|e| format!("attributes.request.time: {e}"))?;
                bag.set("request.time", Value::Timestamp(time));
            }
            (2, f) => http(f, bag).map_err(|e| format!("attributes.request.http{e}"))?,
            _ => {}
        }
    }
    Ok(())
}

fn timestamp(f: Field<'_>) -> Result<std::time::SystemTime, String> {
    let mut t = prost_types::Timestamp::default();
    for field in Fields::new(f.bytes()?) {
        match field? {
            (1, f) => t.seconds = f.varint()? as i64,
            (2, f) => t.nanos = f.varint()? as i32,
            _ => {}
        }
    }
    compressed::timestamp(&t)
}

/// `AttributeContext.HttpRequest`, as Istio's proxy reported a request. An
/// error starts with the field's path below the message (`.method: ...`),
/// or with `: ` for the message itself.
fn http(f: Field<'_>, bag: &mut Bag) -> Result<(), String> {
    let mut headers = BTreeMap::new();
    let (mut id, mut method, mut path, mut host, mut scheme, mut size) = ("", "", "", "", "", 0);
    let within = |e| format!(": {e}");
    for field in Fields::new(f.bytes().map_err(within)?) {
        match field.map_err(within)? {
            (1, f) => id = text(f).map_err(named("id"))?,
            (2, f) => method = text(f).map_err(named("method"))?,
            (3, f) => {
                let (key, value) = text_entry(f).map_err(named("headers"))?;
                headers.insert(key.to_ascii_lowercase(), value.to_string());
            }
            (4, f) => path = text(f).map_err(named("path"))?,
            (5, f) => host = text(f).map_err(named("host"))?,
            (6, f) => scheme = text(f).map_err(named("scheme"))?,
            (9, f) => size = f.varint().map_err(|e| format!(".size: {e}"))? as i64,
            _ => {}
        }
    }
    let mut set = |name: &'static str, value: &str| {
        if !value.is_empty() {
            bag.set(name, Value::string(value));
        }
    };
    set("request.method", method);
    set("request.path", path);
    set("request.host", host);
    set("request.scheme", scheme);
    set(
        "request.id",
        headers.get("x-request-id").map_or(id, String::as_str),
    );
    set(
        "request.useragent",
        headers.get("user-agent").map_or("", String::as_str),
    );
    if size >= 0 {
        bag.set("request.size", Value::Int64(size));
    }
    let grpc = headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("application/grpc"));
    let protocol = if grpc { "grpc" } else { "http" };
    bag.set("context.protocol", Value::string(protocol));
    bag.set("request.headers", Value::StringMap(Arc::new(headers)));
    Ok(())
}

/// An error of `http`'s field `name`.
fn named(name: &'static str) -> impl Fn(String) -> String {
    move |e| format!(".{name}: {e}")
}

/// A `string` field's text.
fn text(f: Field<'_>) -> Result<&str, String> {
    std::str::from_utf8(f.bytes()?).map_err(|_| "not valid UTF-8".to_string())
}

/// A `map<string, string>` entry's key and value; one left out is empty.
fn text_entry(f: Field<'_>) -> Result<(&str, &str), String> {
    let (key, value) = entry(f.bytes()?)?;
    let key = key
        .map_or(Ok(""), text)
        .map_err(|e| format!("a key: {e}"))?;
    let value = match value {
        Some(v) => text(v).map_err(|e| format!("[{key}]: {e}"))?,
        None => "",
    };
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::google::protobuf::Timestamp;
    use prost::Message;

    use super::*;

    fn peer(ip: &str, port: u32, principal: &str) -> Option<Peer> {
        Some(Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            principal: principal.into(),
            ..Default::default()
        })
    }

    /// What reviews-v1's sidecar sends for a call from productpage-v1.
    fn context() -> AttributeContext {
        let headers = [
            (":authority", "reviews:9080"),
            ("X-Request-Id", "id-1"),
            ("user-agent", "curl/8.0"),
            ("content-type", "application/grpc+proto"),
            ("x-user", "jason"),
        ];
        AttributeContext {
            source: peer(
                "10.1.0.7",
                51234,
                "spiffe://cluster.local/ns/default/sa/productpage",
            ),
            destination: peer("10.1.0.9", 9080, ""),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                http: Some(HttpRequest {
                    id: "envoys-own-id".into(),
                    method: "POST".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    path: "/reviews/0".into(),
                    host: "reviews:9080".into(),
                    scheme: "http".into(),
                    size: 12,
                    ..Default::default()
                }),
            }),
            context_extensions: [
                (
                    "destination.service.host",
                    "reviews.default.svc.cluster.local",
                ),
                ("destination.uid", "kubernetes://reviews-v1.default"),
                ("not.an.attribute", "x"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        }
    }

    fn read(ctx: &AttributeContext) -> Result<(Bag, u64), String> {
        bag(&ctx.encode_to_vec(), &Vocabulary::standard())
    }

    fn text(bag: &Bag, name: &str) -> Option<String> {
        bag.get(name).map(ToString::to_string)
    }

    #[test]
    fn envoys_request_becomes_istios_attributes() {
        let (bag, undeclared) = read(&context()).unwrap();
        assert_eq!(undeclared, 1);
        let ip = |s: &str| Some(Value::IpAddress(s.parse().unwrap()));
        assert_eq!(bag.get("source.ip").cloned(), ip("10.1.0.7"));
        assert_eq!(bag.get("source.port"), Some(&Value::Int64(51234)));
        assert_eq!(
            text(&bag, "source.principal").as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/productpage")
        );
        assert_eq!(bag.get("destination.ip").cloned(), ip("10.1.0.9"));
        assert_eq!(bag.get("destination.port"), Some(&Value::Int64(9080)));
        assert_eq!(bag.get("destination.principal"), None);
        let time = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(bag.get("request.time"), Some(&Value::Timestamp(time)));
        for (name, want) in [
            ("request.method", "POST"),
            ("request.path", "/reviews/0"),
            ("request.host", "reviews:9080"),
            ("request.scheme", "http"),
            // The header wins over Envoy's own id, as Istio's proxy sent it.
            ("request.id", "id-1"),
            ("request.useragent", "curl/8.0"),
            ("context.protocol", "grpc"),
            (
                "destination.service.host",
                "reviews.default.svc.cluster.local",
            ),
            ("destination.uid", "kubernetes://reviews-v1.default"),
        ] {
            assert_eq!(text(&bag, name).as_deref(), Some(want), "{name}");
        }
        assert_eq!(bag.get("request.size"), Some(&Value::Int64(12)));
        let Some(Value::StringMap(headers)) = bag.get("request.headers") else {
            panic!("request.headers is a string map");
        };
        assert_eq!(
            headers.get("x-request-id").map(String::as_str),
            Some("id-1")
        );
        assert_eq!(
            headers.get(":authority").map(String::as_str),
            Some("reviews:9080")
        );
        assert_eq!(headers.len(), 5);
    }

    /// The fuzz target's seed, framed by hand rather than by prost, wrapped
    /// in a `CheckRequest` as Envoy sends it.
    #[test]
    fn a_request_framed_by_hand_reads_alike() {
        let sent = include_bytes!("../../fuzz/seeds/attribute_context/productpage-to-reviews");
        let request = api::authz_wire::CheckRequest::decode(&sent[..]).unwrap();
        let (bag, undeclared) = bag(&request.attributes, &Vocabulary::standard()).unwrap();
        assert_eq!(undeclared, 1);
        assert_eq!(bag.get("destination.port"), Some(&Value::Int64(9080)));
        assert_eq!(bag.get("source.port"), Some(&Value::Int64(51234)));
        assert_eq!(bag.get("request.size"), Some(&Value::Int64(0)));
        for (name, want) in [
            ("source.ip", "10.1.0.7"),
            ("request.id", "a1b2"),
            ("request.method", "GET"),
            ("request.useragent", "curl/8.0"),
            ("destination.service.name", "reviews"),
            ("context.protocol", "http"),
        ] {
            assert_eq!(text(&bag, name).as_deref(), Some(want), "{name}");
        }
        let Some(Value::StringMap(headers)) = bag.get("request.headers") else {
            panic!("request.headers is a string map");
        };
        assert_eq!(headers.len(), 6);
    }

    #[test]
    fn what_envoy_leaves_out_is_left_unset() {
        let mut ctx = context();
        ctx.source = Some(Peer::default());
        let http = ctx.request.as_mut().and_then(|r| r.http.as_mut()).unwrap();
        http.headers.clear();
        http.method.clear();
        let (bag, _) = read(&ctx).unwrap();
        assert_eq!(bag.get("source.ip"), None);
        assert_eq!(bag.get("request.method"), None);
        assert_eq!(bag.get("request.useragent"), None);
        assert_eq!(text(&bag, "request.id").as_deref(), Some("envoys-own-id"));
        assert_eq!(text(&bag, "context.protocol").as_deref(), Some("http"));

        let (bag, undeclared) = read(&AttributeContext::default()).unwrap();
        assert_eq!(undeclared, 0);
        assert_eq!(bag.get("request.headers"), None);
        assert_eq!(bag.get("context.protocol"), None);
    }

    #[test]
    fn a_broken_request_names_the_field() {
        let mut ctx = context();
        ctx.context_extensions
            .insert("destination.port".into(), "eighty".into());
        let e = read(&ctx).unwrap_err();
        assert!(e.starts_with("context_extensions[destination.port]"), "{e}");

        let mut ctx = context();
        ctx.request.as_mut().unwrap().time = Some(Timestamp {
            seconds: 0,
            nanos: -1,
        });
        let e = read(&ctx).unwrap_err();
        assert!(e.starts_with("attributes.request.time: "), "{e}");

        // A header value that is not UTF-8, framed by hand: field 4
        // (request) > 2 (http) > 3 (headers entry) with key "a" and value 0xff.
        let entry = [0x0a, 1, b'a', 0x12, 1, 0xff];
        let http = [&[0x1a, entry.len() as u8][..], &entry].concat();
        let request = [&[0x12, http.len() as u8][..], &http].concat();
        let message = [&[0x22, request.len() as u8][..], &request].concat();
        let e = bag(&message, &Vocabulary::standard()).unwrap_err();
        assert_eq!(e, "attributes.request.http.headers: [a]: not valid UTF-8");

        let mut truncated = context().encode_to_vec();
        truncated.truncate(truncated.len() - 3);
        let e = bag(&truncated, &Vocabulary::standard()).unwrap_err();
        assert!(e.starts_with("attributes"), "{e}");
    }
}
