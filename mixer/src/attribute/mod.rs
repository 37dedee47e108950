//! Attributes: their types and vocabulary, bags of them, and the compressed
//! form Mixer's API carries them in.

mod bag;
pub mod compressed;
pub mod dictionary;
mod value;
mod vocabulary;

pub use bag::{Attr, Attributes, Bag, Located, Name};
pub use value::{StringMap, Value, ValueType, write_key_text};
pub use vocabulary::{Declaration, Slot, Vocabulary};
