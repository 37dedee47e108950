//! Citadel, the mesh's certificate authority (Istio's `istio_ca`).
//!
//! - [`authority`]: the CA itself (self-signed and rolled, or plugged in),
//!   signing leaves for CSRs and for Secrets; [`root`] keeps it current.
//! - [`serve`]: the CSR service, over [`tls`] with Citadel's own certificate.
//! - [`secrets`]: an `istio.<sa>` Secret per ServiceAccount, on Kubernetes
//!   or in a directory.
//! - [`token`]: service-account tokens: verified for the CSR service, minted
//!   locally.
//! - [`identity`]: SPIFFE IDs, token subjects and Secret names.
//! - [`ledger`]: every issued certificate, in SQL.
//! - [`args`]: flags; [`server`]: wiring.

pub mod args;
pub mod authority;
pub mod identity;
pub mod ledger;
pub mod metrics;
pub mod root;
pub mod secrets;
pub mod serve;
pub mod server;
pub mod tls;
pub mod token;
