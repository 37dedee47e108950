//! Glob matches: dot-separated components, each either text or `*`, which
//! matches one whole component (anything but a dot) and captures it.

use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Star,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    parts: Vec<Part>,
}

impl Glob {
    /// Refuses what statsd_exporter refuses: empty components and `*` inside
    /// a component (`foo*` is neither a wildcard nor text).
    pub fn parse(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("empty".into());
        }
        let mut parts = Vec::new();
        for (i, component) in text.split('.').enumerate() {
            if component.is_empty() {
                return Err(format!("component {} is empty", i + 1));
            }
            if component == "*" {
                parts.push(Part::Star);
            } else if component.contains('*') {
                return Err(format!(
                    "{component:?}: `*` must be a whole component (between dots)"
                ));
            } else if component.chars().any(char::is_whitespace) {
                return Err(format!("{component:?} holds whitespace"));
            } else {
                parts.push(Part::Text(component.to_string()));
            }
        }
        Ok(Glob { parts })
    }

    pub fn captures(&self) -> usize {
        self.parts.iter().filter(|p| **p == Part::Star).count()
    }

    /// The components the stars matched, in order, or `None`.
    pub fn matches<'a>(&self, name: &'a str) -> Option<Vec<&'a str>> {
        let mut captured = Vec::with_capacity(self.captures());
        let mut components = name.split('.');
        for part in &self.parts {
            let component = components.next()?;
            match part {
                Part::Star => captured.push(component),
                Part::Text(t) if t == component => {}
                Part::Text(_) => return None,
            }
        }
        components.next().is_none().then_some(captured)
    }

    /// With `glob_disable_ordering`, which of two matching globs wins: the one
    /// with text where the other has a star, reading left to right (as
    /// statsd_exporter's state machine prefers text transitions).
    pub fn specificity(&self, other: &Glob) -> Ordering {
        for (a, b) in self.parts.iter().zip(&other.parts) {
            match (a, b) {
                (Part::Text(_), Part::Star) => return Ordering::Greater,
                (Part::Star, Part::Text(_)) => return Ordering::Less,
                _ => {}
            }
        }
        Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_one_component() {
        let g = Glob::parse("envoy.cluster.*.upstream_rq_total").unwrap();
        assert_eq!(g.captures(), 1);
        assert_eq!(
            g.matches("envoy.cluster.reviews.upstream_rq_total"),
            Some(vec!["reviews"])
        );
        assert_eq!(g.matches("envoy.cluster.reviews.upstream_rq_200"), None);
        let g = Glob::parse("envoy.cluster.*.*").unwrap();
        assert_eq!(
            g.matches("envoy.cluster.reviews.upstream_rq_200"),
            Some(vec!["reviews", "upstream_rq_200"])
        );
        assert_eq!(g.matches("envoy.cluster.a.b.c"), None);
        assert_eq!(g.matches("envoy.cluster.a"), None);
        assert_eq!(g.matches("envoy.listener.a.b"), None);
        // A star takes an empty component too, as the FSM does.
        assert_eq!(g.matches("envoy.cluster..b"), Some(vec!["", "b"]));
    }

    #[test]
    fn bad_globs_are_refused() {
        assert!(
            Glob::parse("a..b")
                .unwrap_err()
                .contains("component 2 is empty")
        );
        assert!(Glob::parse("a.b*").unwrap_err().contains("whole component"));
        assert!(Glob::parse("").is_err());
        assert!(Glob::parse("a.b c").is_err());
    }

    #[test]
    fn text_beats_star_left_to_right() {
        let a = Glob::parse("a.b.*").unwrap();
        let b = Glob::parse("a.*.c").unwrap();
        let c = Glob::parse("*.b.c").unwrap();
        assert_eq!(a.specificity(&b), Ordering::Greater);
        assert_eq!(b.specificity(&c), Ordering::Greater);
        assert_eq!(c.specificity(&a), Ordering::Less);
        assert_eq!(a.specificity(&a), Ordering::Equal);
    }
}
