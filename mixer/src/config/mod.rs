//! Mixer's config: objects read from a store, compiled into a [`Snapshot`].

pub mod kinds;
mod object;
mod quota;
mod snapshot;
pub mod store;

pub use object::{ConfigError, Object, parse_file};
pub use quota::QuotaBindings;
pub use snapshot::{Action, HandlerEntry, HeaderOp, Rule, Snapshot, resolve};
