//! `networking.istio.io/v1alpha3`: the kinds that shape Envoy's config.
//!
//! Every struct denies unknown fields, so a typo in YAML is an error naming the
//! field rather than a silently ignored setting.

mod common;
mod destination_rule;
mod envoy_filter;
mod gateway;
pub mod names;
mod service_entry;
mod sidecar;
mod virtual_service;

pub use common::*;
pub use destination_rule::*;
pub use envoy_filter::*;
pub use gateway::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;

/// One semantic problem found by validation, at a path below `spec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Collects [`FieldError`]s while walking a spec.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}
