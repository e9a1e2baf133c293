//! A JWKS document (an identity provider's published keys), as `auth.jwks_file` is read and
//! as a key set fetched over HTTPS (`auth.jwks_url`, OIDC discovery) is parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The file is read with `read_to_string`: anything else is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((keys, _skipped)) = authchat::auth::jwks::parse(text) {
        for key in keys {
            // Public-key signature algorithms only: never an HMAC one, whose key would be public.
            use jsonwebtoken::Algorithm::*;
            assert!(matches!(key.algorithm, RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA));
        }
    }
});
