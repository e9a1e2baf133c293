//! Login, /api/me, and the operator API.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn login_returns_a_working_token_and_refuses_alike() {
    let app = spawn_app().await;
    let res = app.post_login("alice").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((290..=300).contains(&expires_in), "access_ttl defaults to 5 minutes: {expires_in}");
    assert_eq!(body["expires_at"].as_u64().unwrap(), now_s() + expires_in);
    let token = body["access_token"].as_str().unwrap();
    let (status, me) = app.get_json("/api/me", Some(token)).await;
    assert_eq!(status, 200);
    assert_eq!(me["user"], "alice");

    let app_ref = &app;
    let wrong = |user: &'static str, password: &'static str| async move {
        let res = app_ref.post_login_with(&app_ref.http, user, password).await;
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    let unknown = wrong("nobody", "alice-password").await;
    let bad_password = wrong("alice", "nope").await;
    assert_eq!(unknown.0, 401);
    assert_eq!(unknown, bad_password, "unknown user and wrong password look the same");

    let res =
        app.http.post(app.url("/api/login")).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "bad_json");

    let (status, body) = app.get_json("/api/me", None).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("missing_credentials")));
}

#[actix_web::test]
async fn admin_routes_need_a_token_with_the_admin_role() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/admin/connections", None).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("missing_credentials")));
    let user = app.login("alice").await;
    let (status, body) = app.get_json("/admin/connections", Some(&user)).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let admin = app.login("admin").await;
    let (status, _) = app.get_json("/admin/connections", Some(&admin)).await;
    assert_eq!(status, 200);
    for (method, path) in [
        (Method::DELETE, "/admin/connections/1"),
        (Method::DELETE, "/admin/users/bob/connections"),
        (Method::POST, "/admin/users/bob/revoke"),
        (Method::GET, "/admin/stats"),
    ] {
        assert_eq!(app.send_json(method.clone(), path, Some(&user)).await.0, 403, "{method} {path}");
        assert_eq!(app.send_json(method.clone(), path, None).await.0, 401, "{method} {path}");
    }
}

#[actix_web::test]
async fn operators_list_and_disconnect_connections() {
    let app = spawn_app().await;
    let admin = app.login("admin").await;
    let (mut alice1, w1) = app.connect_as("alice").await;
    let (mut alice2, _) = app.connect_as("alice").await;
    let (mut bob, wb) = app.connect_as("bob").await;
    bob.send(json!({"type":"join","room":"ops"})).await;
    bob.next_of("joined").await;

    let (_, all) = app.get_json("/admin/connections", Some(&admin)).await;
    assert_eq!(all["connections"].as_array().unwrap().len(), 3);
    let (_, only_bob) = app.get_json("/admin/connections?user=bob", Some(&admin)).await;
    let row = &only_bob["connections"][0];
    assert_eq!(only_bob["connections"].as_array().unwrap().len(), 1);
    assert_eq!(row["conn_id"], wb["conn_id"]);
    assert_eq!(row["user"], "bob");
    assert_eq!(row["rooms"], json!(["ops"]));
    assert_eq!(row["node"], "test-node");
    assert_eq!(row["auth"], "query");
    assert!(row["connected_at"].as_u64().unwrap() > 0);
    assert_eq!(row["expires_at"], wb["expires_at"]);

    let one = format!("/admin/connections/{}", w1["conn_id"]);
    let (status, body) = app.send_json(Method::DELETE, &one, Some(&admin)).await;
    assert_eq!((status, body["closed"].as_u64()), (200, Some(1)));
    assert_eq!(alice1.expect_close().await, (4004, "disconnected by an operator".into()));
    let (status, body) = app.send_json(Method::DELETE, &one, Some(&admin)).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = app.send_json(Method::DELETE, "/admin/connections/abc", Some(&admin)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_conn_id")));

    alice2.assert_alive().await;
    let (_, body) = app.send_json(Method::DELETE, "/admin/users/alice/connections", Some(&admin)).await;
    assert_eq!(body["closed"], 1);
    assert_eq!(alice2.expect_close().await.0, 4004);
    let (_, body) = app.send_json(Method::DELETE, "/admin/users/nobody/connections", Some(&admin)).await;
    assert_eq!(body["closed"], 0);

    let (status, stats) = app.get_json("/admin/stats", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["users"], 1);
    assert_eq!(stats["rooms"], 2, "ops and the alive-check room");
    bob.assert_alive().await;
}

#[actix_web::test]
async fn revoking_a_user_closes_4003_and_refuses_old_tokens() {
    let app = spawn_app().await;
    let admin = app.login("admin").await;
    let old = app.login("alice").await;
    let mut ws = app.connect(&old).await;
    ws.next_of("welcome").await;

    let (status, body) = app.send_json(Method::POST, "/admin/users/alice/revoke", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(body["closed"], 1);
    assert_eq!(ws.expect_close().await, (4003, "token revoked".into()));

    let (status, body) = app.get_json("/api/me", Some(&old)).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("token_revoked")));
    expect_refused(&app.ws_url(&format!("/ws?token={old}")), &[], 401, "token_revoked").await;
    // first-message auth and reauth honour it too
    let (mut pending, _) = connect(&app.ws_url("/ws"), &[]).await.unwrap();
    pending.send(json!({"type":"auth","token": old})).await;
    assert_eq!(pending.expect_close().await.0, 4003);

    // a token issued after the revocation works, at once
    let fresh = app.login("alice").await;
    let mut ws = app.connect(&fresh).await;
    ws.next_of("welcome").await;
    ws.send(json!({"type":"reauth","token": old})).await;
    assert_eq!(ws.next_of("error").await["code"], "reauth_failed");
}

#[actix_web::test]
async fn a_sign_in_right_after_a_revoke_works_whatever_the_second() {
    let app = spawn_app().await;
    let admin = app.login("admin").await;
    // Several rounds, so a revoke and a login land in the same second at least once.
    for round in 0..5 {
        let before = app.login("bob").await;
        assert_eq!(app.send_json(Method::POST, "/admin/users/bob/revoke", Some(&admin)).await.0, 200);
        let after = app.login("bob").await;
        let (status, body) = app.get_json("/api/me", Some(&after)).await;
        assert_eq!(status, 200, "round {round}: a login after the revoke is not revoked: {body}");
        let mut ws = app.connect(&after).await;
        ws.next_of("welcome").await;
        let (status, _) = app.get_json("/api/me", Some(&before)).await;
        assert_eq!(status, 401, "round {round}: a token from before the revoke is");
        ws.close().await;
    }
}
