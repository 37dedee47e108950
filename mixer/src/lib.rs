//! The Mixer runtime shared by mixer-policy and mixer-telemetry (Istio 1.x's
//! Mixer): attribute vocabulary, bags and their compressed wire form; the
//! expression language; handler/instance/rule config and its store;
//! templates; the adapter traits; the dispatcher and its check cache, and
//! the bounded map that keeps both the check cache and remembered bindings.
//! Nothing here serves a port: the binaries do, with the flags and config
//! loading of [`server`].

pub mod adapter;
pub mod attribute;
pub mod bounded;
pub mod cache;
pub mod config;
pub mod dispatch;
pub mod expr;
pub mod referenced;
pub mod server;
pub mod template;
