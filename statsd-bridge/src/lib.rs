//! statsd-bridge (Istio's istio-statsd-prom-bridge): Envoy's statsd over UDP
//! and TCP in, Prometheus text exposition out, mapped by the rules operators
//! know from prom/statsd-exporter.
//!
//! A packet goes listener → [`line`] parser (borrowed, no allocation) →
//! [`registry`] (a cache keyed by the raw statsd identity, the [`mapping`]
//! rules only on a miss) → series; a scrape copies the numbers out of the
//! registry and [`exposition`] formats them.

pub mod duration;
pub mod exposition;
pub mod histogram;
pub mod line;
pub mod listener;
pub mod mapping;
pub mod names;
pub mod process;
pub mod registry;
pub mod server;
pub mod set;
pub mod stats;
pub mod summary;
