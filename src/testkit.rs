//! Tokens signed the way a client's identity provider (or `authchat token`) signs them, for
//! the integration tests and the load tool (`bench/`). Behind the `testkit` feature: the server
//! build does not carry it.
//!
//! The claims are the ones authchat checks (`sub`, `exp`, `iat`, `iss`, `aud`, `jti`, `roles`);
//! [`ISSUER`] and [`AUDIENCE`] are the embedded default's `auth.issuer` and `auth.audience`.
//! Tests that need a malformed or unusual token build the claims themselves and use
//! [`TokenSigner::sign`].

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{json, Value};

/// The embedded default's `auth.issuer`.
pub const ISSUER: &str = "authchat";
/// The embedded default's `auth.audience`.
pub const AUDIENCE: &str = "authchat";

/// Signs HS256 tokens with one secret and `kid`, the pair a server's `auth.secret` and
/// `auth.secret_kid` name. Built once, so a load run signing thousands of tokens pays for the
/// key once.
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
    header: Header,
}

impl TokenSigner {
    /// Fails only for an empty secret.
    pub fn hs256(secret: &[u8], kid: &str) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        Ok(Self { key: EncodingKey::from_secret(secret)?, header })
    }

    /// Any claims, as given.
    pub fn sign(&self, claims: &impl Serialize) -> String {
        // HS256 over a serialisable value cannot fail.
        jsonwebtoken::encode(&self.header, claims, &self.key).expect("HS256 signing does not fail")
    }

    /// An access token for `user`, issued at `iat`, expiring at `exp` (Unix seconds).
    pub fn access(&self, user: &str, iat: u64, exp: u64, jti: &str, roles: &[&str]) -> String {
        self.sign(&access_claims(user, iat, exp, jti, roles))
    }
}

impl std::fmt::Debug for TokenSigner {
    /// The key stays out of debug prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").field("kid", &self.header.kid).finish_non_exhaustive()
    }
}

/// The claims of an access token as authchat mints them (without `nbf`, `iat_ms` and `sid`,
/// which it does not require).
pub fn access_claims(user: &str, iat: u64, exp: u64, jti: &str, roles: &[&str]) -> Value {
    json!({
        "sub": user, "exp": exp, "iat": iat, "iss": ISSUER, "aud": AUDIENCE, "jti": jti, "roles": roles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_token_carries_the_kid_and_the_claims_authchat_checks() {
        let token = TokenSigner::hs256(b"0123456789abcdef0123456789abcdef", "hs1").unwrap().access(
            "ann",
            10,
            70,
            "j1",
            &["admin"],
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!((header.alg, header.kid.as_deref()), (Algorithm::HS256, Some("hs1")));
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        let key = jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap();
        let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap().claims;
        assert_eq!(claims, access_claims("ann", 10, 70, "j1", &["admin"]));
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let signer = TokenSigner::hs256(b"a-secret-that-must-not-be-printed", "hs1").unwrap();
        assert!(!format!("{signer:?}").contains("printed"));
    }
}
