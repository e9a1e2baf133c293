//! Issue 15 across nodes: a private room's list, a direct conversation and a kick live in Redis,
//! so every node enforces them, and a kick on one node puts the user's sockets out of the room
//! on every other at once.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;
use crate::helpers::*;

/// A socket on another node hears of a change within this (a Redis round trip and a control
/// message; generous on purpose).
const AT_ONCE: Duration = Duration::from_secs(5);

/// Sends `request` and answers the first frame of type `kind`, or an `error`.
async fn ask(member: &mut Member, request: Value, kind: &str) -> Value {
    member.ws.send(request).await;
    let what = format!("{kind} or an error");
    member.wait_for(AT_ONCE, &what, |f| (f["type"] == kind || f["type"] == "error").then(|| f.clone())).await
}

/// Joins `room` and answers `joined` or the error that refused it.
async fn try_join(member: &mut Member, room: &str) -> Value {
    let answer = ask(member, json!({"type":"join","room":room}), "joined").await;
    assert!(answer["type"] == "error" || answer["room"] == room, "{answer}");
    answer
}

/// The next `left` for `room`.
async fn left_from(member: &mut Member, room: &str) -> Value {
    let what = format!("left for {room}");
    member.wait_for(AT_ONCE, &what, |f| (f["type"] == "left" && f["room"] == room).then(|| f.clone())).await
}

#[tokio::test]
async fn a_private_rooms_list_and_its_owners_kick_hold_on_every_node() {
    let cluster = Cluster::start().await;
    let mut alice = cluster.node(1).member("alice").await;
    let mut bob = cluster.node(2).member("bob").await;
    let mut bob_elsewhere = cluster.node(3).member("bob").await;
    let mut eve = cluster.node(3).member("eve").await;

    let created =
        ask(&mut alice, json!({"type":"create","room":"club","private":true,"invite":["bob"]}), "joined").await;
    assert_eq!(created["access"], json!({"kind":"private","owner":"alice","allowed":["alice","bob"]}), "{created}");
    alice.send_acked("club", "members only").await;
    for bob in [&mut bob, &mut bob_elsewhere] {
        let invited = bob.wait_for(AT_ONCE, "invited", |f| (f["type"] == "invited").then(|| f.clone())).await;
        assert_eq!((invited["room"].as_str(), invited["by"].as_str()), (Some("club"), Some("alice")), "{invited}");
    }

    let refused = try_join(&mut eve, "club").await;
    assert_eq!((refused["code"].as_str(), refused["room"].as_str()), (Some("forbidden"), Some("club")), "{refused}");
    let taken = ask(&mut eve, json!({"type":"create","room":"club","private":true}), "joined").await;
    assert_eq!(taken["code"], "room_exists", "another node knows the name is taken: {taken}");
    let listed = ask(&mut eve, json!({"type":"rooms"}), "rooms").await;
    assert_eq!(listed["rooms"], json!([]));

    let joined = try_join(&mut bob, "club").await;
    assert_eq!(texts_of(&joined["history"]), ["members only"], "an invitee on another node reads the history");
    assert_eq!(joined["access"]["owner"], "alice");
    try_join(&mut bob_elsewhere, "club").await;
    let listed = ask(&mut bob_elsewhere, json!({"type":"rooms"}), "rooms").await;
    assert_eq!(listed["rooms"][0]["room"], "club", "{listed}");
    alice.expect_presence("club", "bob", "join", AT_ONCE).await;

    // the owner on n1 kicks bob: his sockets on n2 and n3 leave at once, and stay out
    alice.ws.send(json!({"type":"kick","room":"club","user":"bob"})).await;
    for bob in [&mut bob, &mut bob_elsewhere] {
        assert_eq!(left_from(bob, "club").await, json!({"type":"left","room":"club","reason":"kicked"}));
    }
    alice.expect_presence("club", "bob", "leave", AT_ONCE).await;
    let refused = try_join(&mut bob_elsewhere, "club").await;
    assert!(refused["message"].as_str().unwrap().contains("removed"), "{refused}");
    let listed = ask(&mut bob, json!({"type":"rooms"}), "rooms").await;
    assert_eq!(listed["rooms"], json!([]), "no longer listed");

    // and let back in from n1, bob rejoins on n3
    ask(&mut alice, json!({"type":"invite","room":"club","users":["bob"]}), "access").await;
    bob_elsewhere.wait_for(AT_ONCE, "invited again", |f| (f["type"] == "invited").then_some(())).await;
    assert_eq!(try_join(&mut bob_elsewhere, "club").await["type"], "joined");
}

#[tokio::test]
async fn a_direct_conversation_opened_on_one_node_reaches_the_other_user_on_another() {
    let cluster = Cluster::start().await;
    let mut alice = cluster.node(1).member("alice").await;
    let mut bob = cluster.node(3).member("bob").await;
    let mut eve = cluster.node(2).member("eve").await;

    let opened = ask(&mut alice, json!({"type":"dm","user":"bob"}), "joined").await;
    let room = opened["room"].as_str().unwrap().to_owned();
    assert_eq!(opened["access"], json!({"kind":"dm","allowed":["alice","bob"]}));
    alice.send_acked(&room, "psst").await;
    let invited = bob.wait_for(AT_ONCE, "invited", |f| (f["type"] == "invited").then(|| f.clone())).await;
    assert_eq!((invited["room"].as_str(), invited["by"].as_str()), (Some(room.as_str()), Some("alice")));

    let refused = try_join(&mut eve, &room).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let mut bob_on_n2 = cluster.node(2).member("bob").await;
    let listed = ask(&mut bob_on_n2, json!({"type":"rooms"}), "rooms").await;
    assert_eq!(listed["rooms"], json!([{"room":room,"access":{"kind":"dm","allowed":["alice","bob"]}}]));
    let joined = ask(&mut bob_on_n2, json!({"type":"dm","user":"alice"}), "joined").await;
    assert_eq!((joined["room"].as_str(), texts_of(&joined["history"])), (Some(room.as_str()), vec!["psst".to_owned()]));
    bob_on_n2.send_acked(&room, "hello alice").await;
    alice.expect_message(&room, "hello alice", AT_ONCE).await;
}

#[tokio::test]
async fn an_operator_on_one_node_lists_rooms_and_kicks_a_user_out_of_a_room_on_every_node() {
    let cluster = Cluster::start().await;
    let mut eve = cluster.node(2).member("eve").await;
    let mut troll = cluster.node(1).member("troll").await;
    let mut troll_too = cluster.node(3).member("troll").await;
    for member in [&mut eve, &mut troll, &mut troll_too] {
        member.join("lobby").await;
    }
    troll.send_acked("lobby", "spam").await;

    let (status, list) = cluster.node(2).admin(Method::GET, "/admin/rooms").await;
    assert_eq!(status, 200, "{list}");
    let lobby = list["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "lobby").cloned().expect("lobby");
    assert_eq!(
        (&lobby["kind"], &lobby["members"], &lobby["messages"]),
        (&json!("public"), &json!(["eve", "troll"]), &json!(1))
    );
    assert_eq!(list["missing"], json!([]));

    let (status, kicked) = cluster.node(2).admin(Method::DELETE, "/admin/rooms/lobby/members/troll").await;
    assert_eq!(status, 200, "{kicked}");
    assert_eq!(
        (&kicked["left"], &kicked["nodes"], &kicked["missing"]),
        (&json!(2), &json!({"n1":1,"n2":0,"n3":1}), &json!([]))
    );
    for troll in [&mut troll, &mut troll_too] {
        assert_eq!(left_from(troll, "lobby").await["reason"], "kicked");
    }
    eve.expect_presence("lobby", "troll", "leave", AT_ONCE).await;
    let refused = try_join(&mut troll_too, "lobby").await;
    assert_eq!(refused["code"], "forbidden", "kept out on every node: {refused}");
    let mut troll_new = cluster.node(2).member("troll").await;
    assert_eq!(try_join(&mut troll_new, "lobby").await["code"], "forbidden");

    let (status, _) = cluster.node(3).admin(Method::POST, "/admin/rooms/lobby/members/troll").await;
    assert_eq!(status, 200);
    assert_eq!(try_join(&mut troll_new, "lobby").await["type"], "joined", "let back in, on every node");
    let (status, body) = cluster.node(1).admin(Method::DELETE, "/admin/rooms/nowhere/members/troll").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
}

#[tokio::test]
async fn a_role_withdrawn_through_one_node_counts_for_nothing_on_another_until_restored() {
    let cluster = Cluster::start().await;
    let root = sign("root", 300, &["admin"]);
    assert_eq!(cluster.node(2).request(Method::GET, "/admin/rooms", Some(&root)).await.0, 200);
    let (status, body) = cluster.node(1).admin(Method::POST, "/admin/users/root/roles/admin/revoke").await;
    assert_eq!((status, &body["missing"]), (200, &json!([])), "{body}");
    let (status, body) = cluster.node(2).request(Method::GET, "/admin/rooms", Some(&root)).await;
    assert_eq!(status, 403, "the withdrawal is in Redis, for every node: {body}");
    let (status, _) = cluster.node(3).admin(Method::DELETE, "/admin/users/root/roles/admin/revoke").await;
    assert_eq!(status, 200);
    assert_eq!(cluster.node(2).request(Method::GET, "/admin/rooms", Some(&root)).await.0, 200);
}

#[tokio::test]
async fn private_rooms_kicks_and_conversations_hold_on_every_shard_of_a_redis_cluster() {
    // Lists are written only once a replica holds them, as messages are.
    let mut cluster = Cluster::start_sharded(&[("AUTHCHAT__REDIS__ACK_REPLICAS", "1")]).await;
    let shards = cluster.shards();
    let mut by_primary = std::collections::BTreeMap::new();
    for i in 0..64 {
        let room = format!("club-{i}");
        by_primary.entry(shards.primary_of(&room)).or_insert(room);
    }
    assert_eq!(by_primary.len(), 3, "64 names land on all three primaries: {by_primary:?}");
    let rooms: Vec<String> = by_primary.into_values().collect();
    let mut alice = cluster.node(1).member("alice").await;
    let mut bob = cluster.node(2).member("bob").await;
    let mut eve = cluster.node(3).member("eve").await;

    for room in &rooms {
        let created =
            ask(&mut alice, json!({"type":"create","room":room,"private":true,"invite":["bob"]}), "joined").await;
        assert_eq!(created["access"]["kind"], "private", "{created}");
        alice.send_acked(room, &format!("in {room}")).await;
        bob.wait_for(AT_ONCE, "invited", |f| (f["type"] == "invited" && f["room"] == *room).then_some(())).await;
        let joined = try_join(&mut bob, room).await;
        assert_eq!(texts_of(&joined["history"]), [format!("in {room}")], "{joined}");
        assert_eq!(try_join(&mut eve, room).await["code"], "forbidden");
    }
    let listed = ask(&mut bob, json!({"type":"rooms"}), "rooms").await;
    let names: Vec<&str> = listed["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = rooms.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(names, expected, "the user's index works on a cluster too");

    for room in &rooms {
        alice.ws.send(json!({"type":"kick","room":room,"user":"bob"})).await;
        assert_eq!(left_from(&mut bob, room).await["reason"], "kicked");
        assert_eq!(try_join(&mut bob, room).await["code"], "forbidden", "kept out of {room}");
    }

    let opened = ask(&mut alice, json!({"type":"dm","user":"bob"}), "joined").await;
    let dm = opened["room"].as_str().unwrap().to_owned();
    bob.wait_for(AT_ONCE, "the conversation", |f| (f["type"] == "invited" && f["room"] == dm).then_some(())).await;
    assert_eq!(try_join(&mut bob, &dm).await["type"], "joined");
    assert_eq!(try_join(&mut eve, &dm).await["code"], "forbidden");
}
