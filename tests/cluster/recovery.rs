//! `since` across nodes: a client that reconnects to another node, or to a restarted one,
//! catches up from the history kept in Redis, and is told when it cannot (`recovered: false`).

use crate::harness::*;

const ROOM: &str = "catch-up";
/// `chat.history_size` in this test, so a gap wider than history is cheap to make.
const HISTORY: u64 = 10;

#[tokio::test]
async fn since_recovers_on_another_node_and_after_a_node_restart() {
    let mut cluster = Cluster::start_with(&[("AUTHCHAT__CHAT__HISTORY_SIZE", "10")]).await;
    let mut alice = cluster.node(1).member("alice").await;
    let epoch = alice.join(ROOM).await["epoch"].clone();
    for i in 1..=5 {
        assert_eq!(alice.send_acked(ROOM, &format!("m{i}")).await, i);
    }

    // Reconnected to n2 after seeing id 2 on n1.
    let mut bob = cluster.node(2).member("bob").await;
    let joined = bob.join_since(ROOM, 2, &epoch).await;
    assert_eq!(ids_of(&joined["history"]), [3, 4, 5], "history on n2 after since=2: {joined}");
    assert_eq!(texts_of(&joined["history"]), ["m3", "m4", "m5"]);
    assert_eq!(joined["recovered"], true, "{joined}");
    assert!(!epoch.is_null(), "joined carries the room's epoch");
    assert_eq!(joined["epoch"], epoch, "one epoch per room, on every node");
    assert_eq!(joined["offset"], 5, "offset is the room's newest id");

    // A gap wider than the history cannot be filled: the client must reload the room.
    for i in 6..=20 {
        alice.send_acked(ROOM, &format!("m{i}")).await;
    }
    let mut carol = cluster.node(3).member("carol").await;
    let joined = carol.join_since(ROOM, 2, &epoch).await;
    assert_eq!(joined["recovered"], false, "ids 3..=10 are gone from a history of {HISTORY}: {joined}");
    let newest: Vec<u64> = (20 - HISTORY + 1..=20).collect();
    assert_eq!(ids_of(&joined["history"]), newest, "without recovery, the newest {HISTORY}");
    // Without `since` there is nothing to recover, so no verdict.
    let joined = cluster.node(3).member("carol").await.join(ROOM).await;
    assert!(joined.get("recovered").is_none(), "recovered only answers a since: {joined}");

    // A restarted node serves the same history, and the same boot.
    let boot = bob.welcome["boot"].clone();
    drop(bob);
    cluster.node_mut(2).restart().await;
    let mut dave = cluster.node(2).member("dave").await;
    assert_eq!(dave.welcome["boot"], boot, "boot is the cluster's, not the process's");
    let joined = dave.join(ROOM).await;
    assert_eq!(ids_of(&joined["history"]), newest, "a fresh join on the restarted n2: {joined}");
    let mut erin = cluster.node(2).member("erin").await;
    let joined = erin.join_since(ROOM, 18, &epoch).await;
    assert_eq!(ids_of(&joined["history"]), [19, 20], "since=18 on the restarted n2: {joined}");
    assert_eq!(joined["recovered"], true, "{joined}");
}
