//! Asymmetric keys from PEM files, chosen by `kid`, with the algorithm pinned per key.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

fn key_config() -> String {
    format!(
        r#"
[auth]
signing_kid = "ec1"
[[auth.keys]]
kid = "ec1"
algorithm = "ES256"
public_key = "{KEYS}/ec.pub.pem"
private_key = "{KEYS}/ec.pem"
[[auth.keys]]
kid = "ed1"
algorithm = "EdDSA"
public_key = "{KEYS}/ed.pub.pem"
[[auth.keys]]
kid = "rsa1"
algorithm = "RS256"
public_key = "{KEYS}/rsa.pub.pem"
"#
    )
}

fn sign_with(alg: Algorithm, kid: &str, private_pem: &str, user: &str) -> String {
    let pem = std::fs::read(format!("{KEYS}/{private_pem}")).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let claims = json!({"sub": user, "exp": now_s() + 300, "iat": now_s(), "iss": "authchat", "aud": "authchat"});
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

#[actix_web::test]
async fn rs256_es256_and_eddsa_keys_verify_by_kid() {
    let app = spawn_app_with(&key_config()).await;
    for (alg, kid, pem, user) in [
        (Algorithm::RS256, "rsa1", "rsa.pem", "r"),
        (Algorithm::ES256, "ec1", "ec.pem", "e"),
        (Algorithm::EdDSA, "ed1", "ed.pem", "d"),
    ] {
        let token = sign_with(alg, kid, pem, user);
        let mut ws = app.connect(&token).await;
        assert_eq!(ws.next_of("welcome").await["user"], user, "{kid}");
    }
    // the HS secret is still a key (kid hs1) next to them
    let mut ws = app.connect(&sign("h", 60, &[])).await;
    ws.next_of("welcome").await;
}

#[actix_web::test]
async fn a_kid_pins_its_algorithm_and_unknown_kids_are_refused() {
    let app = spawn_app_with(&key_config()).await;
    // signed by the Ed25519 key but claiming the EC key's kid
    let confused = sign_with(Algorithm::EdDSA, "ec1", "ed.pem", "m");
    expect_refused(&app.ws_url(&format!("/ws?token={confused}")), &[], 401, "invalid_token").await;
    let unknown = sign_with(Algorithm::ES256, "nope", "ec.pem", "m");
    expect_refused(&app.ws_url(&format!("/ws?token={unknown}")), &[], 401, "invalid_token").await;
    // HS256 signed with the RSA public key's bytes as the secret (the classic confusion)
    let public = std::fs::read(format!("{KEYS}/rsa.pub.pem")).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa1".into());
    let claims = json!({"sub":"m","exp": now_s() + 60,"iss":"authchat","aud":"authchat"});
    let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&public).unwrap()).unwrap();
    expect_refused(&app.ws_url(&format!("/ws?token={forged}")), &[], 401, "invalid_token").await;
}

#[actix_web::test]
async fn login_signs_with_the_configured_signing_key() {
    let app = spawn_app_with(&key_config()).await;
    let token = app.login("alice").await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!((header.alg, header.kid.as_deref()), (Algorithm::ES256, Some("ec1")));
    let (status, me): (u16, Value) = app.get_json("/api/me", Some(&token)).await;
    assert_eq!((status, me["user"].as_str()), (200, Some("alice")));
}

#[actix_web::test]
async fn an_unreadable_or_wrong_key_file_names_the_key() {
    let missing = "[[auth.keys]]\nkid = \"x\"\nalgorithm = \"RS256\"\npublic_key = \"/nonexistent/key.pem\"";
    let err = authchat::startup::Application::build(test_settings(missing)).await.err().expect("refused");
    assert!(err.to_string().contains("auth.keys[0].public_key"), "{err}");
    let wrong = format!("[[auth.keys]]\nkid = \"x\"\nalgorithm = \"RS256\"\npublic_key = \"{KEYS}/ec.pub.pem\"");
    let err = authchat::startup::Application::build(test_settings(&wrong)).await.err().expect("refused");
    assert!(err.to_string().contains("auth.keys[0].public_key"), "{err}");
}
