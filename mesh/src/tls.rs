//! TLS setup every service shares.

/// Chooses rustls's cryptography (ring) for the whole process. Clients built
/// later without a provider of their own (kube-rs's, say) would otherwise
/// panic on first use, as rustls cannot pick one when none is installed.
pub fn install_crypto_provider() {
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
