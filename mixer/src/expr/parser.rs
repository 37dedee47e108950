//! Builds the syntax tree, with Go's precedence except that `|` (fallback)
//! binds tighter than comparisons, as in Istio:
//!
//! ```text
//! expr     := or
//! or       := and ('||' and)*
//! and      := cmp ('&&' cmp)*
//! cmp      := fallback (('=='|'!='|'<'|'<='|'>'|'>=') fallback)*
//! fallback := unary ('|' unary)*
//! unary    := ('!'|'-') unary | postfix
//! postfix  := primary ('.' NAME | '(' args ')' | '[' expr ']')*
//! primary  := literal | NAME | '(' expr ')'
//! ```

use std::time::Duration;

use super::lexer::{Tok, Token, tokenize};
use super::{Located, MAX_DEPTH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Bool(bool),
    Str(String),
    Int(i64),
    Float(f64),
    Dur(Duration),
    Ident(String),
    /// `x.name`: part of a dotted attribute name, or a method.
    Select(Box<Ast>, String),
    Call(Box<Ast>, Vec<Ast>),
    Index(Box<Ast>, Box<Ast>),
    Not(Box<Ast>),
    Neg(Box<Ast>),
    Binary(BinOp, Box<Ast>, Box<Ast>),
    // Chains of the associative operators are flat so that a long list of
    // alternatives does not count as deep nesting.
    And(Vec<Ast>),
    Or(Vec<Ast>),
    Fallback(Vec<Ast>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ast {
    pub kind: Kind,
    /// Where errors about this node point: its operator, name or literal.
    pub pos: usize,
    /// The node's extent in the text.
    pub start: usize,
    pub end: usize,
    /// Levels of nodes below and including this one; bounded by MAX_DEPTH
    /// so that the recursive passes after parsing cannot overflow the stack.
    pub depth: usize,
}

impl Ast {
    fn new(kind: Kind, pos: usize, start: usize, end: usize) -> Result<Ast, Located> {
        let below = match &kind {
            Kind::Bool(_)
            | Kind::Str(_)
            | Kind::Int(_)
            | Kind::Float(_)
            | Kind::Dur(_)
            | Kind::Ident(_) => 0,
            Kind::Select(x, _) | Kind::Not(x) | Kind::Neg(x) => x.depth,
            Kind::Index(a, b) | Kind::Binary(_, a, b) => a.depth.max(b.depth),
            Kind::Call(f, args) => args.iter().map(|a| a.depth).fold(f.depth, usize::max),
            Kind::And(xs) | Kind::Or(xs) | Kind::Fallback(xs) => {
                xs.iter().map(|a| a.depth).max().unwrap_or(0)
            }
        };
        let depth = below + 1;
        if depth > MAX_DEPTH {
            return Err(too_deep(pos));
        }
        Ok(Ast {
            kind,
            pos,
            start,
            end,
            depth,
        })
    }
}

impl Ast {
    /// Adds one more operand to an `&&`, `||` or `|` chain.
    fn join(mut self, item: Ast) -> Result<Ast, Located> {
        let depth = self.depth.max(item.depth + 1);
        if depth > MAX_DEPTH {
            return Err(too_deep(item.start));
        }
        self.depth = depth;
        self.end = item.end;
        if let Kind::And(items) | Kind::Or(items) | Kind::Fallback(items) = &mut self.kind {
            items.push(item);
        }
        Ok(self)
    }
}

fn too_deep(pos: usize) -> Located {
    Located {
        pos,
        msg: format!("expression is nested too deeply (the limit is {MAX_DEPTH} levels)"),
    }
}

pub(crate) fn parse(text: &str) -> Result<Ast, Located> {
    let toks = tokenize(text)?;
    if toks.len() <= 1 {
        return Err(Located {
            pos: 0,
            msg: "empty expression".into(),
        });
    }
    let mut p = Parser {
        toks,
        i: 0,
        nesting: 0,
        text_len: text.len(),
    };
    let ast = p.expr()?;
    match p.peek() {
        Tok::Eof => Ok(ast),
        other => Err(p.error(format!(
            "unexpected {} after a complete expression",
            other.describe()
        ))),
    }
}

static EOF: Tok = Tok::Eof;

/// Binding power of the binary operators: Go's, except that `|` binds
/// tighter than comparisons.
fn precedence(tok: &Tok) -> Option<u8> {
    Some(match tok {
        Tok::OrOr => 0,
        Tok::AndAnd => 1,
        Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => 2,
        Tok::Pipe => 3,
        _ => return None,
    })
}

fn comparison(tok: &Tok) -> Option<BinOp> {
    Some(match tok {
        Tok::Eq => BinOp::Eq,
        Tok::Ne => BinOp::Ne,
        Tok::Lt => BinOp::Lt,
        Tok::Le => BinOp::Le,
        Tok::Gt => BinOp::Gt,
        Tok::Ge => BinOp::Ge,
        _ => return None,
    })
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    /// Recursion depth of the parser itself: parentheses and prefix
    /// operators nest without adding tree levels.
    nesting: usize,
    text_len: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.i).map_or(&EOF, |t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.i).map_or(self.text_len, |t| t.pos)
    }

    /// End of the last token consumed.
    fn prev_end(&self) -> usize {
        self.i
            .checked_sub(1)
            .and_then(|i| self.toks.get(i))
            .map_or(0, |t| t.end)
    }

    fn advance(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.i < self.toks.len() {
            self.i += 1;
        }
        tok
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        let hit = self.peek() == tok;
        if hit {
            self.advance();
        }
        hit
    }

    fn error(&self, msg: String) -> Located {
        Located {
            pos: self.pos(),
            msg,
        }
    }

    fn expect(&mut self, tok: &Tok, context: &str) -> Result<(), Located> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.error(format!(
                "expected `{}` {context}, found {}",
                tok.symbol(),
                self.peek().describe()
            )))
        }
    }

    fn enter(&mut self) -> Result<(), Located> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(too_deep(self.pos()));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Ast, Located> {
        self.enter()?;
        let result = self.binary(0);
        self.nesting -= 1;
        result
    }

    /// Precedence climbing over the binary operators whose precedence is
    /// at least `min`; one loop for all levels keeps the recursion per
    /// parenthesis short.
    fn binary(&mut self, min: u8) -> Result<Ast, Located> {
        let mut left = self.unary()?;
        // The precedence of the chain `left` is, when this loop built it,
        // so that `a || b || c` makes one node.
        let mut open_chain = None;
        loop {
            let Some(prec) = precedence(self.peek()).filter(|p| *p >= min) else {
                return Ok(left);
            };
            let pos = self.pos();
            let tok = self.advance();
            let right = self.binary(prec + 1)?;
            let (start, end) = (left.start, right.end);
            left = if let Some(op) = comparison(&tok) {
                open_chain = None;
                Ast::new(
                    Kind::Binary(op, Box::new(left), Box::new(right)),
                    pos,
                    start,
                    end,
                )?
            } else if open_chain == Some(prec) {
                left.join(right)?
            } else {
                open_chain = Some(prec);
                let items = vec![left, right];
                let kind = match tok {
                    Tok::OrOr => Kind::Or(items),
                    Tok::AndAnd => Kind::And(items),
                    _ => Kind::Fallback(items),
                };
                Ast::new(kind, pos, start, end)?
            };
        }
    }

    fn unary(&mut self) -> Result<Ast, Located> {
        let pos = self.pos();
        let negate = match self.peek() {
            Tok::Not => false,
            Tok::Minus => true,
            _ => return self.postfix(),
        };
        self.advance();
        if negate && let Some(lit) = self.negative_literal(pos)? {
            return Ok(lit);
        }
        self.enter()?;
        let operand = self.unary();
        self.nesting -= 1;
        let operand = operand?;
        let end = operand.end;
        let operand = Box::new(operand);
        let kind = if negate {
            Kind::Neg(operand)
        } else {
            Kind::Not(operand)
        };
        Ast::new(kind, pos, pos, end)
    }

    /// `-` directly before a number makes a negative literal, which is how
    /// the most negative INT64 can be written at all.
    fn negative_literal(&mut self, pos: usize) -> Result<Option<Ast>, Located> {
        let kind = match *self.peek() {
            Tok::Int(n) => match 0i64.checked_sub_unsigned(n) {
                Some(v) => Kind::Int(v),
                None => return Err(self.error(format!("integer literal -{n} overflows INT64"))),
            },
            Tok::Float(f) => Kind::Float(-f),
            _ => return Ok(None),
        };
        self.advance();
        Ast::new(kind, pos, pos, self.prev_end()).map(Some)
    }

    fn postfix(&mut self) -> Result<Ast, Located> {
        let mut x = self.primary()?;
        loop {
            let start = x.start;
            match self.peek() {
                Tok::Dot => {
                    self.advance();
                    let pos = self.pos();
                    let Tok::Ident(name) = self.advance() else {
                        return Err(Located {
                            pos,
                            msg: "expected a name after `.`".into(),
                        });
                    };
                    x = Ast::new(Kind::Select(Box::new(x), name), pos, start, self.prev_end())?;
                }
                Tok::LParen => {
                    self.advance();
                    let pos = x.pos;
                    let args = self.args()?;
                    x = Ast::new(Kind::Call(Box::new(x), args), pos, start, self.prev_end())?;
                }
                Tok::LBracket => {
                    let pos = self.pos();
                    self.advance();
                    let key = self.expr()?;
                    self.expect(&Tok::RBracket, "after a map key")?;
                    x = Ast::new(
                        Kind::Index(Box::new(x), Box::new(key)),
                        pos,
                        start,
                        self.prev_end(),
                    )?;
                }
                _ => return Ok(x),
            }
        }
    }

    /// Call arguments after `(`, through the closing `)`; Go allows a
    /// trailing comma.
    fn args(&mut self) -> Result<Vec<Ast>, Located> {
        let mut args = Vec::new();
        while !self.eat(&Tok::RParen) {
            args.push(self.expr()?);
            if !self.eat(&Tok::Comma) {
                self.expect(&Tok::RParen, "after function arguments")?;
                break;
            }
        }
        Ok(args)
    }

    fn primary(&mut self) -> Result<Ast, Located> {
        let pos = self.pos();
        let kind = match self.advance() {
            Tok::Ident(name) if name == "true" => Kind::Bool(true),
            Tok::Ident(name) if name == "false" => Kind::Bool(false),
            Tok::Ident(name) => Kind::Ident(name),
            Tok::Str(s) => Kind::Str(s),
            Tok::Float(f) => Kind::Float(f),
            Tok::Dur(d) => Kind::Dur(d),
            Tok::Int(n) => match i64::try_from(n) {
                Ok(v) => Kind::Int(v),
                Err(_) => {
                    return Err(Located {
                        pos,
                        msg: format!("integer literal {n} overflows INT64"),
                    });
                }
            },
            Tok::LParen => {
                let inner = self.expr()?;
                self.expect(&Tok::RParen, "to close `(`")?;
                return Ok(inner);
            }
            other => {
                return Err(Located {
                    pos,
                    msg: format!("expected an operand, found {}", other.describe()),
                });
            }
        };
        Ast::new(kind, pos, pos, self.prev_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree as a compact S-expression, to test its shape.
    fn show(a: &Ast) -> String {
        let list = |op: &str, xs: &[Ast]| {
            let parts: Vec<String> = xs.iter().map(show).collect();
            format!("({op} {})", parts.join(" "))
        };
        match &a.kind {
            Kind::Bool(b) => b.to_string(),
            Kind::Str(s) => format!("{s:?}"),
            Kind::Int(i) => i.to_string(),
            Kind::Float(f) => format!("{f:?}"),
            Kind::Dur(d) => format!("{d:?}"),
            Kind::Ident(n) => n.clone(),
            Kind::Select(x, n) => format!("{}.{n}", show(x)),
            Kind::Call(f, args) => {
                let parts: Vec<String> = args.iter().map(show).collect();
                format!("{}({})", show(f), parts.join(", "))
            }
            Kind::Index(m, k) => format!("{}[{}]", show(m), show(k)),
            Kind::Not(x) => format!("!{}", show(x)),
            Kind::Neg(x) => format!("-{}", show(x)),
            Kind::Binary(op, l, r) => format!("({} {} {})", op.symbol(), show(l), show(r)),
            Kind::And(xs) => list("&&", xs),
            Kind::Or(xs) => list("||", xs),
            Kind::Fallback(xs) => list("|", xs),
        }
    }

    fn p(text: &str) -> String {
        match parse(text) {
            Ok(a) => show(&a),
            Err(e) => panic!("{text:?}: {e:?}"),
        }
    }

    fn err(text: &str) -> Located {
        match parse(text) {
            Ok(a) => panic!("{text:?} parsed as {}", show(&a)),
            Err(e) => e,
        }
    }

    #[test]
    fn precedence() {
        assert_eq!(p("a || b && c"), "(|| a (&& b c))");
        assert_eq!(p("a && b || c && d"), "(|| (&& a b) (&& c d))");
        assert_eq!(p("a == b && c != d"), "(&& (== a b) (!= c d))");
        assert_eq!(p("a | \"x\" == \"y\""), "(== (| a \"x\") \"y\")");
        assert_eq!(p("a | b | \"c\""), "(| a b \"c\")");
        assert_eq!(p("!a | b"), "(| !a b)");
        assert_eq!(p("!a == b"), "(== !a b)");
        assert_eq!(p("(a || b) && c"), "(&& (|| a b) c)");
        assert_eq!(p("a < b == c >= d"), "(>= (== (< a b) c) d)");
        assert_eq!(p("a || b || c || d"), "(|| a b c d)");
    }

    #[test]
    fn postfix_forms() {
        assert_eq!(p("request.headers[\"x\"]"), "request.headers[\"x\"]");
        assert_eq!(p("m[k | \"d\"] | \"e\""), "(| m[(| k \"d\")] \"e\")");
        assert_eq!(p("\"a.*\".matches(x.y)"), "\"a.*\".matches(x.y)");
        assert_eq!(p("f()"), "f()");
        assert_eq!(p("f(a, b,)"), "f(a, b)");
        assert_eq!(
            p("s.toLower().startsWith(\"x\")"),
            "s.toLower().startsWith(\"x\")"
        );
    }

    #[test]
    fn literals() {
        assert_eq!(p("true && false"), "(&& true false)");
        assert_eq!(p("-5"), "-5");
        assert_eq!(p("-9223372036854775808"), "-9223372036854775808");
        assert_eq!(p("- 1.5"), "-1.5");
        assert_eq!(p("-x"), "-x");
        assert_eq!(p("--1"), "--1");
        assert_eq!(p("1.5s"), "1.5s");
        assert!(err("9223372036854775808").msg.contains("overflows INT64"));
        assert!(err("-9223372036854775809").msg.contains("overflows INT64"));
    }

    #[test]
    fn positions() {
        let a = parse("  abc.def == `x`").unwrap();
        assert_eq!((a.pos, a.start, a.end), (10, 2, 16));
        let Kind::Binary(_, l, _) = &a.kind else {
            panic!()
        };
        assert_eq!((l.start, l.end), (2, 9));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err("").msg, "empty expression");
        assert_eq!(err("   ").msg, "empty expression");
        let e = err("a ==");
        assert_eq!(
            (e.pos, e.msg.as_str()),
            (4, "expected an operand, found end of expression")
        );
        let e = err("a b");
        assert_eq!(e.pos, 2);
        assert!(e.msg.contains("unexpected name `b`"), "{}", e.msg);
        assert!(err("(a").msg.contains("expected `)` to close `(`"));
        assert!(err("m[\"k\"").msg.contains("expected `]`"));
        assert!(
            err("f(a b)")
                .msg
                .contains("expected `)` after function arguments")
        );
        assert!(err("a.").msg.contains("expected a name after `.`"));
        assert!(err("a.1").msg.contains("unexpected number"));
        assert!(err("a ||").msg.contains("expected an operand"));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(err(&deep).msg.contains("nested too deeply"));
        let ok = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(p(&ok), "a");
        assert!(err(&"!".repeat(100_000)).msg.contains("nested too deeply"));
        assert!(
            err(&format!("a{}", "[b]".repeat(100)))
                .msg
                .contains("nested too deeply")
        );
        assert!(
            err(&format!("a{}", " == b".repeat(100)))
                .msg
                .contains("nested too deeply")
        );
        assert!(
            err(&format!("f({}", "f(".repeat(10_000)))
                .msg
                .contains("nested too deeply")
        );
        // Long flat chains are fine.
        let wide = vec!["a == \"x\""; 5_000].join(" || ");
        assert!(parse(&wide).is_ok());
    }
}
