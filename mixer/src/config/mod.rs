//! Mixer's config: objects read from a store, compiled into a [`Snapshot`].

pub mod kinds;
pub mod mcp;
mod object;
mod quota;
mod snapshot;
pub mod store;

pub use object::{ConfigError, Object, parse_file, parse_value};
pub use quota::QuotaBindings;
pub use snapshot::{Action, HandlerEntry, HeaderOp, Rule, Snapshot, resolve};
