//! Two servers in one process sharing one real redis-server (`store.backend = "redis"`): the
//! quick check that they act as one chat. The thorough one, with three node processes, SIGKILL
//! and Redis faults, is `tests/cluster`.

use crate::helpers::*;
use serde_json::json;

async fn two_nodes() -> (TestApp, TestApp, RedisServer) {
    let redis = RedisServer::start().await;
    let shared = format!(
        "[store]\nbackend = \"redis\"\n[redis]\nurl = \"{}\"\n[cluster]\nheartbeat_interval = \"200ms\"\nnode_timeout = \"2s\"\n",
        redis.url()
    );
    let a = spawn_app_with(&format!("[server]\nnode_id = \"a\"\n{shared}")).await;
    let b = spawn_app_with(&format!("[server]\nnode_id = \"b\"\n{shared}")).await;
    // each must have seen the other's heartbeat before operator requests can count on it
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    (a, b, redis)
}

#[actix_web::test]
async fn a_message_sent_on_one_node_reaches_the_members_on_the_other_once_with_one_id() {
    let (a, b, _redis) = two_nodes().await;
    let (mut alice, welcome_a) = a.connect_as("alice").await;
    let (mut bob, welcome_b) = b.connect_as("bob").await;
    assert_eq!(welcome_a["boot"], welcome_b["boot"], "one cluster, one boot id");
    assert_ne!(welcome_a["conn_id"], welcome_b["conn_id"], "connection ids are unique across nodes");
    alice.send(json!({"type":"join","room":"r"})).await;
    alice.next_of("joined").await;
    bob.send(json!({"type":"join","room":"r"})).await;
    let joined = bob.next_of("joined").await;
    assert_eq!(joined["members"], json!(["alice", "bob"]), "{joined}");
    let arrived = alice.next_of("presence").await;
    assert_eq!((arrived["user"].as_str(), arrived["event"].as_str()), (Some("bob"), Some("join")));

    alice.send(json!({"type":"send","room":"r","text":"hello","ref":"x1"})).await;
    let seen = bob.next_of("message").await;
    assert_eq!(
        (seen["text"].as_str(), seen["from"].as_str(), seen["id"].as_u64()),
        (Some("hello"), Some("alice"), Some(1))
    );
    let own = alice.next_of("message").await;
    assert_eq!(own["id"], 1);
    let ack = alice.next_of("ack").await;
    assert_eq!((ack["ref"].as_str(), ack["id"].as_u64()), (Some("x1"), Some(1)));
    // a resend with the same ref is acknowledged with the same id and not delivered again
    alice.send(json!({"type":"send","room":"r","text":"hello","ref":"x1"})).await;
    assert_eq!(alice.next_of("ack").await["id"], 1);
    bob.send(json!({"type":"send","room":"r","text":"second","ref":"y1"})).await;
    assert_eq!(alice.next_of("message").await["text"], "second", "the resend was not delivered");

    // history with since, on the other node
    let (mut carol, _) = b.connect_as("carol").await;
    carol.send(json!({"type":"join","room":"r","since":1})).await;
    let joined = carol.next_of("joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(joined["history"].as_array().unwrap().len(), 1);
    assert_eq!(joined["history"][0]["text"], "second");
}

#[actix_web::test]
async fn operators_on_one_node_list_and_close_sockets_on_the_other() {
    let (a, b, _redis) = two_nodes().await;
    let admin = sign("admin", 300, &["admin"]);
    let (mut dave, welcome) = b.connect_as("dave").await;
    let (status, listing) = a.get_json("/admin/connections", Some(&admin)).await;
    assert_eq!(status, 200, "{listing}");
    let row = listing["connections"].as_array().unwrap().iter().find(|c| c["user"] == "dave").cloned();
    assert_eq!(row.map(|r| r["node"].clone()), Some(json!("b")), "{listing}");
    assert_eq!(listing["missing"], json!([]));

    let path = format!("/admin/connections/{}", welcome["conn_id"]);
    let (status, body) = a.send_json(reqwest::Method::DELETE, &path, Some(&admin)).await;
    assert_eq!((status, body["closed"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(body["nodes"]["b"], 1, "{body}");
    assert_eq!(dave.expect_close().await.0, 4004);

    let (mut carol, _) = b.connect_as("carol").await;
    let (status, body) = a.send_json(reqwest::Method::POST, "/admin/users/carol/revoke", Some(&admin)).await;
    assert_eq!((status, body["closed"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(carol.expect_close().await.0, 4003, "revoked on one node, closed on the other");
}
