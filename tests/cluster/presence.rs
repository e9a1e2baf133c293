//! Presence across nodes: `joined.members` and presence events count every node's members, and
//! the users of a node that dies without a word leave within 30 s.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::helpers::*;

const ROOM: &str = "porch";
/// The target for a dead node's users to leave (node_timeout is 3 s here).
const DEAD_NODE_LEAVES: Duration = Duration::from_secs(30);

#[tokio::test]
async fn members_span_nodes_and_a_killed_nodes_users_leave_within_30s() {
    let mut cluster = Cluster::start().await;
    let mut alice = cluster.node(1).member("alice").await;
    assert_eq!(members_of(&alice.join(ROOM).await), ["alice"]);

    let mut bob = cluster.node(2).member("bob").await;
    let joined = bob.join(ROOM).await;
    assert_eq!(members_of(&joined), ["alice", "bob"], "bob on n2 sees alice (on n1): {joined}");
    alice.expect_presence(ROOM, "bob", "join", WAIT).await;

    let mut carol = cluster.node(3).member("carol").await;
    let joined = carol.join(ROOM).await;
    assert_eq!(members_of(&joined), ["alice", "bob", "carol"], "carol on n3: {joined}");
    alice.expect_presence(ROOM, "carol", "join", WAIT).await;
    bob.expect_presence(ROOM, "carol", "join", WAIT).await;

    // n3 crashes: nobody tells the others, so they must notice its silence.
    alice.forget();
    bob.forget();
    cluster.node_mut(3).kill9();
    let killed = Instant::now();
    alice.expect_presence(ROOM, "carol", "leave", DEAD_NODE_LEAVES).await;
    bob.expect_presence(ROOM, "carol", "leave", DEAD_NODE_LEAVES.saturating_sub(killed.elapsed())).await;
    println!("carol's leave reached n1 and n2 {:?} after n3 was killed", killed.elapsed());
    let joined = cluster.node(1).member("dave").await.join(ROOM).await;
    assert_eq!(members_of(&joined), ["alice", "bob", "dave"], "carol is gone from the members: {joined}");

    // A socket that closes normally leaves at once, across nodes too.
    bob.ws.close().await;
    alice.expect_presence(ROOM, "bob", "leave", WAIT).await;
}
