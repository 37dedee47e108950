//! Go's duration syntax (`10m`, `1m30s`, `1.5h`, `250ms`), which
//! statsd_exporter's mapping files use for `ttl` and `max_age`.

use std::time::Duration;

/// Parses a non-negative Go duration. `0` needs no unit; every other number
/// does (a bare `60` would be 60 ns in Go, which is never what was meant).
pub fn parse(s: &str) -> Result<Duration, String> {
    let text = s.strip_prefix('+').unwrap_or(s);
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text.starts_with('-') {
        return Err(format!("{s:?} is negative"));
    }
    let mut rest = text;
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{s:?}: expected a number at {rest:?}"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("{s:?}: missing unit (ns, us, ms, s, m, h)")),
            other => return Err(format!("{s:?}: unknown unit {other:?}")),
        };
        nanos += value * scale;
        rest = next;
    }
    // Go's durations stop at about 290 years.
    if !nanos.is_finite() || nanos > i64::MAX as f64 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1m20s"), Ok(Duration::from_secs(80)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("3µs"), Ok(Duration::from_micros(3)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert!(parse("60").unwrap_err().contains("missing unit"));
        assert!(parse("-1s").unwrap_err().contains("negative"));
        assert!(parse("5d").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
        assert!(parse("1..2s").is_err());
        assert!(parse("9999999999h").is_err());
    }
}
