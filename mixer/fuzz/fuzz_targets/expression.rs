//! Any text as a CEXL expression: compiled (as any expression and as a rule
//! match) against the standard vocabulary, then evaluated against an empty
//! bag and a small request. Nothing panics; a value has the type the
//! expression was checked to have, and a BOOL evaluates alike either way.

#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use mixer::attribute::{Bag, Value, ValueType, Vocabulary};
use mixer::expr::{Expression, compile_bool};

static VOCAB: LazyLock<Vocabulary> = LazyLock::new(Vocabulary::standard);

/// A request as a sidecar might report it.
static REQUEST: LazyLock<Bag> = LazyLock::new(|| {
    let mut bag = Bag::new();
    bag.set("source.ip", Value::IpAddress([10, 44, 0, 7].into()));
    let headers: BTreeMap<String, String> = [
        (":authority", "reviews.default.svc.cluster.local:9080"),
        (":method", "GET"),
        (":path", "/api/v1/reviews/0"),
        ("x-user", "jason"),
        ("user-agent", "curl/7.68.0"),
        ("empty", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    bag.set("request.headers", Value::StringMap(Arc::new(headers)));
    bag.set("request.size", Value::Int64(1536));
    bag.set("request.method", Value::string("GET"));
    bag.set("request.path", Value::string("/api/v1/reviews/0"));
    bag.set("destination.service.name", Value::string("reviews"));
    bag.set(
        "destination.service.host",
        Value::string("reviews.default.svc.cluster.local"),
    );
    let labels: BTreeMap<String, String> = [("app", "reviews"), ("version", "v2")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    bag.set("destination.labels", Value::StringMap(Arc::new(labels)));
    bag.set(
        "request.time",
        Value::Timestamp(UNIX_EPOCH + Duration::new(1_767_225_600, 250_000_000)),
    );
    bag.set(
        "response.duration",
        Value::Duration(Duration::from_millis(42)),
    );
    bag.set("response.code", Value::Int64(200));
    bag.set("connection.mtls", Value::Bool(true));
    bag
});

fn evaluate(expr: &Expression, bag: &Bag) {
    let value = expr.eval(bag);
    if let Ok(v) = &value {
        assert_eq!(
            v.value_type(),
            expr.result_type(),
            "{:?} gave {v:?}",
            expr.text()
        );
    }
    let truth = expr.eval_bool(bag);
    if expr.result_type() == ValueType::Bool {
        match (&value, &truth) {
            (Ok(v), Ok(b)) => assert_eq!(v, &Value::Bool(*b), "{:?}", expr.text()),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "{:?}: eval gave {value:?} but eval_bool gave {truth:?}",
                expr.text()
            ),
        }
    } else {
        assert!(truth.is_err(), "{:?} is not BOOL", expr.text());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let empty = Bag::new();
    if let Ok(expr) = Expression::compile(text, &VOCAB) {
        let _ = expr.attributes();
        evaluate(&expr, &empty);
        evaluate(&expr, &REQUEST);
    }
    if let Ok(expr) = compile_bool(text, &VOCAB) {
        assert_eq!(expr.result_type(), ValueType::Bool);
        evaluate(&expr, &empty);
        evaluate(&expr, &REQUEST);
    }
});
