//! Refresh tokens with rotation and reuse detection, logout, one-time tickets.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// What login or refresh answered: status, body, and the refresh cookie's value and attributes.
struct Issued {
    status: u16,
    body: Value,
    cookie: Option<String>,
    attributes: String,
    cache_control: String,
}

async fn post_with_cookie(app: &TestApp, path: &str, cookie: Option<&str>, body: Option<Value>) -> Issued {
    let mut req = app.http.post(app.url(path));
    if let Some(cookie) = cookie {
        req = req.header("Cookie", format!("authchat_refresh={cookie}"));
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let set_cookie = res.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let cookie = set_cookie.strip_prefix("authchat_refresh=").map(|rest| rest.split(';').next().unwrap().to_owned());
    let cache_control = res.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    Issued {
        status: res.status().as_u16(),
        body: res.json().await.unwrap_or(Value::Null),
        cookie,
        attributes: set_cookie,
        cache_control,
    }
}

async fn login(app: &TestApp, user: &str) -> Issued {
    let body = json!({"username": user, "password": format!("{user}-password")});
    post_with_cookie(app, "/api/login", None, Some(body)).await
}

async fn refresh(app: &TestApp, cookie: &str) -> Issued {
    post_with_cookie(app, "/api/token/refresh", Some(cookie), None).await
}

#[actix_web::test]
async fn login_sets_a_strict_httponly_refresh_cookie() {
    let app = spawn_app().await;
    let issued = login(&app, "alice").await;
    assert_eq!(issued.status, 200);
    assert_eq!(issued.cache_control, "no-store");
    let cookie = issued.cookie.expect("a refresh cookie");
    assert!(cookie.len() >= 43, "256 random bits, base64url: {}", cookie.len());
    let attrs = issued.attributes.to_ascii_lowercase();
    for attr in ["httponly", "samesite=strict", "path=/api/token", "max-age=604800"] {
        assert!(attrs.contains(attr), "{attr} missing in {attrs}");
    }
    assert!(!attrs.contains("secure"), "no TLS and secure_cookies off: {attrs}");

    let app = spawn_app_with("[auth]\nsecure_cookies = true").await;
    assert!(login(&app, "alice").await.attributes.to_ascii_lowercase().contains("secure"));
}

async fn refresh_rotates_and_reuse_revokes_the_whole_family(store: &str) {
    let app = spawn_app_with(store).await;
    let first = login(&app, "alice").await;
    let cookie1 = first.cookie.unwrap();
    let mut ws = app.connect(first.body["access_token"].as_str().unwrap()).await;
    ws.next_of("welcome").await;

    let second = refresh(&app, &cookie1).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.cache_control, "no-store");
    let cookie2 = second.cookie.expect("rotated");
    assert_ne!(cookie2, cookie1);
    let access2 = second.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(second.body["token_type"], "Bearer");
    assert_eq!(app.get_json("/api/me", Some(&access2)).await.0, 200);

    // the old cookie again: theft is assumed, the family dies
    let replay = refresh(&app, &cookie1).await;
    assert_eq!((replay.status, replay.body["error"].as_str()), (401, Some("refresh_token_reused")));
    assert_eq!(ws.expect_close().await, (4002, "refresh token reused".into()));
    let after = refresh(&app, &cookie2).await;
    assert_eq!((after.status, after.body["error"].as_str()), (401, Some("invalid_refresh_token")));
    let (status, body) = app.get_json("/api/me", Some(&access2)).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("token_revoked")));

    // another login of the same user is a different family and unaffected
    let other = login(&app, "alice").await;
    assert_eq!(refresh(&app, &other.cookie.unwrap()).await.status, 200);
    let missing = post_with_cookie(&app, "/api/token/refresh", None, None).await;
    assert_eq!((missing.status, missing.body["error"].as_str()), (401, Some("invalid_refresh_token")));
}

#[actix_web::test]
async fn logout_ends_the_login_everywhere() {
    let app = spawn_app().await;
    let issued = login(&app, "bob").await;
    let (cookie, access) = (issued.cookie.unwrap(), issued.body["access_token"].as_str().unwrap().to_owned());
    let mut ws = app.connect(&access).await;
    ws.next_of("welcome").await;
    let keep = login(&app, "bob").await;
    let mut other = app.connect(keep.body["access_token"].as_str().unwrap()).await;
    other.next_of("welcome").await;

    let res = app.http.post(app.url("/api/logout")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cleared = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cleared.starts_with("authchat_refresh=;") && cleared.to_ascii_lowercase().contains("max-age=0"),
        "{cleared}"
    );
    assert_eq!(ws.expect_close().await, (4002, "logged out".into()));
    assert_eq!(refresh(&app, &cookie).await.body["error"], "invalid_refresh_token");
    assert_eq!(app.get_json("/api/me", Some(&access)).await.1["error"], "token_revoked");
    other.assert_alive().await;

    // the cookie alone also logs out (the browser sends it to /api/token/…)
    let gone = post_with_cookie(&app, "/api/token/logout", keep.cookie.as_deref(), None).await;
    assert_eq!(gone.status, 200);
    assert_eq!(other.expect_close().await.0, 4002);
}

#[actix_web::test]
async fn an_operator_revoke_also_stops_refresh() {
    let app = spawn_app().await;
    let issued = login(&app, "alice").await;
    let admin = app.login("admin").await;
    assert_eq!(app.send_json(Method::POST, "/admin/users/alice/revoke", Some(&admin)).await.0, 200);
    let after = refresh(&app, &issued.cookie.unwrap()).await;
    assert_eq!((after.status, after.body["error"].as_str()), (401, Some("invalid_refresh_token")));
}

/// A body too big to read still gets its answer. actix keeps reading (and discarding) what is
/// left for `client_disconnect_timeout` before it closes; closing at once (with bytes unread)
/// resets the connection, and a client still sending sees an error instead of the refusal.
/// This guards any change to that linger (issue 16's TCP-release target).
#[actix_web::test]
async fn a_body_too_big_to_read_still_gets_its_refusal() {
    let app = spawn_app().await;
    for size in [20_000, 2_000_000] {
        let body = format!("{{\"username\":\"{}\",\"password\":\"x\"}}", "a".repeat(size));
        for _ in 0..3 {
            let res = app
                .http
                .post(app.url("/api/login"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("a {size}-byte body got no answer: {e}"));
            assert_eq!(res.status(), 400, "{size} bytes");
            let answer: Value = res.json().await.unwrap();
            assert_eq!(answer["error"], "bad_json", "{size} bytes: {answer}");
        }
    }
}

async fn new_ticket(app: &TestApp, token: &str) -> (String, u64) {
    let (status, body) = app.send_json(Method::POST, "/api/ticket", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    (body["ticket"].as_str().unwrap().to_owned(), body["expires_in"].as_u64().unwrap())
}

async fn a_ticket_opens_one_socket_once(store: &str) {
    let app = spawn_app_with(store).await;
    let access = app.login("alice").await;
    let (ticket, expires_in) = new_ticket(&app, &access).await;
    assert_eq!(expires_in, 30);
    assert!(ticket.len() >= 43);
    let url = app.ws_url(&format!("/ws?ticket={ticket}"));
    let (mut ws, _) = connect(&url, &[]).await.expect("the ticket is accepted");
    let welcome = ws.next_of("welcome").await;
    assert_eq!((welcome["user"].as_str(), welcome["auth"].as_str()), (Some("alice"), Some("ticket")));
    let (_, me) = app.get_json("/api/me", Some(&access)).await;
    assert_eq!(welcome["expires_at"], me["expires_at"], "the socket lives as long as the access token");

    expect_refused(&url, &[], 401, "invalid_ticket").await;
    // a ticket wins over any other credential, and a bad one is not rescued by them
    let bearer = format!("Bearer {access}");
    expect_refused(&url, &[("Authorization", &bearer)], 401, "invalid_ticket").await;

    let (status, body) = app.send_json(Method::POST, "/api/ticket", None).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("missing_credentials")));
}

#[actix_web::test]
async fn a_ticket_expires() {
    let app = spawn_app_with("[auth]\nticket_ttl = \"1s\"").await;
    let access = app.login("alice").await;
    let (ticket, expires_in) = new_ticket(&app, &access).await;
    assert_eq!(expires_in, 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    expect_refused(&app.ws_url(&format!("/ws?ticket={ticket}")), &[], 401, "invalid_ticket").await;
}

#[actix_web::test]
async fn a_ticket_never_outlives_its_access_token() {
    let app = spawn_app().await;
    let short = sign("alice", 3, &[]);
    let (_, expires_in) = new_ticket(&app, &short).await;
    assert!(expires_in <= 3, "{expires_in}");
}

/// The token-lifecycle behaviour, on the memory store and on a real Redis.
mod on_both_stores {
    use super::*;

    fn redis_config(redis: &RedisServer) -> String {
        format!("[store]\nbackend = \"redis\"\n[redis]\nurl = \"{}\"", redis.url())
    }

    #[actix_web::test]
    async fn refresh_rotation_and_reuse_in_memory() {
        refresh_rotates_and_reuse_revokes_the_whole_family("").await;
    }

    #[actix_web::test]
    async fn refresh_rotation_and_reuse_in_redis() {
        let redis = RedisServer::start().await;
        refresh_rotates_and_reuse_revokes_the_whole_family(&redis_config(&redis)).await;
    }

    #[actix_web::test]
    async fn tickets_in_memory() {
        a_ticket_opens_one_socket_once("").await;
    }

    #[actix_web::test]
    async fn tickets_in_redis() {
        let redis = RedisServer::start().await;
        a_ticket_opens_one_socket_once(&redis_config(&redis)).await;
    }

    #[actix_web::test]
    async fn with_redis_refresh_tokens_tickets_and_revocations_survive_a_restart() {
        let redis = RedisServer::start().await;
        let config = redis_config(&redis);
        let app = spawn_app_with(&config).await;
        let issued = login(&app, "alice").await;
        let access = issued.body["access_token"].as_str().unwrap().to_owned();
        let (ticket, _) = new_ticket(&app, &access).await;
        let admin = app.login("admin").await;
        let bob = app.login("bob").await;
        assert_eq!(app.send_json(Method::POST, "/admin/users/bob/revoke", Some(&admin)).await.0, 200);
        app.stop().await.unwrap();

        let app = spawn_app_with(&config).await;
        let again = refresh(&app, issued.cookie.as_deref().unwrap()).await;
        assert_eq!(again.status, 200, "the refresh token outlived the process: {}", again.body);
        let (mut ws, _) = connect(&app.ws_url(&format!("/ws?ticket={ticket}")), &[]).await.expect("the ticket too");
        ws.next_of("welcome").await;
        assert_eq!(app.get_json("/api/me", Some(&bob)).await.1["error"], "token_revoked", "and the revocation");
    }
}
