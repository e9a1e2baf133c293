//! An identity provider's published keys (a JWKS document): which of them verify tokens (RSA,
//! EC P-256 and P-384, Ed25519, each pinned to one algorithm and selected by `kid`), and where
//! the set comes from ([`Provider`]): a file, re-read when it changes, or the provider itself
//! over HTTPS ([`remote`]), refreshed as its `Cache-Control` says ([`freshness`]).

pub mod freshness;
pub mod remote;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::jwt::TokenService;
use crate::metrics::Metrics;

/// Shortest RSA modulus accepted (RFC 7518 §3.3: 2048 bits or larger).
const MIN_RSA_BITS: usize = 2048;

/// One usable key of the set.
pub struct JwksKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// Where verify-only mode's keys come from.
pub enum Provider {
    /// `auth.jwks_file`: re-read on SIGHUP and when it changes.
    File(PathBuf),
    /// `auth.jwks_url` or `auth.oidc_discovery`: fetched over HTTPS.
    Remote(Box<remote::Remote>),
}

impl Provider {
    /// Where the keys come from, in words, for logs and `check-config`.
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("auth.jwks_file {}", path.display()),
            Self::Remote(remote) => remote.describe(),
        }
    }
}

/// Reads and parses the set. Keys that cannot be used (no `kid`, an unsupported type or
/// algorithm) are skipped and named in `skipped`; an unreadable or malformed file is an error.
pub fn load(path: &Path) -> Result<(Vec<JwksKey>, Vec<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{} is not a JWKS document: {e}", path.display()))
}

/// [`load`] without the file: the usable keys of a JWKS document and why others were skipped.
/// Each key is read on its own, so one this server cannot read (a curve or key type it does
/// not know, which real providers publish next to their signing keys) does not spoil the set.
/// Encryption keys (`"use": "enc"`) are left out without a word: providers such as Keycloak
/// always publish one, and it is not a problem to report.
pub fn parse(text: &str) -> Result<(Vec<JwksKey>, Vec<String>), serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_str(text)?;
    let mut keys: Vec<JwksKey> = Vec::new();
    let mut skipped = Vec::new();
    for (i, value) in document.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(e) => {
                skipped.push(format!("keys[{i}]: not a key this server reads: {e}"));
                continue;
            }
        };
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let Some(kid) = jwk.common.key_id.clone() else {
            skipped.push(format!("keys[{i}]: no kid"));
            continue;
        };
        // Two keys under one kid would make the choice of key depend on their order.
        if keys.iter().any(|k| k.kid == kid) {
            skipped.push(format!("keys[{i}] (kid {kid}): another key earlier in the set has this kid"));
            continue;
        }
        match usable(&jwk) {
            Ok((algorithm, key)) => keys.push(JwksKey { kid, algorithm, key }),
            Err(why) => skipped.push(format!("keys[{i}] (kid {kid}): {why}")),
        }
    }
    Ok((keys, skipped))
}

/// The key's pinned algorithm: its `alg` when present (and one its type signs with), otherwise
/// the one its type implies (RS256, ES256 or ES384 by curve, EdDSA).
fn usable(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), String> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(other) => return Err(format!("its use is {other:?}, not sig")),
    }
    if let Some(operations) = &jwk.common.key_operations {
        if !operations.contains(&KeyOperations::Verify) {
            return Err("its key_ops do not include verify".into());
        }
    }
    let declared = jwk.common.key_algorithm;
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let bits = modulus_bits(&rsa.n).ok_or("its modulus n is not base64url")?;
            if bits < MIN_RSA_BITS {
                return Err(format!("an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"));
            }
            match declared {
                None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
                Some(KeyAlgorithm::RS384) => Algorithm::RS384,
                Some(KeyAlgorithm::RS512) => Algorithm::RS512,
                Some(KeyAlgorithm::PS256) => Algorithm::PS256,
                Some(KeyAlgorithm::PS384) => Algorithm::PS384,
                Some(KeyAlgorithm::PS512) => Algorithm::PS512,
                Some(other) => return Err(format!("alg {other} is not a signature algorithm of RSA keys")),
            }
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let implied = match ec.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err(format!("EC curve {:?} is not supported (P-256 and P-384 are)", ec.curve)),
            };
            matching(declared, implied)?
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            matching(declared, Algorithm::EdDSA)?
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric (oct) key: a published secret would let anyone sign".into());
        }
        _ => return Err("only RSA, EC P-256/P-384 and Ed25519 public keys are supported".into()),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok((algorithm, key))
}

/// `implied`, when the key declares no `alg` or declares that one.
fn matching(declared: Option<KeyAlgorithm>, implied: Algorithm) -> Result<Algorithm, String> {
    match declared {
        None => Ok(implied),
        Some(alg) if alg == KeyAlgorithm::from(implied) => Ok(implied),
        Some(alg) => Err(format!("alg {alg} does not fit this key type ({implied:?} does)")),
    }
}

/// Length in bits of a base64url big-endian modulus, leading zeros aside.
fn modulus_bits(n: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(n.trim_end_matches('=')).ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    Some((bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize)
}

/// Loads the key set again, logging the outcome; on failure the keys in use stay. A file is
/// re-read here and now; keys over HTTPS are fetched in the background, at once (an operator
/// asked: the `auth.jwks_min_refresh` pause between fetches does not apply).
pub fn reload(tokens: &Arc<TokenService>, metrics: &Metrics, why: &str) {
    match tokens.provider() {
        Some(Provider::File(_)) => match tokens.reload_jwks_file() {
            Ok(keys) => {
                metrics.jwks_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(keys, why, "JWKS re-read");
            }
            Err(e) => {
                metrics.jwks_reloads.with_label_values(&["failed"]).inc();
                tracing::error!(error = %e, why, "JWKS re-read failed; the previous keys stay in use");
            }
        },
        Some(Provider::Remote(_)) => {
            let tokens = tokens.clone();
            tokio::spawn(async move {
                if let Some(Provider::Remote(remote)) = tokens.provider() {
                    // The outcome is logged and counted by the fetch itself.
                    let _ = remote.refresh_now(&tokens, remote::Reason::Sighup).await;
                }
            });
        }
        None => {}
    }
}

/// Re-reads the JWKS file whenever its modification time or size changes.
pub async fn watch(tokens: Arc<TokenService>, metrics: Arc<Metrics>, path: PathBuf, interval: std::time::Duration) {
    let stamp = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
    let mut seen = stamp(&path);
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let now = stamp(&path);
        if now != seen && now.is_some() {
            seen = now;
            reload(&tokens, &metrics, "file changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The public half of a fixture key, as a provider publishes it.
    fn public_jwk(file: &str, alg: Algorithm) -> serde_json::Value {
        let pem = std::fs::read(format!("{}/tests/fixtures/keys/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let key = match alg {
            Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
            Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
            _ => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
        }
        .unwrap();
        serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap()
    }

    fn with(mut jwk: serde_json::Value, fields: serde_json::Value) -> serde_json::Value {
        for (name, value) in fields.as_object().unwrap() {
            jwk[name] = value.clone();
        }
        jwk
    }

    fn kids_and_algorithms(document: serde_json::Value) -> (Vec<(String, Algorithm)>, Vec<String>) {
        let (keys, skipped) = parse(&document.to_string()).unwrap();
        (keys.into_iter().map(|k| (k.kid, k.algorithm)).collect(), skipped)
    }

    #[test]
    fn every_supported_key_type_is_pinned_to_its_algorithm() {
        let document = json!({"keys": [
            with(public_jwk("rsa.pem", Algorithm::RS256), json!({"kid": "rsa", "use": "sig"})),
            with(public_jwk("rsa.pem", Algorithm::RS256), json!({"kid": "rsa-ps", "alg": "PS256"})),
            with(public_jwk("ec.pem", Algorithm::ES256), json!({"kid": "p256"})),
            with(public_jwk("ec384.pem", Algorithm::ES384), json!({"kid": "p384"})),
            with(public_jwk("ed.pem", Algorithm::EdDSA), json!({"kid": "ed", "key_ops": ["verify"]})),
        ]});
        let (keys, skipped) = kids_and_algorithms(document);
        assert_eq!(
            keys,
            [
                ("rsa".into(), Algorithm::RS256),
                ("rsa-ps".into(), Algorithm::PS256),
                ("p256".into(), Algorithm::ES256),
                ("p384".into(), Algorithm::ES384),
                ("ed".into(), Algorithm::EdDSA),
            ]
        );
        assert!(skipped.is_empty(), "{skipped:?}");
    }

    #[test]
    fn encryption_keys_are_ignored_and_unusable_keys_are_named_without_spoiling_the_set() {
        let good = with(public_jwk("ec.pem", Algorithm::ES256), json!({"kid": "good"}));
        let document = json!({"keys": [
            // Keycloak publishes its encryption key next to the signing one.
            with(public_jwk("rsa.pem", Algorithm::RS256), json!({"kid": "enc", "use": "enc", "alg": "RSA-OAEP"})),
            with(public_jwk("ec.pem", Algorithm::ES256), json!({"kid": "wrong-alg", "alg": "ES384"})),
            with(public_jwk("rsa.pem", Algorithm::RS256), json!({"kid": "oaep", "alg": "RSA-OAEP"})),
            with(public_jwk("ed.pem", Algorithm::EdDSA), json!({"kid": "sign-only", "key_ops": ["sign"]})),
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
            {"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": "AAAA"},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AAAA", "y": "AAAA"},
            {"kty": "RSA", "kid": "short", "n": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xff_u8; 128]), "e": "AQAB"},
            with(public_jwk("ec.pem", Algorithm::ES256), json!({})),
            good.clone(),
            with(good, json!({"kid": "good"})),
            42,
        ]});
        let (keys, skipped) = kids_and_algorithms(document);
        assert_eq!(keys, [("good".into(), Algorithm::ES256)]);
        let reasons = skipped.join("\n");
        assert_eq!(skipped.len(), 10, "{reasons}");
        for expected in [
            "kid wrong-alg): alg ES384 does not fit",
            "kid oaep): alg RSA_OAEP is not a signature algorithm",
            "kid sign-only): its key_ops do not include verify",
            "kid secret): a symmetric (oct) key",
            "kid x25519): only RSA, EC P-256/P-384 and Ed25519 public keys",
            "kid p521): EC curve P521 is not supported",
            "kid short): an RSA key of 1024 bits",
            "keys[8]: no kid",
            "keys[10] (kid good): another key earlier in the set has this kid",
            "keys[11]: not a key this server reads",
        ] {
            assert!(reasons.contains(expected), "{expected:?} in:\n{reasons}");
        }
        assert!(!reasons.contains("enc"), "encryption keys are left out silently: {reasons}");
    }

    #[test]
    fn a_document_that_is_not_a_key_set_is_an_error() {
        for text in ["{ not json", "[]", "{\"keys\": {}}", "{}", "<html>Service Unavailable</html>"] {
            assert!(parse(text).is_err(), "{text}");
        }
        let (keys, skipped) = parse("{\"keys\": []}").unwrap();
        assert!(keys.is_empty() && skipped.is_empty());
    }

    #[test]
    fn modulus_bits_ignore_leading_zeros() {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(modulus_bits(&b64(&[0x00, 0x80, 0x00])), Some(16));
        assert_eq!(modulus_bits(&b64(&[0x01, 0x00])), Some(9));
        assert_eq!(modulus_bits(&b64(&[0x00])), None);
        assert_eq!(modulus_bits("not base64!"), None);
    }
}
