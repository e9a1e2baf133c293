//! Verify-only mode: keys from an identity provider's JWKS file, re-read while sockets stay up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::*;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
pub const ISSUER: &str = "https://idp.example";

/// The fixture private key for `alg`: RSA (RS*, PS*), EC P-256, EC P-384 or Ed25519.
pub fn private_key(alg: Algorithm) -> EncodingKey {
    let read = |name: &str| std::fs::read(format!("{KEYS}/{name}")).unwrap();
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read("ec.pem")),
        Algorithm::ES384 => EncodingKey::from_ec_pem(&read("ec384.pem")),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&read("ed.pem")),
        _ => EncodingKey::from_rsa_pem(&read("rsa.pem")),
    }
    .unwrap()
}

/// A JWKS holding the public halves of `keys` (kid, algorithm), as a provider publishes it.
pub fn jwk_set(keys: &[(&str, Algorithm)]) -> JwkSet {
    JwkSet {
        keys: keys
            .iter()
            .map(|(kid, alg)| {
                let mut jwk = Jwk::from_encoding_key(&private_key(*alg), *alg).unwrap();
                jwk.common.key_id = Some((*kid).to_owned());
                jwk
            })
            .collect(),
    }
}

/// Writes a JWKS holding the public halves of `keys` (kid, algorithm), atomically.
pub fn write_jwks(path: &Path, keys: &[(&str, Algorithm)]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&jwk_set(keys)).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn idp_token(kid: &str, alg: Algorithm, user: &str) -> String {
    issued_token(ISSUER, kid, alg, user)
}

/// A token from `issuer`, signed with the fixture key of `alg` under `kid`.
pub fn issued_token(issuer: &str, kid: &str, alg: Algorithm, user: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let claims = json!({"sub": user, "exp": now_s() + 300, "iat": now_s(), "iss": issuer, "aud": "authchat"});
    jsonwebtoken::encode(&header, &claims, &private_key(alg)).unwrap()
}

pub fn temp_jwks(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("authchat-jwks-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("jwks.json")
}

fn idp_config(path: &Path) -> String {
    format!("[auth]\nissuer = \"{ISSUER}\"\njwks_file = \"{}\"\njwks_poll_interval = \"200ms\"", path.display())
}

#[actix_web::test]
async fn tokens_verify_against_the_jwks_and_login_is_off() {
    let path = temp_jwks("basic");
    write_jwks(&path, &[("rsa-1", Algorithm::RS256), ("ec-1", Algorithm::ES256), ("ed-1", Algorithm::EdDSA)]);
    let app = spawn_app_with(&idp_config(&path)).await;
    for (kid, alg) in [("rsa-1", Algorithm::RS256), ("ec-1", Algorithm::ES256), ("ed-1", Algorithm::EdDSA)] {
        let mut ws = app.connect(&idp_token(kid, alg, "idp-user")).await;
        assert_eq!(ws.next_of("welcome").await["user"], "idp-user", "{kid}");
    }
    let unknown = idp_token("rotated-away", Algorithm::ES256, "u");
    expect_refused(&app.ws_url(&format!("/ws?token={unknown}")), &[], 401, "invalid_token").await;
    // this server's own HS key is not accepted in verify-only mode
    expect_refused(&app.ws_url(&format!("/ws?token={}", sign("u", 60, &[]))), &[], 401, "invalid_token").await;
    // nor a token from the right key with the wrong issuer
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".into());
    let claims = json!({"sub":"u","exp": now_s() + 60,"iss":"https://other.example","aud":"authchat"});
    let wrong_iss = jsonwebtoken::encode(&header, &claims, &private_key(Algorithm::ES256)).unwrap();
    expect_refused(&app.ws_url(&format!("/ws?token={wrong_iss}")), &[], 401, "invalid_token").await;

    let res = app.post_login("alice").await;
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "login_disabled");
    assert!(body["message"].as_str().unwrap().contains("identity provider"));
    let res = app.http.post(app.url("/api/token/refresh")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    // tickets still work: they are bound to the IdP token
    let token = idp_token("ec-1", Algorithm::ES256, "ticket-user");
    let (status, body) = app.send_json(reqwest::Method::POST, "/api/ticket", Some(&token)).await;
    assert_eq!(status, 200);
    let ticket = body["ticket"].as_str().unwrap();
    let (mut ws, _) = connect(&app.ws_url(&format!("/ws?ticket={ticket}")), &[]).await.unwrap();
    assert_eq!(ws.next_of("welcome").await["user"], "ticket-user");
}

#[actix_web::test]
async fn rotating_the_file_changes_the_keys_without_dropping_sockets() {
    let path = temp_jwks("rotate");
    write_jwks(&path, &[("old", Algorithm::ES256)]);
    let app = spawn_app_with(&idp_config(&path)).await;
    let mut ws = app.connect(&idp_token("old", Algorithm::ES256, "alice")).await;
    ws.next_of("welcome").await;

    write_jwks(&path, &[("new", Algorithm::EdDSA)]);
    let new_token = idp_token("new", Algorithm::EdDSA, "alice");
    let deadline = Instant::now() + WAIT;
    loop {
        match connect(&app.ws_url(&format!("/ws?token={new_token}")), &[]).await {
            Ok(_) => break,
            Err(refused) => assert_eq!(refused.status, 401),
        }
        assert!(Instant::now() < deadline, "the new key was never picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old_token = idp_token("old", Algorithm::ES256, "alice");
    expect_refused(&app.ws_url(&format!("/ws?token={old_token}")), &[], 401, "invalid_token").await;
    ws.assert_alive().await;

    // a broken file keeps the keys in use: once the server has tried to read it (and said so
    // in its metrics), the key from before still verifies
    std::fs::write(&path, b"{ not json").unwrap();
    let deadline = Instant::now() + WAIT;
    while !app.metrics().await.contains("authchat_jwks_reloads_total{outcome=\"failed\"} 1") {
        assert!(Instant::now() < deadline, "the broken file was never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connect(&app.ws_url(&format!("/ws?token={new_token}")), &[]).await.is_ok());
}

#[actix_web::test]
async fn verify_only_mode_requires_issuer_and_audience() {
    let path = temp_jwks("config");
    write_jwks(&path, &[("k", Algorithm::ES256)]);
    let config = format!("[auth]\nissuer = \"\"\njwks_file = \"{}\"", path.display());
    let err = authchat::startup::Application::build(test_settings(&config)).await.err().expect("refused");
    assert!(err.to_string().contains("auth.issuer"), "{err}");
    let config = format!("[auth]\nissuer = \"{ISSUER}\"\njwks_file = \"/nonexistent/jwks.json\"");
    let err = authchat::startup::Application::build(test_settings(&config)).await.err().expect("refused");
    assert!(err.to_string().contains("auth.jwks_file"), "{err}");
}
