//! Mixer's compressed attribute form: names, strings and map entries are word
//! indexes into the global dictionary (index ≥ 0) or the message's own words
//! (index i < 0 is `words[-i - 1]`). Decoding never panics: every index and
//! every value is checked, and the error names what is wrong.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::mixer::{CompressedAttributes, StringMap as WireMap};
use api::wire::{self, Field, Fields, WireError};

use super::{Bag, Declaration, StringMap, Value, ValueType, Vocabulary, dictionary};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Resolves word indexes for one message.
pub struct Words<'a> {
    global: &'static [&'static str],
    local: &'a [&'a str],
}

impl<'a> Words<'a> {
    /// The request's `global_word_count` may be smaller than ours (an older
    /// proxy), never larger: we cannot know words we do not have.
    pub fn new(global_word_count: u32, local: &'a [&'a str]) -> Result<Words<'a>, DecodeError> {
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
            self.local.get(i).copied()
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

/// One `CompressedAttributes` message as it arrived, read in place: its
/// framing checked and its words found, its entries decoded by [`decode`].
pub struct Raw<'a> {
    message: &'a [u8],
    words: Vec<&'a str>,
}

/// The map fields of `CompressedAttributes` by field number (from 2), as
/// errors name them: the field, and what its values are.
const MAPS: [(&str, &str); 8] = [
    ("strings", "a string"),
    ("int64s", "an int64"),
    ("doubles", "a double"),
    ("bools", "a bool"),
    ("timestamps", "a timestamp"),
    ("durations", "a duration"),
    ("bytes", "bytes"),
    ("string_maps", "a string map"),
];

impl<'a> Raw<'a> {
    pub fn parse(message: &'a [u8]) -> Result<Raw<'a>, DecodeError> {
        let mut raw = Raw {
            message,
            words: Vec::new(),
        };
        for field in Fields::new(message) {
            if let (1, f) = field.map_err(malformed)? {
                let i = raw.words.len();
                let text = f
                    .bytes()
                    .map_err(String::from)
                    .and_then(|b| std::str::from_utf8(b).map_err(|_| "not UTF-8".into()))
                    .map_err(|e| DecodeError(format!("words[{i}]: {e}")))?;
                raw.words.push(text);
            }
        }
        Ok(raw)
    }

    /// The message's own words, which negative indexes name.
    pub fn words(&self) -> &[&'a str] {
        &self.words
    }
}

fn malformed(why: WireError) -> DecodeError {
    DecodeError(format!("the attributes are not valid protobuf: {why}"))
}

/// What decoding found besides the attributes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    /// Attributes no manifest declares, dropped (Istio's proxies send a few).
    pub undeclared: u32,
}

/// Decodes `raw` into `bag`, replacing attributes it already holds (so a
/// Report's delta encoding can decode each set over the previous one). A
/// name repeated on the wire keeps its last value, as protobuf's maps do.
pub fn decode(
    raw: &Raw,
    words: &Words,
    vocab: &Vocabulary,
    bag: &mut Bag,
) -> Result<DecodeStats, DecodeError> {
    let mut stats = DecodeStats::default();
    let over_earlier = !bag.is_empty();
    for field in Fields::new(raw.message) {
        let (number, field) = field.map_err(malformed)?;
        let Some(&(map, sent_as)) = (number as usize).checked_sub(2).and_then(|i| MAPS.get(i))
        else {
            continue;
        };
        let (key, value) = field
            .bytes()
            .and_then(wire::entry)
            .map_err(|e| DecodeError(format!("{map} entry: {e}")))?;
        let key = key.map_or(Ok(0), Field::sint32);
        let key = key.map_err(|e| DecodeError(format!("{map} entry: key: {e}")))?;
        let name = words.get(key)?;
        // Read before the vocabulary is asked, so a malformed value fails
        // alike whatever is declared (a string map's entries excepted).
        let sent = Sent::read(number, value, words)
            .map_err(|e| DecodeError(format!("{map} entry: value: {e}")))?;
        let declared = match usize::try_from(key) {
            Ok(global) => vocab.global_word(global),
            Err(_) => vocab.declaration(name),
        };
        let Some(declared) = declared else {
            stats.undeclared += 1;
            continue;
        };
        let Declaration { name, ty, read, .. } = declared;
        let value = sent.into_value(ty, words, read, || vocab.keys(&declared));
        let value = value.map_err(|why| {
            DecodeError(format!(
                "attribute `{name}` is declared {ty} but {why} (sent as {sent_as})"
            ))
        })?;
        match value {
            Some(value) => bag.set_declared(&declared, value),
            // Unread: checked alike, but a value from an earlier set of a
            // delta-encoded Report must not outlive its replacement.
            None if over_earlier => {
                bag.remove(name);
            }
            None => {}
        }
    }
    Ok(stats)
}

/// An entry's value as the wire framed it, before it meets its type.
enum Sent<'a> {
    Text(&'a str),
    Int64(i64),
    Double(f64),
    Bool(bool),
    /// A `google.protobuf.Timestamp`'s or `Duration`'s seconds and nanos.
    Time(i64, i32),
    Duration(i64, i32),
    Bytes(&'a [u8]),
    /// A `StringMap` message, read once the type says it is wanted.
    Map(&'a [u8]),
}

impl<'a> Sent<'a> {
    /// The value of an entry of the map numbered `number`; an absent value
    /// is protobuf's default.
    fn read(number: u32, value: Option<Field<'a>>, words: &Words<'a>) -> Result<Sent<'a>, String> {
        let varint = || value.map_or(Ok(0), Field::varint);
        let message = || value.map_or(Ok(&[][..]), Field::bytes);
        Ok(match number {
            2 => Sent::Text(
                words
                    .get(value.map_or(Ok(0), Field::sint32)?)
                    .map_err(|e| e.0)?,
            ),
            3 => Sent::Int64(varint()? as i64),
            4 => Sent::Double(f64::from_bits(value.map_or(Ok(0), Field::fixed64)?)),
            5 => Sent::Bool(varint()? != 0),
            6 => {
                let (seconds, nanos) = seconds_and_nanos(message()?)?;
                Sent::Time(seconds, nanos)
            }
            7 => {
                let (seconds, nanos) = seconds_and_nanos(message()?)?;
                Sent::Duration(seconds, nanos)
            }
            8 => Sent::Bytes(message()?),
            _ => Sent::Map(message()?),
        })
    }

    /// The value as `ty`, or when it is not to be `kept` only whether it
    /// is one: checked alike, without building strings and maps. Of a
    /// string map, only the entries at `keys` are kept when it names some.
    fn into_value<'k>(
        self,
        ty: ValueType,
        words: &Words,
        kept: bool,
        keys: impl FnOnce() -> Option<&'k [Box<str>]>,
    ) -> Result<Option<Value>, String> {
        match (self, ty) {
            (Sent::Text(_), ty) if !kept && ty.is_textual() => Ok(None),
            (Sent::Map(m), ValueType::StringMap) if !kept => {
                map_entries(m, words, |_, _| ()).map(|()| None)
            }
            (Sent::Map(m), ValueType::StringMap) => {
                string_map(m, words, keys()).map(|m| Some(Value::StringMap(m)))
            }
            (sent, ty) => sent.value(ty, words).map(|v| kept.then_some(v)),
        }
    }

    fn value(self, ty: ValueType, words: &Words) -> Result<Value, String> {
        match (self, ty) {
            (Sent::Text(text), ty) => text_value(ty, text),
            (Sent::Int64(i), ValueType::Int64) => Ok(Value::Int64(i)),
            (Sent::Int64(i), _) => Err(format!("got the integer {i}")),
            (Sent::Double(d), ValueType::Double) => Ok(Value::Double(d)),
            (Sent::Double(d), _) => Err(format!("got the double {d}")),
            (Sent::Bool(b), ValueType::Bool) => Ok(Value::Bool(b)),
            (Sent::Bool(b), _) => Err(format!("got the bool {b}")),
            (Sent::Time(seconds, nanos), ValueType::Timestamp) => {
                timestamp(&prost_types::Timestamp { seconds, nanos }).map(Value::Timestamp)
            }
            (Sent::Time(..), _) => Err("got a timestamp".into()),
            (Sent::Duration(seconds, nanos), ValueType::Duration) => {
                duration(&prost_types::Duration { seconds, nanos }).map(Value::Duration)
            }
            (Sent::Duration(..), _) => Err("got a duration".into()),
            (Sent::Bytes(b), ValueType::IpAddress) => ip_bytes(b).map(Value::IpAddress),
            (Sent::Bytes(b), _) => Err(format!("got {} bytes", b.len())),
            (Sent::Map(m), ValueType::StringMap) => {
                string_map(m, words, None).map(Value::StringMap)
            }
            (Sent::Map(_), _) => Err("got a string map".into()),
        }
    }
}

/// The fields `google.protobuf.Timestamp` and `Duration` share.
fn seconds_and_nanos(message: &[u8]) -> Result<(i64, i32), String> {
    let (mut seconds, mut nanos) = (0, 0);
    for field in Fields::new(message) {
        match field? {
            (1, f) => seconds = f.varint()? as i64,
            (2, f) => nanos = f.varint()? as i32,
            _ => {}
        }
    }
    Ok((seconds, nanos))
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

/// The map, or when `keys` names some only its entries at those keys.
fn string_map(
    message: &[u8],
    words: &Words,
    keys: Option<&[Box<str>]>,
) -> Result<StringMap, String> {
    let mut entries = Vec::new();
    map_entries(message, words, |k, v| {
        if keys.is_none_or(|keys| keys.iter().any(|wanted| **wanted == *k)) {
            entries.push((k, v))
        }
    })?;
    // Collected, a B-tree is built at once from its sorted entries rather
    // than by one insert each; of a repeated key it keeps the last value,
    // as protobuf's maps do.
    let map: BTreeMap<String, String> = entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(Arc::new(map))
}

/// Each entry of a `StringMap` message, its words resolved.
fn map_entries<'a>(
    message: &[u8],
    words: &Words<'a>,
    mut each: impl FnMut(&'a str, &'a str),
) -> Result<(), String> {
    for field in Fields::new(message) {
        let (number, field) = field?;
        if number != 1 {
            continue;
        }
        let (k, v) = wire::entry(field.bytes()?)?;
        let k = words
            .get(k.map_or(Ok(0), Field::sint32)?)
            .map_err(|e| e.0)?;
        let v = words
            .get(v.map_or(Ok(0), Field::sint32)?)
            .map_err(|e| e.0)?;
        each(k, v);
    }
    Ok(())
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

    use prost::Message;

    use crate::attribute::Attributes;

    fn decode_one(attrs: &CompressedAttributes) -> Result<(Bag, DecodeStats), DecodeError> {
        decode_bytes(&attrs.encode_to_vec())
    }

    fn decode_bytes(message: &[u8]) -> Result<(Bag, DecodeStats), DecodeError> {
        let raw = Raw::parse(message)?;
        let words = Words::new(0, raw.words())?;
        let vocab = Vocabulary::standard();
        let mut bag = Bag::for_vocabulary(&vocab);
        let stats = decode(&raw, &words, &vocab, &mut bag)?;
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
    fn broken_protobuf_is_named() {
        let wire = CompressedAttributes {
            words: vec!["/reviews/1".into()],
            ..Default::default()
        }
        .encode_to_vec();
        let err = decode_bytes(&wire[..wire.len() - 1]).unwrap_err().0;
        assert!(
            err.contains("not valid protobuf: field 1: 10 bytes announced, 9 left"),
            "{err}"
        );
        // words[0] is not UTF-8
        let err = decode_bytes(&[0x0a, 1, 0xff]).unwrap_err().0;
        assert!(err.contains("words[0]: not UTF-8"), "{err}");
        // an int64s entry whose value is length-delimited
        let err = decode_bytes(&[0x1a, 4, 0x08, 0, 0x12, 0]).unwrap_err().0;
        assert!(
            err.contains("int64s entry: value: expected a varint, found a length-delimited"),
            "{err}"
        );
        // a strings entry that is a varint, not an entry
        let err = decode_bytes(&[0x10, 1]).unwrap_err().0;
        assert!(
            err.contains("strings entry: expected a length-delimited value"),
            "{err}"
        );
    }

    #[test]
    fn repeated_names_keep_the_last_value_and_omitted_values_are_defaults() {
        let size = dictionary::index_of("request.size").unwrap();
        let key = ((size << 1) ^ (size >> 31)) as u8;
        // int64s {size: 5}, int64s {size: 9}, int64s {size} with no value
        let (bag, _) =
            decode_bytes(&[0x1a, 4, 0x08, key, 0x10, 5, 0x1a, 4, 0x08, key, 0x10, 9]).unwrap();
        assert_eq!(bag.get("request.size"), Some(&Value::Int64(9)));
        let (bag, _) = decode_bytes(&[0x1a, 2, 0x08, key]).unwrap();
        assert_eq!(bag.get("request.size"), Some(&Value::Int64(0)));
    }

    #[test]
    fn a_string_map_keeps_the_last_value_of_a_repeated_key() {
        let varint = |mut v: u64, out: &mut Vec<u8>| {
            while v >= 0x80 {
                out.push(v as u8 | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        };
        // words "a", "b", "c" are -1, -2, -3: zigzagged 1, 3, 5.
        let mut message = vec![0x0a, 1, b'a', 0x0a, 1, b'b', 0x0a, 1, b'c'];
        let map = [0x0a, 4, 0x08, 1, 0x10, 3, 0x0a, 4, 0x08, 1, 0x10, 5];
        let headers = dictionary::index_of("request.headers").unwrap();
        let mut entry = vec![0x08];
        varint(u64::from((headers as u32) << 1), &mut entry);
        entry.extend([0x12, map.len() as u8]);
        entry.extend(map);
        message.push(0x4a);
        varint(entry.len() as u64, &mut message);
        message.extend(entry);
        let (bag, _) = decode_bytes(&message).unwrap();
        assert_eq!(bag.get_key("request.headers", "a"), Some("c"));
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
    fn unread_attributes_are_checked_and_not_kept() {
        let vocab = Vocabulary::standard().reading([("request.size", None)]);
        let decode_with = |attrs: &CompressedAttributes, bag: &mut Bag| {
            let message = attrs.encode_to_vec();
            let raw = Raw::parse(&message)?;
            let words = Words::new(0, raw.words())?;
            decode(&raw, &words, &vocab, bag)
        };
        let bag = |pairs: Vec<(&'static str, Value)>| pairs.into_iter().collect::<Bag>();
        let sent = bag(vec![
            ("request.size", Value::Int64(7)),
            ("request.path", Value::string("/a")),
            ("response.code", Value::Int64(200)),
            (
                "request.headers",
                Value::StringMap(Arc::new([("a".into(), "b".into())].into())),
            ),
        ]);
        let mut decoded = Bag::new();
        decode_with(&encode(&sent), &mut decoded).unwrap();
        assert_eq!(decoded, bag(vec![("request.size", Value::Int64(7))]));

        // Unread or not, a value of the wrong type or a broken map is refused.
        let code = dictionary::index_of("response.code").unwrap();
        let mut wire = CompressedAttributes::default();
        wire.strings.insert(code, 0);
        let err = decode_with(&wire, &mut Bag::new()).unwrap_err().0;
        assert!(err.contains("`response.code` is declared INT64"), "{err}");
        let headers = dictionary::index_of("request.headers").unwrap();
        let mut wire = CompressedAttributes::default();
        let mut map = WireMap::default();
        map.entries.insert(-7, 0);
        wire.string_maps.insert(headers, map);
        let err = decode_with(&wire, &mut Bag::new()).unwrap_err().0;
        assert!(err.contains("word index -7"), "{err}");

        // Decoded over an earlier set (a delta-encoded Report), an unread
        // attribute sent again leaves nothing of the earlier value.
        let mut over = bag(vec![("response.code", Value::Int64(503))]);
        decode_with(&encode(&sent), &mut over).unwrap();
        assert_eq!(over.get("response.code"), None);
    }

    #[test]
    fn a_map_read_at_constant_keys_keeps_only_those() {
        let vocab = Vocabulary::standard().reading([
            ("request.headers", Some("x-user")),
            ("request.headers", Some("x-absent")),
        ]);
        let decode_with = |attrs: &CompressedAttributes| {
            let message = attrs.encode_to_vec();
            let raw = Raw::parse(&message)?;
            let words = Words::new(0, raw.words())?;
            let mut bag = Bag::for_vocabulary(&vocab);
            decode(&raw, &words, &vocab, &mut bag).map(|_| bag)
        };
        let headers = |pairs: &[(&str, &str)]| {
            let map = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            Value::StringMap(Arc::new(map.collect()))
        };
        let sent: Bag = [(
            "request.headers",
            headers(&[
                ("x-user", "jason"),
                ("user-agent", "curl"),
                ("accept", "*/*"),
            ]),
        )]
        .into_iter()
        .collect();
        let decoded = decode_with(&encode(&sent)).unwrap();
        assert_eq!(
            decoded.get("request.headers"),
            Some(&headers(&[("x-user", "jason")]))
        );

        // An entry dropped for its key is still checked.
        let index = dictionary::index_of("request.headers").unwrap();
        let mut wire = CompressedAttributes::default();
        let mut map = WireMap::default();
        map.entries.insert(-1, -9);
        wire.words.push("accept".into());
        wire.string_maps.insert(index, map);
        let err = decode_with(&wire).unwrap_err().0;
        assert!(err.contains("word index -9"), "{err}");
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
