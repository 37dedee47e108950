//! The gRPC APIs mixer-policy answers on its one port: Istio's Mixer `Check`
//! ([`mixer`]) and Envoy's `ext_authz` ([`ext_authz`]). Both decode their
//! request into attributes and hand them to the same dispatcher.

pub mod ext_authz;
pub mod mixer;

use std::sync::Arc;

use ::mixer::dispatch::Dispatcher;

use crate::metrics::PolicyMetrics;

/// What both APIs share.
#[derive(Clone)]
pub struct Policy {
    pub dispatcher: Arc<Dispatcher>,
    pub metrics: PolicyMetrics,
}
