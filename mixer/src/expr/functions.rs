//! The work behind CEXL's functions, kept apart from the evaluator so that
//! attribute decoding and adapters can share it (timestamps in particular).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Istio's glob for `match(value, pattern)`: a trailing `*` makes the rest a
/// prefix, else a leading `*` makes it a suffix, else the match is exact.
/// The trailing `*` wins, so `*` alone matches everything and `*x*` is the
/// prefix `*x`, as in Istio.
pub fn glob_match(value: &str, pattern: &str) -> bool {
    Glob::new(pattern).matches(value)
}

/// A `match` pattern taken apart once, when it is a constant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Glob {
    Prefix(Box<str>),
    Suffix(Box<str>),
    Exact(Box<str>),
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        if let Some(prefix) = pattern.strip_suffix('*') {
            Glob::Prefix(prefix.into())
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            Glob::Suffix(suffix.into())
        } else {
            Glob::Exact(pattern.into())
        }
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            Glob::Prefix(p) => value.starts_with(&**p),
            Glob::Suffix(s) => value.ends_with(&**s),
            Glob::Exact(e) => value == &**e,
        }
    }
}

/// Bounds the memory one `matches` pattern may compile to, so that a rule
/// (or a fuzzer) cannot make Mixer build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a `matches` pattern. Go's RE2 syntax and the `regex` crate's
/// agree on everything rules use; both search rather than anchor.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            // The crate's message draws the pattern with a caret over
            // several lines; the last line says what is wrong.
            let text = e.to_string();
            let why = text.lines().last().unwrap_or_default().trim();
            let why = why.strip_prefix("error: ").unwrap_or(why);
            format!("invalid regex {pattern:?}: {why}")
        })
}

/// `ip(text)`.
pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// `dnsName(text)`: one or more labels of letters, digits, `-` and `_`,
/// with an optional root dot.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{name:?} is not a DNS name: {why}"));
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.is_empty() {
        return bad("it is empty");
    }
    if body.len() > 253 {
        return bad("it is longer than 253 characters");
    }
    for label in body.split('.') {
        if label.is_empty() {
            return bad("it has an empty label");
        }
        if label.len() > 63 {
            return bad("a label is longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label starts or ends with `-`");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("a label has a character other than a letter, digit, `-` or `_`");
        }
    }
    Ok(())
}

/// `email(text)`: a bare `local@domain` address, as Istio accepted only
/// addresses that Go's mail parser left unchanged (no display names).
pub fn check_email(addr: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{addr:?} is not an email address: {why}"));
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return bad("it has no `@`");
    };
    if local.is_empty() {
        return bad("the part before `@` is empty");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return bad("the part before `@` has a misplaced `.`");
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    if !local.chars().all(atext) {
        return bad("the part before `@` has a character an address cannot");
    }
    check_dns_name(domain).or_else(|_| bad("the part after `@` is not a DNS name"))
}

/// `uri(text)`: what Go's `url.Parse` accepts, near enough: no spaces or
/// control characters, well-formed `%` escapes, and a well-formed scheme if
/// there is one.
pub fn check_uri(uri: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{uri:?} is not a URI: {why}"));
    if uri.is_empty() {
        return bad("it is empty");
    }
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("it has a space or control character");
    }
    let bytes = uri.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return bad("it has a malformed `%` escape");
            }
        }
    }
    let scheme_end = uri.find([':', '/', '?', '#']);
    if let Some(end) = scheme_end
        && uri[end..].starts_with(':')
    {
        let scheme = &uri[..end];
        let mut chars = scheme.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) {
            return bad("its scheme is malformed");
        }
    }
    Ok(())
}

/// Parses an RFC 3339 timestamp: `2006-01-02T15:04:05Z`, with optional
/// fractional seconds (digits past nanoseconds are dropped, as Go drops
/// them) and a `Z` or `±hh:mm` offset. Invalid dates such as February 29th
/// of a common year are refused.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b.get(i) != Some(&c)) || !matches!(b.get(10), Some(b'T' | b't')) {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(d - b'0');
            }
            i += 1;
        }
        let count = i - start;
        if count == 0 {
            return None;
        }
        for _ in count..9 {
            nanos *= 10;
        }
    }
    let offset: i64 = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let hh = digits(b, i + 1, 2)?;
            let mm = digits(b, i + 4, 2)?;
            if b.get(i + 3) != Some(&b':') || hh > 23 || mm > 59 {
                return None;
            }
            let secs = i64::from(hh) * 3600 + i64::from(mm) * 60;
            i += 6;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    if i != b.len() {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset;
    let whole = Duration::from_secs(secs.unsigned_abs());
    let time = if secs >= 0 {
        UNIX_EPOCH.checked_add(whole)?
    } else {
        UNIX_EPOCH.checked_sub(whole)?
    };
    time.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// Formats a time given as its distance from the Unix epoch as
/// `2006-01-02T15:04:05Z`, with fractional seconds (trailing zeros dropped)
/// only when there are any, like Go's `time.RFC3339Nano`.
pub fn format_rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    // u64::MAX / 86400 fits an i64, so this never saturates.
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let (year, month, day) = civil_from_days(days);
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let nanos = since_epoch.subsec_nanos();
    let frac = if nanos == 0 {
        String::new()
    } else {
        let digits = format!("{nanos:09}");
        format!(".{}", digits.trim_end_matches('0'))
    };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{frac}Z")
}

/// `len` ASCII digits at `at`, or None.
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let field = b.get(at..at.checked_add(len)?)?;
    field.iter().try_fold(0u32, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Days between 1970-01-01 and a proleptic Gregorian date, counting in
// 400-year eras that start on March 1st so that leap days fall at the end
// of each year.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// The inverse of `days_from_civil`, for days >= 0 (all `format_rfc3339`
// needs), returning (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are small by construction (1..=31 and 1..=12).
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: u32) -> SystemTime {
        let base = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        base + Duration::from_nanos(u64::from(nanos))
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_rfc3339("2006-01-02T15:04:05Z"),
            Some(at(1_136_214_245, 0))
        );
        assert_eq!(
            parse_rfc3339("2006-01-02T15:04:05.5Z"),
            Some(at(1_136_214_245, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("2006-01-02T15:04:05.123456789123z"),
            Some(at(1_136_214_245, 123_456_789))
        );
        // Offsets name the local time; the instant is the same.
        assert_eq!(
            parse_rfc3339("2006-01-02T22:04:05+07:00"),
            parse_rfc3339("2006-01-02T15:04:05Z")
        );
        assert_eq!(
            parse_rfc3339("2006-01-01T23:34:05-15:30"),
            parse_rfc3339("2006-01-02T15:04:05Z")
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(at(-1, 0)));
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z"),
            Some(at(-62_135_596_800, 0))
        );
    }

    #[test]
    fn leap_years() {
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2016-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("1900-02-29T00:00:00Z").is_none());
        assert!(parse_rfc3339("2015-02-29T00:00:00Z").is_none());
        assert_eq!(
            parse_rfc3339("2016-03-01T00:00:00Z").and_then(|t| t
                .duration_since(parse_rfc3339("2016-02-28T00:00:00Z")?)
                .ok()),
            Some(Duration::from_secs(2 * 86_400))
        );
        assert_eq!(
            format_rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2006-01-02",
            "2006-01-02T15:04:05",
            "2006-01-02 15:04:05Z",
            "2006-1-02T15:04:05Z",
            "2006-01-02T15:04:05.Z",
            "2006-01-02T15:04:05+0700",
            "2006-01-02T15:04:05+24:00",
            "2006-13-02T15:04:05Z",
            "2006-00-02T15:04:05Z",
            "2006-04-31T15:04:05Z",
            "2006-01-02T24:00:00Z",
            "2006-01-02T15:60:00Z",
            "2006-01-02T15:04:60Z",
            "2006-01-02T15:04:05ZZ",
            "+006-01-02T15:04:05Z",
            "2006-01-02T15:04:05Z\n",
            "２006-01-02T15:04:05Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_rfc3339(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(Duration::new(1_136_214_245, 120_000_000)),
            "2006-01-02T15:04:05.12Z"
        );
        assert_eq!(
            format_rfc3339(Duration::new(1_136_214_245, 1)),
            "2006-01-02T15:04:05.000000001Z"
        );
        for text in [
            "1970-01-01T00:00:00Z",
            "1999-12-31T23:59:59.999999999Z",
            "2000-02-29T12:00:00Z",
            "2024-02-29T00:00:00.25Z",
            "2100-03-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let t = parse_rfc3339(text).and_then(|t| t.duration_since(UNIX_EPOCH).ok());
            assert_eq!(t.map(format_rfc3339).as_deref(), Some(text));
        }
        // Every day for a few centuries survives the calendar round trip.
        for days in (0..200_000).step_by(7) {
            let secs = days * 86_400 + 3_723;
            let text = format_rfc3339(Duration::from_secs(secs));
            let back = parse_rfc3339(&text).and_then(|t| t.duration_since(UNIX_EPOCH).ok());
            assert_eq!(back, Some(Duration::from_secs(secs)), "{text}");
        }
        // Offsets normalise to UTC.
        let t = parse_rfc3339("2019-06-30T20:00:00.5-04:00")
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        assert_eq!(
            t.map(format_rfc3339).as_deref(),
            Some("2019-07-01T00:00:00.5Z")
        );
        // The largest Duration formats without overflow.
        assert!(format_rfc3339(Duration::MAX).ends_with('Z'));
    }

    #[test]
    fn globs() {
        assert!(glob_match("ratings.default.svc", "*.svc"));
        assert!(glob_match("ratings.default.svc", "ratings.*"));
        assert!(glob_match("ratings", "ratings"));
        assert!(!glob_match("ratings2", "ratings"));
        assert!(glob_match("anything", "*"));
        assert!(glob_match("", "*"));
        // The trailing star wins: `*a*` is the prefix `*a`.
        assert!(glob_match("*abc", "*a*"));
        assert!(!glob_match("xabc", "*a*"));
        assert!(!glob_match("abc", "*b"));
    }

    #[test]
    fn validators() {
        assert!(parse_ip("10.0.0.1").is_ok());
        assert!(parse_ip("::ffff:10.0.0.1").is_ok());
        assert!(parse_ip("10.0.0.256").is_err());
        assert!(check_dns_name("ratings.default.svc.cluster.local").is_ok());
        assert!(check_dns_name("example.com.").is_ok());
        assert!(check_dns_name("_srv.example.com").is_ok());
        for bad in ["", ".", "a..b", "-a.com", "a-.com", "a b", "ä.com"] {
            assert!(check_dns_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_dns_name(&"a".repeat(64)).is_err());
        assert!(check_email("jason@example.com").is_ok());
        assert!(check_email("first.last+tag@example.com").is_ok());
        for bad in [
            "",
            "jason",
            "@example.com",
            "jason@",
            "a..b@x.com",
            "Jason <j@x.com>",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        assert!(check_uri("http://example.com/a?b=c#d").is_ok());
        assert!(check_uri("/just/a/path").is_ok());
        assert!(check_uri("mailto:jason@example.com").is_ok());
        for bad in ["", "a b", "http://x/%zz", "://x", "1http://x"] {
            assert!(check_uri(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regex_errors_are_one_line() {
        assert!(compile_regex("^svc-[a-z]+$").is_ok());
        let err = compile_regex("(unclosed").unwrap_err();
        assert!(err.starts_with("invalid regex \"(unclosed\": "), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(compile_regex("a{1000}{1000}{1000}").is_err());
    }
}
