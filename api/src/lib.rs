//! Trireme's wire and config schema.
//!
//! - [`xds`]: the ADS service slice pilot-discovery serves (see the proto for why it
//!   lives here and not in `envoy-types`).
//! - [`ca`]: Citadel's `IstioCertificateService`.
//! - [`config`]: Istio's configuration objects as operators write them in YAML,
//!   parsed strictly and validated with errors that name the object and field.
//! - [`networking`]: the `networking.istio.io/v1alpha3` kinds.
//! - [`mesh`]: the subset of `MeshConfig` Trireme reads.

pub mod config;
pub mod duration;
pub mod mesh;
pub mod networking;
pub mod re2;

pub mod xds {
    tonic::include_proto!("envoy.service.discovery.v3");
}

pub mod ca {
    tonic::include_proto!("istio.v1.auth");
}
