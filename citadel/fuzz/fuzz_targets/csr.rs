//! Any bytes as the DER of a CSR in its PEM armour, and as PEM text
//! themselves: Citadel's CSR reader answers with a request or an error,
//! never a panic.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use citadel::authority::csr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        STANDARD.encode(data)
    );
    let _ = csr::parse(&pem);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = csr::parse(text);
    }
});
