//! Trireme's wire and config schema.
//!
//! - [`xds`]: the ADS service slice pilot-discovery serves (see the proto for why it
//!   lives here and not in `envoy-types`).
//! - [`ca`]: Citadel's `IstioCertificateService`.
//! - [`mixer`]: Mixer's v1 API (`istio.mixer.v1`), with [`google::rpc`]'s status;
//!   [`mixer_wire`]: its requests as the servers read them, attributes in place;
//!   [`als_wire`]: Envoy's access log service as mixer-telemetry reads it, entries
//!   in place; [`authz_wire`]: Envoy's ext_authz Check as mixer-policy reads it,
//!   attributes in place; [`wire`]: the in-place protobuf reader they use;
//!   [`listentry`] and [`istio`]'s adapter types: the out-of-process adapter protocol.
//! - [`config`]: Istio's configuration objects as operators write them in YAML,
//!   parsed strictly and validated with errors that name the object and field:
//!   every kind Istio 1.4's Galley validated for Pilot.
//! - [`analysis`]: warnings about objects that refer to others that are missing.
//! - [`networking`]: the `networking.istio.io/v1alpha3` kinds.
//! - [`security`]: the `authentication.istio.io`, `security.istio.io` and
//!   `rbac.istio.io` kinds.
//! - [`mesh`]: the subset of `MeshConfig` Trireme reads.
//! - [`mcp`]: the Mesh Configuration Protocol Galley serves, and the codec
//!   between specs and Istio's protobuf messages.

pub mod als_wire;
pub mod analysis;
pub mod authz_wire;
pub mod config;
pub mod duration;
pub mod mcp;
pub mod mesh;
pub mod mixer_wire;
pub mod networking;
pub mod re2;
pub mod security;
pub mod wire;

pub mod xds {
    tonic::include_proto!("envoy.service.discovery.v3");
}

pub mod ca {
    tonic::include_proto!("istio.v1.auth");
}

// Module paths mirror the proto packages, as the generated code refers to
// other packages by relative path.
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub mod istio {
    pub mod mcp {
        pub mod v1alpha1 {
            tonic::include_proto!("istio.mcp.v1alpha1");
        }
    }
    pub mod mixer {
        pub mod v1 {
            tonic::include_proto!("istio.mixer.v1");
        }
        pub mod adapter {
            pub mod model {
                pub mod v1beta1 {
                    tonic::include_proto!("istio.mixer.adapter.model.v1beta1");
                }
            }
        }
    }
    pub mod policy {
        pub mod v1beta1 {
            tonic::include_proto!("istio.policy.v1beta1");
        }
    }
}

pub mod listentry {
    tonic::include_proto!("listentry");
}

/// Mixer's v1 API.
pub use istio::mixer::v1 as mixer;
