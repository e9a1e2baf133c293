//! Issue 15, who may be in a room: rules from token roles and claims, private rooms, direct
//! conversations, kicks, and the re-checks that put a socket out of a room at once when its
//! identity, a rule or a room's list changes. Real server, real sockets.

use std::time::Duration;

use reqwest::Method;
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

/// Sends `request` and answers the first reply of type `kind` or an `error`.
async fn ask(ws: &mut WsClient, request: Value, kind: &str) -> Value {
    ws.send(request).await;
    loop {
        let v = ws.next_json().await;
        if v["type"] == kind || v["type"] == "error" {
            return v;
        }
    }
}

#[actix_web::test]
async fn a_private_room_admits_its_owner_and_invitees_only_and_shows_its_history_only_to_them() {
    let app = spawn_app().await;
    let (mut alice, _) = app.connect_as("alice").await;
    let (mut bob, _) = app.connect_as("bob").await;
    let (mut eve, _) = app.connect_as("eve").await;

    let created =
        ask(&mut alice, json!({"type":"create","room":"secret","private":true,"invite":["bob"]}), "joined").await;
    assert_eq!(created["access"], json!({"kind":"private","owner":"alice","allowed":["alice","bob"]}), "{created}");
    assert_eq!(created["members"], json!(["alice"]));
    let invited = bob.next_of("invited").await;
    assert_eq!(invited, json!({"type":"invited","room":"secret","by":"alice","access":created["access"]}));
    alice.send(json!({"type":"send","room":"secret","text":"for bob's eyes"})).await;
    alice.next_of("ack").await;

    assert_forbidden(&join(&mut eve, "secret").await, "secret", "private room");
    eve.send(json!({"type":"history","room":"secret"})).await;
    assert_eq!(eve.next_of("error").await["code"], "not_member");
    let taken = ask(&mut eve, json!({"type":"create","room":"secret","private":true,"ref":1}), "joined").await;
    assert_eq!(
        (taken["code"].as_str(), taken["request"].as_str(), taken["ref"].as_u64()),
        (Some("room_exists"), Some("create"), Some(1))
    );
    eve.assert_alive().await;

    let joined = join(&mut bob, "secret").await;
    assert_eq!(joined["history"][0]["text"], "for bob's eyes", "an invitee reads the history");
    assert_eq!(alice.next_of("presence").await["user"], "bob");

    // only the owner invites; an invitation reaches the invitee and every member's list
    let refused = ask(&mut bob, json!({"type":"invite","room":"secret","users":["eve"]}), "access").await;
    assert_eq!(
        (refused["code"].as_str(), refused["request"].as_str()),
        (Some("forbidden"), Some("invite")),
        "{refused}"
    );
    assert!(refused["message"].as_str().unwrap().contains("only the owner"), "{refused}");
    let (mut carol, _) = app.connect_as("carol").await;
    let answer = ask(&mut alice, json!({"type":"invite","room":"secret","users":["carol"]}), "access").await;
    assert_eq!(answer["access"]["allowed"], json!(["alice", "bob", "carol"]), "{answer}");
    assert_eq!(bob.next_of("access").await["access"], answer["access"]);
    assert_eq!(carol.next_of("invited").await["by"], "alice");
    assert_eq!(join(&mut carol, "secret").await["type"], "joined");

    // what create refuses, with the connection kept
    let public = ask(&mut eve, json!({"type":"create","room":"mine","private":false}), "joined").await;
    assert_eq!(public["code"], "invalid_field", "{public}");
    let reserved = ask(&mut eve, json!({"type":"create","room":"dm.mine","private":true}), "joined").await;
    assert_eq!(reserved["code"], "invalid_room", "{reserved}");
    let existing = ask(&mut eve, json!({"type":"create","room":"alive-check","private":true}), "joined").await;
    assert_eq!(existing["code"], "room_exists", "a public room is not taken over: {existing}");
    let nameless = ask(&mut eve, json!({"type":"create","room":"x1","private":true,"invite":[""]}), "joined").await;
    assert_eq!(nameless["code"], "invalid_field", "{nameless}");
    eve.assert_alive().await;
}

#[actix_web::test]
async fn a_kicked_member_leaves_at_once_on_every_socket_and_cannot_rejoin_until_invited_again() {
    let app = spawn_app().await;
    let (mut alice, _) = app.connect_as("alice").await;
    let (mut bob1, _) = app.connect_as("bob").await;
    let (mut bob2, _) = app.connect_as("bob").await;
    let (mut bob3, _) = app.connect_as("bob").await;
    ask(&mut alice, json!({"type":"create","room":"club","private":true,"invite":["bob"]}), "joined").await;
    for bob in [&mut bob1, &mut bob2] {
        assert_eq!(join(bob, "club").await["type"], "joined");
    }
    while alice.recv_within(QUIET).await.is_some() {}
    while bob3.recv_within(QUIET).await.is_some() {}

    alice.send(json!({"type":"kick","room":"club","user":"bob","ref":"k"})).await;
    // bob's departure, then the new list
    let presence = alice.next_json().await;
    assert_eq!(
        (presence["type"].as_str(), presence["user"].as_str(), presence["event"].as_str()),
        (Some("presence"), Some("bob"), Some("leave")),
        "{presence}"
    );
    let answer = alice.next_json().await;
    assert_eq!(
        answer,
        json!({"type":"access","room":"club","access":{"kind":"private","owner":"alice","allowed":["alice"]}})
    );
    for bob in [&mut bob1, &mut bob2] {
        assert_eq!(left(bob).await, json!({"type":"left","room":"club","reason":"kicked"}));
    }
    assert_quiet(&mut bob3).await;
    assert_forbidden(&join(&mut bob1, "club").await, "club", "removed");
    bob1.send(json!({"type":"send","room":"club","text":"let me back"})).await;
    assert_eq!(bob1.next_of("error").await["code"], "not_member");

    let owner = ask(&mut alice, json!({"type":"kick","room":"club","user":"alice"}), "access").await;
    assert!(owner["message"].as_str().unwrap().contains("owner"), "{owner}");
    let stranger = ask(&mut alice, json!({"type":"kick","room":"club","user":"nobody"}), "access").await;
    assert_eq!(stranger["code"], "forbidden", "{stranger}");

    ask(&mut alice, json!({"type":"invite","room":"club","users":["bob"]}), "access").await;
    assert_eq!(bob3.next_of("invited").await["room"], "club", "let back in, and told");
    assert_eq!(join(&mut bob3, "club").await["type"], "joined");
}

#[actix_web::test]
async fn a_direct_conversation_is_between_its_two_users_and_the_other_is_told_and_can_list_it() {
    let app = spawn_app().await;
    let (mut alice, _) = app.connect_as("alice").await;
    let (mut bob, _) = app.connect_as("bob").await;
    let (mut eve, _) = app.connect_as("eve").await;

    let joined = ask(&mut alice, json!({"type":"dm","user":"bob"}), "joined").await;
    let room = joined["room"].as_str().unwrap().to_owned();
    assert!(room.starts_with("dm.") && room.len() == 35, "{room}");
    assert_eq!(joined["access"], json!({"kind":"dm","allowed":["alice","bob"]}));
    assert_eq!(
        bob.next_of("invited").await,
        json!({"type":"invited","room":room,"by":"alice","access":joined["access"]})
    );
    alice.send(json!({"type":"send","room":room,"text":"hi bob"})).await;
    alice.next_of("ack").await;

    assert_forbidden(&join(&mut eve, &room).await, &room, "two other people");
    let unopened = "dm.0123456789abcdef0123456789abcdef";
    assert_forbidden(&join(&mut eve, unopened).await, unopened, "opened with");
    let listed = ask(&mut eve, json!({"type":"rooms"}), "rooms").await;
    assert_eq!(listed["rooms"], json!([]));

    let listed = ask(&mut bob, json!({"type":"rooms","ref":2}), "rooms").await;
    assert_eq!(listed["rooms"], json!([{"room":room,"access":{"kind":"dm","allowed":["alice","bob"]}}]));
    let again = ask(&mut bob, json!({"type":"dm","user":"alice"}), "joined").await;
    assert_eq!(again["room"], room.as_str(), "the same conversation either way round");
    assert_eq!(again["history"][0]["text"], "hi bob");
    let arrived = alice.next_json().await;
    assert_eq!((arrived["type"].as_str(), arrived["user"].as_str()), (Some("presence"), Some("bob")), "{arrived}");
    assert_quiet(&mut alice).await;

    let alone = ask(&mut alice, json!({"type":"dm","user":"alice"}), "joined").await;
    assert_eq!((alone["code"].as_str(), alone["request"].as_str()), (Some("invalid_field"), Some("dm")));
    let long = ask(&mut alice, json!({"type":"dm","user":"x".repeat(257)}), "joined").await;
    assert_eq!(long["code"], "invalid_field");
    alice.assert_alive().await;
}

#[actix_web::test]
async fn operators_list_rooms_and_kick_a_user_who_leaves_at_once_and_stays_out_until_let_back_in() {
    let app = spawn_app().await;
    let admin = sign("root", 300, &["admin"]);
    let (mut alice, _) = app.connect_as("alice").await;
    let (mut bob, _) = app.connect_as("bob").await;
    let (mut eve, _) = app.connect_as("eve").await;
    let (mut troll, _) = app.connect_as("troll").await;
    ask(&mut alice, json!({"type":"create","room":"club","private":true,"invite":["bob"]}), "joined").await;
    join(&mut bob, "club").await;
    join(&mut eve, "lobby").await;
    join(&mut troll, "lobby").await;
    troll.send(json!({"type":"send","room":"lobby","text":"spam"})).await;
    troll.next_of("ack").await;
    while eve.recv_within(QUIET).await.is_some() {}

    let (status, _) = app.get_json("/admin/rooms", Some(&sign("eve", 300, &[]))).await;
    assert_eq!(status, 403, "operators only");
    let (status, list) = app.get_json("/admin/rooms", Some(&admin)).await;
    assert_eq!(status, 200, "{list}");
    let row = |list: &Value, room: &str| list["rooms"].as_array().unwrap().iter().find(|r| r["room"] == room).cloned();
    let club = row(&list, "club").expect("club is listed");
    assert_eq!(
        (&club["kind"], &club["owner"], &club["allowed"], &club["members"], &club["messages"]),
        (&json!("private"), &json!("alice"), &json!(["alice", "bob"]), &json!(["alice", "bob"]), &json!(0))
    );
    let lobby = row(&list, "lobby").expect("lobby is listed");
    assert_eq!(
        (&lobby["kind"], &lobby["members"], &lobby["messages"]),
        (&json!("public"), &json!(["eve", "troll"]), &json!(1))
    );
    assert_eq!(list["missing"], json!([]));

    let (status, kicked) = app.send_json(Method::DELETE, "/admin/rooms/lobby/members/troll", Some(&admin)).await;
    assert_eq!(status, 200, "{kicked}");
    assert_eq!((&kicked["left"], &kicked["nodes"]), (&json!(1), &json!({"test-node": 1})));
    assert_eq!(left(&mut troll).await, json!({"type":"left","room":"lobby","reason":"kicked"}));
    let presence = eve.next_of("presence").await;
    assert_eq!((presence["user"].as_str(), presence["event"].as_str()), (Some("troll"), Some("leave")));
    assert_forbidden(&join(&mut troll, "lobby").await, "lobby", "removed");
    let list = app.get_json("/admin/rooms", Some(&admin)).await.1;
    assert_eq!(row(&list, "lobby").unwrap()["kicked"], json!(["troll"]));

    for (path, status, code) in [
        ("/admin/rooms/club/members/alice", 409, "refused"),
        ("/admin/rooms/nowhere/members/bob", 404, "not_found"),
        ("/admin/rooms/bad%20room/members/bob", 400, "invalid_room"),
    ] {
        let (got, body) = app.send_json(Method::DELETE, path, Some(&admin)).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{path}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "a refusal says what was wrong");
    }
    assert_eq!(
        app.send_json(Method::DELETE, "/admin/rooms/lobby/members/eve", Some(&sign("eve", 300, &[]))).await.0,
        403
    );

    let (status, back) = app.send_json(Method::POST, "/admin/rooms/lobby/members/troll", Some(&admin)).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(join(&mut troll, "lobby").await["type"], "joined", "let back in");

    // in a private room the kick also takes the user off the list, which the owner sees
    let (status, _) = app.send_json(Method::DELETE, "/admin/rooms/club/members/bob", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(left(&mut bob).await["reason"], "kicked");
    assert_eq!(alice.next_of("access").await["access"]["allowed"], json!(["alice"]));
}

#[actix_web::test]
async fn a_withdrawn_role_puts_the_users_sockets_out_of_the_rooms_it_granted_and_counts_in_no_later_credential() {
    let app = spawn_app_with(RULES).await;
    let boss = sign("boss", 300, &["admin"]);
    let mut olga1 = connect_with(&app, &token("olga", &["ops"], None)).await;
    let mut olga2 = connect_with(&app, &token("olga", &["ops", "guest"], None)).await;
    let mut oscar = connect_with(&app, &token("oscar", &["ops"], None)).await;
    assert_eq!(join(&mut oscar, "ops.deploy").await["type"], "joined");
    for olga in [&mut olga1, &mut olga2] {
        for room in ["ops.deploy", "ops.lobby", "general"] {
            assert_eq!(join(olga, room).await["type"], "joined");
        }
    }
    while oscar.recv_within(QUIET).await.is_some() {}

    let (status, body) = app.send_json(Method::POST, "/admin/users/olga/roles/ops/revoke", Some(&boss)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["left"], &body["nodes"]), (&json!(3), &json!({"test-node": 3})), "{body}");
    assert_eq!(left(&mut olga1).await, json!({"type":"left","room":"ops.deploy","reason":"forbidden"}));
    assert_eq!(left(&mut olga1).await["room"], "ops.lobby");
    assert_eq!(left(&mut olga2).await["room"], "ops.deploy", "the guest role still opens ops.lobby");
    let presence = oscar.next_of("presence").await;
    assert_eq!((presence["user"].as_str(), presence["event"].as_str()), (Some("olga"), Some("leave")));
    assert_quiet(&mut oscar).await;
    assert_quiet(&mut olga2).await;

    // a fresh token, or a renewal, that still says ops does not bring it back; admin still counts
    let mut olga3 = connect_with(&app, &token("olga", &["ops"], None)).await;
    assert_forbidden(&join(&mut olga3, "ops.deploy").await, "ops.deploy", "roles ops, admin");
    olga1.send(json!({"type":"reauth","token": token("olga", &["ops"], None)})).await;
    olga1.next_of("reauthed").await;
    assert_forbidden(&join(&mut olga1, "ops.deploy").await, "ops.deploy", "roles");
    let mut olga_admin = connect_with(&app, &token("olga", &["admin"], None)).await;
    assert_eq!(join(&mut olga_admin, "ops.deploy").await["type"], "joined");

    let (status, _) = app.send_json(Method::DELETE, "/admin/users/olga/roles/ops/revoke", Some(&boss)).await;
    assert_eq!(status, 200);
    let (status, body) = app.send_json(Method::DELETE, "/admin/users/olga/roles/ops/revoke", Some(&boss)).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    let mut olga4 = connect_with(&app, &token("olga", &["ops"], None)).await;
    assert_eq!(join(&mut olga4, "ops.deploy").await["type"], "joined", "restored for credentials that carry it");

    // withdrawing admin takes the admin API away from a token that says admin
    let root = sign("root", 300, &["admin"]);
    assert_eq!(app.get_json("/admin/rooms", Some(&root)).await.0, 200);
    app.send_json(Method::POST, "/admin/users/root/roles/admin/revoke", Some(&boss)).await;
    assert_eq!(app.get_json("/admin/rooms", Some(&root)).await.0, 403);
}
