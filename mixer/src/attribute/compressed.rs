//! Mixer's compressed attribute form: names, strings and map entries are word
//! indexes into the global dictionary (index ≥ 0) or the message's own words
//! (index i < 0 is `words[-i - 1]`). Decoding never panics: every index and
//! every value is checked, and the error names what is wrong.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::mixer::{CompressedAttributes, StringMap as WireMap};

use super::{Bag, Value, ValueType, Vocabulary, dictionary};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Resolves word indexes for one message.
pub struct Words<'a> {
    global: &'a [&'static str],
    local: &'a [String],
}

impl<'a> Words<'a> {
    /// The request's `global_word_count` may be smaller than ours (an older
    /// proxy), never larger: we cannot know words we do not have.
    pub fn new(global_word_count: u32, local: &'a [String]) -> Result<Words<'a>, DecodeError> {
        let all = dictionary::words();
        let count = global_word_count as usize;
        if count > all.len() {
            return Err(DecodeError(format!(
                "global_word_count {count} is larger than this server's dictionary of {} words",
                all.len()
            )));
        }
        // A count of zero comes from clients that leave the field unset.
        let global = if count == 0 { all } else { &all[..count] };
        Ok(Words { global, local })
    }

    pub fn get(&self, index: i32) -> Result<&'a str, DecodeError> {
        let found = if index >= 0 {
            self.global.get(index as usize).copied()
        } else {
            // -1 is words[0]; computed in i64 so i32::MIN cannot overflow.
            let i = (-(index as i64) - 1) as usize;
            self.local.get(i).map(String::as_str)
        };
        found.ok_or_else(|| {
            if index >= 0 {
                DecodeError(format!(
                    "word index {index} is out of range: the global dictionary has {} words",
                    self.global.len()
                ))
            } else {
                DecodeError(format!(
                    "word index {index} is out of range: the message has {} words",
                    self.local.len()
                ))
            }
        })
    }
}

/// What decoding found besides the attributes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    /// Attributes no manifest declares, dropped (Istio's proxies send a few).
    pub undeclared: u32,
}

/// Decodes `attrs` into `bag`, replacing attributes it already holds (so a
/// Report's delta encoding can decode each set over the previous one).
pub fn decode(
    attrs: &CompressedAttributes,
    words: &Words,
    vocab: &Vocabulary,
    bag: &mut Bag,
) -> Result<DecodeStats, DecodeError> {
    let mut stats = DecodeStats::default();
    let mut put = |index: i32, sent_as: &str, make: &dyn Fn(ValueType) -> Result<Value, String>| {
        let text = words.get(index)?;
        let Some((name, ty)) = vocab.entry(text) else {
            stats.undeclared += 1;
            return Ok(());
        };
        let value = make(ty).map_err(|why| {
            DecodeError(format!(
                "attribute `{name}` is declared {ty} but {why} (sent as {sent_as})"
            ))
        })?;
        bag.set(name.clone(), value);
        Ok::<(), DecodeError>(())
    };
    for (&k, &v) in &attrs.strings {
        let text = words.get(v)?;
        put(k, "a string", &|ty| text_value(ty, text))?;
    }
    for (&k, &v) in &attrs.int64s {
        put(k, "an int64", &|ty| match ty {
            ValueType::Int64 => Ok(Value::Int64(v)),
            _ => Err(format!("got the integer {v}")),
        })?;
    }
    for (&k, &v) in &attrs.doubles {
        put(k, "a double", &|ty| match ty {
            ValueType::Double => Ok(Value::Double(v)),
            _ => Err(format!("got the double {v}")),
        })?;
    }
    for (&k, &v) in &attrs.bools {
        put(k, "a bool", &|ty| match ty {
            ValueType::Bool => Ok(Value::Bool(v)),
            _ => Err(format!("got the bool {v}")),
        })?;
    }
    for (&k, v) in &attrs.timestamps {
        put(k, "a timestamp", &|ty| match ty {
            ValueType::Timestamp => timestamp(v).map(Value::Timestamp),
            _ => Err("got a timestamp".into()),
        })?;
    }
    for (&k, v) in &attrs.durations {
        put(k, "a duration", &|ty| match ty {
            ValueType::Duration => duration(v).map(Value::Duration),
            _ => Err("got a duration".into()),
        })?;
    }
    for (&k, v) in &attrs.bytes {
        put(k, "bytes", &|ty| match ty {
            ValueType::IpAddress => ip_bytes(v).map(Value::IpAddress),
            _ => Err(format!("got {} bytes", v.len())),
        })?;
    }
    for (&k, v) in &attrs.string_maps {
        let map = string_map(v, words)?;
        put(k, "a string map", &|ty| match ty {
            ValueType::StringMap => Ok(Value::StringMap(map.clone())),
            _ => Err("got a string map".into()),
        })?;
    }
    Ok(stats)
}

fn text_value(ty: ValueType, text: &str) -> Result<Value, String> {
    match ty {
        ValueType::String => Ok(Value::String(Arc::from(text))),
        ValueType::DnsName => Ok(Value::DnsName(Arc::from(text))),
        ValueType::EmailAddress => Ok(Value::EmailAddress(Arc::from(text))),
        ValueType::Uri => Ok(Value::Uri(Arc::from(text))),
        // Some clients spell addresses out rather than send their bytes.
        ValueType::IpAddress => text
            .parse()
            .map(Value::IpAddress)
            .map_err(|_| format!("{text:?} is not an IP address")),
        _ => Err(format!("got the string {text:?}")),
    }
}

fn string_map(map: &WireMap, words: &Words) -> Result<Arc<BTreeMap<String, String>>, DecodeError> {
    let mut out = BTreeMap::new();
    for (&k, &v) in &map.entries {
        out.insert(words.get(k)?.to_string(), words.get(v)?.to_string());
    }
    Ok(Arc::new(out))
}

fn ip_bytes(b: &[u8]) -> Result<IpAddr, String> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Ok(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
        Ok(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        Err(format!("got {} bytes, not 4 or 16", b.len()))
    }
}

/// A protobuf timestamp as a time, within protobuf's own range (years 1 to 9999).
pub fn timestamp(t: &prost_types::Timestamp) -> Result<SystemTime, String> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(format!(
            "the timestamp's nanos {} are out of range",
            t.nanos
        ));
    }
    if !(-62_135_596_800..=253_402_300_799).contains(&t.seconds) {
        return Err(format!("the timestamp {}s is out of range", t.seconds));
    }
    let since = Duration::new(t.seconds.unsigned_abs(), 0);
    let whole = if t.seconds >= 0 {
        UNIX_EPOCH.checked_add(since)
    } else {
        UNIX_EPOCH.checked_sub(since)
    };
    whole
        .and_then(|w| w.checked_add(Duration::from_nanos(t.nanos as u64)))
        .ok_or_else(|| format!("the timestamp {}s is out of range", t.seconds))
}

/// A time as a protobuf timestamp, before 1970 included (negative seconds,
/// non-negative nanos, as protobuf counts them).
pub fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => prost_types::Timestamp {
            seconds: after.as_secs() as i64,
            nanos: after.subsec_nanos() as i32,
        },
        Err(e) => {
            let before = e.duration();
            let (mut seconds, mut nanos) =
                (-(before.as_secs() as i64), -(before.subsec_nanos() as i32));
            if nanos < 0 {
                seconds -= 1;
                nanos += 1_000_000_000;
            }
            prost_types::Timestamp { seconds, nanos }
        }
    }
}

fn duration(d: &prost_types::Duration) -> Result<Duration, String> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err("the duration is negative".into());
    }
    if d.nanos >= 1_000_000_000 {
        return Err(format!("the duration's nanos {} are out of range", d.nanos));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Builds the compressed form of `bag` as a proxy would: global words where
/// the dictionary has them, the message's own words otherwise. For tests,
/// load tools and clients of our own.
pub fn encode(bag: &Bag) -> CompressedAttributes {
    let mut out = CompressedAttributes::default();
    let mut local: HashMap<String, i32> = HashMap::new();
    let mut word = |out: &mut CompressedAttributes, w: &str| -> i32 {
        if let Some(i) = dictionary::index_of(w) {
            return i;
        }
        *local.entry(w.to_string()).or_insert_with(|| {
            out.words.push(w.to_string());
            -(out.words.len() as i32)
        })
    };
    let mut entries: Vec<_> = bag.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (name, value) in entries {
        let k = word(&mut out, name);
        match value {
            Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => {
                let v = word(&mut out, s);
                out.strings.insert(k, v);
            }
            Value::Int64(i) => {
                out.int64s.insert(k, *i);
            }
            Value::Double(d) => {
                out.doubles.insert(k, *d);
            }
            Value::Bool(b) => {
                out.bools.insert(k, *b);
            }
            Value::Timestamp(t) => {
                out.timestamps.insert(k, to_timestamp(*t));
            }
            Value::Duration(d) => {
                out.durations.insert(
                    k,
                    prost_types::Duration {
                        seconds: d.as_secs() as i64,
                        nanos: d.subsec_nanos() as i32,
                    },
                );
            }
            Value::IpAddress(ip) => {
                let bytes = match ip {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                };
                out.bytes.insert(k, bytes);
            }
            Value::StringMap(m) => {
                let mut wire = WireMap::default();
                for (mk, mv) in m.iter() {
                    let mk = word(&mut out, mk);
                    let mv = word(&mut out, mv);
                    wire.entries.insert(mk, mv);
                }
                out.string_maps.insert(k, wire);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(attrs: &CompressedAttributes) -> Result<(Bag, DecodeStats), DecodeError> {
        let words = Words::new(0, &attrs.words)?;
        let mut bag = Bag::new();
        let stats = decode(attrs, &words, &Vocabulary::standard(), &mut bag)?;
        Ok((bag, stats))
    }

    #[test]
    fn round_trip_through_global_and_local_words() {
        let mut bag = Bag::new();
        bag.set("source.ip", Value::IpAddress("10.1.2.3".parse().unwrap()));
        bag.set("request.path", Value::string("/reviews/1"));
        bag.set("request.method", Value::string("GET"));
        bag.set("request.size", Value::Int64(42));
        bag.set("connection.mtls", Value::Bool(true));
        bag.set(
            "response.duration",
            Value::Duration(Duration::from_millis(7)),
        );
        bag.set(
            "request.time",
            Value::Timestamp(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
        );
        let headers = BTreeMap::from([
            (":authority".to_string(), "reviews".to_string()),
            ("x-user".to_string(), "jason".to_string()),
        ]);
        bag.set("request.headers", Value::StringMap(Arc::new(headers)));
        let wire = encode(&bag);
        // "GET" and ":authority" are global words, "/reviews/1" is not.
        assert!(wire.words.contains(&"/reviews/1".to_string()));
        assert!(!wire.words.contains(&"GET".to_string()));
        let (back, stats) = decode_one(&wire).unwrap();
        assert_eq!(back, bag);
        assert_eq!(stats.undeclared, 0);
    }

    #[test]
    fn out_of_range_indexes_are_named() {
        let mut wire = CompressedAttributes::default();
        wire.strings.insert(5000, 1);
        let err = decode_one(&wire).unwrap_err().0;
        assert!(err.contains("word index 5000 is out of range"), "{err}");

        let mut wire = CompressedAttributes::default();
        wire.strings.insert(-3, 1);
        wire.words.push("only one".into());
        let err = decode_one(&wire).unwrap_err().0;
        assert!(
            err.contains("word index -3") && err.contains("1 words"),
            "{err}"
        );

        let mut wire = CompressedAttributes::default();
        wire.int64s.insert(i32::MIN, 1);
        assert!(decode_one(&wire).is_err());
    }

    #[test]
    fn smaller_client_dictionary_limits_global_words() {
        let words = Words::new(10, &[]).unwrap();
        assert!(words.get(9).is_ok());
        assert!(words.get(10).is_err());
        let err = Words::new(5000, &[]).err().unwrap().0;
        assert!(err.contains("global_word_count 5000"), "{err}");
    }

    #[test]
    fn wrong_value_type_names_the_attribute() {
        let size = dictionary::index_of("request.size").unwrap();
        let mut wire = CompressedAttributes::default();
        wire.strings.insert(size, 0);
        let err = decode_one(&wire).unwrap_err().0;
        assert!(
            err.contains("`request.size` is declared INT64") && err.contains("sent as a string"),
            "{err}"
        );

        let ip = dictionary::index_of("source.ip").unwrap();
        let mut wire = CompressedAttributes::default();
        wire.bytes.insert(ip, vec![1, 2, 3]);
        let err = decode_one(&wire).unwrap_err().0;
        assert!(
            err.contains("`source.ip`") && err.contains("3 bytes"),
            "{err}"
        );
    }

    #[test]
    fn undeclared_attributes_are_dropped_and_counted() {
        let mut wire = CompressedAttributes {
            words: vec!["istio.proxy.private".into(), "x".into()],
            ..Default::default()
        };
        wire.strings.insert(-1, -2);
        wire.int64s.insert(-1, 3);
        let (bag, stats) = decode_one(&wire).unwrap();
        assert!(bag.is_empty());
        assert_eq!(stats.undeclared, 2);
    }

    #[test]
    fn timestamps_before_1970_round_trip() {
        for t in [
            UNIX_EPOCH - Duration::new(86_400 * 365 * 100, 250),
            UNIX_EPOCH - Duration::from_nanos(1),
            UNIX_EPOCH + Duration::new(5, 7),
        ] {
            assert_eq!(timestamp(&to_timestamp(t)), Ok(t));
        }
    }

    #[test]
    fn bad_timestamps_and_durations() {
        let t = dictionary::index_of("request.time").unwrap();
        let mut wire = CompressedAttributes::default();
        wire.timestamps.insert(
            t,
            prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            },
        );
        assert!(decode_one(&wire).is_err());
        let d = dictionary::index_of("response.duration").unwrap();
        let mut wire = CompressedAttributes::default();
        wire.durations.insert(
            d,
            prost_types::Duration {
                seconds: -1,
                nanos: 0,
            },
        );
        assert!(decode_one(&wire).unwrap_err().0.contains("negative"));
    }
}
