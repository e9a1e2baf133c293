//! Issue 15, who may be in a room: rules from token roles and claims, private rooms, direct
//! conversations, kicks, and the re-checks that put a socket out of a room at once when its
//! identity, a rule or a room's list changes. Real server, real sockets.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// A room rule for roles, one for a claim, and one narrower prefix that opens a part up.
const RULES: &str = "[[rooms.rules]]\nprefix = \"ops.\"\nroles = [\"ops\", \"admin\"]\n\
                     [[rooms.rules]]\nprefix = \"proj-\"\nclaim = \"rooms\"\n\
                     [[rooms.rules]]\nprefix = \"ops.lobby\"\nroles = [\"guest\", \"ops\"]\n";

/// How long a socket that should hear nothing is listened to.
const QUIET: Duration = Duration::from_millis(300);

/// A token for `user` with these roles and, when given, a `rooms` claim.
fn token(user: &str, roles: &[&str], rooms: Option<&[&str]>) -> String {
    let now = now_s();
    let mut claims = json!({
        "sub": user, "exp": now + 300, "iat": now, "iss": "authchat", "aud": "authchat",
        "jti": format!("{user}-{}", now_ms()), "roles": roles,
    });
    if let Some(rooms) = rooms {
        claims["rooms"] = json!(rooms);
    }
    sign_claims(claims)
}

async fn connect_with(app: &TestApp, token: &str) -> WsClient {
    let mut ws = app.connect(token).await;
    ws.next_of("welcome").await;
    ws
}

/// Joins `room` and answers `joined`, or the error that refused it.
async fn join(ws: &mut WsClient, room: &str) -> Value {
    ws.send(json!({"type":"join","room":room,"ref":room})).await;
    loop {
        let v = ws.next_json().await;
        if (v["type"] == "joined" && v["room"] == room) || v["type"] == "error" {
            return v;
        }
    }
}

fn assert_forbidden(answer: &Value, room: &str, words: &str) {
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str(), answer["room"].as_str(), answer["request"].as_str()),
        (Some("error"), Some("forbidden"), Some(room), Some("join")),
        "{answer}"
    );
    assert_eq!(answer["ref"], room, "the ref is echoed: {answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains(words), "the refusal says why ({words:?}): {message}");
}

/// The next `left` this socket gets, skipping everything else.
async fn left(ws: &mut WsClient) -> Value {
    ws.next_of("left").await
}

/// Nothing but pings for a while: the socket was not put out of anything.
async fn assert_quiet(ws: &mut WsClient) {
    if let Some(Event::Json(v)) = ws.recv_within(QUIET).await {
        panic!("expected nothing, got {v}");
    }
}

#[actix_web::test]
async fn rules_admit_by_role_or_claim_and_refuse_everyone_else_who_keeps_the_connection() {
    let app = spawn_app_with(RULES).await;
    let mut nobody = connect_with(&app, &token("nobody", &[], None)).await;
    assert_eq!(join(&mut nobody, "general").await["type"], "joined", "no rule: public");
    assert_forbidden(&join(&mut nobody, "ops.deploy").await, "ops.deploy", "roles ops, admin");
    assert_forbidden(&join(&mut nobody, "proj-x").await, "proj-x", "\"rooms\" claim");
    nobody.assert_alive().await;

    let mut ops = connect_with(&app, &token("olga", &["ops"], None)).await;
    assert_eq!(join(&mut ops, "ops.deploy").await["type"], "joined");
    assert_forbidden(&join(&mut ops, "proj-x").await, "proj-x", "claim");

    let mut member = connect_with(&app, &token("pat", &[], Some(&["proj-x", "proj-y.*"]))).await;
    assert_eq!(join(&mut member, "proj-x").await["type"], "joined", "named exactly");
    assert_eq!(join(&mut member, "proj-y.eu").await["type"], "joined", "under a starred prefix");
    assert_forbidden(&join(&mut member, "proj-xz").await, "proj-xz", "claim");
    assert_forbidden(&join(&mut member, "ops.deploy").await, "ops.deploy", "roles");

    // the longest prefix decides alone: a guest may enter ops.lobby, not the rest of ops.
    let mut guest = connect_with(&app, &token("gus", &["guest"], None)).await;
    assert_eq!(join(&mut guest, "ops.lobby").await["type"], "joined");
    assert_forbidden(&join(&mut guest, "ops.deploy").await, "ops.deploy", "roles ops, admin");
    let mut admin = connect_with(&app, &token("ada", &["admin"], None)).await;
    assert_forbidden(&join(&mut admin, "ops.lobby").await, "ops.lobby", "roles guest, ops");

    // a refused join leaves no trace: the members of the room never heard of it
    ops.send(json!({"type":"send","room":"ops.deploy","text":"still only us"})).await;
    ops.next_of("ack").await;
    assert_quiet(&mut ops).await;
}

#[actix_web::test]
async fn a_renewal_whose_token_no_longer_grants_a_room_puts_the_socket_out_of_it_at_once() {
    let app = spawn_app_with(RULES).await;
    let mut pat = connect_with(&app, &token("pat", &["ops"], Some(&["proj-x"]))).await;
    let mut olga = connect_with(&app, &token("olga", &["ops"], Some(&["proj-x"]))).await;
    for room in ["proj-x", "ops.deploy", "general"] {
        assert_eq!(join(&mut pat, room).await["type"], "joined");
        assert_eq!(join(&mut olga, room).await["type"], "joined");
    }
    while olga.recv_within(QUIET).await.is_some() {}
    while pat.recv_within(QUIET).await.is_some() {}

    // the same grants again: nothing changes
    pat.send(json!({"type":"reauth","token": token("pat", &["ops"], Some(&["proj-x"]))})).await;
    assert_eq!(pat.next_json().await["type"], "reauthed");

    // the claim no longer lists proj-x, and the ops role is gone
    pat.send(json!({"type":"reauth","token": token("pat", &[], Some(&["proj-y"]))})).await;
    let (mut put_out, mut reauthed) = (Vec::new(), false);
    while put_out.len() < 2 || !reauthed {
        let v = pat.next_json().await;
        match v["type"].as_str() {
            Some("left") => {
                assert_eq!(v["reason"], "forbidden", "{v}");
                put_out.push(v["room"].as_str().unwrap().to_owned());
            }
            Some("reauthed") => reauthed = true,
            _ => panic!("unexpected {v}"),
        }
    }
    put_out.sort();
    assert_eq!(put_out, ["ops.deploy", "proj-x"], "out of both at once");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let presence = olga.next_of("presence").await;
        assert_eq!((presence["user"].as_str(), presence["event"].as_str()), (Some("pat"), Some("leave")), "{presence}");
        seen.push(presence["room"].as_str().unwrap().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["ops.deploy", "proj-x"], "the others see pat go from both");
    // still in general, and the connection is fine; the rooms refuse a rejoin
    pat.send(json!({"type":"send","room":"general","text":"still here"})).await;
    assert_eq!(pat.next_of("ack").await["room"], "general");
    assert_forbidden(&join(&mut pat, "proj-x").await, "proj-x", "claim");
    pat.send(json!({"type":"send","room":"proj-x","text":"let me in"})).await;
    assert_eq!(pat.next_of("error").await["code"], "not_member");
    pat.send(json!({"type":"history","room":"proj-x"})).await;
    assert_eq!(pat.next_of("error").await["code"], "not_member", "no history for a non-member");
}

#[actix_web::test]
async fn rules_reloaded_put_sockets_out_of_rooms_they_no_longer_allow_and_a_bad_file_changes_nothing() {
    let app = spawn_app().await;
    let mut nobody = connect_with(&app, &token("nobody", &[], None)).await;
    let mut olga = connect_with(&app, &token("olga", &["ops"], None)).await;
    for room in ["ops.deploy", "general"] {
        assert_eq!(join(&mut nobody, room).await["type"], "joined", "no rules yet");
        assert_eq!(join(&mut olga, room).await["type"], "joined");
    }
    while nobody.recv_within(QUIET).await.is_some() {}

    // a configuration that does not load is refused whole: the rules in force stay
    app.reload.clone().with_config(test_options("[[rooms.rules]]\nprefix = \"ops.\"")).reload();
    assert_quiet(&mut nobody).await;

    app.reload.clone().with_config(test_options(RULES)).reload();
    let out = left(&mut nobody).await;
    assert_eq!(out, json!({"type":"left","room":"ops.deploy","reason":"forbidden"}));
    let presence = olga.next_of("presence").await;
    assert_eq!((presence["user"].as_str(), presence["event"].as_str()), (Some("nobody"), Some("leave")));
    assert_quiet(&mut olga).await;
    assert_forbidden(&join(&mut nobody, "ops.deploy").await, "ops.deploy", "roles ops, admin");
    nobody.send(json!({"type":"send","room":"general","text":"general is still public"})).await;
    nobody.next_of("ack").await;

    // and rules taken away open the rooms again
    app.reload.clone().with_config(test_options("")).reload();
    let deadline = std::time::Instant::now() + WAIT;
    while join(&mut nobody, "ops.deploy").await["type"] != "joined" {
        assert!(std::time::Instant::now() < deadline, "the rules were not lifted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
