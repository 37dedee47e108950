//! Type-checks the syntax tree against the vocabulary and lowers it to
//! evaluation nodes: names become attributes, constant patterns are
//! compiled, and whatever depends on constants only is computed now.

use std::sync::Arc;

use crate::attribute::{Attr, Attributes, StringMap, Value, ValueType, Vocabulary};

use super::Located;
use super::eval::{self, CmpOp, Fail, Func, Node};
use super::functions::{self, Glob};
use super::parser::{Ast, BinOp, Kind};

pub(crate) struct Checked {
    pub root: Node,
    pub ty: ValueType,
    /// Attributes the expression may read, in order of first mention.
    pub attrs: Vec<Arc<str>>,
}

pub(crate) fn check(ast: &Ast, vocab: &Vocabulary, text: &str) -> Result<Checked, Located> {
    let mut c = Checker {
        vocab,
        text,
        attrs: Vec::new(),
    };
    let Typed { node, ty } = c.expr(ast)?;
    Ok(Checked {
        root: node,
        ty,
        attrs: c.attrs,
    })
}

const FUNCTIONS: &[&str] = &[
    "match",
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
];

const METHODS: &[&str] = &["startsWith", "endsWith", "toLower", "matches"];

struct Typed {
    node: Node,
    ty: ValueType,
}

/// A checked call argument and where it was written.
struct Arg {
    node: Node,
    ty: ValueType,
    pos: usize,
}

fn fail<T>(pos: usize, msg: impl Into<String>) -> Result<T, Located> {
    Err(Located {
        pos,
        msg: msg.into(),
    })
}

fn constant(v: Value) -> Typed {
    Typed {
        ty: v.value_type(),
        node: Node::Const(v),
    }
}

/// Types that `==` and `|` accept together.
fn compatible(a: ValueType, b: ValueType) -> bool {
    a == b || (a.is_textual() && b.is_textual())
}

fn orderable(t: ValueType) -> bool {
    matches!(
        t,
        ValueType::Int64 | ValueType::Double | ValueType::Duration | ValueType::Timestamp
    )
}

fn text_arg(function: &str, index: usize, arg: &Arg) -> Result<(), Located> {
    if arg.ty.is_textual() {
        return Ok(());
    }
    fail(
        arg.pos,
        format!(
            "`{function}` argument {index} must be STRING, not {}",
            arg.ty
        ),
    )
}

/// `a.b.c` as one name, if the node is only names and dots.
fn dotted(ast: &Ast) -> Option<String> {
    match &ast.kind {
        Kind::Ident(name) => Some(name.clone()),
        Kind::Select(x, name) => {
            let mut s = dotted(x)?;
            s.push('.');
            s.push_str(name);
            Some(s)
        }
        _ => None,
    }
}

/// Evaluates constant-only nodes once, here. A constant argument a
/// function refuses (`ip("nope")`) is a compile error rather than a
/// failure on every request.
fn fold(node: Node, pos: usize) -> Result<Node, Located> {
    if !node.is_foldable() {
        return Ok(node);
    }
    let outcome = match eval::eval(&node, &NoAttributes) {
        Ok(v) => Ok(v.into_value()),
        Err(Fail::Invalid(msg)) => Err(Some(msg)),
        // A missing key in a constant map, which a `|` may still catch.
        Err(_) => Err(None),
    };
    match outcome {
        Ok(v) => Ok(Node::Const(v)),
        Err(Some(msg)) => fail(pos, msg),
        Err(None) => Ok(node),
    }
}

struct NoAttributes;

impl Attributes for NoAttributes {
    fn get(&self, _: &str) -> Option<&Value> {
        None
    }
}

struct Checker<'c> {
    vocab: &'c Vocabulary,
    text: &'c str,
    attrs: Vec<Arc<str>>,
}

impl Checker<'_> {
    fn expr(&mut self, ast: &Ast) -> Result<Typed, Located> {
        use ValueType::Bool;
        let Typed { node, ty } = match &ast.kind {
            Kind::Bool(b) => constant(Value::Bool(*b)),
            Kind::Str(s) => constant(Value::string(s)),
            Kind::Int(i) => constant(Value::Int64(*i)),
            Kind::Float(f) => constant(Value::Double(*f)),
            Kind::Dur(d) => constant(Value::Duration(*d)),
            Kind::Ident(_) | Kind::Select(..) => self.attribute(ast)?,
            Kind::Call(callee, args) => self.call(ast, callee, args)?,
            Kind::Index(map, key) => self.index(ast, map, key)?,
            Kind::Not(x) => Typed {
                node: Node::Not(Box::new(self.bool_operand(x, "!")?)),
                ty: Bool,
            },
            Kind::Neg(x) => {
                let t = self.expr(x)?;
                if !matches!(t.ty, ValueType::Int64 | ValueType::Double) {
                    return fail(
                        ast.pos,
                        format!("`-` needs an INT64 or DOUBLE operand, not {}", t.ty),
                    );
                }
                Typed {
                    node: Node::Neg(Box::new(t.node)),
                    ty: t.ty,
                }
            }
            Kind::Binary(op, l, r) => self.binary(ast.pos, *op, l, r)?,
            Kind::And(xs) => Typed {
                node: Node::And(self.bool_operands(xs, "&&")?),
                ty: Bool,
            },
            Kind::Or(xs) => Typed {
                node: Node::Or(self.bool_operands(xs, "||")?),
                ty: Bool,
            },
            Kind::Fallback(xs) => self.fallback(xs)?,
        };
        Ok(Typed {
            node: fold(node, ast.pos)?,
            ty,
        })
    }

    fn bool_operand(&mut self, x: &Ast, op: &str) -> Result<Node, Located> {
        let t = self.expr(x)?;
        if t.ty != ValueType::Bool {
            return fail(x.start, format!("`{op}` needs BOOL operands, not {}", t.ty));
        }
        Ok(t.node)
    }

    fn bool_operands(&mut self, xs: &[Ast], op: &str) -> Result<Vec<Node>, Located> {
        xs.iter().map(|x| self.bool_operand(x, op)).collect()
    }

    /// One shared name per attribute, recorded for `Expression::attributes`.
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.attrs.iter().find(|a| a.as_ref() == name) {
            return known.clone();
        }
        let name: Arc<str> = Arc::from(name);
        self.attrs.push(name.clone());
        name
    }

    fn attribute(&mut self, ast: &Ast) -> Result<Typed, Located> {
        let Some(name) = dotted(ast) else {
            let field = match &ast.kind {
                Kind::Select(_, field) => field.as_str(),
                _ => "",
            };
            return fail(
                ast.pos,
                format!("`.{field}` is not a method call, and only attribute names have dots"),
            );
        };
        // Vocabulary names contain dots themselves, so the whole dotted
        // chain is the name: the longest one the text spells.
        match self.vocab.type_of(&name) {
            Some(ty) => Ok(Typed {
                node: Node::Attr(Attr::new(self.intern(&name), self.vocab)),
                ty,
            }),
            None => fail(ast.start, self.unknown_attribute(&name)),
        }
    }

    fn unknown_attribute(&self, name: &str) -> String {
        let mut msg = format!("unknown attribute `{name}`");
        if FUNCTIONS.contains(&name) {
            msg.push_str(&format!(
                "; `{name}` is a function: call it as `{name}(...)`"
            ));
            return msg;
        }
        let mut prefix = name;
        while let Some((head, _)) = prefix.rsplit_once('.') {
            if let Some(ty) = self.vocab.type_of(head) {
                let rest = name.get(head.len() + 1..).unwrap_or_default();
                if METHODS.contains(&rest) {
                    msg.push_str(&format!(
                        "; `{rest}` is a method: call it as `{head}.{rest}(...)`"
                    ));
                } else {
                    msg.push_str(&format!(
                        " (`{head}` is a {ty} attribute, and attributes have no fields)"
                    ));
                }
                break;
            }
            prefix = head;
        }
        msg
    }

    fn index(&mut self, ast: &Ast, map: &Ast, key: &Ast) -> Result<Typed, Located> {
        let m = self.expr(map)?;
        if m.ty != ValueType::StringMap {
            return fail(ast.pos, format!("`[]` indexes a STRING_MAP, not {}", m.ty));
        }
        let k = self.expr(key)?;
        if !k.ty.is_textual() {
            return fail(key.start, format!("a map key must be STRING, not {}", k.ty));
        }
        let key = Box::new(k.node);
        let node = match m.node {
            Node::Attr(attr) => Node::AttrKey { attr, key },
            map_node => Node::Index {
                map: Box::new(map_node),
                key,
                label: Arc::from(self.text.get(map.start..map.end).unwrap_or("map")),
            },
        };
        Ok(Typed {
            node,
            ty: ValueType::String,
        })
    }

    fn binary(&mut self, pos: usize, op: BinOp, l: &Ast, r: &Ast) -> Result<Typed, Located> {
        let a = self.expr(l)?;
        let b = self.expr(r)?;
        let sym = op.symbol();
        let mismatch = || fail(pos, format!("`{sym}` compares {} with {}", a.ty, b.ty));
        let cmp = match op {
            BinOp::Eq | BinOp::Ne => {
                if !compatible(a.ty, b.ty) {
                    return mismatch();
                }
                let equal = op == BinOp::Eq;
                let node = match (a.node, b.node) {
                    (Node::Const(c), other) | (other, Node::Const(c)) if c.as_str().is_some() => {
                        Node::TextIs {
                            input: Box::new(other),
                            text: c.as_str().unwrap_or_default().into(),
                            equal,
                        }
                    }
                    (x, y) if equal => Node::Eq(Box::new(x), Box::new(y)),
                    (x, y) => Node::Ne(Box::new(x), Box::new(y)),
                };
                return Ok(Typed {
                    node,
                    ty: ValueType::Bool,
                });
            }
            BinOp::Lt => CmpOp::Lt,
            BinOp::Le => CmpOp::Le,
            BinOp::Gt => CmpOp::Gt,
            BinOp::Ge => CmpOp::Ge,
        };
        if a.ty != b.ty {
            return mismatch();
        }
        if !orderable(a.ty) {
            return fail(
                pos,
                format!(
                    "`{sym}` cannot order {} values, only INT64, DOUBLE, DURATION or TIMESTAMP",
                    a.ty
                ),
            );
        }
        Ok(Typed {
            node: Node::Cmp(cmp, Box::new(a.node), Box::new(b.node)),
            ty: ValueType::Bool,
        })
    }

    fn fallback(&mut self, xs: &[Ast]) -> Result<Typed, Located> {
        let mut nodes = Vec::with_capacity(xs.len());
        let mut ty = None;
        let mut settled = false;
        for x in xs {
            let mut t = self.expr(x)?;
            // Istio's own config falls back from durations to a string that
            // spells one (`response.duration | "0ms"`): such a literal is
            // taken as a value of the type it falls back from.
            if let (Some(first), Node::Const(Value::String(text))) = (ty, &t.node)
                && matches!(
                    first,
                    ValueType::Duration | ValueType::Timestamp | ValueType::IpAddress
                )
                && let Ok(v) = Value::parse_as(first, text)
            {
                t = Typed {
                    node: Node::Const(v),
                    ty: first,
                };
            }
            match ty {
                None => ty = Some(t.ty),
                Some(first) if !compatible(first, t.ty) => {
                    return fail(
                        x.start,
                        format!(
                            "`|` falls back from {first} to {}; the alternatives must have the same type",
                            t.ty
                        ),
                    );
                }
                Some(_) => {}
            }
            // A constant is always present, so later alternatives are
            // never reached (they are still type-checked above).
            if !settled {
                settled = matches!(t.node, Node::Const(_));
                nodes.push(t.node);
            }
        }
        let Some(ty) = ty else {
            return fail(0, "empty `|` chain");
        };
        let node = match <[Node; 2]>::try_from(nodes) {
            Ok([Node::Attr(attr), Node::Const(default)]) => Node::AttrOr { attr, default },
            Ok([Node::AttrKey { attr, key }, Node::Const(default)])
                if matches!(*key, Node::Const(Value::String(_))) && default.as_str().is_some() =>
            {
                let Node::Const(Value::String(key)) = *key else {
                    unreachable!("matched above")
                };
                Node::KeyOr { attr, key, default }
            }
            Ok(pair) => Node::Fallback(pair.into()),
            Err(mut nodes) if nodes.len() == 1 => {
                nodes.pop().unwrap_or(Node::Const(Value::Bool(false)))
            }
            Err(nodes) => Node::Fallback(nodes),
        };
        Ok(Typed { node, ty })
    }

    fn call(&mut self, ast: &Ast, callee: &Ast, args: &[Ast]) -> Result<Typed, Located> {
        match &callee.kind {
            Kind::Ident(name) => self.function(name, callee.pos, args),
            Kind::Select(recv, name) => self.method(recv, name, callee.pos, args),
            _ => fail(ast.pos, "only functions and methods can be called"),
        }
    }

    /// Checks the arity, then the arguments.
    fn args<const N: usize>(
        &mut self,
        name: &str,
        pos: usize,
        args: &[Ast],
    ) -> Result<[Arg; N], Located> {
        if args.len() != N {
            let s = if N == 1 { "" } else { "s" };
            return fail(
                pos,
                format!("`{name}` takes {N} argument{s}, not {}", args.len()),
            );
        }
        let mut out = Vec::with_capacity(N);
        for a in args {
            let t = self.expr(a)?;
            out.push(Arg {
                node: t.node,
                ty: t.ty,
                pos: a.start,
            });
        }
        out.try_into()
            .or_else(|_| fail(pos, format!("`{name}`: wrong number of arguments")))
    }

    fn function(&mut self, name: &str, pos: usize, args: &[Ast]) -> Result<Typed, Located> {
        use ValueType as T;
        let (node, ty) = match name {
            "match" => {
                let [s, p] = self.args::<2>(name, pos, args)?;
                text_arg(name, 1, &s)?;
                text_arg(name, 2, &p)?;
                let node = match p.node {
                    Node::Const(v) => Node::Glob {
                        input: Box::new(s.node),
                        glob: Glob::new(v.as_str().unwrap_or_default()),
                    },
                    pattern => Node::Call(Func::Match, vec![s.node, pattern]),
                };
                (node, T::Bool)
            }
            "conditional" => return self.conditional(pos, args),
            "ip" => self.convert(name, Func::Ip, T::IpAddress, pos, args)?,
            "timestamp" => self.convert(name, Func::Timestamp, T::Timestamp, pos, args)?,
            "dnsName" => self.convert(name, Func::DnsName, T::DnsName, pos, args)?,
            "email" => self.convert(name, Func::Email, T::EmailAddress, pos, args)?,
            "uri" => self.convert(name, Func::Uri, T::Uri, pos, args)?,
            "toLower" => self.convert(name, Func::ToLower, T::String, pos, args)?,
            "size" => self.convert(name, Func::Size, T::Int64, pos, args)?,
            "emptyStringMap" => {
                let [] = self.args::<0>(name, pos, args)?;
                (
                    Node::Const(Value::StringMap(StringMap::default())),
                    T::StringMap,
                )
            }
            "startsWith" | "endsWith" => {
                let [s, p] = self.args::<2>(name, pos, args)?;
                text_arg(name, 1, &s)?;
                text_arg(name, 2, &p)?;
                let f = if name == "startsWith" {
                    Func::StartsWith
                } else {
                    Func::EndsWith
                };
                (Node::Call(f, vec![s.node, p.node]), T::Bool)
            }
            "matches" => {
                return fail(
                    pos,
                    "`matches` is a method of the pattern: write `\"regex\".matches(value)`",
                );
            }
            _ => return fail(pos, format!("unknown function `{name}`")),
        };
        Ok(Typed { node, ty })
    }

    /// A one-argument function of a STRING.
    fn convert(
        &mut self,
        name: &str,
        f: Func,
        ty: ValueType,
        pos: usize,
        args: &[Ast],
    ) -> Result<(Node, ValueType), Located> {
        let [s] = self.args::<1>(name, pos, args)?;
        text_arg(name, 1, &s)?;
        Ok((Node::Call(f, vec![s.node]), ty))
    }

    fn conditional(&mut self, pos: usize, args: &[Ast]) -> Result<Typed, Located> {
        let [c, a, b] = self.args::<3>("conditional", pos, args)?;
        if c.ty != ValueType::Bool {
            return fail(
                c.pos,
                format!("`conditional` argument 1 must be BOOL, not {}", c.ty),
            );
        }
        if !compatible(a.ty, b.ty) {
            return fail(
                b.pos,
                format!(
                    "`conditional` branches must have the same type, not {} and {}",
                    a.ty, b.ty
                ),
            );
        }
        let node = match c.node {
            Node::Const(Value::Bool(true)) => a.node,
            Node::Const(Value::Bool(false)) => b.node,
            cond => Node::Cond(Box::new(cond), Box::new(a.node), Box::new(b.node)),
        };
        Ok(Typed { node, ty: a.ty })
    }

    fn method(
        &mut self,
        recv: &Ast,
        name: &str,
        pos: usize,
        args: &[Ast],
    ) -> Result<Typed, Located> {
        if !METHODS.contains(&name) {
            if FUNCTIONS.contains(&name) {
                return fail(
                    pos,
                    format!("`{name}` is a function, not a method: write `{name}(...)`"),
                );
            }
            return fail(pos, format!("unknown method `{name}`"));
        }
        let r = self.expr(recv)?;
        if !r.ty.is_textual() {
            return fail(
                pos,
                format!("`{name}` is a method of STRING, not of {}", r.ty),
            );
        }
        let (node, ty) = match name {
            "startsWith" | "endsWith" => {
                let [p] = self.args::<1>(name, pos, args)?;
                text_arg(name, 1, &p)?;
                let f = if name == "startsWith" {
                    Func::StartsWith
                } else {
                    Func::EndsWith
                };
                (Node::Call(f, vec![r.node, p.node]), ValueType::Bool)
            }
            "toLower" => {
                let [] = self.args::<0>(name, pos, args)?;
                (Node::Call(Func::ToLower, vec![r.node]), ValueType::String)
            }
            _ => {
                let [s] = self.args::<1>(name, pos, args)?;
                text_arg(name, 1, &s)?;
                let node = match r.node {
                    Node::Const(v) => {
                        let re = functions::compile_regex(v.as_str().unwrap_or_default())
                            .or_else(|msg| fail(recv.start, format!("`matches`: {msg}")))?;
                        Node::Regex {
                            input: Box::new(s.node),
                            re,
                        }
                    }
                    pattern => Node::Call(Func::Matches, vec![pattern, s.node]),
                };
                (node, ValueType::Bool)
            }
        };
        Ok(Typed { node, ty })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::test_support::*;

    fn type_error(text: &str) -> (usize, String) {
        let e = compile_err(text);
        (e.position, e.message)
    }

    fn root(text: &str) -> Node {
        let e = compile(text);
        let inner = std::sync::Arc::try_unwrap(e.0).unwrap_or_else(|_| panic!("shared"));
        inner.root
    }

    #[test]
    fn operator_type_errors() {
        use std::string::String as S;
        let cases: &[(&str, usize, &str)] = &[
            (
                "response.code == \"200\"",
                14,
                "`==` compares INT64 with STRING",
            ),
            (
                "source.ip != \"10.0.0.1\"",
                10,
                "`!=` compares IP_ADDRESS with STRING",
            ),
            ("response.code < 1.5", 14, "`<` compares INT64 with DOUBLE"),
            (
                "request.path >= \"x\"",
                13,
                "`>=` cannot order STRING values, only INT64, DOUBLE, DURATION or TIMESTAMP",
            ),
            (
                "true && request.path",
                8,
                "`&&` needs BOOL operands, not STRING",
            ),
            (
                "response.code || true",
                0,
                "`||` needs BOOL operands, not INT64",
            ),
            ("!request.path", 1, "`!` needs BOOL operands, not STRING"),
            (
                "-request.path",
                0,
                "`-` needs an INT64 or DOUBLE operand, not STRING",
            ),
            (
                "response.code | \"x\"",
                16,
                "`|` falls back from INT64 to STRING; the alternatives must have the same type",
            ),
            (
                "request.path[\"x\"]",
                12,
                "`[]` indexes a STRING_MAP, not STRING",
            ),
            (
                "request.headers[1]",
                16,
                "a map key must be STRING, not INT64",
            ),
            ("(1)(2)", 1, "only functions and methods can be called"),
            (
                "-(-9223372036854775808)",
                0,
                "negating -9223372036854775808 overflows INT64",
            ),
        ];
        for (text, pos, msg) in cases {
            assert_eq!(type_error(text), (*pos, S::from(*msg)), "{text}");
        }
    }

    #[test]
    fn function_type_errors() {
        let cases: &[(&str, &str)] = &[
            ("match(request.path)", "`match` takes 2 arguments, not 1"),
            (
                "match(response.code, \"x\")",
                "`match` argument 1 must be STRING, not INT64",
            ),
            (
                "match(request.path, 1)",
                "`match` argument 2 must be STRING, not INT64",
            ),
            (
                "conditional(request.path, 1, 2)",
                "`conditional` argument 1 must be BOOL, not STRING",
            ),
            (
                "conditional(true, 1, \"x\")",
                "`conditional` branches must have the same type, not INT64 and STRING",
            ),
            ("ip(1)", "`ip` argument 1 must be STRING, not INT64"),
            (
                "emptyStringMap(\"x\")",
                "`emptyStringMap` takes 0 arguments, not 1",
            ),
            ("size(\"a\", \"b\")", "`size` takes 1 argument, not 2"),
            ("nosuch(1)", "unknown function `nosuch`"),
            ("request.path.nosuch()", "unknown method `nosuch`"),
            (
                "response.code.startsWith(\"x\")",
                "`startsWith` is a method of STRING, not of INT64",
            ),
            (
                "request.path.size()",
                "`size` is a function, not a method: write `size(...)`",
            ),
            (
                "request.path.endsWith(1)",
                "`endsWith` argument 1 must be STRING, not INT64",
            ),
            (
                "request.path.toLower(1)",
                "`toLower` takes 0 arguments, not 1",
            ),
            (
                "matches(\"a\", \"b\")",
                "`matches` is a method of the pattern: write `\"regex\".matches(value)`",
            ),
            ("ip(\"nope\")", "`ip`: \"nope\" is not an IP address"),
            (
                "timestamp(\"yesterday\")",
                "`timestamp`: \"yesterday\" is not an RFC 3339 timestamp",
            ),
        ];
        for (text, msg) in cases {
            assert_eq!(type_error(text).1, *msg, "{text}");
        }
        for text in ["dnsName(\"-x\")", "email(\"jason\")", "uri(\"a b\")"] {
            let msg = type_error(text).1;
            assert!(msg.contains("is not a"), "{text}: {msg}");
        }
    }

    #[test]
    fn bad_regex_is_a_compile_error() {
        let (pos, msg) = type_error("request.path == \"x\" || \"([a-z\".matches(request.path)");
        assert_eq!(pos, 23);
        assert!(
            msg.starts_with("`matches`: invalid regex \"([a-z\": "),
            "{msg}"
        );
    }

    #[test]
    fn names_resolve_to_the_longest_attribute() {
        assert_eq!(compile("a").result_type(), ValueType::String);
        assert_eq!(compile("a.b").result_type(), ValueType::String);
        assert_eq!(compile("a.b.c").result_type(), ValueType::Int64);
        assert_eq!(compile("a.b.c == 3").attributes(), vec!["a.b.c"]);
        assert_eq!(compile("a.b.startsWith(\"A\")").attributes(), vec!["a.b"]);
        assert_eq!(
            compile("context.reporter.kind").attributes(),
            vec!["context.reporter.kind"]
        );
        assert_eq!(
            type_error("a.b.c.d == 1"),
            (0, "unknown attribute `a.b.c.d` (`a.b.c` is a INT64 attribute, and attributes have no fields)".into())
        );
        assert_eq!(
            type_error("true && no.such.attr == \"x\""),
            (8, "unknown attribute `no.such.attr`".into())
        );
        assert_eq!(
            type_error("request.path.toLower == \"x\"").1,
            "unknown attribute `request.path.toLower`; `toLower` is a method: call it as `request.path.toLower(...)`"
        );
        assert_eq!(
            type_error("match == \"x\"").1,
            "unknown attribute `match`; `match` is a function: call it as `match(...)`"
        );
        assert_eq!(
            type_error("\"x\".foo").1,
            "`.foo` is not a method call, and only attribute names have dots"
        );
    }

    #[test]
    fn result_types() {
        use ValueType::*;
        let cases = [
            ("match(request.path, \"/api*\")", Bool),
            ("\"^/api\".matches(request.path)", Bool),
            ("conditional(t.flag, response.code, 0)", Int64),
            ("conditional(t.flag, t.dns, request.path)", DnsName),
            ("ip(request.headers[\"x-ip\"])", IpAddress),
            ("timestamp(\"2019-06-01T12:00:00Z\")", Timestamp),
            ("dnsName(request.path)", DnsName),
            ("email(\"a@b.c\")", EmailAddress),
            ("uri(request.path)", Uri),
            ("emptyStringMap()", StringMap),
            ("startsWith(request.path, \"/\")", Bool),
            ("request.path.endsWith(\"/\")", Bool),
            ("toLower(request.path)", String),
            ("request.path.toLower()", String),
            ("size(request.path)", Int64),
            ("request.path | t.dns", String),
            ("t.dns | request.path", DnsName),
            ("t.dns == \"example.com\"", Bool),
            ("t.email != t.uri", Bool),
            ("source.ip == ip(\"10.0.0.1\")", Bool),
            ("response.duration > 10ms", Bool),
            ("1.5", Double),
            ("1h", Duration),
            ("-7", Int64),
            ("-t.double", Double),
            ("source.labels | emptyStringMap()", StringMap),
            ("source.labels[\"app\"]", String),
        ];
        for (text, ty) in cases {
            assert_eq!(compile(text).result_type(), ty, "{text}");
        }
    }

    #[test]
    fn constants_are_resolved_at_compile_time() {
        assert!(matches!(
            root("ip(\"10.0.0.1\")"),
            Node::Const(Value::IpAddress(_))
        ));
        assert!(matches!(
            root("match(\"abc\", \"a*\")"),
            Node::Const(Value::Bool(true))
        ));
        assert!(matches!(
            root("toLower(\"ABC\") == \"abc\""),
            Node::Const(Value::Bool(true))
        ));
        assert!(matches!(
            root("\"a+\".matches(\"xaay\")"),
            Node::Const(Value::Bool(true))
        ));
        assert!(matches!(
            root("conditional(true, request.path, \"x\")"),
            Node::Attr(_)
        ));
        assert!(matches!(
            root("conditional(false, \"x\", request.path)"),
            Node::Attr(_)
        ));
        assert!(matches!(
            root("\"a+\".matches(request.path)"),
            Node::Regex { .. }
        ));
        assert!(matches!(
            root("request.path.matches(\"a+\")"),
            Node::Call(Func::Matches, _)
        ));
        assert!(matches!(
            root("match(request.path, \"*.svc\")"),
            Node::Glob {
                glob: Glob::Suffix(_),
                ..
            }
        ));
        assert!(matches!(
            root("match(request.path, a)"),
            Node::Call(Func::Match, _)
        ));
        assert!(matches!(
            root("request.headers[\"x\"]"),
            Node::AttrKey { .. }
        ));
        assert!(matches!(
            root("request.headers[\"x\"] == \"y\""),
            Node::TextIs { equal: true, .. }
        ));
        assert!(matches!(
            root("\"y\" != t.dns"),
            Node::TextIs { equal: false, .. }
        ));
        assert!(matches!(root("response.code == 200"), Node::Eq(..)));
        assert!(matches!(root("a != a.b"), Node::Ne(..)));
        // Nothing after a constant alternative can be reached.
        assert!(matches!(
            root("request.path | \"d\" | a"),
            Node::AttrOr { .. }
        ));
        assert!(matches!(
            root("request.headers[\"x\"] | \"d\""),
            Node::KeyOr { .. }
        ));
        assert!(matches!(
            root("request.headers[request.path] | \"d\""),
            Node::Fallback(_)
        ));
        let Node::Fallback(alts) = root("request.path | request.host | \"d\" | a") else {
            panic!("not a fallback")
        };
        assert_eq!(alts.len(), 3);
        assert!(matches!(root("\"d\" | request.path"), Node::Const(_)));
        // A missing key in a constant map stays for `|` to catch.
        assert!(matches!(
            root("emptyStringMap()[\"k\"] | \"d\""),
            Node::Fallback(_)
        ));
        assert!(matches!(
            root("emptyStringMap()[\"k\"]"),
            Node::Index { .. }
        ));
    }
}
