//! Verification keys from a JWKS file (an identity provider's published keys): RSA, EC P-256
//! and Ed25519, each pinned to one algorithm and selected by `kid`.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::jwt::TokenService;
use crate::metrics::Metrics;

/// One usable key of the set.
pub struct JwksKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// Reads and parses the set. Keys that cannot be used (no `kid`, an unsupported type or
/// algorithm) are skipped and named in `skipped`; an unreadable or malformed file is an error.
pub fn load(path: &Path) -> Result<(Vec<JwksKey>, Vec<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{} is not a JWKS document: {e}", path.display()))
}

/// [`load`] without the file: the usable keys of a JWKS document and why others were skipped.
pub fn parse(text: &str) -> Result<(Vec<JwksKey>, Vec<String>), serde_json::Error> {
    let set: JwkSet = serde_json::from_str(text)?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let Some(kid) = jwk.common.key_id.clone() else {
            skipped.push(format!("keys[{i}]: no kid"));
            continue;
        };
        match usable(jwk) {
            Ok((algorithm, key)) => keys.push(JwksKey { kid, algorithm, key }),
            Err(why) => skipped.push(format!("keys[{i}] (kid {kid}): {why}")),
        }
    }
    Ok((keys, skipped))
}

/// The key's pinned algorithm: its `alg` when present (and consistent with its type),
/// otherwise the one its type implies.
fn usable(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), String> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        _ => return Err("only RSA, EC P-256 and Ed25519 public keys are supported".into()),
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let matches = matches!(
            (declared, implied),
            (KeyAlgorithm::RS256, Algorithm::RS256)
                | (KeyAlgorithm::ES256, Algorithm::ES256)
                | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
        );
        if !matches {
            return Err(format!("alg {declared:?} is not supported for this key type"));
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok((implied, key))
}

/// Re-reads the JWKS file, logging the outcome; on failure the previous keys stay in use.
pub fn reload(tokens: &TokenService, metrics: &Metrics, why: &str) {
    match tokens.reload_jwks() {
        Ok(keys) => {
            metrics.jwks_reloads.with_label_values(&["ok"]).inc();
            tracing::info!(keys, why, "JWKS re-read");
        }
        Err(e) => {
            metrics.jwks_reloads.with_label_values(&["failed"]).inc();
            tracing::error!(error = %e, why, "JWKS re-read failed; the previous keys stay in use");
        }
    }
}

/// Re-reads the JWKS file whenever its modification time or size changes.
pub async fn watch(
    tokens: Arc<TokenService>,
    metrics: Arc<Metrics>,
    path: std::path::PathBuf,
    interval: std::time::Duration,
) {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
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
