//! Durations as Istio's YAML writes them: `10s`, `0.5s`, `100ms`, `1m30s`, `15m`, `1h`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in Go's `time.ParseDuration` syntax, which Istio 1.x accepted
/// everywhere a `google.protobuf.Duration` appears in its CRDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IstioDuration(pub Duration);

impl IstioDuration {
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

/// The longest duration Go's `time.ParseDuration` (and so Istio 1.x) accepts:
/// 2^63 - 1 nanoseconds, about 292 years. It is also well inside the range of
/// `google.protobuf.Duration` that Envoy accepts, so every parsed duration can
/// be sent to Envoy as it is.
pub const MAX: Duration = Duration::new(9_223_372_036, 854_775_807);

/// Parses `1h2m3.5s`, `100ms`, `250us`, `0`. Rejects negative and unit-less
/// values, and anything longer than [`MAX`]. Exact: the arithmetic is on whole
/// nanoseconds, never floats.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let too_long = || {
        format!(
            "duration {text:?} is longer than the maximum of {}",
            format(MAX)
        )
    };
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} is missing a unit (ns, us, ms, s, m, h)"))?;
        let (whole, frac) = rest[..num_len]
            .split_once('.')
            .unwrap_or((&rest[..num_len], ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format!("invalid number in duration {text:?}"));
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            unit => return Err(format!("unknown unit {unit:?} in duration {text:?}")),
        };
        rest = &rest[unit_len..];
        let whole = whole.trim_start_matches('0');
        // More digits than this cannot fit whatever the unit.
        if whole.len() > 20 {
            return Err(too_long());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_long())?
        };
        // The fraction's first 18 digits are exact in nanoseconds for every
        // unit (an hour is 3.6e12 ns); later ones are dropped, as Go drops them.
        let frac = &frac[..frac.len().min(18)];
        let frac_ns = if frac.is_empty() {
            0
        } else {
            let digits: u128 = frac
                .parse()
                .map_err(|_| format!("invalid number in duration {text:?}"))?;
            digits * scale / 10u128.pow(frac.len() as u32)
        };
        total = whole
            .checked_mul(scale)
            .and_then(|v| v.checked_add(frac_ns))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(too_long)?;
        if total > MAX.as_nanos() {
            return Err(too_long());
        }
    }
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// [`parse`], for a flag or setting that has no use beyond `max`.
pub fn parse_at_most(text: &str, max: Duration) -> Result<Duration, String> {
    let d = parse(text)?;
    if d > max {
        return Err(format!(
            "{text:?} is longer than the maximum of {}",
            format(max)
        ));
    }
    Ok(d)
}

/// Formats like Go's `Duration.String` for the common cases (`1.5s`, `100ms`).
pub fn format(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for IstioDuration {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        parse(&text)
            .map(IstioDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for IstioDuration {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&format(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_durations() {
        assert!(parse("10").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("5d").is_err());
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn is_exact_and_bounded() {
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.000000001s"), Ok(Duration::new(1, 1)));
        assert_eq!(parse("0.000000000009h"), Ok(Duration::from_nanos(32)));
        assert_eq!(parse("0.00000000009m"), Ok(Duration::from_nanos(5)));
        assert_eq!(
            parse(&format!("{}1s", "0".repeat(22))),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(parse("2562047h47m16.854775807s"), Ok(MAX));
        for huge in [
            "99999999999999999999s",
            "2562047h47m16.854775808s",
            "9223372036854775808ns",
            "999999999999999999999999999999h",
            "2562048h",
        ] {
            let err = parse(huge).unwrap_err();
            assert!(err.contains("longer than the maximum"), "{huge}: {err}");
        }
        for bad in ["1..5s", ".s", "1.2.3s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["10s", "100ms", "1.5s"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
