//! Verify-only mode with the keys fetched over HTTPS from a real provider (`idp.rs`): OpenID
//! discovery, every key type, rotation, refreshes paced by `Cache-Control` within the bounds, a
//! provider that is down or answers garbage, a flood of made-up `kid`s, an issuer that does not
//! match, and start-up with no provider.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authchat::startup::Application;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::helpers::*;
use crate::idp::{Health, Idp};

/// Keys fetched at most once a second, and kept an hour unless the provider says otherwise.
const FAST: &str = "jwks_min_refresh = \"1s\"\njwks_max_refresh = \"1h\"";

const FAILURES: &str = "authchat_jwks_refresh_failures_total";

/// `GET /api/me` with the token: the user, or the refusal's status and body.
async fn me(app: &TestApp, token: &str) -> Result<String, (u16, Value)> {
    let (status, body) = app.get_json("/api/me", Some(token)).await;
    match status {
        200 => Ok(body["user"].as_str().unwrap().to_owned()),
        _ => Err((status, body)),
    }
}

/// Asserts a refusal for a `kid` the server does not know: 401, `invalid_token`, saying so.
fn assert_unknown_kid(outcome: Result<String, (u16, Value)>) {
    let (status, body) = outcome.expect_err("refused");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_token", "{body}");
    assert!(body["message"].as_str().unwrap().contains("unknown kid"), "{body}");
}

/// The value of one series in the Prometheus text (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}

/// Waits for `check` to hold, failing after [`WAIT`] with `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn discovery_finds_the_key_set_and_every_key_type_verifies() {
    let keys = [
        ("rsa-1", Algorithm::RS256),
        ("p256-1", Algorithm::ES256),
        ("p384-1", Algorithm::ES384),
        ("ed-1", Algorithm::EdDSA),
    ];
    let idp = Idp::start("discovery", &keys).await;
    let app = spawn_app_with(&idp.discovery_config("jwks_min_refresh = \"1h\"\njwks_max_refresh = \"1h\"")).await;
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1), "one discovery, one key set");

    for (kid, alg) in keys {
        let mut ws = app.connect(&idp.token(kid, alg, "idp-user")).await;
        assert_eq!(ws.next_of("welcome").await["user"], "idp-user", "{kid}");
    }
    // A token shaped as Keycloak issues them: several audiences, claims authchat does not read.
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let claims = serde_json::json!({
        "sub": "f3b1c0de-0000-4000-8000-000000000001", "exp": now_s() + 300, "iat": now_s(), "iss": idp.issuer,
        "aud": ["authchat", "account"], "typ": "Bearer", "azp": "chat-web", "scope": "openid profile",
        "realm_access": {"roles": ["offline_access"]}, "preferred_username": "alice", "roles": ["admin"],
    });
    let keycloak = jsonwebtoken::encode(&header, &claims, &crate::jwks::private_key(Algorithm::RS256)).unwrap();
    assert_eq!(me(&app, &keycloak).await.as_deref(), Ok("f3b1c0de-0000-4000-8000-000000000001"));
    // The provider's encryption key (use: enc) is in the document but verifies nothing; within
    // jwks_min_refresh (1h here) a kid the server does not know makes it fetch nothing either.
    let enc = idp.token("enc-1", Algorithm::RS256, "u");
    expect_refused(&app.ws_url(&format!("/ws?token={enc}")), &[], 401, "invalid_token").await;
    assert_unknown_kid(me(&app, &enc).await);
    // A token from another issuer signed with a published key is still refused.
    let foreign = crate::jwks::issued_token("https://other.example", "ed-1", Algorithm::EdDSA, "u");
    assert_eq!(me(&app, &foreign).await.unwrap_err().1["message"], "the token is not valid: wrong issuer");
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1), "no fetch within jwks_min_refresh");

    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "authchat_jwks_fetches_total{reason=\"start\"}"), 1, "{metrics}");
    assert_eq!(metric(&metrics, FAILURES), 0);
    let res = app.post_login("alice").await;
    assert_eq!(res.status(), 404, "login is the provider's job");
}

#[actix_web::test]
async fn a_rotated_in_kid_is_fetched_once_and_a_rotated_out_one_is_refused() {
    let idp = Idp::start("rotation", &[("old", Algorithm::ES256)]).await;
    idp.set_cache_control(Some("public, max-age=3600"));
    let app = spawn_app_with(&idp.config(FAST)).await;
    let mut ws = app.connect(&idp.token("old", Algorithm::ES256, "alice")).await;
    ws.next_of("welcome").await;
    assert_eq!(idp.jwks_hits(), 1);

    // The provider publishes a new key and signs with it. Until jwks_min_refresh has passed
    // since the start-up fetch the kid is unknown (and nothing is fetched); then one fetch
    // brings it in.
    idp.publish(&[("old", Algorithm::ES256), ("new", Algorithm::EdDSA)]);
    let new = idp.token("new", Algorithm::EdDSA, "alice");
    let deadline = Instant::now() + WAIT;
    while let Err(refused) = me(&app, &new).await.map(|user| assert_eq!(user, "alice")) {
        assert_unknown_kid(Err(refused));
        assert!(Instant::now() < deadline, "the new kid was never fetched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(idp.jwks_hits(), 2, "exactly one fetch brought the new kid in");

    // Twenty tokens with a kid not seen yet, all at once, past jwks_min_refresh: one fetch
    // serves them all (the others wait for it rather than fetch again).
    idp.publish(&[("old", Algorithm::ES256), ("new", Algorithm::EdDSA), ("newer", Algorithm::RS256)]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let newer = idp.token("newer", Algorithm::RS256, "bob");
    let outcomes = futures_util::future::join_all((0..20).map(|_| me(&app, &newer))).await;
    assert!(outcomes.iter().all(|o| o.as_deref() == Ok("bob")), "{outcomes:?}");
    assert_eq!(idp.jwks_hits(), 3, "twenty tokens, one fetch");

    // The old key leaves the provider; SIGHUP fetches at once (cooldown or not), and from then
    // on its tokens are refused. The socket it opened keeps going until its own exp.
    idp.publish(&[("new", Algorithm::EdDSA), ("newer", Algorithm::RS256)]);
    app.reload.reload();
    let old = idp.token("old", Algorithm::ES256, "alice");
    eventually("the removed kid is refused", || async { me(&app, &old).await.is_err() }).await;
    assert_unknown_kid(me(&app, &old).await);
    assert_eq!(idp.jwks_hits(), 4);
    assert_eq!(me(&app, &new).await.as_deref(), Ok("alice"));
    ws.assert_alive().await;

    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "authchat_jwks_fetches_total{reason=\"unknown_kid\"}"), 2, "{metrics}");
    assert_eq!(metric(&metrics, "authchat_jwks_fetches_total{reason=\"sighup\"}"), 1, "{metrics}");
    assert_eq!(metric(&metrics, "authchat_jwks_fetches_total{reason=\"schedule\"}"), 0, "max-age=3600: not due");
}

#[actix_web::test]
async fn refreshes_follow_the_providers_max_age_within_the_bounds() {
    // (Cache-Control, min, max): each case refreshes every 2 s, for a different reason.
    let cases = [
        (Some("max-age=2"), "1s", "1h"),         // the provider's word
        (Some("max-age=3600"), "1s", "2s"),      // capped at jwks_max_refresh
        (Some("no-store"), "2s", "1h"),          // no lifetime: jwks_min_refresh
        (None, "2s", "1h"),                      // no header: jwks_min_refresh
        (Some("max-age=0, public"), "2s", "1h"), // below the minimum: jwks_min_refresh
    ];
    let mut running = Vec::new();
    for (i, (cache_control, min, max)) in cases.iter().enumerate() {
        let idp = Idp::start(&format!("pace-{i}"), &[("k", Algorithm::ES256)]).await;
        idp.set_cache_control(*cache_control);
        let extra = format!("jwks_min_refresh = \"{min}\"\njwks_max_refresh = \"{max}\"");
        let started = std::time::Instant::now();
        let app = spawn_app_with(&idp.config(&extra)).await;
        running.push((idp, app, started));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for ((idp, app, started), case) in running.iter().zip(cases) {
        // A fetch at start and one every 2 s since, counted from each app's own start (a busy
        // machine starts the five apps seconds apart), with a second of margin either side.
        let elapsed = started.elapsed().as_secs_f64();
        let (fewest, most) = (1 + ((elapsed - 1.0) / 2.0) as u64, 1 + ((elapsed + 1.0) / 2.0) as u64);
        let hits = idp.jwks_hits() as u64;
        assert!((fewest..=most).contains(&hits), "{case:?}: {hits} fetches in {elapsed:.1} s");
        let metrics = app.metrics().await;
        assert_eq!(metric(&metrics, "authchat_jwks_fetches_total{reason=\"schedule\"}"), hits - 1, "{case:?}");
    }
}

#[actix_web::test]
async fn a_provider_that_is_down_or_answers_garbage_leaves_the_keys_in_use() {
    let idp = Idp::start("down", &[("k1", Algorithm::ES256)]).await;
    idp.set_cache_control(Some("max-age=1"));
    let app = spawn_app_with(&idp.config(FAST)).await;
    let k1 = idp.token("k1", Algorithm::ES256, "alice");
    assert_eq!(me(&app, &k1).await.as_deref(), Ok("alice"));

    for health in [Health::Down, Health::Garbage, Health::NoSigningKey] {
        idp.set_health(health);
        let before = metric(&app.metrics().await, FAILURES);
        eventually(&format!("a failed fetch ({health:?})"), || async {
            metric(&app.metrics().await, FAILURES) > before
        })
        .await;
        assert_eq!(me(&app, &k1).await.as_deref(), Ok("alice"), "{health:?}: the last good keys stay");
        let mut ws = app.connect(&k1).await;
        assert_eq!(ws.next_of("welcome").await["user"], "alice", "{health:?}");
    }

    // Back, with another key: the next fetch replaces the set.
    idp.set_health(Health::Up);
    idp.publish(&[("k2", Algorithm::EdDSA)]);
    let k2 = idp.token("k2", Algorithm::EdDSA, "bob");
    eventually("the provider's new key is used", || async { me(&app, &k2).await.is_ok() }).await;
    assert_unknown_kid(me(&app, &k1).await);

    // Gone altogether (connections refused): the keys stay.
    idp.stop().await;
    let before = metric(&app.metrics().await, FAILURES);
    eventually("a failed fetch (stopped)", || async { metric(&app.metrics().await, FAILURES) > before }).await;
    assert_eq!(me(&app, &k2).await.as_deref(), Ok("bob"));
}

#[actix_web::test]
async fn a_flood_of_made_up_kids_fetches_at_most_once_per_min_refresh() {
    let idp = Idp::start("flood", &[("k1", Algorithm::ES256)]).await;
    idp.set_cache_control(Some("max-age=3600"));
    let began = Instant::now();
    let app = Arc::new(spawn_app_with(&idp.config(FAST)).await);
    let flood = Duration::from_millis(3500);
    let sent = Arc::new(AtomicUsize::new(0));
    // An attacker cannot sign, and need not: the kid is looked up before the signature.
    let signed = idp.token("k1", Algorithm::ES256, "mallory");
    let (_, rest) = signed.split_once('.').unwrap();
    let made_up = |n: usize| {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": format!("made-up-{n}")});
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
    };
    let next = Arc::new(AtomicUsize::new(0));
    let attackers = (0..8).map(|_| {
        let (app, sent, next) = (app.clone(), sent.clone(), next.clone());
        async move {
            while began.elapsed() < flood {
                assert_unknown_kid(me(&app, &made_up(next.fetch_add(1, Ordering::SeqCst))).await);
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    futures_util::future::join_all(attackers).await;
    let elapsed = began.elapsed();
    let sent = sent.load(Ordering::SeqCst);
    let fetches = idp.jwks_hits();
    println!("{sent} tokens with made-up kids in {elapsed:?}: {fetches} fetches (start-up included)");
    assert!(sent >= 200, "the flood was a flood: {sent}");
    // Fetches are at least a second apart, the first at start-up: in `elapsed` there is room
    // for at most 1 + floor(elapsed / 1 s) of them. The flood keeps asking, so it gets them.
    let most = 1 + elapsed.as_secs() as usize;
    assert!(fetches <= most, "{fetches} fetches in {elapsed:?}, at most {most}");
    assert!(fetches >= 3, "the flood was served a fetch per second: {fetches}");
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "authchat_jwks_fetches_total{reason=\"unknown_kid\"}"), fetches as u64 - 1);
    // The real key still works.
    assert_eq!(me(&app, &idp.token("k1", Algorithm::ES256, "alice")).await.as_deref(), Ok("alice"));
}

#[actix_web::test]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let idp = Idp::start("issuer", &[("k1", Algorithm::ES256)]).await;
    let named = format!("{}/", idp.issuer);
    idp.name_issuer(&named);
    let err = Application::build(test_settings(&idp.discovery_config(""))).await.err().expect("start-up refused");
    let text = format!("{err:#}");
    assert!(text.contains(&format!("names issuer {named:?}, but auth.issuer is {:?}", idp.issuer)), "{text}");
    assert!(text.contains("exactly"), "{text}");
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 0), "no key is taken from it");
}

#[actix_web::test]
async fn start_up_without_the_provider_fails_unless_a_cached_key_set_is_configured() {
    let build = |config: String| async move {
        let err = Application::build(test_settings(&config)).await.err().expect("start-up refused");
        format!("{err:#}")
    };
    // Nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("https://127.0.0.1:{port}/certs");
    let text = build(format!("[auth]\nissuer = \"https://127.0.0.1:{port}\"\njwks_url = \"{url}\"")).await;
    assert!(text.contains("could not be fetched") && text.contains(&url), "{text}");
    assert!(text.contains("auth.jwks_cache_file"), "the message says how to start anyway: {text}");

    // A provider whose certificate this server has no reason to trust.
    let idp = Idp::start("startup", &[("k1", Algorithm::ES256)]).await;
    let text = build(format!("[auth]\nissuer = \"{}\"\njwks_url = \"{}\"", idp.issuer, idp.jwks_url())).await;
    assert!(text.contains("UnknownIssuer") && text.contains("auth.jwks_ca_file"), "{text}");

    // With a cache file: the first server writes it; the provider goes down; a second server
    // starts from it and verifies.
    let dir = std::env::temp_dir().join(format!("authchat-jwks-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("jwks.json");
    let _ = std::fs::remove_file(&cache);
    let config = idp.config(&format!("jwks_cache_file = \"{}\"", cache.display()));
    let first = spawn_app_with(&config).await;
    let cached: Value = serde_json::from_slice(&std::fs::read(&cache).expect("the key set is cached")).unwrap();
    assert!(cached["keys"].as_array().unwrap().iter().any(|k| k["kid"] == "k1"), "{cached}");
    first.stop().await.unwrap();
    idp.set_health(Health::Down);
    let second = spawn_app_with(&config).await;
    assert_eq!(me(&second, &idp.token("k1", Algorithm::ES256, "alice")).await.as_deref(), Ok("alice"));
    let metrics = second.metrics().await;
    assert_eq!(metric(&metrics, FAILURES), 1, "{metrics}");
    assert_eq!(idp.jwks_hits(), 2);

    // A cache file that is not there does not help.
    let text = build(idp.config("jwks_cache_file = \"/nonexistent/jwks.json\"")).await;
    assert!(text.contains("auth.jwks_cache_file (/nonexistent/jwks.json) cannot be used: cannot read it"), "{text}");
    assert!(text.contains("answered 503"), "{text}");
}
