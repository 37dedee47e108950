//! Pilot: the service model, config and xDS server behind `pilot-discovery`,
//! and the sidecar agent behind `pilot-agent`.

pub mod agent;
pub mod config;
pub mod debounce;
pub mod debug;
pub mod discovery;
pub mod model;
pub mod registry;
pub mod xds;
