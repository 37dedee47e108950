//! Attributes: their types and vocabulary, bags of them, the compressed
//! form Mixer's API carries them in, and the `AttributeContext` Envoy's
//! ext_authz carries them in.

pub mod attribute_context;
mod bag;
pub mod compressed;
pub mod dictionary;
mod value;
mod vocabulary;

pub use bag::{Attr, Attributes, Bag, Located, Name};
pub use value::{StringMap, Value, ValueType, write_key_text};
pub use vocabulary::{Declaration, Slot, Vocabulary};
