//! A JWKS document (an identity provider's published keys), as `auth.jwks_file` is read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The file is read with `read_to_string`: anything else is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((keys, _skipped)) = authchat::auth::jwks::parse(text) {
        for key in keys {
            assert!(matches!(
                key.algorithm,
                jsonwebtoken::Algorithm::RS256 | jsonwebtoken::Algorithm::ES256 | jsonwebtoken::Algorithm::EdDSA
            ));
        }
    }
});
