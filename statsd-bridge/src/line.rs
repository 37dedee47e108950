//! The statsd line protocol as prom/statsd-exporter reads it.
//!
//! `name:value|type[|@rate][|#tag:v,tag2:v2][|c:container][|T<unix>]`, with
//! several samples per line either as `name:1|c:2|c` or, for timers,
//! histograms and distributions, DogStatsD's `name:1:2:3|ms`. Everything
//! borrows from the packet: nothing is allocated per line, and every way a
//! line can be wrong is a [`ParseError`] the caller counts, never a panic.

/// A statsd metric type, as written after the first `|`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatType {
    Counter,
    Gauge,
    /// `ms`: milliseconds, observed in seconds.
    Timer,
    /// `h`: observed as sent.
    Histogram,
    /// `d`, DogStatsD's distribution: observed as sent.
    Distribution,
    /// `s`: exposed as a gauge of distinct members.
    Set,
}

impl StatType {
    fn parse(s: &str) -> Option<StatType> {
        Some(match s {
            "c" => StatType::Counter,
            "g" => StatType::Gauge,
            "ms" => StatType::Timer,
            "h" => StatType::Histogram,
            "d" => StatType::Distribution,
            "s" => StatType::Set,
            _ => return None,
        })
    }

    /// One byte per type, for cache keys.
    pub fn code(self) -> u8 {
        match self {
            StatType::Counter => b'c',
            StatType::Gauge => b'g',
            StatType::Timer => b'm',
            StatType::Histogram => b'h',
            StatType::Distribution => b'd',
            StatType::Set => b's',
        }
    }

    /// What `match_metric_type` calls it. Sets are exposed as gauges, so a
    /// mapping for gauges takes them too.
    pub fn metric_type(self) -> MetricType {
        match self {
            StatType::Counter => MetricType::Counter,
            StatType::Gauge | StatType::Set => MetricType::Gauge,
            StatType::Timer | StatType::Histogram | StatType::Distribution => MetricType::Observer,
        }
    }

    /// The factor from the value sent to the value observed: statsd timers
    /// are milliseconds, Prometheus wants seconds.
    pub fn unit_scale(self) -> f64 {
        match self {
            StatType::Timer => 0.001,
            _ => 1.0,
        }
    }
}

/// statsd_exporter's three kinds of event, which mappings select on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Observer,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Observer => "observer",
        }
    }
}

/// Why a line or sample was skipped; `reason()` is the label value of
/// `statsd_exporter_sample_errors_total`, statsd_exporter's where it had one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// No `:`, or nothing before it.
    MalformedLine,
    /// Nothing after the `:` but a value (a line cut short).
    NotEnoughParts,
    /// `name:1:2|c`: several values are only for ms, h and d.
    InvalidExtendedAggregateType,
    /// Fewer than two or more than eight `|` parts, or an empty one.
    MalformedComponent,
    MalformedValue,
    /// A part that is none of `@rate`, `#tags`, `c:id`, `T<unix>`, or a rate
    /// that is not a number in (0, 1].
    InvalidSampleFactor,
    MalformedContainerId,
    MalformedTimestamp,
    /// An unknown metric type.
    IllegalEvent,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// A TCP line longer than the bridge buffers.
    LineTooLong,
}

impl ParseError {
    pub const ALL: [ParseError; 11] = [
        ParseError::MalformedLine,
        ParseError::NotEnoughParts,
        ParseError::InvalidExtendedAggregateType,
        ParseError::MalformedComponent,
        ParseError::MalformedValue,
        ParseError::InvalidSampleFactor,
        ParseError::MalformedContainerId,
        ParseError::MalformedTimestamp,
        ParseError::IllegalEvent,
        ParseError::InvalidUtf8,
        ParseError::LineTooLong,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            ParseError::MalformedLine => "malformed_line",
            ParseError::NotEnoughParts => "not_enough_parts_after_colon",
            ParseError::InvalidExtendedAggregateType => "invalid_extended_aggregate_type",
            ParseError::MalformedComponent => "malformed_component",
            ParseError::MalformedValue => "malformed_value",
            ParseError::InvalidSampleFactor => "invalid_sample_factor",
            ParseError::MalformedContainerId => "malformed_container_id",
            ParseError::MalformedTimestamp => "malformed_timestamp",
            ParseError::IllegalEvent => "illegal_event",
            ParseError::InvalidUtf8 => "invalid_utf8",
            ParseError::LineTooLong => "line_too_long",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One value of one metric, borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub stat: StatType,
    pub value: f64,
    /// A gauge value written with a sign: added, not set.
    pub relative: bool,
    /// In (0, 1]; 1 when none was sent.
    pub rate: f64,
    /// The raw tag parts, from the first `#` to the end of the last tag
    /// part (`#a:b,c:d`), or empty; see [`tags`].
    pub tags: &'a str,
    /// DogStatsD 1.2's container id (`|c:<id>`), or empty.
    pub container: &'a str,
    /// A set's member; empty for other types.
    pub member: &'a str,
}

/// What a line yields, in order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Item<'a> {
    Sample(Sample<'a>),
    Error(ParseError),
}

/// Parses one line (without its `\n`; a trailing `\r` is dropped). Blank
/// lines yield nothing. A line may yield an error and still a sample: a rate
/// that is not a number is counted and the sample taken unscaled, as
/// statsd_exporter does.
pub fn parse_line<'a>(line: &'a str, out: &mut impl FnMut(Item<'a>)) {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return;
    }
    let Some((name, rest)) = line.split_once(':') else {
        return out(Item::Error(ParseError::MalformedLine));
    };
    if name.is_empty() {
        return out(Item::Error(ParseError::MalformedLine));
    }
    let Some((first_value, after_first_bar)) = rest.split_once('|') else {
        return out(Item::Error(ParseError::NotEnoughParts));
    };
    if first_value.contains(':') {
        // `name:1:2:3|ms|...`: each value with the same type and parts.
        let stat = after_first_bar.split('|').next().unwrap_or_default();
        if !matches!(stat, "ms" | "h" | "d") {
            return out(Item::Error(ParseError::InvalidExtendedAggregateType));
        }
        for value in first_value.split(':') {
            parse_sample(name, value, after_first_bar, out);
        }
    } else if memchr::memmem::find(rest.as_bytes(), b"|#").is_some() {
        // Tag values may hold `:`, so a tagged line is one sample.
        parse_sample(name, first_value, after_first_bar, out);
    } else {
        for sample in rest.split(':') {
            match sample.split_once('|') {
                Some((value, parts)) => parse_sample(name, value, parts, out),
                None => out(Item::Error(ParseError::MalformedComponent)),
            }
        }
    }
}

/// Most `|` parts a sample may have, value included (statsd_exporter's).
const MAX_PARTS: usize = 8;

/// `value` and what follows its `|`: the type, then the optional parts.
fn parse_sample<'a>(name: &'a str, value: &'a str, parts: &'a str, out: &mut impl FnMut(Item<'a>)) {
    let mut split = parts.split('|');
    let stat = split.next().unwrap_or_default();
    let extras = split.clone();
    if 2 + extras.clone().count() > MAX_PARTS {
        return out(Item::Error(ParseError::MalformedComponent));
    }
    let relative = value.starts_with(['+', '-']);
    let raw = value;
    let value = if stat == "s" {
        // A set's value is a member, any text.
        if raw.is_empty() {
            return out(Item::Error(ParseError::MalformedValue));
        }
        0.0
    } else {
        match raw.parse::<f64>() {
            // A non-finite value would stick to a counter or a histogram's
            // sum for good; one bad packet must not poison a series.
            Ok(v) if v.is_finite() => v,
            _ => return out(Item::Error(ParseError::MalformedValue)),
        }
    };
    if extras.clone().any(str::is_empty) {
        return out(Item::Error(ParseError::MalformedComponent));
    }
    let mut rate = 1.0;
    let mut tags_start = None;
    let mut tags_end = 0;
    let mut container = "";
    for part in extras {
        match part.as_bytes()[0] {
            b'@' => match part[1..].parse::<f64>() {
                Ok(r) if r > 0.0 && r <= 1.0 => rate = r,
                _ => out(Item::Error(ParseError::InvalidSampleFactor)),
            },
            b'#' => {
                let at = offset_in(parts, part);
                tags_start.get_or_insert(at);
                tags_end = at + part.len();
            }
            b'c' => match part.strip_prefix("c:") {
                Some(id) if !id.is_empty() => container = id,
                _ => return out(Item::Error(ParseError::MalformedContainerId)),
            },
            b'T' => {
                if part[1..].parse::<i64>().is_err() {
                    return out(Item::Error(ParseError::MalformedTimestamp));
                }
            }
            _ => return out(Item::Error(ParseError::InvalidSampleFactor)),
        }
    }
    let Some(stat) = StatType::parse(stat) else {
        return out(Item::Error(ParseError::IllegalEvent));
    };
    let tags = tags_start.map_or("", |start| &parts[start..tags_end]);
    out(Item::Sample(Sample {
        name,
        stat,
        value,
        relative: relative && stat == StatType::Gauge,
        rate,
        tags,
        container,
        member: if stat == StatType::Set { raw } else { "" },
    }))
}

/// Where `part`, a slice of `whole`, starts in it.
fn offset_in(whole: &str, part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// One DogStatsD tag of a [`Sample::tags`] span: `Ok((name, value))`, or
/// `Err(())` for a tag without a name, a value or a `:` (statsd_exporter
/// counts those and goes on).
pub fn tags(span: &str) -> impl Iterator<Item = Result<(&str, &str), ()>> {
    span.split('|')
        .filter_map(|part| part.strip_prefix('#'))
        .flat_map(|part| part.split(','))
        .filter(|tag| !tag.is_empty())
        .map(|tag| {
            let tag = tag.strip_prefix('#').unwrap_or(tag);
            match tag.split_once(':') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
                _ => Err(()),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Vec<Item<'_>> {
        let mut items = Vec::new();
        parse_line(line, &mut |i| items.push(i));
        items
    }

    fn sample(line: &str) -> Sample<'_> {
        match parse(line).as_slice() {
            [Item::Sample(s)] => *s,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    fn error(line: &str) -> ParseError {
        match parse(line).as_slice() {
            [Item::Error(e)] => *e,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn each_type() {
        let s = sample("envoy.cluster.upstream_rq_total:3|c");
        assert_eq!(
            (s.name, s.stat, s.value, s.rate, s.tags),
            (
                "envoy.cluster.upstream_rq_total",
                StatType::Counter,
                3.0,
                1.0,
                ""
            )
        );
        assert_eq!(sample("a:1.5|g").stat, StatType::Gauge);
        assert_eq!(sample("a:250|ms").stat, StatType::Timer);
        assert_eq!(sample("a:2|h").stat, StatType::Histogram);
        assert_eq!(sample("a:2|d").stat, StatType::Distribution);
        let set = sample("a:user7|s");
        assert_eq!((set.stat, set.member), (StatType::Set, "user7"));
        assert_eq!(error("a:|s"), ParseError::MalformedValue);
        assert_eq!(error("a:1|x"), ParseError::IllegalEvent);
    }

    #[test]
    fn signed_gauges_are_relative_and_counters_keep_their_sign() {
        let g = sample("queue:-5|g");
        assert!(g.relative);
        assert_eq!(g.value, -5.0);
        assert!(sample("queue:+5|g").relative);
        assert!(!sample("queue:5|g").relative);
        let c = sample("hits:-1|c");
        assert!(!c.relative);
        assert_eq!(c.value, -1.0);
    }

    #[test]
    fn sample_rates() {
        assert_eq!(sample("a:1|c|@0.1").rate, 0.1);
        assert_eq!(sample("a:1|ms|@0.25").rate, 0.25);
        // A rate that is not a number is counted and the sample still taken.
        assert_eq!(
            parse("a:1|c|@x"),
            vec![
                Item::Error(ParseError::InvalidSampleFactor),
                Item::Sample(Sample {
                    name: "a",
                    stat: StatType::Counter,
                    value: 1.0,
                    relative: false,
                    rate: 1.0,
                    tags: "",
                    container: "",
                    member: "",
                })
            ]
        );
        for bad in ["a:1|c|@0", "a:1|c|@2", "a:1|c|@-0.5", "a:1|c|@NaN"] {
            let items = parse(bad);
            assert_eq!(
                items[0],
                Item::Error(ParseError::InvalidSampleFactor),
                "{bad}"
            );
            assert!(
                matches!(items[1], Item::Sample(s) if s.rate == 1.0),
                "{bad}"
            );
        }
    }

    #[test]
    fn dogstatsd_tags() {
        let s = sample("http.requests:1|c|#method:GET,code:200");
        assert_eq!(s.tags, "#method:GET,code:200");
        let t: Vec<_> = tags(s.tags).collect();
        assert_eq!(t, vec![Ok(("method", "GET")), Ok(("code", "200"))]);
        // Tag values may hold ':'; the line is then a single sample.
        let s = sample("a:1|c|#url:http://x:80/");
        assert_eq!(
            tags(s.tags).collect::<Vec<_>>(),
            vec![Ok(("url", "http://x:80/"))]
        );
        // Rate and tags in either order, tags in two parts.
        let s = sample("a:1|c|#a:1|@0.5|#b:2");
        assert_eq!(s.rate, 0.5);
        assert_eq!(
            tags(s.tags).collect::<Vec<_>>(),
            vec![Ok(("a", "1")), Ok(("b", "2"))]
        );
        // Bare, empty-named and empty-valued tags are errors; the rest stay.
        let s = sample("a:1|c|#bare,:v,k:,ok:1,#hash:2");
        assert_eq!(
            tags(s.tags).collect::<Vec<_>>(),
            vec![
                Err(()),
                Err(()),
                Err(()),
                Ok(("ok", "1")),
                Ok(("hash", "2"))
            ]
        );
    }

    #[test]
    fn container_id_and_timestamp() {
        let s = sample("a:1|c|#k:v|c:abc123|T1656581400");
        assert_eq!((s.container, s.tags), ("abc123", "#k:v"));
        assert_eq!(error("a:1|c|#k:v|c:"), ParseError::MalformedContainerId);
        assert_eq!(error("a:1|c|cx"), ParseError::MalformedContainerId);
        assert_eq!(error("a:1|c|Tsoon"), ParseError::MalformedTimestamp);
        // Without tags a ':' means another sample, as in statsd_exporter.
        assert_eq!(
            parse("a:1|c|c:abc|c"),
            vec![
                Item::Error(ParseError::MalformedContainerId),
                Item::Error(ParseError::MalformedValue)
            ]
        );
    }

    #[test]
    fn several_samples_per_line() {
        let items = parse("a:1|c:2|c:3|g");
        let values: Vec<_> = items
            .iter()
            .map(|i| match i {
                Item::Sample(s) => (s.value, s.stat),
                Item::Error(e) => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(
            values,
            vec![
                (1.0, StatType::Counter),
                (2.0, StatType::Counter),
                (3.0, StatType::Gauge)
            ]
        );
        // DogStatsD's extended aggregation shares the type and the parts.
        let items = parse("lat:1:2:3|ms|@0.5|#k:v");
        assert_eq!(items.len(), 3);
        for (i, item) in items.iter().enumerate() {
            let Item::Sample(s) = item else {
                panic!("{item:?}")
            };
            assert_eq!(
                (s.value, s.stat, s.rate, s.tags),
                ((i + 1) as f64, StatType::Timer, 0.5, "#k:v")
            );
        }
        assert_eq!(error("a:1:2|c"), ParseError::InvalidExtendedAggregateType);
        // One bad sample does not take the others with it.
        assert_eq!(
            parse("a:1|c:x|c")
                .iter()
                .filter(|i| matches!(i, Item::Sample(_)))
                .count(),
            1
        );
    }

    #[test]
    fn garbage_and_truncated_lines() {
        assert_eq!(error("no_colon"), ParseError::MalformedLine);
        assert_eq!(error(":1|c"), ParseError::MalformedLine);
        assert_eq!(error("a:"), ParseError::NotEnoughParts);
        assert_eq!(error("a:1"), ParseError::NotEnoughParts);
        assert_eq!(error("a:1|"), ParseError::IllegalEvent);
        assert_eq!(error("a:|c"), ParseError::MalformedValue);
        assert_eq!(error("a:abc|c"), ParseError::MalformedValue);
        assert_eq!(error("a:1|c|"), ParseError::MalformedComponent);
        assert_eq!(error("a:1|c||@0.1"), ParseError::MalformedComponent);
        assert_eq!(
            error("a:1|c|#a|#b|#c|#d|#e|#f|#g"),
            ParseError::MalformedComponent
        );
        assert_eq!(error("a:1|c|x"), ParseError::InvalidSampleFactor);
        assert_eq!(error("a:inf|c"), ParseError::MalformedValue);
        assert_eq!(error("a:NaN|g"), ParseError::MalformedValue);
        assert!(parse("").is_empty());
        assert!(parse("\r").is_empty());
        assert_eq!(sample("a:1|c\r").stat, StatType::Counter);
    }

    #[test]
    fn names_keep_what_precedes_the_first_colon() {
        // Envoy's cluster names hold '|'; they are part of the name.
        let s = sample(
            "envoy.cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_200:1|c",
        );
        assert_eq!(
            s.name,
            "envoy.cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_200"
        );
    }
}
