//! Rooms, messages, acks, presence, history, and bad input that never costs the connection.

use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn two_users_chat_with_presence_acks_and_increasing_ids() {
    let app = spawn_app().await;
    let (mut alice, _) = app.connect_as("alice").await;
    let (mut bob, _) = app.connect_as("bob").await;

    alice.send(json!({"type":"join","room":"general"})).await;
    let joined = alice.next_of("joined").await;
    assert_eq!(joined["members"], json!(["alice"]));
    assert_eq!(joined["history"], json!([]));

    bob.send(json!({"type":"join","room":"general"})).await;
    assert_eq!(bob.next_of("joined").await["members"], json!(["alice", "bob"]));
    let presence = alice.next_of("presence").await;
    assert_eq!(presence, json!({"type":"presence","room":"general","user":"bob","event":"join"}));

    alice.send(json!({"type":"send","room":"general","text":"hello bob","ref":"a1"})).await;
    let message = alice.next_of("message").await;
    assert_eq!(message["from"], "alice");
    assert_eq!(message["text"], "hello bob");
    let first_id = message["id"].as_u64().unwrap();
    let ack = alice.next_of("ack").await;
    assert_eq!(ack["ref"], "a1");
    assert_eq!(ack["id"], first_id);
    let seen_by_bob = bob.next_of("message").await;
    assert_eq!(seen_by_bob, message);
    assert!(seen_by_bob["ts"].as_u64().unwrap() > 0);

    bob.send(json!({"type":"send","room":"general","text":"hi alice","ref":7})).await;
    let reply = alice.next_of("message").await;
    assert_eq!(reply["id"], first_id + 1);
    assert_eq!(bob.next_of("ack").await["ref"], 7);

    // leaving and disconnecting announce the user
    bob.send(json!({"type":"leave","room":"general"})).await;
    assert_eq!(bob.next_of("left").await["room"], "general");
    assert_eq!(alice.next_of("presence").await["event"], "leave");
    bob.send(json!({"type":"join","room":"general"})).await;
    bob.next_of("joined").await;
    assert_eq!(alice.next_of("presence").await["event"], "join");
    bob.close().await;
    let gone = alice.next_of("presence").await;
    assert_eq!((gone["user"].as_str(), gone["event"].as_str()), (Some("bob"), Some("leave")));
}

#[actix_web::test]
async fn history_is_returned_on_join_and_paged_with_before_and_limit() {
    let app = spawn_app_with("[chat]\nhistory_size = 5\n[ws.rate_limit]\nburst = 100.0").await;
    let (mut alice, _) = app.connect_as("alice").await;
    alice.send(json!({"type":"join","room":"log"})).await;
    alice.next_of("joined").await;
    for i in 1..=7 {
        alice.send(json!({"type":"send","room":"log","text":format!("m{i}")})).await;
        alice.next_of("ack").await;
    }
    let (mut bob, _) = app.connect_as("bob").await;
    bob.send(json!({"type":"join","room":"log"})).await;
    let joined = bob.next_of("joined").await;
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(&joined["history"]), [3, 4, 5, 6, 7], "the last history_size messages, oldest first");

    bob.send(json!({"type":"history","room":"log","before":6,"limit":2})).await;
    let page = bob.next_of("history").await;
    assert_eq!(ids(&page["messages"]), [4, 5]);
    assert_eq!(page["messages"][0]["text"], "m4");

    // a rejoin after a reconnect asks only for what it missed
    bob.send(json!({"type":"join","room":"log","since":6})).await;
    assert_eq!(ids(&bob.next_of("joined").await["history"]), [7]);
}

#[actix_web::test]
async fn every_bad_input_gets_an_error_and_the_connection_stays_open() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect_as("alice").await;
    let long = "x".repeat(4001);
    let cases: Vec<(String, &str)> = vec![
        ("this is not json".into(), "bad_json"),
        (json!({"type":"dance"}).to_string(), "unknown_type"),
        (json!({"room":"general"}).to_string(), "missing_field"),
        (json!({"type":"send","room":"general"}).to_string(), "missing_field"),
        (json!({"type":"join","room":42}).to_string(), "invalid_field"),
        (json!({"type":"join","room":"bad room!"}).to_string(), "invalid_room"),
        (json!({"type":"join","room":"x".repeat(65)}).to_string(), "invalid_room"),
        (json!({"type":"send","room":"general","text":"hi"}).to_string(), "not_member"),
        (json!({"type":"leave","room":"general"}).to_string(), "not_member"),
        (json!({"type":"history","room":"general"}).to_string(), "not_member"),
        (json!({"type":"send","room":"general","text": long}).to_string(), "text_too_long"),
        (json!({"type":"send","room":"general","text":"   "}).to_string(), "empty_text"),
        (json!({"type":"auth","token":"x"}).to_string(), "already_authenticated"),
    ];
    for (input, code) in cases {
        ws.send_text(&input).await;
        let error = ws.next_json().await;
        assert_eq!(error["type"], "error", "input {input}");
        assert_eq!(error["code"], code, "input {input}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    // refusals say which request, room and ref they refuse
    ws.send(json!({"type":"history","room":"elsewhere","ref":4})).await;
    let error = ws.next_json().await;
    assert_eq!(
        (error["request"].as_str(), error["room"].as_str(), error["ref"].as_u64()),
        (Some("history"), Some("elsewhere"), Some(4))
    );
    ws.send(json!({"type":"leave","room":"elsewhere"})).await;
    let error = ws.next_json().await;
    assert_eq!((error["request"].as_str(), error["code"].as_str()), (Some("leave"), Some("not_member")));
    assert!(error.get("ref").is_none());
    ws.send(json!({"type":"send","room":"bad room","text":"x","ref":"r9"})).await;
    let error = ws.next_json().await;
    assert_eq!((error["room"].as_str(), error["ref"].as_str()), (Some("bad room"), Some("r9")));
    ws.assert_alive().await;
    // exactly 4000 characters is fine
    ws.send(json!({"type":"join","room":"general"})).await;
    ws.next_of("joined").await;
    ws.send(json!({"type":"send","room":"general","text":"é".repeat(4000)})).await;
    ws.next_of("ack").await;
}

#[actix_web::test]
async fn a_send_resent_with_its_ref_after_a_reconnect_is_acknowledged_and_delivered_once() {
    let app = spawn_app().await;
    let (mut bob, _) = app.connect_as("bob").await;
    bob.send(json!({"type":"join","room":"r"})).await;
    bob.next_of("joined").await;

    let (mut alice, _) = app.connect_as("alice").await;
    alice.send(json!({"type":"join","room":"r"})).await;
    alice.next_of("joined").await;
    alice.send(json!({"type":"send","room":"r","text":"once","ref":"k7-1"})).await;
    let first = alice.next_of("ack").await["id"].as_u64().unwrap();
    alice.close().await;

    // the client did not see the ack (say), reconnects and sends again with the same ref
    let (mut alice, _) = app.connect_as("alice").await;
    alice.send(json!({"type":"join","room":"r"})).await;
    alice.next_of("joined").await;
    alice.send(json!({"type":"send","room":"r","text":"once","ref":"k7-1"})).await;
    let ack = alice.next_of("ack").await;
    assert_eq!((ack["id"].as_u64(), ack["ref"].as_str()), (Some(first), Some("k7-1")), "{ack}");
    alice.send(json!({"type":"send","room":"r","text":"next","ref":"k7-2"})).await;
    assert_eq!(alice.next_of("ack").await["id"].as_u64(), Some(first + 1));

    // bob saw "once" once, then "next"
    let texts: Vec<String> = {
        let mut texts = Vec::new();
        while texts.len() < 2 {
            let v = bob.next_of("message").await;
            texts.push(v["text"].as_str().unwrap().to_owned());
        }
        texts
    };
    assert_eq!(texts, ["once", "next"]);
    alice.send(json!({"type":"history","room":"r"})).await;
    let history = alice.next_of("history").await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 2, "{history}");
}
