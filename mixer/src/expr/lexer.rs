//! Splits expression text into tokens, with Go's literal syntax.

use std::time::Duration;

use super::Located;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    /// Unsigned so that `-9223372036854775808` can be negated by the parser.
    Int(u64),
    Float(f64),
    Dur(Duration),
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Not,
    Minus,
    AndAnd,
    OrOr,
    Pipe,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

impl Tok {
    /// How an error message names the token.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("name `{name}`"),
            Tok::Str(_) => "string literal".into(),
            Tok::Int(_) | Tok::Float(_) => "number".into(),
            Tok::Dur(_) => "duration".into(),
            Tok::Eof => "end of expression".into(),
            other => format!("`{}`", other.symbol()),
        }
    }

    pub(crate) fn symbol(&self) -> &'static str {
        match self {
            Tok::Dot => ".",
            Tok::Comma => ",",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Not => "!",
            Tok::Minus => "-",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Pipe => "|",
            Tok::Eq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            _ => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    /// Byte offsets of the token in the text.
    pub pos: usize,
    pub end: usize,
}

/// The tokens of `text`, always ending with [`Tok::Eof`].
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, Located> {
    let mut lx = Lexer { src: text, pos: 0 };
    let mut out = Vec::new();
    loop {
        while lx.peek().is_some_and(char::is_whitespace) {
            lx.bump();
        }
        let pos = lx.pos;
        let Some(c) = lx.peek() else {
            out.push(Token {
                tok: Tok::Eof,
                pos,
                end: pos,
            });
            return Ok(out);
        };
        let tok = match c {
            '"' => lx.string()?,
            '`' => lx.raw_string()?,
            '0'..='9' => lx.number()?,
            '.' if lx.peek2().is_some_and(|d| d.is_ascii_digit()) => lx.number()?,
            c if is_ident_start(c) => lx.ident(),
            _ => lx.punct()?,
        };
        out.push(Token {
            tok,
            pos,
            end: lx.pos,
        });
    }
}

/// `$` starts `$out.<field>`, an attribute-generating adapter's output as
/// an instance's `attributeBindings` read it.
fn is_ident_start(c: char) -> bool {
    c == '_' || c == '$' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

struct Lexer<'t> {
    src: &'t str,
    pos: usize,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        self.src.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += c.len_utf8();
        }
        hit
    }

    fn fail<T>(&self, pos: usize, msg: impl Into<String>) -> Result<T, Located> {
        Err(Located {
            pos,
            msg: msg.into(),
        })
    }

    fn ident(&mut self) -> Tok {
        let start = self.pos;
        self.bump();
        while self.peek().is_some_and(is_ident_char) {
            self.bump();
        }
        Tok::Ident(
            self.src
                .get(start..self.pos)
                .unwrap_or_default()
                .to_string(),
        )
    }

    fn punct(&mut self) -> Result<Tok, Located> {
        let pos = self.pos;
        let Some(c) = self.bump() else {
            return Ok(Tok::Eof);
        };
        Ok(match c {
            '.' => Tok::Dot,
            ',' => Tok::Comma,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            '-' => Tok::Minus,
            '!' if self.eat('=') => Tok::Ne,
            '!' => Tok::Not,
            '<' if self.eat('=') => Tok::Le,
            '<' => Tok::Lt,
            '>' if self.eat('=') => Tok::Ge,
            '>' => Tok::Gt,
            '=' if self.eat('=') => Tok::Eq,
            '=' => return self.fail(pos, "`=` is not an operator; compare with `==`"),
            '&' if self.eat('&') => Tok::AndAnd,
            '&' => return self.fail(pos, "`&` is not an operator; use `&&`"),
            '|' if self.eat('|') => Tok::OrOr,
            '|' => Tok::Pipe,
            '\'' => {
                return self.fail(
                    pos,
                    "single quotes do not make a string; use double quotes or backticks",
                );
            }
            other => return self.fail(pos, format!("unexpected character {other:?}")),
        })
    }

    fn digits(&mut self, radix: u32) {
        while self.peek().is_some_and(|c| c.is_digit(radix)) {
            self.bump();
        }
    }

    /// Integers (decimal, `0x` hex, Go's `0`-prefixed octal), floats, and
    /// Go durations such as `1.5s` or `1h30m`, which are a number glued to a
    /// unit.
    fn number(&mut self) -> Result<Tok, Located> {
        let start = self.pos;
        let overflow = |lit: &str| Located {
            pos: start,
            msg: format!("integer literal {lit} overflows INT64"),
        };
        if self.rest().starts_with("0x") || self.rest().starts_with("0X") {
            self.pos += 2;
            let digits_at = self.pos;
            self.digits(16);
            let lit = self.src.get(start..self.pos).unwrap_or_default();
            let digits = self.src.get(digits_at..self.pos).unwrap_or_default();
            if digits.is_empty() || self.peek().is_some_and(is_ident_char) {
                return self.fail(start, "malformed hexadecimal literal");
            }
            return u64::from_str_radix(digits, 16)
                .map(Tok::Int)
                .map_err(|_| overflow(lit));
        }
        self.digits(10);
        let mut float = false;
        // `1.5` is a number but `x.y` after a number is not a fraction.
        if self.peek() == Some('.') && !self.peek2().is_some_and(is_ident_start) {
            self.bump();
            self.digits(10);
            float = true;
        }
        let mut exponent = false;
        if matches!(self.peek(), Some('e' | 'E')) {
            let save = self.pos;
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.digits(10);
                float = true;
                exponent = true;
            } else {
                self.pos = save;
            }
        }
        if self.peek().is_some_and(char::is_alphabetic) {
            while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '.') {
                self.bump();
            }
            let lit = self.src.get(start..self.pos).unwrap_or_default();
            if exponent {
                return self.fail(start, format!("invalid duration literal {lit}"));
            }
            return api::duration::parse(lit)
                .map(Tok::Dur)
                .map_err(|e| Located {
                    pos: start,
                    msg: format!("invalid duration literal {lit}: {e}"),
                });
        }
        if self.peek() == Some('_') {
            return self.fail(start, "malformed number");
        }
        let lit = self.src.get(start..self.pos).unwrap_or_default();
        if float {
            return match lit.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Tok::Float(f)),
                _ => self.fail(start, format!("float literal {lit} is out of range")),
            };
        }
        if let Some(octal) = lit.strip_prefix('0').filter(|o| !o.is_empty()) {
            if !octal.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return self.fail(start, format!("invalid octal literal {lit}"));
            }
            return u64::from_str_radix(octal, 8)
                .map(Tok::Int)
                .map_err(|_| overflow(lit));
        }
        lit.parse::<u64>().map(Tok::Int).map_err(|_| overflow(lit))
    }

    fn string(&mut self) -> Result<Tok, Located> {
        let start = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None | Some('\n') => return self.fail(start, "unterminated string literal"),
                Some('"') => return Ok(Tok::Str(out)),
                Some('\\') => out.push(self.escape(at)?),
                Some(c) => out.push(c),
            }
        }
    }

    fn escape(&mut self, at: usize) -> Result<char, Located> {
        let Some(c) = self.bump() else {
            return self.fail(at, "unterminated string literal");
        };
        Ok(match c {
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            '\\' => '\\',
            '"' => '"',
            '\'' => '\'',
            'x' => self.code_point(at, 16, 2)?,
            'u' => self.code_point(at, 16, 4)?,
            'U' => self.code_point(at, 16, 8)?,
            '0'..='7' => {
                self.pos -= 1;
                self.code_point(at, 8, 3)?
            }
            other => return self.fail(at, format!("unknown escape sequence `\\{other}`")),
        })
    }

    /// The character `len` digits in `radix` spell. Go lets `\x` and octal
    /// escapes make arbitrary bytes; text here must stay UTF-8, so those
    /// stop at `\x7f`.
    fn code_point(&mut self, at: usize, radix: u32, len: usize) -> Result<char, Located> {
        let mut n: u32 = 0;
        for _ in 0..len {
            match self.peek().and_then(|c| c.to_digit(radix)) {
                Some(d) => {
                    n = n.saturating_mul(radix).saturating_add(d);
                    self.bump();
                }
                None => return self.fail(at, "malformed escape sequence"),
            }
        }
        let byte_escape = len < 4;
        match char::from_u32(n) {
            Some(c) if !byte_escape || n < 0x80 => Ok(c),
            _ if byte_escape => self.fail(at, "byte escapes above \\x7f are not valid text"),
            _ => self.fail(at, "escape sequence is not a valid Unicode code point"),
        }
    }

    fn raw_string(&mut self) -> Result<Tok, Located> {
        let start = self.pos;
        self.bump();
        let body_at = self.pos;
        match self.rest().find('`') {
            Some(len) => {
                let body = self.src.get(body_at..body_at + len).unwrap_or_default();
                self.pos = body_at + len + 1;
                // Go drops carriage returns from raw strings.
                Ok(Tok::Str(body.replace('\r', "")))
            }
            None => self.fail(start, "unterminated raw string literal"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        tokenize(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    fn err(text: &str) -> String {
        match tokenize(text) {
            Ok(t) => panic!("{text:?} lexed as {t:?}"),
            Err(e) => e.msg,
        }
    }

    #[test]
    fn operators_and_names() {
        assert_eq!(
            toks("a.b==\"x\"||!c&&d!=e|f<=g>=h<i>j-k[l](m,n)"),
            vec![
                Tok::Ident("a".into()),
                Tok::Dot,
                Tok::Ident("b".into()),
                Tok::Eq,
                Tok::Str("x".into()),
                Tok::OrOr,
                Tok::Not,
                Tok::Ident("c".into()),
                Tok::AndAnd,
                Tok::Ident("d".into()),
                Tok::Ne,
                Tok::Ident("e".into()),
                Tok::Pipe,
                Tok::Ident("f".into()),
                Tok::Le,
                Tok::Ident("g".into()),
                Tok::Ge,
                Tok::Ident("h".into()),
                Tok::Lt,
                Tok::Ident("i".into()),
                Tok::Gt,
                Tok::Ident("j".into()),
                Tok::Minus,
                Tok::Ident("k".into()),
                Tok::LBracket,
                Tok::Ident("l".into()),
                Tok::RBracket,
                Tok::LParen,
                Tok::Ident("m".into()),
                Tok::Comma,
                Tok::Ident("n".into()),
                Tok::RParen,
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(toks("42")[0], Tok::Int(42));
        assert_eq!(toks("0x1F")[0], Tok::Int(31));
        assert_eq!(toks("017")[0], Tok::Int(15));
        assert_eq!(toks("0")[0], Tok::Int(0));
        assert_eq!(toks("9223372036854775808")[0], Tok::Int(1 << 63));
        assert_eq!(toks("1.5")[0], Tok::Float(1.5));
        assert_eq!(toks(".25")[0], Tok::Float(0.25));
        assert_eq!(toks("1.")[0], Tok::Float(1.0));
        assert_eq!(toks("1e3")[0], Tok::Float(1000.0));
        assert_eq!(toks("2.5E-1")[0], Tok::Float(0.25));
        assert!(err("18446744073709551616").contains("overflows INT64"));
        assert!(err("0x").contains("hexadecimal"));
        assert!(err("09").contains("octal"));
        assert!(err("1e999").contains("out of range"));
        assert!(err("1_000").contains("malformed"));
    }

    #[test]
    fn durations() {
        assert_eq!(toks("10s")[0], Tok::Dur(Duration::from_secs(10)));
        assert_eq!(toks("1.5m")[0], Tok::Dur(Duration::from_secs(90)));
        assert_eq!(toks("300ms")[0], Tok::Dur(Duration::from_millis(300)));
        assert_eq!(toks("1h30m")[0], Tok::Dur(Duration::from_secs(5400)));
        assert_eq!(toks("2µs")[0], Tok::Dur(Duration::from_micros(2)));
        assert_eq!(
            toks("x > 10s"),
            vec![
                Tok::Ident("x".into()),
                Tok::Gt,
                Tok::Dur(Duration::from_secs(10)),
                Tok::Eof
            ]
        );
        assert!(err("5d").contains("invalid duration literal 5d"));
        assert!(err("1e3s").contains("invalid duration"));
    }

    #[test]
    fn strings() {
        assert_eq!(
            toks(r#""a\"b\\c\n\t\u00e9\U0001F600\x41\101""#)[0],
            Tok::Str("a\"b\\c\n\té😀AA".into())
        );
        assert_eq!(toks("`raw \\n \"x\"`")[0], Tok::Str("raw \\n \"x\"".into()));
        assert_eq!(toks("`a\r\nb`")[0], Tok::Str("a\nb".into()));
        assert_eq!(toks("\"ünï\"")[0], Tok::Str("ünï".into()));
        assert!(err("\"abc").contains("unterminated"));
        assert!(err("\"a\nb\"").contains("unterminated"));
        assert!(err("`abc").contains("unterminated"));
        assert!(err(r#""\q""#).contains("unknown escape"));
        assert!(err(r#""\u12""#).contains("malformed escape"));
        assert!(err(r#""\ud800""#).contains("Unicode"));
        assert!(err(r#""\xff""#).contains("\\x7f"));
        assert!(err(r#""\"#).contains("unterminated"));
        assert!(err("'a'").contains("single quotes"));
    }

    #[test]
    fn bad_operators() {
        assert!(err("a = b").contains("`==`"));
        assert!(err("a & b").contains("`&&`"));
        assert!(err("a # b").contains("unexpected character '#'"));
        assert_eq!(tokenize("a ¤").map_err(|e| e.pos), Err(2));
    }
}
