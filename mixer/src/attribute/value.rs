use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Istio's attribute value types (`istio.policy.v1beta1.ValueType`), with the
/// names attribute manifests spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    String,
    Int64,
    Double,
    Bool,
    Timestamp,
    Duration,
    IpAddress,
    StringMap,
    DnsName,
    EmailAddress,
    Uri,
}

impl ValueType {
    pub fn parse(name: &str) -> Option<ValueType> {
        Some(match name {
            "STRING" => ValueType::String,
            "INT64" => ValueType::Int64,
            "DOUBLE" => ValueType::Double,
            "BOOL" => ValueType::Bool,
            "TIMESTAMP" => ValueType::Timestamp,
            "DURATION" => ValueType::Duration,
            "IP_ADDRESS" => ValueType::IpAddress,
            "STRING_MAP" => ValueType::StringMap,
            "DNS_NAME" => ValueType::DnsName,
            "EMAIL_ADDRESS" => ValueType::EmailAddress,
            "URI" => ValueType::Uri,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "STRING",
            ValueType::Int64 => "INT64",
            ValueType::Double => "DOUBLE",
            ValueType::Bool => "BOOL",
            ValueType::Timestamp => "TIMESTAMP",
            ValueType::Duration => "DURATION",
            ValueType::IpAddress => "IP_ADDRESS",
            ValueType::StringMap => "STRING_MAP",
            ValueType::DnsName => "DNS_NAME",
            ValueType::EmailAddress => "EMAIL_ADDRESS",
            ValueType::Uri => "URI",
        }
    }

    /// Types carried as text on the wire and in `context_extensions`.
    pub fn is_textual(self) -> bool {
        matches!(
            self,
            ValueType::String | ValueType::DnsName | ValueType::EmailAddress | ValueType::Uri
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string map shared between bags and instances without copying.
pub type StringMap = Arc<BTreeMap<String, String>>;

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Arc<str>),
    Int64(i64),
    Double(f64),
    Bool(bool),
    Timestamp(SystemTime),
    Duration(Duration),
    IpAddress(IpAddr),
    StringMap(StringMap),
    DnsName(Arc<str>),
    EmailAddress(Arc<str>),
    Uri(Arc<str>),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::String(_) => ValueType::String,
            Value::Int64(_) => ValueType::Int64,
            Value::Double(_) => ValueType::Double,
            Value::Bool(_) => ValueType::Bool,
            Value::Timestamp(_) => ValueType::Timestamp,
            Value::Duration(_) => ValueType::Duration,
            Value::IpAddress(_) => ValueType::IpAddress,
            Value::StringMap(_) => ValueType::StringMap,
            Value::DnsName(_) => ValueType::DnsName,
            Value::EmailAddress(_) => ValueType::EmailAddress,
            Value::Uri(_) => ValueType::Uri,
        }
    }

    pub fn string(s: &str) -> Value {
        Value::String(Arc::from(s))
    }

    /// The text of a textual value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => {
                Some(s)
            }
            _ => None,
        }
    }

    /// The text at `key` of a string map.
    pub fn at_key(&self, key: &str) -> Option<&str> {
        match self {
            Value::StringMap(m) => m.get(key).map(String::as_str),
            _ => None,
        }
    }

    /// Parses `text` as a value of type `ty`, as `context_extensions` and
    /// legacy adapters carry every value as a string.
    pub fn parse_as(ty: ValueType, text: &str) -> Result<Value, String> {
        Ok(match ty {
            ValueType::String => Value::string(text),
            ValueType::DnsName => Value::DnsName(Arc::from(text)),
            ValueType::EmailAddress => Value::EmailAddress(Arc::from(text)),
            ValueType::Uri => Value::Uri(Arc::from(text)),
            ValueType::Int64 => Value::Int64(
                text.parse()
                    .map_err(|_| format!("{text:?} is not an INT64"))?,
            ),
            ValueType::Double => Value::Double(
                text.parse()
                    .map_err(|_| format!("{text:?} is not a DOUBLE"))?,
            ),
            ValueType::Bool => Value::Bool(match text {
                "true" => true,
                "false" => false,
                _ => return Err(format!("{text:?} is not a BOOL")),
            }),
            ValueType::IpAddress => Value::IpAddress(
                text.parse()
                    .map_err(|_| format!("{text:?} is not an IP_ADDRESS"))?,
            ),
            ValueType::Duration => {
                Value::Duration(api::duration::parse(text).map_err(|e| format!("{text:?}: {e}"))?)
            }
            ValueType::Timestamp => Value::Timestamp(
                crate::expr::functions::parse_rfc3339(text)
                    .ok_or_else(|| format!("{text:?} is not an RFC 3339 TIMESTAMP"))?,
            ),
            // As JSON: how Pilot passes a workload's labels to ext_authz.
            ValueType::StringMap => Value::StringMap(Arc::new(
                serde_json::from_str(text)
                    .map_err(|e| format!("a STRING_MAP is a JSON object of strings: {e}"))?,
            )),
        })
    }
}

/// How adapters and logs see a value: the form an operator would write.
impl Value {
    /// The value as bytes for keys compared as bytes (the check cache,
    /// remembered bindings): tagged with its type, texts with their length,
    /// so that no two different sequences of values write the same bytes.
    pub fn write_key(&self, out: &mut Vec<u8>) {
        match self {
            Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => {
                out.push(match self {
                    Value::DnsName(_) => b'n',
                    Value::EmailAddress(_) => b'e',
                    Value::Uri(_) => b'u',
                    _ => b's',
                });
                write_key_text(s, out);
            }
            Value::Int64(i) => {
                out.push(b'i');
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Double(d) => {
                out.push(b'd');
                out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Value::Bool(b) => out.extend_from_slice(&[b'b', *b as u8]),
            Value::Timestamp(t) => {
                out.push(b't');
                let (sign, d) = match t.duration_since(UNIX_EPOCH) {
                    Ok(d) => (1, d),
                    Err(e) => (0, e.duration()),
                };
                out.push(sign);
                out.extend_from_slice(&d.as_nanos().to_le_bytes());
            }
            Value::Duration(d) => {
                out.push(b'D');
                out.extend_from_slice(&d.as_nanos().to_le_bytes());
            }
            Value::IpAddress(IpAddr::V4(ip)) => {
                out.push(b'4');
                out.extend_from_slice(&ip.octets());
            }
            Value::IpAddress(IpAddr::V6(ip)) => {
                out.push(b'6');
                out.extend_from_slice(&ip.octets());
            }
            Value::StringMap(m) => {
                out.push(b'M');
                out.extend_from_slice(&(m.len() as u32).to_le_bytes());
                for (k, v) in m.iter() {
                    write_key_text(k, out);
                    write_key_text(v, out);
                }
            }
        }
    }
}

/// A text as key bytes: its length, then its bytes.
pub fn write_key_text(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) | Value::DnsName(s) | Value::EmailAddress(s) | Value::Uri(s) => {
                f.write_str(s)
            }
            Value::Int64(i) => write!(f, "{i}"),
            Value::Double(d) => write!(f, "{d}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Timestamp(t) => match t.duration_since(UNIX_EPOCH) {
                Ok(d) => write!(f, "{}", crate::expr::functions::format_rfc3339(d)),
                Err(_) => f.write_str("before-1970"),
            },
            Value::Duration(d) => write!(f, "{d:?}"),
            Value::IpAddress(ip) => write!(f, "{ip}"),
            Value::StringMap(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}
