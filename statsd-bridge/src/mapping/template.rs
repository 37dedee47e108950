//! `name` and label templates: `$1`, `${1}`, `${group}` and `$$`, read the way
//! Go's `Regexp.Expand` reads them (statsd_exporter's glob formatter reads
//! them alike): `$1x` names a group called `1x`, so write `${1}x`.

use std::fmt;

/// A reference to a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Group {
    Index(usize),
    Name(String),
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::Index(i) => write!(f, "${{{i}}}"),
            Group::Name(n) => write!(f, "${{{n}}}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Capture(Group),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(text: &str) -> Template {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                rest = tail;
                continue;
            }
            let (name, tail) = match after.strip_prefix('{') {
                Some(braced) => match braced.find('}') {
                    Some(end) if is_group_name(&braced[..end]) => {
                        (&braced[..end], &braced[end + 1..])
                    }
                    _ => ("", after),
                },
                None => {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            if name.is_empty() {
                // Not a reference: the '$' is text, as in Go.
                literal.push('$');
                rest = after;
                continue;
            }
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            let group = match name.parse::<usize>() {
                Ok(i) => Group::Index(i),
                Err(_) => Group::Name(name.to_string()),
            };
            pieces.push(Piece::Capture(group));
            rest = tail;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Template { pieces }
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Capture(g) => Some(g),
            Piece::Text(_) => None,
        })
    }

    /// The text between the captures.
    pub fn text(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Text(t) => Some(t.as_str()),
            Piece::Capture(_) => None,
        })
    }

    pub fn expand<'a>(&self, out: &mut String, capture: impl Fn(&Group) -> &'a str) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Capture(g) => out.push_str(capture(g)),
            }
        }
    }

    pub fn to_expanded<'a>(&self, capture: impl Fn(&Group) -> &'a str) -> String {
        let mut out = String::new();
        self.expand(&mut out, capture);
        out
    }
}

fn is_group_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(template: &str, captures: &[&str]) -> String {
        Template::parse(template).to_expanded(|g| match g {
            Group::Index(i) => captures.get(*i).copied().unwrap_or(""),
            Group::Name(n) if n == "svc" => "reviews",
            Group::Name(_) => "",
        })
    }

    #[test]
    fn captures_as_go_expands_them() {
        let c = ["whole", "a", "b"];
        assert_eq!(expand("x_$1_$2", &c), "x_b"); // `$1_` is a group named "1_".
        assert_eq!(expand("x_${1}_${2}", &c), "x_a_b");
        assert_eq!(expand("$1", &c), "a");
        assert_eq!(expand("${2}_total", &c), "b_total");
        assert_eq!(expand("${svc}-$svc", &c), "reviews-reviews");
        assert_eq!(expand("cost $$5", &c), "cost $5");
        assert_eq!(expand("a $ b ${ c ${}", &c), "a $ b ${ c ${}");
        assert_eq!(expand("plain", &c), "plain");
    }

    #[test]
    fn groups_and_text_are_listed_for_validation() {
        let t = Template::parse("envoy_${1}_rq_$name");
        assert_eq!(
            t.groups().cloned().collect::<Vec<_>>(),
            vec![Group::Index(1), Group::Name("name".into())]
        );
        assert_eq!(t.text().collect::<Vec<_>>(), vec!["envoy_", "_rq_"]);
    }
}
