//! Citadel, the mesh's certificate authority (Istio's `istio_ca`).
//!
//! - [`authority`]: the CA itself (self-signed and rolled, or plugged in),
//!   signing leaves for CSRs and for Secrets.
//! - [`identity`]: SPIFFE IDs, token subjects and Secret names.
//! - [`token`]: service-account tokens: verified for the CSR service, minted
//!   locally.

pub mod authority;
pub mod identity;
pub mod secrets;
pub mod token;
