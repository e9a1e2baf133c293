//! The credential is checked before the upgrade: every path, every refusal reason.

use std::time::Instant;

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn subprotocol_bearer_is_accepted_and_never_echoed() {
    let app = spawn_app().await;
    let token = sign("alice", 300, &[]);
    let offered = format!("authchat.v1, authchat.bearer.{token}");
    let (mut ws, response) =
        connect(&app.ws_url("/ws"), &[("Sec-WebSocket-Protocol", &offered)]).await.expect("accepted");
    let answered: Vec<_> =
        response.headers().get_all("sec-websocket-protocol").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(answered, ["authchat.v1"]);
    let welcome = ws.next_of("welcome").await;
    assert_eq!(welcome["user"], "alice");
    assert_eq!(welcome["auth"], "subprotocol");
    assert_eq!(welcome["node"], "test-node");
    assert!(welcome["boot"].as_str().is_some_and(|b| !b.is_empty()), "a boot id: {welcome}");
    assert!(welcome["conn_id"].as_u64().is_some());
    assert!(welcome["expires_at"].as_u64().unwrap() > now_s());
}

#[actix_web::test]
async fn bearer_subprotocol_without_the_app_protocol_is_refused() {
    let app = spawn_app().await;
    let offered = format!("authchat.bearer.{}", sign("alice", 300, &[]));
    expect_refused(&app.ws_url("/ws"), &[("Sec-WebSocket-Protocol", &offered)], 400, "protocol_required").await;
}

#[actix_web::test]
async fn authorization_header_and_query_token_are_accepted() {
    let app = spawn_app().await;
    let bearer = format!("Bearer {}", sign("bob", 300, &[]));
    let (mut ws, _) = connect(&app.ws_url("/ws"), &[("Authorization", &bearer)]).await.expect("accepted");
    assert_eq!(ws.next_of("welcome").await["auth"], "header");

    let mut ws = app.connect(&sign("carol", 300, &[])).await;
    let welcome = ws.next_of("welcome").await;
    assert_eq!(welcome["auth"], "query");
    assert_eq!(welcome["user"], "carol");
}

#[actix_web::test]
async fn the_first_credential_found_wins_even_when_it_is_bad() {
    let app = spawn_app().await;
    // A bad subprotocol bearer is not rescued by a good Authorization header.
    let good = format!("Bearer {}", sign("bob", 300, &[]));
    let headers =
        [("Sec-WebSocket-Protocol", "authchat.v1, authchat.bearer.not-a-jwt"), ("Authorization", good.as_str())];
    expect_refused(&app.ws_url("/ws"), &headers, 401, "invalid_token").await;
}

#[actix_web::test]
async fn each_refusal_reason_has_its_status_and_code() {
    let app = spawn_app_with("[auth]\nfirst_message = false").await;
    let url = app.ws_url("/ws");
    expect_refused(&url, &[], 401, "missing_credentials").await;
    expect_refused(&app.ws_url("/ws?token=garbage"), &[], 401, "invalid_token").await;
    let expired =
        sign_claims(json!({"sub":"alice","exp": now_s() - 10,"iat": now_s() - 100,"iss":"authchat","aud":"authchat"}));
    expect_refused(&app.ws_url(&format!("/ws?token={expired}")), &[], 401, "token_expired").await;
    let wrong_secret = {
        let claims = json!({"sub":"alice","exp": now_s() + 60,"iss":"authchat","aud":"authchat"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-some-other-secret").unwrap(),
        )
        .unwrap()
    };
    expect_refused(&app.ws_url(&format!("/ws?token={wrong_secret}")), &[], 401, "invalid_token").await;
    let token = sign("alice", 300, &[]);
    expect_refused(
        &app.ws_url(&format!("/ws?token={token}")),
        &[("Origin", "https://evil.example")],
        403,
        "origin_not_allowed",
    )
    .await;

    // revoked: an admin revokes alice, then her old token is refused
    let admin = sign("root", 300, &["admin"]);
    let (status, _) = app.send_json(reqwest::Method::POST, "/admin/users/alice/revoke", Some(&admin)).await;
    assert_eq!(status, 200);
    expect_refused(&app.ws_url(&format!("/ws?token={token}")), &[], 401, "token_revoked").await;

    // the metrics count refusals by reason
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for reason in ["missing_credentials", "invalid_token", "token_expired", "origin_not_allowed", "token_revoked"] {
        assert!(
            metrics.contains(&format!("authchat_upgrades_refused_total{{reason=\"{reason}\"}}")),
            "{reason} missing in\n{metrics}"
        );
    }
}

#[actix_web::test]
async fn origin_allowlist_is_exact_and_absent_origin_is_allowed() {
    let app = spawn_app_with("[server]\nallowed_origins = [\"https://chat.example\"]").await;
    let token = sign("alice", 300, &[]);
    let url = app.ws_url(&format!("/ws?token={token}"));
    assert!(connect(&url, &[("Origin", "https://chat.example")]).await.is_ok());
    assert!(connect(&url, &[]).await.is_ok());
    expect_refused(&url, &[("Origin", "https://chat.example.evil.com")], 403, "origin_not_allowed").await;
    expect_refused(&url, &[("Origin", "http://chat.example")], 403, "origin_not_allowed").await;
    // dev mode lets the server's own origin in (the bundled UI)
    let own = format!("http://127.0.0.1:{}", app.port);
    assert!(connect(&url, &[("Origin", &own)]).await.is_ok());
}

#[actix_web::test]
async fn query_tokens_can_be_turned_off() {
    let app = spawn_app_with("[auth]\nquery_token = false").await;
    let token = sign("alice", 300, &[]);
    expect_refused(&app.ws_url(&format!("/ws?token={token}")), &[], 400, "query_token_disabled").await;
}

#[actix_web::test]
async fn connection_caps_answer_429() {
    let app = spawn_app_with("[ws]\nmax_connections_per_user = 1\nmax_unauthenticated_per_ip = 1").await;
    let token = sign("alice", 300, &[]);
    let mut first = app.connect(&token).await;
    first.next_of("welcome").await;
    expect_refused(&app.ws_url(&format!("/ws?token={token}")), &[], 429, "too_many_connections").await;
    // another user is not affected
    app.connect_as("bob").await;

    let (_pending, _) = connect(&app.ws_url("/ws"), &[]).await.expect("first unauthenticated socket");
    expect_refused(&app.ws_url("/ws"), &[], 429, "too_many_connections").await;
}

#[actix_web::test]
async fn first_message_auth_welcomes_a_valid_token() {
    let app = spawn_app().await;
    let (mut ws, _) = connect(&app.ws_url("/ws"), &[]).await.expect("opens unauthenticated");
    ws.send(json!({"type":"auth","token": sign("alice", 300, &[])})).await;
    let welcome = ws.next_json().await;
    assert_eq!(welcome["type"], "welcome", "nothing comes before the welcome");
    assert_eq!(welcome["auth"], "first_message");
    ws.assert_alive().await;
}

#[actix_web::test]
async fn first_message_auth_closes_4000_on_anything_else() {
    let app = spawn_app().await;
    let (mut ws, _) = connect(&app.ws_url("/ws"), &[]).await.unwrap();
    ws.send(json!({"type":"join","room":"general"})).await;
    assert_eq!(ws.expect_close().await.0, 4000);

    let (mut ws, _) = connect(&app.ws_url("/ws"), &[]).await.unwrap();
    ws.send(json!({"type":"auth","token":"not-a-jwt"})).await;
    assert_eq!(ws.expect_close().await, (4000, "invalid_token".to_owned()));

    let (mut ws, _) = connect(&app.ws_url("/ws"), &[]).await.unwrap();
    ws.send_text("not json").await;
    assert_eq!(ws.expect_close().await.0, 4000);
}

#[actix_web::test]
async fn first_message_auth_times_out_with_4000() {
    let app = spawn_app_with("[auth]\nauth_timeout = \"1s\"").await;
    let started = Instant::now();
    let (mut ws, _) = connect(&app.ws_url("/ws"), &[]).await.unwrap();
    match ws.recv().await {
        Event::Close(code, _) => assert_eq!(code, 4000),
        other => panic!("an unauthenticated socket gets nothing but the close, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(waited.as_millis() >= 900, "closed too early: {waited:?}");
    assert!(waited.as_secs() < 5, "closed too late: {waited:?}");
}
