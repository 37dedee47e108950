//! Istio's sidecar injection: which Pods get a sidecar ([`policy`]), what is
//! added ([`template`], rendered from Istio's injection config), how the
//! app's probes are pointed at the agent ([`probe`]), and the change itself
//! ([`inject`]). The webhook ([`webhook`]) and `meshctl kube-inject`
//! ([`workload`]) share all of it, so the two never disagree.

pub mod config;
pub mod inject;
pub mod metrics;
pub mod policy;
pub mod probe;
pub mod template;
pub mod webhook;
pub mod workload;

pub const INFO: mesh::version::Info =
    mesh::version::Info::new("sidecar-injector", env!("CARGO_PKG_VERSION"));

/// The annotation recording what was injected.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// The per-Pod opt-in or opt-out.
pub const INJECT_ANNOTATION: &str = "sidecar.istio.io/inject";
/// The sidecar container's name; the probers go into its environment.
pub const PROXY_CONTAINER: &str = "istio-proxy";
