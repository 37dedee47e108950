//! What Envoy's RE2 refuses, checked before a regex reaches Envoy: one bad
//! regex would otherwise NACK a route table shared by every proxy.
//!
//! RE2 refuses repetition counts above 1000, and Envoy refuses programs
//! larger than `re2.max_program_size.error_level` (100 unless the proxy's
//! runtime says otherwise). RE2's program size depends on its simplifier
//! and compiler, so here it is bounded from below: every literal character
//! and class compiles to at least one instruction, every capture group to
//! two, plus the match and fail instructions; a literal prefix right after
//! `^` is matched apart from the program and not counted. A regex whose lower
//! bound is over the limit is certainly refused; one under it may still be
//! (Envoy's NACK then names it on `/debug/syncz`).

use regex_syntax::hir::{Hir, HirKind, Look};

/// Envoy's default `re2.max_program_size.error_level`.
pub const MAX_PROGRAM_SIZE: usize = 100;
/// RE2's largest `{n,m}`.
pub const MAX_REPEAT: u32 = 1000;

/// Checks `pattern` as Envoy will compile it.
pub fn check(pattern: &str) -> Result<(), String> {
    let hir = parse(pattern)?;
    if let Some(n) = largest_repeat(&hir)
        && n > MAX_REPEAT
    {
        return Err(format!(
            "regex {pattern:?}: repetition count {n} is over RE2's limit of {MAX_REPEAT}"
        ));
    }
    let size = program_size_at_least(&hir);
    if size > MAX_PROGRAM_SIZE {
        return Err(format!(
            "regex {pattern:?}: its RE2 program has at least {size} instructions, over the \
             {MAX_PROGRAM_SIZE} Envoy accepts (re2.max_program_size.error_level); simplify it"
        ));
    }
    Ok(())
}

/// Checks only that `pattern` is RE2 syntax, for a regex that Pilot itself
/// matches (an EnvoyFilter's `proxyVersion`) rather than Envoy.
pub fn check_syntax(pattern: &str) -> Result<(), String> {
    parse(pattern).map(drop)
}

fn parse(pattern: &str) -> Result<Hir, String> {
    regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .map_err(|e| {
            let first = e.to_string().lines().last().unwrap_or_default().to_string();
            format!("invalid regex {pattern:?}: {first}")
        })
}

/// A lower bound on RE2's `ProgramSize()` for `hir`.
pub fn program_size_at_least(hir: &Hir) -> usize {
    // Fail and Match.
    2usize.saturating_add(match hir.kind() {
        HirKind::Concat(items)
            if matches!(
                items.first().map(Hir::kind),
                Some(HirKind::Look(Look::Start))
            ) =>
        {
            // RE2 matches a required literal prefix with a string compare.
            items
                .iter()
                .skip(1)
                .skip_while(|h| matches!(h.kind(), HirKind::Literal(_) | HirKind::Class(_)))
                .map(leaves)
                .fold(0, usize::saturating_add)
        }
        _ => leaves(hir),
    })
}

fn leaves(hir: &Hir) -> usize {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 0,
        HirKind::Literal(lit) => match std::str::from_utf8(&lit.0) {
            Ok(s) => s.chars().count(),
            Err(_) => lit.0.len(),
        },
        HirKind::Class(_) => 1,
        HirKind::Capture(c) => leaves(&c.sub).saturating_add(2),
        HirKind::Concat(items) => items.iter().map(leaves).fold(0, usize::saturating_add),
        // Common prefixes of the branches may be shared; the longest branch is not.
        HirKind::Alternation(items) => items.iter().map(leaves).max().unwrap_or(0),
        HirKind::Repetition(r) => {
            let copies = r.max.unwrap_or(r.min).max(1) as usize;
            copies.saturating_mul(leaves(&r.sub))
        }
    }
}

fn largest_repeat(hir: &Hir) -> Option<u32> {
    match hir.kind() {
        HirKind::Repetition(r) => {
            let own = r.max.unwrap_or(r.min).max(r.min);
            Some(largest_repeat(&r.sub).map_or(own, |inner| inner.max(own)))
        }
        HirKind::Capture(c) => largest_repeat(&c.sub),
        HirKind::Concat(items) | HirKind::Alternation(items) => {
            items.iter().filter_map(largest_repeat).max()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(pattern: &str) -> usize {
        program_size_at_least(&regex_syntax::parse(pattern).unwrap())
    }

    /// Each pattern with the size Envoy 1.40's RE2 reported for it: the bound
    /// never exceeds it.
    #[test]
    fn the_bound_is_below_what_re2_reports() {
        for (pattern, re2) in [
            ("a", 5),
            ("abc", 7),
            ("^abc$", 4),
            ("(a)", 7),
            ("ab|cd", 8),
            ("abc|abd", 7),
            ("[a-z0-9]", 6),
            (".*", 6),
            ("/api/v[0-9]+/.*", 15),
            ("^/api/[a-z]{96}", 100),
            ("/[a-z]{97}", 102),
            ("/[a-z]{98}", 103),
            ("(a|b){40}", 124),
            ("(?i)hello{30}", 38),
            ("/é{60}", 66),
            ("\\w{49}", 151),
            ("/[a-z0-9_]{40}", 125),
            ("a{2,4}", 10),
        ] {
            let b = bound(pattern);
            assert!(b <= re2, "{pattern}: bound {b} over RE2's {re2}");
        }
    }

    #[test]
    fn what_envoy_refuses_is_refused() {
        assert!(
            check("/[a-z]{1000}")
                .unwrap_err()
                .contains("at least 1003 instructions")
        );
        assert!(check("/[a-z]{98}").is_err());
        assert!(check("(a|b){40}").is_err());
        assert!(
            check("a{1001}")
                .unwrap_err()
                .contains("over RE2's limit of 1000")
        );
        assert!(check("/(unclosed").unwrap_err().contains("invalid regex"));
        for fine in [
            "^/api/v[0-9]+/.*",
            "^/api/[a-z]{96}",
            ".*\\.(png|jpg)$",
            "(?i)^bearer .+",
        ] {
            assert_eq!(check(fine), Ok(()), "{fine}");
        }
    }
}
