//! Protobuf's wire format read field by field, in place. Mixer's compressed
//! attribute sets and Envoy's access-log entries are decoded straight from
//! the request's bytes this way: texts are borrowed, never copied into a
//! `String` each, and maps are never built as maps before they are used.

use std::fmt;

/// One field's payload, by wire type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// What is wrong with a message's framing. Small and `Copy`, so reading a
/// field costs no more than the field: text is made only for an error that
/// is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    VarintPastEnd,
    VarintTooLong,
    FieldNumber(u64),
    Group(u32),
    WireType(u32, u8),
    Truncated {
        field: u32,
        wanted: u64,
        left: usize,
    },
    Expected {
        wanted: &'static str,
        found: &'static str,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::VarintPastEnd => f.write_str("a varint runs past the end of the message"),
            WireError::VarintTooLong => f.write_str("a varint is longer than 10 bytes"),
            WireError::FieldNumber(n) => write!(f, "field number {n} is out of range"),
            WireError::Group(n) => write!(f, "field {n}: groups are not supported"),
            WireError::WireType(n, t) => write!(f, "field {n}: wire type {t} does not exist"),
            WireError::Truncated {
                field,
                wanted,
                left,
            } => write!(
                f,
                "field {field}: {wanted} bytes announced, {left} left in the message"
            ),
            WireError::Expected { wanted, found } => write!(f, "expected {wanted}, found {found}"),
        }
    }
}

impl From<WireError> for String {
    fn from(e: WireError) -> String {
        e.to_string()
    }
}

impl<'a> Field<'a> {
    pub fn varint(self) -> Result<u64, WireError> {
        match self {
            Field::Varint(v) => Ok(v),
            other => Err(other.not("a varint")),
        }
    }

    pub fn fixed64(self) -> Result<u64, WireError> {
        match self {
            Field::Fixed64(v) => Ok(v),
            other => Err(other.not("a 64-bit value")),
        }
    }

    pub fn bytes(self) -> Result<&'a [u8], WireError> {
        match self {
            Field::Bytes(b) => Ok(b),
            other => Err(other.not("a length-delimited value")),
        }
    }

    /// A `sint32`: zigzag-encoded, of which protobuf keeps the low 32 bits.
    pub fn sint32(self) -> Result<i32, WireError> {
        let n = self.varint()? as u32;
        Ok(((n >> 1) as i32) ^ -((n & 1) as i32))
    }

    fn not(self, wanted: &'static str) -> WireError {
        let found = match self {
            Field::Varint(_) => "a varint",
            Field::Fixed64(_) => "a 64-bit value",
            Field::Fixed32(_) => "a 32-bit value",
            Field::Bytes(_) => "a length-delimited value",
        };
        WireError::Expected { wanted, found }
    }
}

/// The fields of one message in wire order, each with its field number.
/// After an error the iteration ends: nothing past a broken field can be
/// framed.
pub struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    #[inline]
    pub fn new(message: &'a [u8]) -> Fields<'a> {
        Fields(message)
    }

    // Inlined into each reader, which then skips what it does not use.
    #[inline(always)]
    fn field(&mut self) -> Result<(u32, Field<'a>), WireError> {
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(WireError::FieldNumber(number));
        }
        let number = number as u32;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.array(number)?)),
            2 => {
                let len = self.varint()?;
                let left = self.0.len();
                if len > left as u64 {
                    return Err(WireError::Truncated {
                        field: number,
                        wanted: len,
                        left,
                    });
                }
                let (taken, rest) = self.0.split_at(len as usize);
                self.0 = rest;
                Field::Bytes(taken)
            }
            5 => Field::Fixed32(u32::from_le_bytes(self.array(number)?)),
            3 | 4 => return Err(WireError::Group(number)),
            other => return Err(WireError::WireType(number, other as u8)),
        };
        Ok((number, field))
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, WireError> {
        // Keys, lengths and word indexes mostly fit in one byte, and the
        // rest in two: a global word's index is zigzagged past 63.
        match *self.0 {
            [b0, ref rest @ ..] if b0 < 0x80 => {
                self.0 = rest;
                Ok(u64::from(b0))
            }
            [b0, b1, ref rest @ ..] if b1 < 0x80 => {
                self.0 = rest;
                Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
            }
            _ => self.long_varint(),
        }
    }

    #[cold]
    fn long_varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, &byte) in self.0.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.0.len() < 10 {
            WireError::VarintPastEnd
        } else {
            WireError::VarintTooLong
        })
    }

    fn array<const N: usize>(&mut self, field: u32) -> Result<[u8; N], WireError> {
        let Some((bytes, rest)) = self.0.split_first_chunk::<N>() else {
            return Err(WireError::Truncated {
                field,
                wanted: N as u64,
                left: self.0.len(),
            });
        };
        self.0 = rest;
        Ok(*bytes)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Field<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

/// A map entry's key (field 1) and value (field 2); one that is absent is
/// `None`, which protobuf reads as its type's default. Other fields are
/// skipped, as any protobuf reader skips fields it does not know.
#[inline]
pub fn entry(message: &[u8]) -> Result<(Option<Field<'_>>, Option<Field<'_>>), WireError> {
    // What encoders write: a varint key, then the value, and nothing else.
    if let [0x08, rest @ ..] = message {
        let mut fields = Fields(rest);
        if let Ok(key) = fields.varint()
            && let Ok((2, value)) = fields.field()
            && fields.0.is_empty()
        {
            return Ok((Some(Field::Varint(key)), Some(value)));
        }
    }
    let (mut key, mut value) = (None, None);
    for field in Fields::new(message) {
        match field? {
            (1, f) => key = Some(f),
            (2, f) => value = Some(f),
            _ => {}
        }
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_wire_type_in_order() {
        // field 1 varint 300, field 2 "hi", field 3 fixed64 7, field 4 fixed32 9
        let message = [
            0x08, 0xac, 0x02, 0x12, 2, b'h', b'i', 0x19, 7, 0, 0, 0, 0, 0, 0, 0, 0x25, 9, 0, 0, 0,
        ];
        let fields: Vec<_> = Fields::new(&message).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            fields,
            vec![
                (1, Field::Varint(300)),
                (2, Field::Bytes(b"hi")),
                (3, Field::Fixed64(7)),
                (4, Field::Fixed32(9)),
            ]
        );
    }

    #[test]
    fn broken_framing_is_an_error_and_ends_the_fields() {
        for (message, why) in [
            (&[0x12, 5, b'a'][..], "5 bytes announced, 1 left"),
            (&[0x08, 0x80][..], "past the end"),
            (
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ][..],
                "longer than 10 bytes",
            ),
            (&[0x0b][..], "groups"),
            (&[0x0f][..], "wire type 7"),
            (&[0x00, 0x01][..], "field number 0"),
            (&[0x19, 1, 2][..], "8 bytes announced"),
        ] {
            let mut fields = Fields::new(message);
            let err = fields.find_map(Result::err).expect("an error").to_string();
            assert!(err.contains(why), "{message:?}: {err}");
            assert!(fields.next().is_none());
        }
    }

    #[test]
    fn varints_of_every_length() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut message = vec![0x08];
            let mut v = value;
            while v >= 0x80 {
                message.push(v as u8 | 0x80);
                v >>= 7;
            }
            message.push(v as u8);
            let fields: Vec<_> = Fields::new(&message).collect::<Result<_, _>>().unwrap();
            assert_eq!(fields, vec![(1, Field::Varint(value))], "{value}");
        }
    }

    #[test]
    fn sint32_keeps_the_low_bits_and_unzigzags() {
        assert_eq!(Field::Varint(0).sint32(), Ok(0));
        assert_eq!(Field::Varint(1).sint32(), Ok(-1));
        assert_eq!(Field::Varint(2).sint32(), Ok(1));
        assert_eq!(Field::Varint(u64::from(u32::MAX)).sint32(), Ok(i32::MIN));
        let err = Field::Fixed32(1).sint32().unwrap_err().to_string();
        assert_eq!(err, "expected a varint, found a 32-bit value");
    }

    #[test]
    fn entries_in_any_order_with_repeats() {
        assert_eq!(
            entry(&[0x08, 0x96, 0x01, 0x12, 1, b'x']).unwrap(),
            (Some(Field::Varint(150)), Some(Field::Bytes(b"x")))
        );
        assert_eq!(
            entry(&[0x10, 3, 0x08, 1]).unwrap(),
            (Some(Field::Varint(1)), Some(Field::Varint(3)))
        );
        assert_eq!(
            entry(&[0x08, 1, 0x10, 3, 0x10, 4]).unwrap(),
            (Some(Field::Varint(1)), Some(Field::Varint(4)))
        );
        assert!(entry(&[0x08, 1, 0x12, 5]).is_err());
    }

    #[test]
    fn entries_default_what_they_omit() {
        assert_eq!(entry(&[0x10, 3]).unwrap(), (None, Some(Field::Varint(3))));
        assert_eq!(
            entry(&[0x08, 1, 0x08, 2, 0x18, 5]).unwrap(),
            (Some(Field::Varint(2)), None)
        );
    }
}
