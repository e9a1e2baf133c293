//! Session mode: one behavioural suite, run against the memory store and a real Redis; then
//! what only Redis has (other processes, several nodes, faults).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

#[derive(Clone, Copy)]
enum Backend {
    Memory,
    Redis,
}

/// A session-mode server on the given store (and the Redis it uses, kept alive with it).
async fn session_app(backend: Backend, extra: &str) -> (TestApp, Option<RedisServer>) {
    let redis = match backend {
        Backend::Memory => None,
        Backend::Redis => Some(RedisServer::start().await),
    };
    let store = match &redis {
        None => "[store]\nbackend = \"memory\"\n".to_owned(),
        Some(r) => format!("[store]\nbackend = \"redis\"\n[redis]\nurl = \"{}\"\n", r.url()),
    };
    let app = spawn_app_with(&format!("[auth]\nmode = \"session\"\n{store}{extra}")).await;
    (app, redis)
}

/// Logs in; answers the cookie value, the Set-Cookie attributes and the body.
async fn login(app: &TestApp, user: &str) -> (String, String, Value) {
    let res = app.post_login(user).await;
    assert_eq!(res.status(), 200);
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    let value = set_cookie.strip_prefix("authchat_session=").unwrap().split(';').next().unwrap().to_owned();
    (value, set_cookie, res.json().await.unwrap())
}

async fn with_cookie(app: &TestApp, method: Method, path: &str, cookie: &str) -> (u16, Value) {
    let res = app
        .http
        .request(method, app.url(path))
        .header("Cookie", format!("authchat_session={cookie}"))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

async fn open_socket(app: &TestApp, cookie: &str) -> WsClient {
    let header = format!("authchat_session={cookie}");
    let (mut ws, _) = connect(&app.ws_url("/ws"), &[("Cookie", &header)]).await.expect("cookie accepted");
    let welcome = ws.next_of("welcome").await;
    assert_eq!(welcome["auth"], "session");
    ws
}

/// Waits for the close and answers its code and how long it took.
async fn close_timed(ws: &mut WsClient) -> (u16, Duration) {
    let started = Instant::now();
    let (code, _) = ws.expect_close().await;
    (code, started.elapsed())
}

async fn login_cookie_me_and_config(backend: Backend) {
    let (app, _redis) = session_app(backend, "").await;
    let (cookie, attributes, body) = login(&app, "alice").await;
    assert!(cookie.len() >= 43, "256 random bits");
    let attrs = attributes.to_ascii_lowercase();
    for attr in ["httponly", "samesite=lax", "path=/"] {
        assert!(attrs.contains(attr), "{attr} missing: {attrs}");
    }
    assert_eq!((body["mode"].as_str(), body["user"].as_str()), (Some("session"), Some("alice")));
    assert!(body.get("access_token").is_none());
    let (status, me) = with_cookie(&app, Method::GET, "/api/me", &cookie).await;
    assert_eq!((status, me["user"].as_str()), (200, Some("alice")));
    assert_eq!(app.get_json("/api/config", None).await.1["mode"], "session");
    let (status, body) = with_cookie(&app, Method::POST, "/api/token/refresh", &cookie).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_in_jwt_mode")));
    let (status, body) = with_cookie(&app, Method::GET, "/api/me", "forged-cookie-value").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_session")));
}

async fn the_socket_authenticates_by_cookie_only(backend: Backend) {
    let (app, _redis) = session_app(backend, "").await;
    let (cookie, _, _) = login(&app, "bob").await;
    let mut ws = open_socket(&app, &cookie).await;
    ws.assert_alive().await;
    expect_refused(&app.ws_url("/ws"), &[], 401, "missing_credentials").await;
    expect_refused(&app.ws_url("/ws"), &[("Cookie", "authchat_session=nope")], 401, "invalid_session").await;
    // a bearer token is no way in, in session mode
    let bearer = format!("Bearer {}", sign("bob", 60, &[]));
    expect_refused(&app.ws_url("/ws"), &[("Authorization", &bearer)], 401, "missing_credentials").await;
    let header = format!("authchat_session={cookie}");
    let evil = [("Cookie", header.as_str()), ("Origin", "https://evil.example")];
    expect_refused(&app.ws_url("/ws"), &evil, 403, "origin_not_allowed").await;
}

async fn logout_closes_the_sessions_sockets_at_once(backend: Backend) {
    let (app, _redis) = session_app(backend, "").await;
    let (cookie, _, _) = login(&app, "alice").await;
    let (other_cookie, _, _) = login(&app, "alice").await;
    let mut ws = open_socket(&app, &cookie).await;
    let mut other = open_socket(&app, &other_cookie).await;
    let (status, _) = with_cookie(&app, Method::POST, "/api/logout", &cookie).await;
    assert_eq!(status, 200);
    let (code, took) = close_timed(&mut ws).await;
    assert_eq!(code, 4002);
    assert!(took < Duration::from_secs(1), "closed {took:?} after logout");
    assert_eq!(with_cookie(&app, Method::GET, "/api/me", &cookie).await.0, 401);
    other.assert_alive().await;
}

async fn operators_list_end_and_revoke_sessions(backend: Backend) {
    let (app, _redis) = session_app(backend, "").await;
    let (admin, _, _) = login(&app, "admin").await;
    let (alice1, _, _) = login(&app, "alice").await;
    let (alice2, _, _) = login(&app, "alice").await;
    let (bob, _, _) = login(&app, "bob").await;
    let mut ws1 = open_socket(&app, &alice1).await;
    let mut ws2 = open_socket(&app, &alice2).await;
    let mut ws_bob = open_socket(&app, &bob).await;

    let (status, body) = with_cookie(&app, Method::GET, "/admin/sessions?user=alice", &admin).await;
    assert_eq!(status, 200, "{body}");
    let rows = body["sessions"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["user"] == "alice" && r["id"].as_str().unwrap().len() == 64));
    assert!(!body.to_string().contains(&alice1), "the admin API shows ids, never cookie values");
    let (_, all) = with_cookie(&app, Method::GET, "/admin/sessions", &admin).await;
    assert_eq!(all["sessions"].as_array().unwrap().len(), 4);
    let (status, _) = with_cookie(&app, Method::GET, "/admin/sessions", &bob).await;
    assert_eq!(status, 403);

    let first = rows[0]["id"].as_str().unwrap();
    let (status, _) = with_cookie(&app, Method::DELETE, &format!("/admin/sessions/{first}"), &admin).await;
    assert_eq!(status, 200);
    let (status, _) = with_cookie(&app, Method::DELETE, &format!("/admin/sessions/{first}"), &admin).await;
    assert_eq!(status, 404);
    let ended_first = close_timed(&mut ws1).await;
    assert_eq!(ended_first.0, 4002);

    let (status, body) = with_cookie(&app, Method::POST, "/admin/users/alice/revoke", &admin).await;
    assert_eq!((status, body["sessions_ended"].as_u64()), (200, Some(1)));
    let (code, took) = close_timed(&mut ws2).await;
    assert_eq!(code, 4002, "a session socket ends with its session");
    assert!(took < Duration::from_secs(1));
    ws_bob.assert_alive().await;

    // a cookie-authenticated admin request from a foreign page is refused (CSRF)
    let res = app
        .http
        .delete(app.url("/admin/users/bob/connections"))
        .header("Cookie", format!("authchat_session={admin}"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    ws_bob.assert_alive().await;
}

async fn idle_sessions_end_and_activity_keeps_them(backend: Backend) {
    let config = "[session]\nidle_timeout = \"2s\"\nabsolute_lifetime = \"1h\"\ntouch_interval = \"200ms\"";
    let (app, _redis) = session_app(backend, config).await;
    let (idle_cookie, _, _) = login(&app, "alice").await;
    let (busy_cookie, _, _) = login(&app, "bob").await;
    let mut idle = open_socket(&app, &idle_cookie).await;
    let mut busy = open_socket(&app, &busy_cookie).await;
    let started = Instant::now();
    // bob talks every 400 ms; alice says nothing
    let (code, took) = loop {
        busy.send(json!({"type":"join","room":"keepalive"})).await;
        busy.next_of("joined").await;
        if let Some(event) = idle.recv_within(Duration::from_millis(400)).await {
            match event {
                Event::Close(code, _) => break (code, started.elapsed()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(started.elapsed() < WAIT, "the idle session never ended");
    };
    assert_eq!(code, 4002);
    assert!(took >= Duration::from_millis(1500), "ended too early: {took:?}");
    assert!(took < Duration::from_millis(2000 + 1500), "ended too late: {took:?}");
    assert_eq!(with_cookie(&app, Method::GET, "/api/me", &idle_cookie).await.0, 401);
    // bob was active throughout, past his idle timeout
    busy.assert_alive().await;
    assert_eq!(with_cookie(&app, Method::GET, "/api/me", &busy_cookie).await.0, 200);
}

async fn the_absolute_lifetime_ends_even_a_busy_session(backend: Backend) {
    let config = "[session]\nidle_timeout = \"3s\"\nabsolute_lifetime = \"3s\"\ntouch_interval = \"200ms\"";
    let (app, _redis) = session_app(backend, config).await;
    let (cookie, _, body) = login(&app, "alice").await;
    let expires_ms = body["expires_at"].as_u64().unwrap() * 1000;
    let mut ws = open_socket(&app, &cookie).await;
    let code = loop {
        ws.send(json!({"type":"join","room":"busy"})).await;
        match ws.recv().await {
            Event::Json(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            Event::Close(code, _) => break code,
            Event::Ended => panic!("no close frame"),
        }
    };
    assert_eq!(code, 4002);
    assert!(now_ms() + 50 >= expires_ms, "closed before the absolute end");
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[actix_web::test] async fn $name() { super::$name(super::Backend::Memory).await } )*
        }
        mod redis {
            $( #[actix_web::test] async fn $name() { super::$name(super::Backend::Redis).await } )*
        }
    };
}

on_both_stores!(
    login_cookie_me_and_config,
    the_socket_authenticates_by_cookie_only,
    logout_closes_the_sessions_sockets_at_once,
    operators_list_end_and_revoke_sessions,
    idle_sessions_end_and_activity_keeps_them,
    the_absolute_lifetime_ends_even_a_busy_session,
);

/// Issue 10: a session socket that presented a JWT with `reauth` used to be renewed onto the
/// token and detached from its session, so neither logout nor an operator could close it.
#[actix_web::test]
async fn a_session_socket_refuses_reauth_and_stays_bound_to_its_session() {
    let (app, _redis) = session_app(Backend::Memory, "").await;
    let (admin, _, _) = login(&app, "admin").await;
    let (first, _, _) = login(&app, "alice").await;
    let (second, _, _) = login(&app, "alice").await;
    let mut ws1 = open_socket(&app, &first).await;
    let mut ws2 = open_socket(&app, &second).await;
    for ws in [&mut ws1, &mut ws2] {
        ws.send(json!({"type":"reauth","token": sign("alice", 300, &[])})).await;
        let refused = ws.next_json().await;
        assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("reauth_failed")));
        assert!(refused["message"].as_str().unwrap().contains("session"), "says why: {refused}");
        ws.assert_alive().await;
    }
    // both ways of ending a session still close the socket
    assert_eq!(with_cookie(&app, Method::POST, "/api/logout", &first).await.0, 200);
    let (code, took) = close_timed(&mut ws1).await;
    assert_eq!(code, 4002);
    assert!(took < Duration::from_secs(1), "{took:?}");
    let id = authchat::auth::sessions::Sessions::id_of(&second);
    assert_eq!(with_cookie(&app, Method::DELETE, &format!("/admin/sessions/{id}"), &admin).await.0, 200);
    let (code, took) = close_timed(&mut ws2).await;
    assert_eq!(code, 4002);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// Issue 10: tickets are a JWT-mode route; in session mode it is not there, whoever asks.
#[actix_web::test]
async fn tickets_answer_404_in_session_mode() {
    let (app, _redis) = session_app(Backend::Memory, "").await;
    let (cookie, _, _) = login(&app, "alice").await;
    let (status, body) = with_cookie(&app, Method::POST, "/api/ticket", &cookie).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_in_jwt_mode")), "{body}");
    let (status, body) = app.send_json(Method::POST, "/api/ticket", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_in_jwt_mode")), "{body}");
}

/// Issue 10: in session mode only the session cookie authenticates, on REST as at the upgrade.
#[actix_web::test]
async fn bearer_tokens_do_not_authenticate_rest_in_session_mode() {
    let (app, _redis) = session_app(Backend::Memory, "").await;
    let (status, body) = app.get_json("/api/me", Some(&sign("alice", 300, &[]))).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("missing_credentials")), "{body}");
    let admin = sign("root", 300, &["admin"]);
    let (status, body) = app.get_json("/admin/connections", Some(&admin)).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("missing_credentials")), "{body}");
    // the cookie still works, and wins over a bearer token sent alongside
    let (cookie, _, _) = login(&app, "bob").await;
    let res = app
        .http
        .get(app.url("/api/me"))
        .header("Cookie", format!("authchat_session={cookie}"))
        .bearer_auth(sign("alice", 300, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["user"], "bob");
}

/// Issue 10: logout with the session cookie from a foreign page is a cross-site request like
/// any other: 403, and the session lives on. The message speaks of requests, not WebSockets.
#[actix_web::test]
async fn a_cross_site_logout_is_refused_and_the_session_lives_on() {
    let (app, _redis) = session_app(Backend::Memory, "").await;
    let (cookie, _, _) = login(&app, "alice").await;
    let mut ws = open_socket(&app, &cookie).await;
    for (method, path) in [(Method::POST, "/api/logout"), (Method::DELETE, "/admin/users/bob/connections")] {
        let res = app
            .http
            .request(method, app.url(path))
            .header("Cookie", format!("authchat_session={cookie}"))
            .header("Origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "origin_not_allowed", "{path}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(!message.contains("WebSocket") && message.contains("cross-site"), "{path}: {message}");
    }
    assert_eq!(with_cookie(&app, Method::GET, "/api/me", &cookie).await.0, 200);
    ws.assert_alive().await;
    // the same logout from an allowed page (here: no Origin) works
    assert_eq!(with_cookie(&app, Method::POST, "/api/logout", &cookie).await.0, 200);
    assert_eq!(ws.expect_close().await.0, 4002);
}

/// Issue 10: the cookie that clears the session lost `Secure`; a removal must carry the
/// attributes of the cookie it clears.
#[actix_web::test]
async fn logout_clears_the_session_cookie_with_the_attributes_it_was_set_with() {
    let app = spawn_app_with("[auth]\nmode = \"session\"\nsecure_cookies = true").await;
    let (cookie, set, _) = login(&app, "alice").await;
    let res = app
        .http
        .post(app.url("/api/logout"))
        .header("Cookie", format!("authchat_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cleared = res.headers()["set-cookie"].to_str().unwrap().to_ascii_lowercase();
    assert!(cleared.starts_with("authchat_session=;") && cleared.contains("max-age=0"), "{cleared}");
    for attr in ["httponly", "samesite=lax", "path=/", "secure"] {
        assert!(set.to_ascii_lowercase().contains(attr), "login: {attr} missing: {set}");
        assert!(cleared.contains(attr), "logout: {attr} missing: {cleared}");
    }
}

#[actix_web::test]
async fn a_session_key_deleted_by_another_process_closes_its_sockets() {
    let (app, redis) = session_app(Backend::Redis, "").await;
    let redis = redis.unwrap();
    let (cookie, _, _) = login(&app, "alice").await;
    let mut ws = open_socket(&app, &cookie).await;
    let id = authchat::auth::sessions::Sessions::id_of(&cookie);
    let mut other_process = redis.client().await;
    let deleted: i64 =
        ::redis::cmd("DEL").arg(format!("authchat:session:{id}")).query_async(&mut other_process).await.unwrap();
    assert_eq!(deleted, 1);
    let (code, took) = close_timed(&mut ws).await;
    assert_eq!(code, 4002);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[actix_web::test]
async fn two_nodes_share_sessions_and_endings() {
    let (node_a, redis) = session_app(Backend::Redis, "").await;
    let redis = redis.unwrap();
    let node_b = spawn_app_with(&format!(
        "[auth]\nmode = \"session\"\n[store]\nbackend = \"redis\"\n[redis]\nurl = \"{}\"\n[server]\nnode_id = \"node-b\"",
        redis.url()
    ))
    .await;
    let (cookie, _, _) = login(&node_a, "alice").await;
    let mut on_b = open_socket(&node_b, &cookie).await;
    let (status, _) = with_cookie(&node_a, Method::POST, "/api/logout", &cookie).await;
    assert_eq!(status, 200);
    let (code, took) = close_timed(&mut on_b).await;
    assert_eq!(code, 4002);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[actix_web::test]
async fn redis_unreachable_at_start_names_redis_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!("[store]\nbackend = \"redis\"\n[redis]\nurl = \"redis://:hunter2@127.0.0.1:{port}\"");
    let err = authchat::startup::Application::build(test_settings(&config)).await.err().expect("refused");
    let text = format!("{err:#}");
    assert!(text.contains("redis.url"), "{text}");
    assert!(!text.contains("hunter2"), "the URL's password must not be shown: {text}");
}

#[actix_web::test]
async fn losing_redis_fails_closed_and_recovers_by_itself() {
    let (app, redis) = session_app(Backend::Redis, "").await;
    let mut redis = redis.unwrap();
    let (cookie, _, _) = login(&app, "alice").await;
    let (bob_cookie, _, _) = login(&app, "bob").await;
    let mut alice = open_socket(&app, &cookie).await;
    let mut bob = open_socket(&app, &bob_cookie).await;
    alice.send(json!({"type":"join","room":"outage"})).await;
    alice.next_of("joined").await;
    bob.send(json!({"type":"join","room":"outage"})).await;
    bob.next_of("joined").await;

    redis.stop();
    let res = app.post_login("alice").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "session_store_unavailable");
    let header = format!("authchat_session={cookie}");
    expect_refused(&app.ws_url("/ws"), &[("Cookie", &header)], 503, "session_store_unavailable").await;
    assert_eq!(app.get_json("/readyz", None).await.0, 503);
    // sockets that are open stay open; a message cannot be sent (rooms are shared through
    // Redis), and the sender is told so rather than it being dropped or delivered here only
    alice.send(json!({"type":"send","room":"outage","text":"not now","ref":"o1"})).await;
    let refused = alice.next_of("error").await;
    assert_eq!((refused["code"].as_str(), refused["ref"].as_str()), (Some("unavailable"), Some("o1")), "{refused}");
    assert!(bob.recv_within(Duration::from_millis(300)).await.is_none(), "nothing delivered locally");
    // a room already joined answers from this node's copy; a new one needs Redis
    bob.send(json!({"type":"join","room":"outage"})).await;
    assert_eq!(bob.next_of("joined").await["room"], "outage");
    bob.send(json!({"type":"join","room":"elsewhere","ref":"j1"})).await;
    assert_eq!(bob.next_of("error").await["code"], "unavailable");

    redis.restart().await;
    let deadline = Instant::now() + WAIT;
    while app.get_json("/readyz", None).await.0 != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the session Redis kept is still good, and new logins work
    assert_eq!(with_cookie(&app, Method::GET, "/api/me", &cookie).await.0, 200);
    let _ = open_socket(&app, &cookie).await;
    login(&app, "bob").await;
    alice.assert_alive().await;
    // and messages flow again
    alice.send(json!({"type":"send","room":"outage","text":"back","ref":"o2"})).await;
    assert_eq!(bob.next_of("message").await["text"], "back");
    // endings are noticed again after the reconnect
    with_cookie(&app, Method::POST, "/api/logout", &bob_cookie).await;
    assert_eq!(bob.expect_close().await.0, 4002);
}

/// Several nodes on one Redis: ending a session through one node, or logging out there, closes
/// its sockets on the other at once (4002).
#[actix_web::test]
async fn ending_a_session_on_one_node_closes_its_sockets_on_another() {
    let redis = RedisServer::start().await;
    let shared = format!(
        "[auth]\nmode = \"session\"\n[store]\nbackend = \"redis\"\n[redis]\nurl = \"{}\"\n\
         [cluster]\nheartbeat_interval = \"200ms\"\nnode_timeout = \"2s\"\n",
        redis.url()
    );
    let a = spawn_app_with(&format!("[server]\nnode_id = \"a\"\n{shared}")).await;
    let b = spawn_app_with(&format!("[server]\nnode_id = \"b\"\n{shared}")).await;
    let (admin, _, _) = login(&a, "admin").await;
    let (alice, _, _) = login(&a, "alice").await;
    let (bob, _, _) = login(&a, "bob").await;
    let mut alice_on_b = open_socket(&b, &alice).await;
    let mut bob_on_b = open_socket(&b, &bob).await;

    let (_, body) = with_cookie(&a, Method::GET, "/admin/sessions?user=alice", &admin).await;
    let id = body["sessions"][0]["id"].as_str().expect("alice's session").to_owned();
    let (status, _) = with_cookie(&a, Method::DELETE, &format!("/admin/sessions/{id}"), &admin).await;
    assert_eq!(status, 200);
    let (code, took) = close_timed(&mut alice_on_b).await;
    assert_eq!(code, 4002, "ended through node a, closed on node b (after {took:?})");

    let (status, _) = with_cookie(&a, Method::POST, "/api/logout", &bob).await;
    assert_eq!(status, 200);
    assert_eq!(close_timed(&mut bob_on_b).await.0, 4002, "logged out through node a");
}
