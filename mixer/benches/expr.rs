//! What one Check costs inside mixer-policy, piece by piece, on a realistic
//! request (productpage-v1 calling reviews-v1: 30 attributes, 12 headers):
//!
//! - `expr/*`: one compiled rule match evaluated against the request's bag:
//!   a header and a service name, a glob, `|` falling back past missing
//!   attributes, an IP comparison, a regex;
//! - `decode/*`: the request's compressed attributes into a bag, alone and
//!   with the protobuf decode of the whole `CheckRequest` before it;
//! - `dispatcher/*`: `Dispatcher::check` over 20 rules (16 denier rules whose
//!   matches do not hold, 4 listchecker rules that admit), with the check
//!   cache off, on a cache miss (a new `x-user` each time, cache on) and on a
//!   cache hit. The adapters are small stand-ins for mixer-policy's denier and
//!   listchecker, defined here (mixer-policy's own are not a library of this
//!   crate).
//!
//! The rules are those of `bench/src/check_load.rs`, which drives the real
//! mixer-policy with them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mixer::adapter::{Adapter, CheckResult, Handler, ParamsError, Registry, Status};
use mixer::attribute::compressed::{Raw, Words, decode, encode};
use mixer::attribute::{Bag, Value, Vocabulary, dictionary};
use mixer::config::store::Current;
use mixer::config::{Snapshot, parse_file};
use mixer::dispatch::Dispatcher;
use mixer::expr::Expression;
use mixer::template::{Instance, Template};
use prost::Message;
use tonic::Code;

// The allocator mixer-policy runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The 20 rules `check-load` runs against the real mixer-policy.
const RULES: &str = include_str!("../../bench/config/policy-20-rules.yaml");

/// Stand-in for mixer-policy's denier: refuses with the configured status.
struct Denier;

struct Deny(Status);

#[async_trait]
impl Handler for Deny {
    async fn check(&self, _instance: &Instance) -> CheckResult {
        CheckResult {
            status: self.0.clone(),
            valid_duration: Duration::from_secs(5),
            valid_use_count: 1000,
        }
    }
}

impl Adapter for Denier {
    fn name(&self) -> &'static str {
        "denier"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::CheckNothing, Template::ListEntry]
    }

    fn build(&self, params: &serde_json::Value) -> Result<Arc<dyn Handler>, ParamsError> {
        let code = params["status"]["code"].as_i64().unwrap_or(9) as i32;
        let message = params["status"]["message"].as_str().unwrap_or_default();
        Ok(Arc::new(Deny(Status::new(Code::from_i32(code), message))))
    }
}

/// Stand-in for mixer-policy's listchecker: strings (optionally without
/// case), IP networks or regexes; a whitelist or a blacklist.
struct ListChecker;

enum Entries {
    Strings(HashSet<String>),
    Lower(HashSet<String>),
    Nets(Vec<ipnet::IpNet>),
    Regexes(regex::RegexSet),
}

struct List {
    entries: Entries,
    blacklist: bool,
}

#[async_trait]
impl Handler for List {
    async fn check(&self, instance: &Instance) -> CheckResult {
        let Some(value) = instance.value("value") else {
            return CheckResult::once(Status::new(Code::InvalidArgument, "no value"));
        };
        let found = match &self.entries {
            Entries::Strings(s) => s.contains(&value.to_string()),
            Entries::Lower(s) => s.contains(&value.to_string().to_lowercase()),
            Entries::Nets(nets) => match value {
                Value::IpAddress(ip) => nets.iter().any(|n| n.contains(ip)),
                _ => false,
            },
            Entries::Regexes(set) => set.is_match(&value.to_string()),
        };
        if found == self.blacklist {
            return CheckResult::once(Status::new(Code::PermissionDenied, "listed"));
        }
        CheckResult {
            status: Status::OK,
            valid_duration: Duration::from_secs(300),
            valid_use_count: 10_000,
        }
    }
}

impl Adapter for ListChecker {
    fn name(&self) -> &'static str {
        "listchecker"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::ListEntry]
    }

    fn build(&self, params: &serde_json::Value) -> Result<Arc<dyn Handler>, ParamsError> {
        let items: Vec<String> = params["overrides"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let bad = |e: String| ParamsError::new("overrides", e);
        let entries = match params["entryType"].as_str().unwrap_or("STRINGS") {
            "CASE_INSENSITIVE_STRINGS" => {
                Entries::Lower(items.iter().map(|s| s.to_lowercase()).collect())
            }
            "IP_ADDRESSES" => Entries::Nets(
                items
                    .iter()
                    .map(|s| s.parse().map_err(|e| bad(format!("{s}: {e}"))))
                    .collect::<Result<_, _>>()?,
            ),
            "REGEX" => {
                Entries::Regexes(regex::RegexSet::new(&items).map_err(|e| bad(e.to_string()))?)
            }
            _ => Entries::Strings(items.into_iter().collect()),
        };
        Ok(Arc::new(List {
            entries,
            blacklist: params["blacklist"].as_bool().unwrap_or(false),
        }))
    }
}

fn string_map(pairs: &[(&str, &str)]) -> Value {
    Value::StringMap(Arc::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    ))
}

fn headers(user: &str) -> Value {
    string_map(&[
        (":authority", "reviews:9080"),
        (":method", "GET"),
        (":path", "/reviews/0"),
        ("accept", "application/json"),
        ("user-agent", "python-requests/2.21.0"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5f1c8a3e-9b7d-4c2a-8e6f-0a1b2c3d4e5f"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "a1b2c3d4e5f60718"),
        ("x-b3-sampled", "1"),
        ("x-user", user),
        ("content-length", "0"),
    ])
}

/// productpage-v1 calling reviews-v1, as reviews-v1's sidecar reports it:
/// the request `check-load` sends.
fn request_bag() -> Bag {
    let json = serde_json::from_str(include_str!("../../bench/config/reviews-request.json"))
        .expect("bench/config/reviews-request.json is JSON");
    let mut b = Bag::from_json(&json, &Vocabulary::standard())
        .expect("bench/config/reviews-request.json holds attributes");
    b.set("request.headers", headers("jason"));
    b.set(
        "request.id",
        Value::string("5f1c8a3e-9b7d-4c2a-8e6f-0a1b2c3d4e5f"),
    );
    b.set("request.time", Value::Timestamp(SystemTime::now()));
    b
}

fn expressions(c: &mut Criterion) {
    let vocab = Vocabulary::standard();
    let bag = request_bag();
    let cases = [
        (
            "header_and_service",
            r#"request.headers["x-user"] == "jason" && destination.service.name == "reviews""#,
            true,
        ),
        (
            "glob",
            r#"match(destination.service.host, "*.default.svc.cluster.local")"#,
            true,
        ),
        (
            "fallback_past_missing",
            r#"request.headers["x-tenant"] | source.labels["tenant"] | "none" == "none""#,
            true,
        ),
        ("ip_compare", r#"source.ip == ip("10.1.0.5")"#, true),
        (
            "regex",
            r#""^/(reviews|ratings)/[0-9]+$".matches(request.path)"#,
            true,
        ),
        (
            "starts_with_and_not_equal",
            r#"request.path.startsWith("/admin") && source.namespace | "" != "istio-system""#,
            false,
        ),
    ];
    let mut group = c.benchmark_group("expr");
    for (name, text, expected) in cases {
        let e = Expression::compile(text, &vocab).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.eval_bool(&bag), Ok(expected), "{text}");
        group.bench_function(name, |b| b.iter(|| e.eval_bool(std::hint::black_box(&bag))));
    }
    group.finish();
}

fn decoding(c: &mut Criterion) {
    let vocab = Vocabulary::standard();
    let bag = request_bag();
    let attrs = encode(&bag);
    let global = dictionary::words().len() as u32;
    let request = api::mixer::CheckRequest {
        attributes: Some(attrs.clone()),
        global_word_count: global,
        deduplication_id: "5f1c8a3e-9b7d-4c2a-8e6f-0a1b2c3d4e5f".into(),
        quotas: Default::default(),
    };
    let wire = request.encode_to_vec();
    let attrs = attrs.encode_to_vec();
    let decode_bag = |attrs: &[u8]| {
        let raw = Raw::parse(attrs).expect("framing");
        let words = Words::new(global, raw.words()).expect("words");
        let mut out = Bag::for_vocabulary(&vocab);
        decode(&raw, &words, &vocab, &mut out).expect("decode");
        out
    };
    assert_eq!(decode_bag(&attrs).len(), bag.len());
    let mut group = c.benchmark_group("decode");
    group.bench_function("compressed_30_attributes", |b| {
        b.iter(|| decode_bag(std::hint::black_box(&attrs)))
    });
    group.bench_function("check_request_wire_and_compressed", |b| {
        b.iter(|| {
            let req = api::mixer_wire::CheckRequest::decode(std::hint::black_box(wire.as_slice()))
                .expect("protobuf");
            decode_bag(&req.attributes)
        })
    });
    group.finish();
}

fn dispatcher(c: &mut Criterion) {
    let mut objects = Vec::new();
    for result in parse_file("rules.yaml", RULES, "istio-system") {
        objects.push(result.unwrap_or_else(|e| panic!("{e:?}")));
    }
    let registry = Registry::new(vec![Arc::new(Denier), Arc::new(ListChecker)]);
    let build = || {
        let snapshot = Snapshot::build(
            &objects,
            Vec::new(),
            &Snapshot::empty("istio-system"),
            &registry,
        );
        assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
        assert_eq!(snapshot.rules.len(), 20);
        Current::new(snapshot)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let uncached = Dispatcher::new(build(), Duration::from_secs(1), 0);
    let cached = Dispatcher::new(build(), Duration::from_secs(1), 100_000);
    let bag = request_bag();
    // As mixer-policy does per request: take the current config, then check.
    let check = |d: &Dispatcher, bag: &Bag| runtime.block_on(d.check(&d.snapshot(), bag));
    let first = check(&uncached, &bag);
    assert!(first.result.status.is_ok(), "{:?}", first.result);

    let mut group = c.benchmark_group("dispatcher_20_rules");
    group.bench_function("check_cache_off", |b| {
        b.iter(|| check(&uncached, std::hint::black_box(&bag)))
    });
    let mut n: u64 = 0;
    group.bench_function("check_cache_miss", |b| {
        b.iter_batched(
            || {
                n += 1;
                let mut miss = bag.clone();
                miss.set("request.headers", headers(&format!("user-{n}")));
                miss
            },
            |miss| {
                let outcome = check(&cached, &miss);
                debug_assert!(!outcome.cache_hit);
                outcome
            },
            BatchSize::SmallInput,
        )
    });
    check(&cached, &bag);
    group.bench_function("check_cache_hit", |b| {
        b.iter(|| check(&cached, std::hint::black_box(&bag)))
    });
    group.finish();
}

criterion_group!(benches, expressions, decoding, dispatcher);
criterion_main!(benches);
