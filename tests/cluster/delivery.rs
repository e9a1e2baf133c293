//! Messages across nodes: ids are assigned once, in Redis, and every member on every node gets
//! every message exactly once, in that one order. And the node identity a client sees.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;

use crate::harness::*;
use crate::helpers::*;

const ROOM: &str = "lobby";
/// Messages each of the three senders sends at once.
const PER_SENDER: usize = 30;
/// All 90 arrive well within this (the engine delivers in milliseconds; a busy debug build
/// gets a wide margin).
const ALL_ARRIVE: Duration = Duration::from_secs(20);

/// The first finding, literally: bob on node 2 never saw what alice sent on node 1.
#[tokio::test]
async fn bob_on_node_2_receives_alices_message_from_node_1() {
    let cluster = Cluster::start().await;
    let mut alice = cluster.node(1).member("alice").await;
    let mut bob = cluster.node(2).member("bob").await;
    alice.join(ROOM).await;
    bob.join(ROOM).await;

    let id = alice.send_acked(ROOM, "hello from n1").await;
    let message = bob.expect_message(ROOM, "hello from n1", WAIT).await;
    assert_eq!(message["from"], "alice");
    assert_eq!(message["id"], id, "bob sees the id alice's ack gave");
    // and back
    bob.send_acked(ROOM, "hello from n2").await;
    alice.expect_message(ROOM, "hello from n2", WAIT).await;
}

/// Three senders on three nodes at once: one sequence 1..=90 that every member sees whole,
/// once, in the same order, with each sender's messages in the order it sent them.
#[tokio::test]
async fn concurrent_senders_on_three_nodes_make_one_order_seen_by_all() {
    let cluster = Cluster::start().await;
    let users = ["alice", "bob", "carol"];
    let mut members = Vec::new();
    for (n, user) in (1..=3).zip(users) {
        let mut member = cluster.node(n).member(user).await;
        member.join(ROOM).await;
        members.push(member);
    }
    let total = PER_SENDER * users.len();

    // Every member sends its burst, then reads; the three run at once.
    let members: Vec<Member> = join_all(members.into_iter().zip(users).map(|(mut member, user)| async move {
        for i in 0..PER_SENDER {
            member.send(ROOM, &format!("{user}-{i:02}")).await;
        }
        member.collect(ROOM, total, ALL_ARRIVE).await;
        // Its acks may trail the last message.
        for i in 0..PER_SENDER {
            member.ack_of(&format!("{user}-{i:02}")).await;
        }
        member
    }))
    .await;

    for member in &members {
        let received = member.received(ROOM);
        let from = |user: &str| received.iter().filter(|(_, from, _)| from == user).count();
        assert_eq!(
            received.len(),
            total,
            "{} received {} of {total} messages within {ALL_ARRIVE:?} (from alice {}, bob {}, carol {})",
            member.who,
            received.len(),
            from("alice"),
            from("bob"),
            from("carol"),
        );
        let expected: Vec<u64> = (1..=total as u64).collect();
        assert_eq!(member.ids(ROOM), expected, "{} got ids out of order, or some twice", member.who);
    }
    let first = members[0].received(ROOM);
    for member in &members[1..] {
        assert_eq!(member.received(ROOM), first, "{} and {} saw different sequences", member.who, members[0].who);
    }
    for (member, user) in members.iter().zip(users) {
        // Every send was acked with the id under which the others saw it.
        for i in 0..PER_SENDER {
            let text = format!("{user}-{i:02}");
            let id = member.acks[&text];
            assert_eq!(first[id as usize - 1], (id, user.to_owned(), text), "ack of {}", member.who);
        }
        // One socket's messages keep the order it sent them in.
        let own: Vec<String> = first.iter().filter(|(_, from, _)| from == user).map(|(_, _, t)| t.clone()).collect();
        let sent: Vec<String> = (0..PER_SENDER).map(|i| format!("{user}-{i:02}")).collect();
        assert_eq!(own, sent, "{}'s messages out of the order it sent them", member.who);
    }

    // Exactly once: a fence sent after everything else arrives as id total+1 with nothing
    // before it, so no duplicate of an earlier message was still on its way (one order means a
    // late duplicate would have to come before the fence).
    let mut members = members;
    let fence = members[0].send_acked(ROOM, "fence").await;
    assert_eq!(fence, total as u64 + 1);
    for member in &mut members {
        member.expect_message(ROOM, "fence", WAIT).await;
        let expected: Vec<u64> = (1..=fence).collect();
        assert_eq!(member.ids(ROOM), expected, "{} got a message twice", member.who);
    }
}

/// Each node says who it is; `boot` is the cluster's (so a client's `since` stays good on any
/// node), and connection ids never collide across nodes (the admin API addresses sockets by them).
#[tokio::test]
async fn nodes_name_themselves_share_one_boot_and_never_reuse_a_conn_id() {
    let cluster = Cluster::start().await;
    let mut sockets = Vec::new();
    for n in 1..=3 {
        for _ in 0..2 {
            let member = cluster.node(n).member("alice").await;
            assert_eq!(member.welcome["node"], format!("n{n}"), "{}", member.welcome);
            sockets.push(member);
        }
    }
    let conn_ids: Vec<u64> =
        sockets.iter().map(|m| m.welcome["conn_id"].as_u64().expect("a numeric conn_id")).collect();
    let unique: HashSet<u64> = conn_ids.iter().copied().collect();
    assert_eq!(unique.len(), conn_ids.len(), "conn ids collide across nodes: {conn_ids:?}");
    assert!(conn_ids.iter().all(|&id| id < 1 << 53), "conn ids stay exact in JavaScript: {conn_ids:?}");
    let boots: Vec<&str> = sockets.iter().map(|m| m.welcome["boot"].as_str().expect("a boot")).collect();
    assert!(boots.iter().all(|b| *b == boots[0]), "every node gives the same boot: {boots:?}");
}
