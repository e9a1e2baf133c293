//! The registry warns before `exp`, accepts in-band renewal, and closes at `exp` with 4001.

use std::time::Duration;

use authchat::testkit::access_claims;
use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn a_socket_is_closed_with_4001_at_exp_never_before() {
    let app = spawn_app().await;
    let token = sign("alice", 2, &[]);
    let mut ws = app.connect(&token).await;
    let welcome = ws.next_of("welcome").await;
    let exp_ms = welcome["expires_at"].as_u64().unwrap() * 1000;
    // warn_before (60 s) is longer than the token's life: the warning comes at once
    let expiring = ws.next_of("expiring").await;
    assert_eq!(expiring["expires_at"].as_u64().unwrap() * 1000, exp_ms);
    assert!(expiring["seconds_left"].as_u64().unwrap() <= 2);

    let (code, reason) = ws.expect_close().await;
    let closed_at = now_ms();
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    assert!(closed_at >= exp_ms, "closed {} ms before exp", exp_ms - closed_at);
    // generous margin for a shared machine; the benchmark measures the real lag
    assert!(closed_at < exp_ms + 1500, "closed {} ms after exp", closed_at - exp_ms);

    // the registry forgot it, and the lag was recorded
    let admin = sign("root", 60, &["admin"]);
    let (_, body) = app.get_json("/admin/connections?user=alice", Some(&admin)).await;
    assert_eq!(body["connections"], json!([]));
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("authchat_expiry_close_lag_seconds_count 1"), "{metrics}");
    assert!(metrics.contains("authchat_closes_total{code=\"4001\"} 1"), "{metrics}");
}

#[actix_web::test]
async fn the_warning_comes_warn_before_ahead_of_exp() {
    let app = spawn_app_with("[ws]\nwarn_before = \"2s\"").await;
    let mut ws = app.connect(&sign("alice", 4, &[])).await;
    let exp_ms = ws.next_of("welcome").await["expires_at"].as_u64().unwrap() * 1000;
    let expiring = ws.next_of("expiring").await;
    let warned_at = now_ms();
    assert!(warned_at + 100 >= exp_ms - 2000, "warned {} ms too early", (exp_ms - 2000) - warned_at);
    assert!(warned_at < exp_ms, "the warning must come before exp");
    let left = expiring["seconds_left"].as_u64().unwrap();
    assert!((1..=2).contains(&left), "seconds_left = {left}");
}

#[actix_web::test]
async fn reauth_moves_the_expiry_and_keeps_the_socket() {
    let app = spawn_app().await;
    let mut ws = app.connect(&sign("alice", 2, &[])).await;
    let old_exp = ws.next_of("welcome").await["expires_at"].as_u64().unwrap();
    let fresh = sign("alice", 120, &[]);
    ws.send(json!({"type":"reauth","token": fresh})).await;
    let reauthed = ws.next_of("reauthed").await;
    let new_exp = reauthed["expires_at"].as_u64().unwrap();
    assert!(new_exp >= old_exp + 100);

    // past the old exp the socket is still open and working
    tokio::time::sleep(Duration::from_millis((old_exp * 1000 + 1000).saturating_sub(now_ms()))).await;
    ws.assert_alive().await;
    let admin = sign("root", 60, &["admin"]);
    let (_, body) = app.get_json("/admin/connections?user=alice", Some(&admin)).await;
    assert_eq!(body["connections"][0]["expires_at"], new_exp);
}

#[actix_web::test]
async fn a_bad_or_foreign_reauth_fails_and_the_old_expiry_stays() {
    let app = spawn_app().await;
    let mut ws = app.connect(&sign("alice", 3, &[])).await;
    let exp_ms = ws.next_of("welcome").await["expires_at"].as_u64().unwrap() * 1000;

    ws.send(json!({"type":"reauth","token":"garbage"})).await;
    let error = ws.next_of("error").await;
    assert_eq!(error["code"], "reauth_failed");
    ws.send(json!({"type":"reauth","token": sign("mallory", 300, &[])})).await;
    let error = ws.next_of("error").await;
    assert_eq!(error["code"], "reauth_failed");
    assert!(error["message"].as_str().unwrap().contains("another user"));
    ws.send(json!({"type":"reauth"})).await;
    assert_eq!(ws.next_of("error").await["code"], "missing_field");

    let (code, _) = ws.expect_close().await;
    assert_eq!(code, 4001);
    assert!(now_ms() >= exp_ms);
}

#[actix_web::test]
async fn sockets_expiring_together_hear_nothing_of_each_others_departure() {
    let app = spawn_app().await;
    // one `exp` for both, whatever second boundary passes while they connect
    let (now, exp) = (now_s(), now_s() + 2);
    let together = |user: &str| sign_claims(access_claims(user, now, exp, &format!("{user}-{now}"), &[]));
    let mut alice = app.connect(&together("alice")).await;
    let mut bob = app.connect(&together("bob")).await;
    let mut carol = app.connect(&sign("carol", 120, &[])).await;
    for ws in [&mut alice, &mut bob, &mut carol] {
        ws.send(json!({"type":"join","room":"lobby"})).await;
        ws.next_of("joined").await;
    }

    for (who, ws) in [("alice", &mut alice), ("bob", &mut bob)] {
        let mut heard = Vec::new();
        let code = loop {
            match ws.recv().await {
                Event::Json(v) => heard.push(v),
                Event::Close(code, _) => break code,
                Event::Ended => panic!("{who}: ended without a close frame"),
            }
        };
        assert_eq!(code, 4001);
        let departures: Vec<_> = heard.iter().filter(|v| v["type"] == "presence" && v["event"] == "leave").collect();
        assert!(departures.is_empty(), "{who} was told of a departure before its own close: {departures:?}");
    }
    // the member staying hears of both
    let mut left = Vec::new();
    while left.len() < 2 {
        let presence = carol.next_of("presence").await;
        if presence["event"] == "leave" {
            left.push(presence["user"].as_str().unwrap().to_owned());
        }
    }
    left.sort();
    assert_eq!(left, ["alice", "bob"]);
}
