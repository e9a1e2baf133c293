//! Token strictness (RFC 8725) with tokens signed by the real key: each case is checked where a
//! token is verified, on REST (`Authorization: Bearer`) and at the upgrade.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// The token is refused by `GET /api/me` and by the upgrade, with 401 and `code`.
async fn refused_everywhere(app: &TestApp, token: &str, code: &str, why: &str) {
    let (status, body) = app.get_json("/api/me", Some(token)).await;
    assert_eq!((status, body["error"].as_str()), (401, Some(code)), "REST, {why}: {body}");
    let bearer = format!("Bearer {token}");
    match connect(&app.ws_url("/ws"), &[("Authorization", &bearer)]).await {
        Ok(_) => panic!("upgrade accepted {why}"),
        Err(refused) => {
            assert_eq!((refused.status, refused.body["error"].as_str()), (401, Some(code)), "upgrade, {why}")
        }
    }
}

/// The token is accepted by both.
async fn accepted_everywhere(app: &TestApp, token: &str, why: &str) {
    let (status, body) = app.get_json("/api/me", Some(token)).await;
    assert_eq!(status, 200, "REST, {why}: {body}");
    let bearer = format!("Bearer {token}");
    let (mut ws, _) =
        connect(&app.ws_url("/ws"), &[("Authorization", &bearer)]).await.unwrap_or_else(|r| panic!("{why}: {r:?}"));
    ws.next_of("welcome").await;
}

fn claims(user: &str, extra: Value) -> Value {
    let now = now_s();
    let mut claims = json!({"sub": user, "exp": now + 300, "iat": now, "iss": "authchat", "aud": "authchat"});
    claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    claims
}

#[actix_web::test]
async fn iss_and_aud_are_required_when_configured() {
    let app = spawn_app().await;
    for missing in ["iss", "aud"] {
        let mut claims = claims("alice", json!({}));
        claims.as_object_mut().unwrap().remove(missing);
        refused_everywhere(&app, &sign_claims(claims), "invalid_token", &format!("without {missing}")).await;
    }
    // unchecked when configured empty
    let app = spawn_app_with("[auth]\nissuer = \"\"\naudience = \"\"").await;
    let bare = sign_claims(json!({"sub": "alice", "exp": now_s() + 300}));
    accepted_everywhere(&app, &bare, "without iss and aud, none configured").await;
}

#[actix_web::test]
async fn a_token_issued_in_the_future_is_refused_and_cannot_escape_a_revocation() {
    let app = spawn_app().await;
    // within auth.leeway (5 s) a skewed clock is forgiven
    let skewed = sign_claims(claims("bob", json!({"iat": now_s() + 2})));
    accepted_everywhere(&app, &skewed, "iat 2 s ahead").await;
    let future = sign_claims(claims("alice", json!({"iat": now_s() + 3600})));
    refused_everywhere(&app, &future, "invalid_token", "iat an hour ahead").await;
    // the revocation mark compares iat: a future iat must not pass for "issued after it"
    let admin = sign("root", 300, &["admin"]);
    assert_eq!(app.send_json(Method::POST, "/admin/users/alice/revoke", Some(&admin)).await.0, 200);
    let future = sign_claims(claims("alice", json!({"iat": now_s() + 3600, "jti": "after-revoke"})));
    refused_everywhere(&app, &future, "invalid_token", "iat an hour ahead, after a revoke").await;
}

#[actix_web::test]
async fn token_lifetime_is_capped_by_max_token_lifetime() {
    let app = spawn_app().await;
    let now = now_s();
    let forever = sign_claims(claims("alice", json!({"exp": u64::MAX})));
    refused_everywhere(&app, &forever, "invalid_token", "exp = u64::MAX").await;
    let long = sign_claims(claims("alice", json!({"exp": now + 25 * 3600})));
    refused_everywhere(&app, &long, "invalid_token", "a 25 h token (default cap 24 h)").await;
    let mut no_iat = claims("alice", json!({"exp": now + 25 * 3600}));
    no_iat.as_object_mut().unwrap().remove("iat");
    refused_everywhere(&app, &sign_claims(no_iat), "invalid_token", "exp 25 h from now, no iat").await;
    let day = sign_claims(claims("alice", json!({"exp": now + 23 * 3600})));
    accepted_everywhere(&app, &day, "a 23 h token").await;
}

/// `header.payload` signed with the test secret: `header.payload.signature`.
fn signed(header: &str, payload: &str) -> String {
    let input = format!("{header}.{payload}");
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    format!("{input}.{}", jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap())
}

/// A canonical token, and the same token with segment `index` re-encoded by `engine` (re-signed
/// when the signing input changed, so only the encoding is wrong). The `typ` and `jti` vary per
/// attempt until the re-encoding differs (`+`, `/` or padding appear).
fn non_canonical(index: usize, engine: &impl base64::Engine) -> (String, String) {
    for attempt in 0..200 {
        let header = json!({"alg": "HS256", "kid": "hs1", "typ": format!("JWT{}", "?".repeat(attempt % 4))});
        let payload = claims("alice", json!({"jti": format!("{attempt}{}", "~".repeat(attempt % 3))}));
        let [h, p] = [header, payload].map(|v| URL_SAFE_NO_PAD.encode(v.to_string()));
        let canonical = signed(&h, &p);
        let segment = canonical.split('.').nth(index).unwrap();
        let reencoded = engine.encode(URL_SAFE_NO_PAD.decode(segment).unwrap());
        if reencoded == segment {
            continue;
        }
        let variant = match index {
            0 => signed(&reencoded, &p),
            1 => signed(&h, &reencoded),
            _ => format!("{h}.{p}.{reencoded}"),
        };
        return (canonical, variant);
    }
    panic!("no token whose segment {index} encodes differently");
}

#[actix_web::test]
async fn non_canonical_base64url_is_refused() {
    let app = spawn_app().await;
    for (index, name) in [(0, "header"), (1, "payload"), (2, "signature")] {
        for (engine, how) in [(&STANDARD, "padded standard base64"), (&STANDARD_NO_PAD, "+ or /")] {
            let (canonical, variant) = non_canonical(index, engine);
            refused_everywhere(&app, &variant, "invalid_token", &format!("{name} in {how}")).await;
            accepted_everywhere(&app, &canonical, &format!("the canonical form of {name} in {how}")).await;
        }
        let (_, padded) = non_canonical(index, &URL_SAFE);
        refused_everywhere(&app, &padded, "invalid_token", &format!("{name} padded")).await;
    }
    // the same bytes with a set unused bit in the last character: 32 bytes are 43 characters,
    // whose last one carries 4 bits and 2 unused ones
    let token = sign("alice", 300, &[]);
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = alphabet.find(token.chars().last().unwrap()).unwrap();
    let mut trailing = token.clone();
    trailing.pop();
    trailing.push(alphabet.as_bytes()[last ^ 1] as char);
    refused_everywhere(&app, &trailing, "invalid_token", "a signature with trailing bits set").await;
}
