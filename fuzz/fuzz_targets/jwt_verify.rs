//! `TokenService::verify` on untrusted tokens, with HS256, RS256, ES256 and EdDSA keys
//! configured (tests/fixtures/keys).
//!
//! Input: a token as presented; or, when it holds a newline, `<header JSON>\n<claims JSON>`,
//! which this target signs with the HS256 secret first, so that claim checks are reached too
//! (a mutated token almost never carries a valid signature).
#![no_main]

use std::sync::OnceLock;

use authchat::auth::jwt::TokenService;
use authchat::config::{LoadOptions, Settings};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

/// The same secret as tests/support's, so seed tokens can be made with the test helpers.
const SECRET: &str = "test-secret-test-secret-test-secret-0123";

fn service() -> &'static TokenService {
    static SERVICE: OnceLock<TokenService> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/keys");
        // A long lifetime cap, so that committed seeds (exp in 2100) keep reaching the claims.
        let toml = format!(
            "[auth]\nsecret = \"{SECRET}\"\nmax_token_lifetime = \"99years\"\n\
             [[auth.keys]]\nkid = \"rsa\"\nalgorithm = \"RS256\"\npublic_key = \"{keys}/rsa.pub.pem\"\n\
             [[auth.keys]]\nkid = \"ec\"\nalgorithm = \"ES256\"\npublic_key = \"{keys}/ec.pub.pem\"\n\
             [[auth.keys]]\nkid = \"ed\"\nalgorithm = \"EdDSA\"\npublic_key = \"{keys}/ed.pub.pem\"\n"
        );
        let settings = Settings::load(&LoadOptions {
            env_vars: Some(Default::default()),
            overrides: vec![toml],
            ..Default::default()
        })
        .expect("the fuzz settings load");
        let metrics = authchat::metrics::Metrics::new();
        TokenService::from_settings(&settings, settings.hs_secret().expect("a long secret"), &metrics)
            .expect("the fixture keys load")
    })
}

fn signing_key() -> &'static EncodingKey {
    static KEY: OnceLock<EncodingKey> = OnceLock::new();
    KEY.get_or_init(|| EncodingKey::from_secret(SECRET.as_bytes()).expect("an HS256 key"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let token = match text.split_once('\n') {
        None => text.to_owned(),
        Some((header, claims)) => {
            let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), signing_key(), Algorithm::HS256).expect("HS256 signs");
            format!("{message}.{signature}")
        }
    };
    if let Ok(principal) = service().verify(&token) {
        assert!(!principal.user.as_str().is_empty(), "a principal without a user");
        assert!(principal.expires_at > authchat::time::now_unix_s(), "an expired token accepted");
    }
});
