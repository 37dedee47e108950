//! Mixer's expression language (CEXL): the statically typed subset of Go
//! expressions that rule matches and instance fields are written in, such as
//! `request.headers["x-user"] | "" == "jason" && match(destination.service.host, "*.svc")`.
//!
//! Expressions are compiled once, against the vocabulary, into a tree whose
//! types are known, literals built and patterns compiled; evaluating one per
//! request then only reads attributes and compares.

pub mod functions;

mod check;
mod eval;
mod lexer;
mod parser;

use std::sync::Arc;

use crate::attribute::{Attributes, Value, ValueType, Vocabulary};

use eval::{Fail, Node};

/// How deeply expressions may nest; bounds every recursive pass so that no
/// input can exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 64;
/// The longest expression text accepted, in bytes.
pub(crate) const MAX_LENGTH: usize = 64 * 1024;

/// An error at a byte offset, before the text is attached.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Located {
    pub pos: usize,
    pub msg: String,
}

/// A compiled, type-checked expression. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Expression(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    text: Box<str>,
    root: Node,
    ty: ValueType,
    attrs: Vec<Arc<str>>,
}

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at offset {position} of {:?})", excerpt(.text))]
pub struct ExprError {
    /// Byte offset in the text.
    pub position: usize,
    pub message: String,
    /// The expression (only its start, when it was too long to compile).
    pub text: String,
}

/// Why an evaluation has no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("attribute `{0}` is missing")]
    MissingAttribute(String),
    #[error("`{attribute}[{key:?}]` is missing")]
    MissingKey { attribute: String, key: String },
    /// A value a function refuses at run time, such as `ip(x)` of a non-IP.
    #[error("{0}")]
    Invalid(String),
}

/// Error messages quote at most this much of the expression.
const EXCERPT: usize = 200;

fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT {
        return text.to_string();
    }
    let mut end = EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text.get(..end).unwrap_or_default())
}

impl ExprError {
    fn new(text: &str, e: Located) -> ExprError {
        ExprError {
            position: e.pos,
            message: e.msg,
            text: text.to_string(),
        }
    }
}

impl Expression {
    /// Parses and type-checks `text` against `vocab`.
    pub fn compile(text: &str, vocab: &Vocabulary) -> Result<Expression, ExprError> {
        if text.len() > MAX_LENGTH {
            let e = Located {
                pos: MAX_LENGTH,
                msg: format!(
                    "expression is {} bytes long, over the limit of {MAX_LENGTH}",
                    text.len()
                ),
            };
            return Err(ExprError::new(&excerpt(text), e));
        }
        let ast = parser::parse(text).map_err(|e| ExprError::new(text, e))?;
        let checked = check::check(&ast, vocab, text).map_err(|e| ExprError::new(text, e))?;
        Ok(Expression(Arc::new(Inner {
            text: text.into(),
            root: checked.root,
            ty: checked.ty,
            attrs: checked.attrs,
        })))
    }

    pub fn result_type(&self) -> ValueType {
        self.0.ty
    }

    pub fn text(&self) -> &str {
        &self.0.text
    }

    pub fn eval(&self, attrs: &dyn Attributes) -> Result<Value, EvalError> {
        let value = eval::eval(&self.0.root, attrs)
            .map_err(Fail::into_error)?
            .into_value();
        retype(value, self.0.ty)
    }

    /// For rule matches: must have type BOOL (checked by [`compile_bool`]).
    pub fn eval_bool(&self, attrs: &dyn Attributes) -> Result<bool, EvalError> {
        if self.0.ty != ValueType::Bool {
            return Err(EvalError::Invalid(format!(
                "expression {:?} is {}, not BOOL",
                excerpt(&self.0.text),
                self.0.ty
            )));
        }
        eval::eval_bool(&self.0.root, attrs).map_err(Fail::into_error)
    }

    /// Whether this is the constant `false`: a rule written to match
    /// nothing (how operators turned Istio's rules off).
    pub fn is_never(&self) -> bool {
        matches!(self.0.root, Node::Const(Value::Bool(false)))
    }

    /// Attributes this expression may read, in order of first mention.
    pub fn attributes(&self) -> Vec<&str> {
        self.0.attrs.iter().map(|a| a.as_ref()).collect()
    }

    /// What this expression may read of each attribute: one key of a map
    /// (`attr["key"]` with a constant key), or the whole attribute (`None`).
    pub fn reads(&self) -> Vec<(&str, Option<&str>)> {
        let mut out = Vec::new();
        eval::reads(&self.0.root, &mut out);
        out
    }
}

/// Compiles a rule match, which must be BOOL; empty text matches always.
pub fn compile_bool(text: &str, vocab: &Vocabulary) -> Result<Expression, ExprError> {
    if text.trim().is_empty() {
        return Ok(Expression(Arc::new(Inner {
            text: text.into(),
            root: Node::Const(Value::Bool(true)),
            ty: ValueType::Bool,
            attrs: Vec::new(),
        })));
    }
    let expr = Expression::compile(text, vocab)?;
    if expr.result_type() != ValueType::Bool {
        let e = Located {
            pos: 0,
            msg: format!(
                "a match must be BOOL, but this expression is {}",
                expr.result_type()
            ),
        };
        return Err(ExprError::new(text, e));
    }
    Ok(expr)
}

/// Gives a textual result the type the expression declares: the textual
/// types mix in `|` and `conditional`, whose type is that of the first
/// alternative.
fn retype(value: Value, ty: ValueType) -> Result<Value, EvalError> {
    if value.value_type() == ty {
        return Ok(value);
    }
    match value {
        Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s)
            if ty.is_textual() =>
        {
            Ok(match ty {
                ValueType::DnsName => Value::DnsName(s),
                ValueType::EmailAddress => Value::EmailAddress(s),
                ValueType::Uri => Value::Uri(s),
                _ => Value::String(s),
            })
        }
        other => Err(EvalError::Invalid(format!(
            "expected a {ty} value, found {}",
            other.value_type()
        ))),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{EvalError, ExprError, Expression};
    use crate::attribute::{Attributes, Bag, Value, ValueType, Vocabulary};

    /// The standard vocabulary, plus nested names (`a`, `a.b`, `a.b.c`)
    /// and one attribute of each type the standard one lacks.
    pub(crate) fn vocab() -> Vocabulary {
        use ValueType::*;
        Vocabulary::standard().with(
            [
                ("a", String),
                ("a.b", String),
                ("a.b.c", Int64),
                ("t.dns", DnsName),
                ("t.email", EmailAddress),
                ("t.uri", Uri),
                ("t.double", Double),
                ("t.flag", Bool),
                ("t.text", String),
            ]
            .map(|(n, t)| (n.to_string(), t)),
        )
    }

    pub(crate) fn map(pairs: &[(&str, &str)]) -> Value {
        Value::StringMap(Arc::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ))
    }

    /// A request; `source.user`, `request.auth.principal` and `t.text`
    /// are declared but absent.
    pub(crate) fn bag() -> Bag {
        let mut b = Bag::new();
        b.set(
            "request.headers",
            map(&[("x-user", "jason"), ("x-mixed", "AbC"), ("empty", "")]),
        );
        b.set("request.path", Value::string("/api/v1/items"));
        b.set("destination.service.name", Value::string("ratings"));
        b.set(
            "destination.service.host",
            Value::string("ratings.default.svc.cluster.local"),
        );
        b.set("source.ip", Value::IpAddress([10, 0, 0, 1].into()));
        b.set("response.code", Value::Int64(200));
        b.set(
            "response.duration",
            Value::Duration(Duration::from_millis(150)),
        );
        b.set(
            "request.time",
            Value::Timestamp(super::functions::parse_rfc3339("2019-06-01T12:00:00Z").unwrap()),
        );
        b.set(
            "source.labels",
            map(&[("app", "productpage"), ("version", "v1")]),
        );
        b.set("destination.labels", map(&[("app", "ratings")]));
        b.set("a", Value::string("A"));
        b.set("a.b", Value::string("AB"));
        b.set("a.b.c", Value::Int64(3));
        b.set("t.dns", Value::DnsName(Arc::from("example.com")));
        b.set("t.double", Value::Double(1.5));
        b.set("t.flag", Value::Bool(true));
        b.set("context.reporter.kind", Value::string("inbound"));
        b
    }

    /// Records every read, to see what a decision depended on.
    pub(crate) struct Counting {
        pub bag: Bag,
        pub reads: RefCell<Vec<String>>,
    }

    impl Counting {
        pub(crate) fn new() -> Counting {
            Counting {
                bag: bag(),
                reads: RefCell::default(),
            }
        }

        pub(crate) fn take(&self) -> Vec<String> {
            self.reads.take()
        }
    }

    impl Attributes for Counting {
        fn get(&self, name: &str) -> Option<&Value> {
            self.reads.borrow_mut().push(name.to_string());
            self.bag.get(name)
        }

        fn get_key(&self, name: &str, key: &str) -> Option<&str> {
            self.reads.borrow_mut().push(format!("{name}[{key}]"));
            self.bag.get(name)?.at_key(key)
        }
    }

    pub(crate) fn compile(text: &str) -> Expression {
        Expression::compile(text, &vocab()).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn evaluate(text: &str) -> Result<Value, EvalError> {
        compile(text).eval(&bag())
    }

    pub(crate) fn truth(text: &str) -> bool {
        compile(text)
            .eval_bool(&bag())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    pub(crate) fn compile_err(text: &str) -> ExprError {
        match Expression::compile(text, &vocab()) {
            Ok(e) => panic!("{text:?} compiled, as {:?}", e.result_type()),
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::attribute::Bag;

    #[test]
    fn a_string_that_spells_the_fallen_back_type_is_one() {
        // As Istio's default telemetry config wrote its duration defaults.
        let e = compile("response.duration | \"0ms\"");
        assert_eq!(e.result_type(), ValueType::Duration);
        assert_eq!(
            e.eval(&crate::attribute::Bag::new()).unwrap(),
            Value::Duration(std::time::Duration::ZERO)
        );
        assert_eq!(
            compile_err("response.duration | \"soon\"").message,
            "`|` falls back from DURATION to STRING; the alternatives must have the same type"
        );
    }

    #[test]
    fn error_messages_name_the_text() {
        let e = compile_err("response.code == \"200\"");
        assert_eq!(e.position, 14);
        assert_eq!(e.message, "`==` compares INT64 with STRING");
        assert_eq!(
            e.to_string(),
            "`==` compares INT64 with STRING (at offset 14 of \"response.code == \\\"200\\\"\")"
        );
        let long = format!("{} ==", "a | ".repeat(100));
        let shown = compile_err(&long).to_string();
        assert!(shown.contains("…\")"), "{shown}");
        assert!(shown.len() < 400, "{shown}");
        assert_eq!(
            EvalError::MissingAttribute("source.user".into()).to_string(),
            "attribute `source.user` is missing"
        );
        assert_eq!(
            EvalError::MissingKey {
                attribute: "request.headers".into(),
                key: "x-user".into()
            }
            .to_string(),
            "`request.headers[\"x-user\"]` is missing"
        );
    }

    #[test]
    fn compile_bool_rules() {
        let v = vocab();
        let always = compile_bool("", &v).unwrap();
        assert!(always.eval_bool(&Bag::new()).unwrap());
        assert!(
            compile_bool("  \n", &v)
                .unwrap()
                .eval_bool(&Bag::new())
                .unwrap()
        );
        let e = compile_bool("request.path", &v).unwrap_err();
        assert_eq!(
            e.message,
            "a match must be BOOL, but this expression is STRING"
        );
        assert!(compile_bool("response.code == 200", &v).is_ok());
        assert_eq!(
            Expression::compile("", &v).unwrap_err().message,
            "empty expression"
        );
        // eval_bool on an expression of another type is refused, not guessed.
        let e = compile("request.path").eval_bool(&bag()).unwrap_err();
        assert!(matches!(e, EvalError::Invalid(m) if m.contains("not BOOL")));
    }

    #[test]
    fn accessors() {
        let e = compile(
            "request.headers[\"x-user\"] == \"jason\" && a.b.c > 1 || request.path | a == \"x\"",
        );
        assert_eq!(e.result_type(), ValueType::Bool);
        assert_eq!(
            e.attributes(),
            vec!["request.headers", "a.b.c", "request.path", "a"]
        );
        assert!(e.text().starts_with("request.headers"));
        assert_eq!(
            e.reads(),
            vec![
                ("request.headers", Some("x-user")),
                ("a.b.c", None),
                ("request.path", None),
                ("a", None)
            ]
        );
        let keyed = compile("request.headers[\"a\"] | request.headers[request.path] | \"-\"");
        assert_eq!(
            keyed.reads(),
            vec![
                ("request.headers", Some("a")),
                ("request.headers", None),
                ("request.path", None)
            ]
        );
        let clone = e.clone();
        assert!(Arc::ptr_eq(&clone.0, &e.0));
        fn shareable<T: Clone + std::fmt::Debug + Send + Sync>() {}
        shareable::<Expression>();
        assert_eq!(compile("ip(\"10.0.0.1\")").attributes(), Vec::<&str>::new());
    }

    #[test]
    fn limits() {
        let huge = format!("a == \"{}\"", "x".repeat(MAX_LENGTH));
        let e = compile_err(&huge);
        assert!(e.message.contains("over the limit"), "{}", e.message);
        assert!(e.text.len() < 400);
        let deep = format!("{}true{}", "(".repeat(65), ")".repeat(65));
        assert!(compile_err(&deep).message.contains("nested too deeply"));
        let deep_calls = format!("{}request.path{}", "toLower(".repeat(70), ")".repeat(70));
        assert!(
            compile_err(&deep_calls)
                .message
                .contains("nested too deeply")
        );
        let ok_calls = format!("{}request.path{}", "toLower(".repeat(30), ")".repeat(30));
        assert_eq!(
            compile(&ok_calls).eval(&bag()),
            Ok(Value::string("/api/v1/items"))
        );
        // A long flat rule is not deep.
        let wide = vec!["request.path == \"/x\""; 2_000].join(" || ");
        assert_eq!(compile(&wide).eval_bool(&bag()), Ok(false));
    }

    /// A fixed set of nasty inputs, then random token soup: compiling and
    /// evaluating must return, never panic.
    #[test]
    fn garbage_never_panics() {
        let fixed = [
            "",
            " ",
            "(",
            ")",
            "[",
            "]",
            "\"",
            "`",
            "\\",
            "!",
            "-",
            "|",
            "||",
            "&&",
            "==",
            "a.",
            ".a",
            "..",
            "a..b",
            "a[",
            "a[]",
            "a()",
            "()",
            "(())",
            "f(,)",
            "f(a,,b)",
            "\"\\u\"",
            "\"\\U0011FFFF\"",
            "\"\\x\"",
            "\"\\777\"",
            "0x",
            "0x_",
            "1e",
            "1e+",
            "1.5.5",
            "1..2",
            ".",
            "9999999999999999999999",
            "-9223372036854775808",
            "--9223372036854775808",
            "1h1h1h1h",
            "99999999999h",
            "1.e5",
            "\u{0}",
            "\u{feff}a",
            "ä",
            "a == ä",
            "request.headers[request.headers]",
            "request.headers[\"a\"][\"b\"]",
            "conditional()",
            "conditional(true)",
            "match()",
            "\"(\".matches(\"x\")",
            "\"\".matches(request.path)",
            "request.path.matches(\"x\")",
            "ip(\"\")",
            "timestamp(\"\")",
            "emptyStringMap(1)",
            "emptyStringMap()[\"\"]",
            "-\"x\"",
            "!1",
            "1 < 2 < 3",
            "true == true == true",
            "size()",
            "size(\"\", \"\")",
            "a.b.c.d.e.f.g",
            "true.x",
            "\"x\".y",
            "(a).b()",
            "x(",
            "a | ",
            "| a",
            "request.path |",
            "\u{202e}",
            "\"\u{10ffff}\"",
            "0777777777777777777777777",
            "-0x8000000000000000",
            "request.headers[\"x\"] |",
            "1.7976931348623157e309",
            "-1.7976931348623157e308",
            "`\r`",
            "a.b.startsWith()",
            "toLower(1)",
        ];
        let v = vocab();
        let b = bag();
        let run = |text: &str| {
            if let Ok(e) = Expression::compile(text, &v) {
                let _ = e.eval(&b);
                let _ = e.eval_bool(&b);
                let _ = e.eval(&Bag::new());
            }
            let _ = compile_bool(text, &v);
        };
        for text in fixed {
            run(text);
        }
        let pieces = [
            "a",
            "a.b",
            "a.b.c",
            ".",
            "(",
            ")",
            "[",
            "]",
            ",",
            "!",
            "-",
            "|",
            "||",
            "&&",
            "==",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "\"x\"",
            "`y`",
            "\"\\",
            "1",
            "1.5",
            "10s",
            "0x1",
            "true",
            "false",
            "request.headers",
            "source.labels",
            "\"k\"",
            "match",
            "matches",
            "conditional",
            "ip",
            "timestamp",
            "dnsName",
            "email",
            "uri",
            "emptyStringMap",
            "startsWith",
            "endsWith",
            "toLower",
            "size",
            "response.code",
            "t.double",
            "source.ip",
            "request.time",
            "response.duration",
            "\"10.0.0.1\"",
            " ",
            "é",
            "9223372036854775807",
            "\"*\"",
            "\"(\"",
        ];
        // xorshift: deterministic, and no dependency.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 12) as usize + 1;
            let mut text = String::new();
            for _ in 0..len {
                let i = (next() % pieces.len() as u64) as usize;
                text.push_str(pieces.get(i).copied().unwrap_or(" "));
                if next() % 3 == 0 {
                    text.push(' ');
                }
            }
            run(&text);
        }
    }
}
