//! The checked form of an expression and its evaluation.
//!
//! Evaluation borrows: attribute values, constants and map entries are
//! compared in place, and a missing attribute is reported with borrowed
//! names, so that a rule match or a `|` fallback allocates nothing.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::attribute::{Attr, Attributes, StringMap, Value};

use super::EvalError;
use super::functions::{self, Glob};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// Functions whose arguments are evaluated before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Match,
    Matches,
    Ip,
    Timestamp,
    DnsName,
    Email,
    Uri,
    StartsWith,
    EndsWith,
    ToLower,
    Size,
}

#[derive(Debug)]
pub(crate) enum Node {
    Const(Value),
    Attr(Attr),
    /// `attr[key]` on a map attribute, read with `Attributes::lookup_key`
    /// so the caller learns which key the result depended on.
    AttrKey {
        attr: Attr,
        key: Box<Node>,
    },
    /// `map[key]` on a computed map; `label` (its source text) names it
    /// when the key is missing.
    Index {
        map: Box<Node>,
        key: Box<Node>,
        label: Arc<str>,
    },
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    /// `a | b | c`: the first operand that is present.
    Fallback(Vec<Node>),
    /// `attr | constant`, most of Istio's dimensions: read in one step.
    AttrOr {
        attr: Attr,
        default: Value,
    },
    /// `attr["key"] | "text"`, how rules read headers and labels.
    KeyOr {
        attr: Attr,
        key: Arc<str>,
        default: Value,
    },
    Eq(Box<Node>, Box<Node>),
    Ne(Box<Node>, Box<Node>),
    /// Text `==` (or, unless `equal`, `!=`) a constant: most rule matches.
    TextIs {
        input: Box<Node>,
        text: Box<str>,
        equal: bool,
    },
    Cmp(CmpOp, Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    /// `match(input, "constant pattern")`.
    Glob {
        input: Box<Node>,
        glob: Glob,
    },
    /// `"constant regex".matches(input)`, compiled once.
    Regex {
        input: Box<Node>,
        re: regex::Regex,
    },
    Call(Func, Vec<Node>),
}

impl Node {
    fn children(&self) -> Vec<&Node> {
        match self {
            Node::Const(_) | Node::Attr(_) | Node::AttrOr { .. } | Node::KeyOr { .. } => Vec::new(),
            Node::AttrKey { key, .. } => vec![key],
            Node::Index { map, key, .. } => vec![map, key],
            Node::Not(x) | Node::Neg(x) => vec![x],
            Node::Glob { input, .. } | Node::Regex { input, .. } | Node::TextIs { input, .. } => {
                vec![input]
            }
            Node::And(xs) | Node::Or(xs) | Node::Fallback(xs) | Node::Call(_, xs) => {
                xs.iter().collect()
            }
            Node::Eq(a, b) | Node::Ne(a, b) | Node::Cmp(_, a, b) => vec![a, b],
            Node::Cond(c, a, b) => vec![c, a, b],
        }
    }

    /// Whether the node computes from constants only, so that its value
    /// can be found once at compile time.
    pub(crate) fn is_foldable(&self) -> bool {
        match self {
            Node::Const(_)
            | Node::Attr(_)
            | Node::AttrOr { .. }
            | Node::KeyOr { .. }
            | Node::AttrKey { .. } => false,
            other => other.children().iter().all(|c| matches!(c, Node::Const(_))),
        }
    }
}

/// What `node` may read, as [`Expression::reads`](super::Expression::reads)
/// gives it.
pub(crate) fn reads<'n>(node: &'n Node, out: &mut Vec<(&'n str, Option<&'n str>)>) {
    match node {
        Node::Attr(attr) | Node::AttrOr { attr, .. } => out.push((attr.name(), None)),
        Node::KeyOr { attr, key, .. } => out.push((attr.name(), Some(key))),
        Node::AttrKey { attr, key } => match &**key {
            Node::Const(Value::String(k)) => out.push((attr.name(), Some(k))),
            key => {
                out.push((attr.name(), None));
                reads(key, out);
            }
        },
        other => other.children().into_iter().for_each(|c| reads(c, out)),
    }
}

/// A value during evaluation, borrowed where it can be.
#[derive(Debug)]
pub(crate) enum Val<'a> {
    Ref(&'a Value),
    /// A STRING: a map entry, or computed text.
    Str(Cow<'a, str>),
    Own(Value),
}

impl Val<'_> {
    pub(crate) fn into_value(self) -> Value {
        match self {
            Val::Ref(v) => v.clone(),
            Val::Str(s) => Value::String(Arc::from(s.as_ref())),
            Val::Own(v) => v,
        }
    }

    fn view(&self) -> View<'_> {
        match self {
            Val::Ref(v) => View::of(v),
            Val::Own(v) => View::of(v),
            Val::Str(s) => View::Text(s),
        }
    }
}

/// What operators look at: the textual types are all text here, as they
/// compare with each other.
#[derive(Debug, Clone, Copy)]
enum View<'v> {
    Text(&'v str),
    Int(i64),
    Double(f64),
    Bool(bool),
    Time(SystemTime),
    Dur(Duration),
    Ip(IpAddr),
    Map(&'v StringMap),
}

impl View<'_> {
    fn of(v: &Value) -> View<'_> {
        match v {
            Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => {
                View::Text(s)
            }
            Value::Int64(i) => View::Int(*i),
            Value::Double(d) => View::Double(*d),
            Value::Bool(b) => View::Bool(*b),
            Value::Timestamp(t) => View::Time(*t),
            Value::Duration(d) => View::Dur(*d),
            Value::IpAddress(ip) => View::Ip(*ip),
            Value::StringMap(m) => View::Map(m),
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            View::Text(_) => "STRING",
            View::Int(_) => "INT64",
            View::Double(_) => "DOUBLE",
            View::Bool(_) => "BOOL",
            View::Time(_) => "TIMESTAMP",
            View::Dur(_) => "DURATION",
            View::Ip(_) => "IP_ADDRESS",
            View::Map(_) => "STRING_MAP",
        }
    }
}

/// Why evaluation stopped, with names borrowed from the expression.
#[derive(Debug)]
pub(crate) enum Fail<'a> {
    Attr(&'a str),
    Key(&'a str, Cow<'a, str>),
    Invalid(String),
}

impl Fail<'_> {
    pub(crate) fn into_error(self) -> EvalError {
        match self {
            Fail::Attr(name) => EvalError::MissingAttribute(name.to_string()),
            Fail::Key(attribute, key) => EvalError::MissingKey {
                attribute: attribute.to_string(),
                key: key.into_owned(),
            },
            Fail::Invalid(msg) => EvalError::Invalid(msg),
        }
    }
}

// Reached only when a bag holds a value of another type than the
// vocabulary declares, which checking cannot see.
fn mistyped<T>(want: &str, got: View<'_>) -> Result<T, Fail<'static>> {
    Err(Fail::Invalid(format!(
        "expected a {want} value, found {}",
        got.type_name()
    )))
}

type Out<'a, T> = Result<T, Fail<'a>>;

pub(crate) fn eval<'a>(node: &'a Node, attrs: &'a dyn Attributes) -> Out<'a, Val<'a>> {
    Ok(match node {
        Node::Const(v) => Val::Ref(v),
        Node::Attr(attr) => Val::Ref(attrs.lookup(attr).ok_or(Fail::Attr(attr.name()))?),
        Node::AttrOr { attr, default } => Val::Ref(attrs.lookup(attr).unwrap_or(default)),
        Node::KeyOr { attr, key, default } => match attrs.lookup_key(attr, key) {
            Some(v) => Val::Str(Cow::Borrowed(v)),
            None => Val::Ref(default),
        },
        Node::AttrKey { attr, key } => {
            let key = text(key, attrs)?;
            match attrs.lookup_key(attr, &key) {
                Some(v) => Val::Str(Cow::Borrowed(v)),
                None => return Err(Fail::Key(attr.name(), key)),
            }
        }
        Node::Index { map, key, label } => {
            let map = eval(map, attrs)?;
            let key = text(key, attrs)?;
            let found = match &map {
                Val::Ref(Value::StringMap(m)) => {
                    m.get(key.as_ref()).map(|v| Cow::Borrowed(v.as_str()))
                }
                Val::Own(Value::StringMap(m)) => m.get(key.as_ref()).map(|v| Cow::Owned(v.clone())),
                other => return mistyped("STRING_MAP", other.view()),
            };
            Val::Str(found.ok_or(Fail::Key(label, key))?)
        }
        Node::Neg(x) => Val::Own(match eval(x, attrs)?.view() {
            View::Int(i) => Value::Int64(
                i.checked_neg()
                    .ok_or_else(|| Fail::Invalid(format!("negating {i} overflows INT64")))?,
            ),
            View::Double(d) => Value::Double(-d),
            other => return mistyped("number", other),
        }),
        Node::Fallback(alternatives) => {
            // No message is made up front: most fallbacks end at a present
            // operand, and a `String` each would be an allocation each.
            let mut last = None;
            for alt in alternatives {
                match eval(alt, attrs) {
                    Err(missing @ (Fail::Attr(_) | Fail::Key(..))) => last = Some(missing),
                    done => return done,
                }
            }
            return Err(last.unwrap_or_else(|| Fail::Invalid("empty fallback".into())));
        }
        Node::Cond(c, a, b) => {
            return if eval_bool(c, attrs)? {
                eval(a, attrs)
            } else {
                eval(b, attrs)
            };
        }
        Node::Call(f, args) => call(*f, args, attrs)?,
        Node::Not(_)
        | Node::And(_)
        | Node::Or(_)
        | Node::Eq(..)
        | Node::Ne(..)
        | Node::TextIs { .. }
        | Node::Cmp(..)
        | Node::Glob { .. }
        | Node::Regex { .. } => Val::Own(Value::Bool(eval_bool(node, attrs)?)),
    })
}

/// Evaluates a BOOL node without building a value; `&&` and `||` stop at
/// the first operand that decides them, so later attributes are not read.
pub(crate) fn eval_bool<'a>(node: &'a Node, attrs: &'a dyn Attributes) -> Out<'a, bool> {
    match node {
        Node::And(xs) => {
            for x in xs {
                if !eval_bool(x, attrs)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Node::Or(xs) => {
            for x in xs {
                if eval_bool(x, attrs)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Node::Not(x) => Ok(!eval_bool(x, attrs)?),
        Node::Eq(a, b) => equal(&eval(a, attrs)?, &eval(b, attrs)?),
        Node::Ne(a, b) => Ok(!equal(&eval(a, attrs)?, &eval(b, attrs)?)?),
        Node::TextIs {
            input,
            text: t,
            equal,
        } => Ok((text(input, attrs)? == **t) == *equal),
        Node::Cmp(op, a, b) => order(*op, &eval(a, attrs)?, &eval(b, attrs)?),
        Node::Glob { input, glob } => Ok(glob.matches(&text(input, attrs)?)),
        Node::Regex { input, re } => Ok(re.is_match(&text(input, attrs)?)),
        _ => match eval(node, attrs)?.view() {
            View::Bool(b) => Ok(b),
            other => mistyped("BOOL", other),
        },
    }
}

/// A textual operand's text.
fn text<'a>(node: &'a Node, attrs: &'a dyn Attributes) -> Out<'a, Cow<'a, str>> {
    // The common operands directly, without building a `Val`.
    match node {
        Node::Const(v) => {
            if let Some(s) = v.as_str() {
                return Ok(Cow::Borrowed(s));
            }
        }
        Node::AttrKey { attr, key } => {
            let key = text(key, attrs)?;
            return match attrs.lookup_key(attr, &key) {
                Some(v) => Ok(Cow::Borrowed(v)),
                None => Err(Fail::Key(attr.name(), key)),
            };
        }
        Node::KeyOr { attr, key, default } => {
            if let Some(default) = default.as_str() {
                return Ok(Cow::Borrowed(
                    attrs.lookup_key(attr, key).unwrap_or(default),
                ));
            }
        }
        _ => {}
    }
    match eval(node, attrs)? {
        Val::Ref(v) => match v.as_str() {
            Some(s) => Ok(Cow::Borrowed(s)),
            None => mistyped("STRING", View::of(v)),
        },
        Val::Str(s) => Ok(s),
        Val::Own(v) => match v.as_str() {
            Some(s) => Ok(Cow::Owned(s.to_string())),
            None => mistyped("STRING", View::of(&v)),
        },
    }
}

/// A textual operand as a shared string, reusing the value's own when it
/// has one.
fn shared<'a>(node: &'a Node, attrs: &'a dyn Attributes) -> Out<'a, Arc<str>> {
    match eval(node, attrs)? {
        Val::Ref(Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s)) => {
            Ok(s.clone())
        }
        Val::Str(s) => Ok(Arc::from(s.as_ref())),
        other => match other.into_value() {
            Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => Ok(s),
            v => mistyped("STRING", View::of(&v)),
        },
    }
}

fn equal(a: &Val<'_>, b: &Val<'_>) -> Out<'static, bool> {
    Ok(match (a.view(), b.view()) {
        (View::Text(x), View::Text(y)) => x == y,
        (View::Int(x), View::Int(y)) => x == y,
        (View::Double(x), View::Double(y)) => x == y,
        (View::Bool(x), View::Bool(y)) => x == y,
        (View::Time(x), View::Time(y)) => x == y,
        (View::Dur(x), View::Dur(y)) => x == y,
        // An IPv4 address equals its IPv4-mapped IPv6 form, as Go's
        // net.IP.Equal has it.
        (View::Ip(x), View::Ip(y)) => x.to_canonical() == y.to_canonical(),
        (View::Map(x), View::Map(y)) => x == y,
        (x, _) => return mistyped(x.type_name(), b.view()),
    })
}

fn order(op: CmpOp, a: &Val<'_>, b: &Val<'_>) -> Out<'static, bool> {
    let ord = match (a.view(), b.view()) {
        (View::Int(x), View::Int(y)) => x.partial_cmp(&y),
        // NaN is unordered: every comparison with it is false.
        (View::Double(x), View::Double(y)) => x.partial_cmp(&y),
        (View::Time(x), View::Time(y)) => x.partial_cmp(&y),
        (View::Dur(x), View::Dur(y)) => x.partial_cmp(&y),
        (x, _) => return mistyped(x.type_name(), b.view()),
    };
    Ok(ord.is_some_and(|o| match op {
        CmpOp::Lt => o.is_lt(),
        CmpOp::Le => o.is_le(),
        CmpOp::Gt => o.is_gt(),
        CmpOp::Ge => o.is_ge(),
    }))
}

fn call<'a>(f: Func, args: &'a [Node], attrs: &'a dyn Attributes) -> Out<'a, Val<'a>> {
    let invalid = |name: &str, why: String| Fail::Invalid(format!("`{name}`: {why}"));
    let value = match (f, args) {
        (Func::Match, [s, p]) => {
            Value::Bool(functions::glob_match(&text(s, attrs)?, &text(p, attrs)?))
        }
        (Func::Matches, [re, s]) => {
            let re =
                functions::compile_regex(&text(re, attrs)?).map_err(|e| invalid("matches", e))?;
            Value::Bool(re.is_match(&text(s, attrs)?))
        }
        (Func::Ip, [s]) => {
            Value::IpAddress(functions::parse_ip(&text(s, attrs)?).map_err(|e| invalid("ip", e))?)
        }
        (Func::Timestamp, [s]) => {
            let t = text(s, attrs)?;
            Value::Timestamp(functions::parse_rfc3339(&t).ok_or_else(|| {
                invalid("timestamp", format!("{t:?} is not an RFC 3339 timestamp"))
            })?)
        }
        (Func::DnsName, [s]) => {
            let t = shared(s, attrs)?;
            functions::check_dns_name(&t).map_err(|e| invalid("dnsName", e))?;
            Value::DnsName(t)
        }
        (Func::Email, [s]) => {
            let t = shared(s, attrs)?;
            functions::check_email(&t).map_err(|e| invalid("email", e))?;
            Value::EmailAddress(t)
        }
        (Func::Uri, [s]) => {
            let t = shared(s, attrs)?;
            functions::check_uri(&t).map_err(|e| invalid("uri", e))?;
            Value::Uri(t)
        }
        (Func::StartsWith, [s, p]) => {
            Value::Bool(text(s, attrs)?.starts_with(text(p, attrs)?.as_ref()))
        }
        (Func::EndsWith, [s, p]) => {
            Value::Bool(text(s, attrs)?.ends_with(text(p, attrs)?.as_ref()))
        }
        (Func::ToLower, [s]) => {
            let t = text(s, attrs)?;
            // Most inputs are already lower case; keep those borrowed.
            if t.chars().any(|c| c.is_alphabetic() && !c.is_lowercase()) {
                return Ok(Val::Str(Cow::Owned(t.to_lowercase())));
            }
            return Ok(Val::Str(t));
        }
        // Counts characters, as CEL's `size` does, not bytes.
        (Func::Size, [s]) => {
            Value::Int64(i64::try_from(text(s, attrs)?.chars().count()).unwrap_or(i64::MAX))
        }
        (f, args) => {
            return Err(Fail::Invalid(format!(
                "internal error: {f:?} called with {} arguments",
                args.len()
            )));
        }
    };
    Ok(Val::Own(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{Bag, ValueType};
    use crate::expr::test_support::*;

    fn missing_attr(name: &str) -> Result<Value, EvalError> {
        Err(EvalError::MissingAttribute(name.into()))
    }

    fn missing_key(attribute: &str, key: &str) -> Result<Value, EvalError> {
        Err(EvalError::MissingKey {
            attribute: attribute.into(),
            key: key.into(),
        })
    }

    fn invalid(text: &str) -> String {
        match evaluate(text) {
            Err(EvalError::Invalid(msg)) => msg,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn rule_matches() {
        assert!(truth(
            "request.headers[\"x-user\"] == \"jason\" && destination.service.name == \"ratings\""
        ));
        assert!(!truth("request.headers[\"x-user\"] != \"jason\""));
        assert!(truth("a | \"x\" == \"A\""));
        assert!(truth("source.user | \"x\" == \"x\""));
        assert!(truth("!(response.code == 404) && !t.flag == false"));
        assert!(truth(
            "context.reporter.kind == \"inbound\" || source.user == \"x\""
        ));
        assert!(truth("true == true == true"));
    }

    #[test]
    fn comparisons() {
        assert!(truth(
            "response.code >= 200 && response.code < 300 && response.code <= 200"
        ));
        assert!(truth("response.code > -1"));
        assert!(truth(
            "t.double > 1.25 && t.double <= 1.5 && t.double != 2.0"
        ));
        assert!(truth("response.duration > 100ms && response.duration < 1s"));
        assert!(truth("response.duration == 0.15s"));
        assert!(truth(
            "request.time > timestamp(\"2019-06-01T11:59:59.999Z\")"
        ));
        assert!(truth(
            "request.time == timestamp(\"2019-06-01T14:00:00+02:00\")"
        ));
        assert!(truth(
            "source.ip == ip(\"10.0.0.1\") && source.ip != ip(\"10.0.0.2\")"
        ));
        assert!(truth("source.ip == ip(\"::ffff:10.0.0.1\")"));
        assert!(truth(
            "t.dns == \"example.com\" && \"example.com\" == t.dns"
        ));
        assert!(truth("t.dns == dnsName(\"example.com\")"));
        assert!(truth(
            "source.labels == source.labels && source.labels != destination.labels"
        ));
        assert!(truth("emptyStringMap() == emptyStringMap()"));
        // NaN is unordered and unequal.
        let mut b = bag();
        b.set("t.double", Value::Double(f64::NAN));
        for text in ["t.double < 1.0", "t.double >= 1.0", "t.double == t.double"] {
            assert_eq!(compile(text).eval_bool(&b), Ok(false), "{text}");
        }
    }

    #[test]
    fn functions() {
        assert!(truth(
            "match(destination.service.host, \"*.cluster.local\")"
        ));
        assert!(truth("match(destination.service.host, \"ratings.*\")"));
        assert!(!truth("match(destination.service.host, \"ratings\")"));
        assert!(!truth("match(request.path, a | \"/api*\")"));
        assert!(truth("match(request.path, t.text | \"/api*\")"));
        assert!(truth("\"^/api/v[0-9]+/\".matches(request.path)"));
        assert!(!truth("\"^/v1\".matches(request.path)"));
        assert!(
            truth("\"v1\".matches(request.path)"),
            "searches, not anchored"
        );
        assert!(
            truth("request.path.matches(\"/api/.*\") == false"),
            "the receiver is the pattern"
        );
        assert!(truth("(t.text | \"i+tem\").matches(request.path)"));
        assert!(truth(
            "startsWith(request.path, \"/api\") && request.path.startsWith(\"/api/\")"
        ));
        assert!(truth(
            "endsWith(request.path, \"items\") && !request.path.endsWith(\"x\")"
        ));
        assert_eq!(
            evaluate("toLower(request.headers[\"x-mixed\"])"),
            Ok(Value::string("abc"))
        );
        assert_eq!(
            evaluate("request.headers[\"x-mixed\"].toLower()"),
            Ok(Value::string("abc"))
        );
        assert_eq!(
            evaluate("request.path.toLower()"),
            Ok(Value::string("/api/v1/items"))
        );
        assert_eq!(evaluate("size(request.path)"), Ok(Value::Int64(13)));
        assert_eq!(evaluate("size(\"héllo\")"), Ok(Value::Int64(5)));
        assert_eq!(
            evaluate("conditional(t.flag, \"yes\", \"no\")"),
            Ok(Value::string("yes"))
        );
        assert_eq!(
            evaluate("conditional(!t.flag, 1, response.code)"),
            Ok(Value::Int64(200))
        );
        assert_eq!(
            evaluate("ip(conditional(t.flag, \"10.1.2.3\", \"::1\"))"),
            Ok(Value::IpAddress([10, 1, 2, 3].into()))
        );
        assert_eq!(
            evaluate("email(\"jason@example.com\")"),
            Ok(Value::EmailAddress(Arc::from("jason@example.com")))
        );
        assert_eq!(
            evaluate("uri(request.path)"),
            Ok(Value::Uri(Arc::from("/api/v1/items")))
        );
        assert_eq!(
            evaluate("dnsName(destination.service.host)"),
            Ok(Value::DnsName(Arc::from(
                "ratings.default.svc.cluster.local"
            )))
        );
        assert_eq!(
            evaluate("timestamp(\"2019-06-01T12:00:00Z\") == request.time"),
            Ok(Value::Bool(true))
        );
        assert_eq!(evaluate("emptyStringMap()"), Ok(map(&[])));
        assert_eq!(evaluate("-t.double"), Ok(Value::Double(-1.5)));
        assert_eq!(evaluate("-response.code"), Ok(Value::Int64(-200)));
    }

    #[test]
    fn invalid_values_at_run_time() {
        assert_eq!(
            invalid("ip(request.path)"),
            "`ip`: \"/api/v1/items\" is not an IP address"
        );
        assert!(invalid("timestamp(request.path)").contains("not an RFC 3339 timestamp"));
        assert!(invalid("dnsName(request.path)").contains("is not a DNS name"));
        assert!(invalid("email(request.path)").contains("is not an email address"));
        assert!(invalid("uri(request.headers[\"empty\"])").contains("is not a URI"));
        assert!(invalid("(t.text | \"(\").matches(\"x\")").starts_with("`matches`: invalid regex"));
        // `|` catches absence only, not invalid values.
        assert!(invalid("ip(request.path) | ip(\"10.0.0.1\")").contains("not an IP address"));
        // A bag whose value contradicts the vocabulary is an error, not a panic.
        let mut b = bag();
        b.set("response.code", Value::string("200"));
        let e = compile("response.code == 200").eval_bool(&b);
        assert!(matches!(e, Err(EvalError::Invalid(_))), "{e:?}");
        b.set("request.path", Value::Int64(1));
        let e = compile("request.path == \"x\"").eval_bool(&b);
        assert!(matches!(e, Err(EvalError::Invalid(_))), "{e:?}");
        b.set("response.code", Value::Int64(i64::MIN));
        let e = compile("-response.code").eval(&b);
        assert!(matches!(e, Err(EvalError::Invalid(m)) if m.contains("overflows")));
        b.set("t.flag", Value::Int64(1));
        assert!(compile("t.flag").eval_bool(&b).is_err());
        assert!(compile("t.flag").eval(&b).is_err());
    }

    #[test]
    fn missing_attributes_and_fallbacks() {
        assert_eq!(evaluate("source.user"), missing_attr("source.user"));
        assert_eq!(
            evaluate("source.user == \"x\""),
            missing_attr("source.user")
        );
        assert_eq!(
            evaluate("request.headers[\"nope\"]"),
            missing_key("request.headers", "nope")
        );
        assert_eq!(
            evaluate("request.auth.claims[\"iss\"]"),
            missing_key("request.auth.claims", "iss")
        );
        assert_eq!(
            evaluate("source.user | \"anon\""),
            Ok(Value::string("anon"))
        );
        assert_eq!(
            evaluate("request.headers[\"nope\"] | request.headers[\"x-user\"] | \"none\""),
            Ok(Value::string("jason"))
        );
        assert_eq!(
            evaluate("request.headers[\"nope\"] | source.user | \"none\""),
            Ok(Value::string("none"))
        );
        // With no alternative present the last absence is reported.
        assert_eq!(
            evaluate("request.headers[\"nope\"] | source.user"),
            missing_attr("source.user")
        );
        assert_eq!(
            evaluate("source.user | request.headers[\"nope\"]"),
            missing_key("request.headers", "nope")
        );
        // A missing attribute in a key is caught like a missing key.
        assert_eq!(
            evaluate("request.headers[source.user] | \"d\""),
            Ok(Value::string("d"))
        );
        assert_eq!(
            evaluate("request.headers[source.user | \"x-user\"]"),
            Ok(Value::string("jason"))
        );
        assert_eq!(
            evaluate("(source.labels | destination.labels)[\"version\"]"),
            Ok(Value::string("v1"))
        );
        assert_eq!(
            evaluate("conditional(t.flag, destination.labels, source.labels)[\"version\"]"),
            missing_key(
                "conditional(t.flag, destination.labels, source.labels)",
                "version"
            )
        );
        assert_eq!(
            evaluate("emptyStringMap()[\"k\"] | \"d\""),
            Ok(Value::string("d"))
        );
        assert_eq!(
            evaluate("emptyStringMap()[\"k\"]"),
            missing_key("emptyStringMap()", "k")
        );
        assert_eq!(evaluate("response.code | 0"), Ok(Value::Int64(200)));
        assert_eq!(evaluate("check.error_code | 0"), Ok(Value::Int64(0)));
        // The result takes the type of the first alternative.
        assert_eq!(evaluate("t.text | t.dns"), Ok(Value::string("example.com")));
        assert_eq!(
            evaluate("conditional(false, t.dns, request.path)"),
            Ok(Value::DnsName(Arc::from("/api/v1/items")))
        );
        // An empty bag: every read is absent.
        let e = compile("request.headers[\"x-user\"] | source.user | \"\"");
        assert_eq!(e.eval(&Bag::new()), Ok(Value::string("")));
        assert_eq!(e.result_type(), ValueType::String);
    }

    #[test]
    fn map_keys_are_read_with_get_key() {
        let attrs = Counting::new();
        let e = compile("request.headers[\"x-user\"] == \"jason\"");
        assert_eq!(e.eval_bool(&attrs), Ok(true));
        assert_eq!(attrs.take(), vec!["request.headers[x-user]"]);
        let e = compile("request.headers[a.b.toLower()] | \"\"");
        assert_eq!(e.eval(&attrs), Ok(Value::string("")));
        assert_eq!(attrs.take(), vec!["a.b", "request.headers[ab]"]);
    }

    #[test]
    fn evaluation_short_circuits() {
        let attrs = Counting::new();
        let run = |text: &str| {
            compile(text)
                .eval(&attrs)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            attrs.take()
        };
        assert_eq!(
            run("request.headers[\"x-user\"] == \"jason\" || destination.service.name == \"y\""),
            vec!["request.headers[x-user]"]
        );
        assert_eq!(
            run("request.headers[\"x-user\"] == \"x\" && destination.service.name == \"y\""),
            vec!["request.headers[x-user]"]
        );
        assert_eq!(
            run("request.headers[\"x-user\"] == \"x\" || destination.service.name == \"y\""),
            vec!["request.headers[x-user]", "destination.service.name"]
        );
        assert_eq!(run("a | source.user | a.b"), vec!["a"]);
        assert_eq!(run("source.user | a | a.b"), vec!["source.user", "a"]);
        assert_eq!(run("conditional(t.flag, a, a.b)"), vec!["t.flag", "a"]);
        assert_eq!(run("conditional(!t.flag, a, a.b)"), vec!["t.flag", "a.b"]);
        // A missing attribute on the deciding side is still an error; one
        // never reached is not.
        assert!(truth("t.flag || source.user == \"x\""));
        assert_eq!(
            compile("source.user == \"x\" || t.flag").eval_bool(&bag()),
            Err(EvalError::MissingAttribute("source.user".into()))
        );
    }
}
