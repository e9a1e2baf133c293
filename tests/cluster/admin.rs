//! Operator actions and ended logins across nodes: whichever node gets the request, the sockets
//! it concerns close wherever they are, and the answer says which nodes did what.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;
use crate::helpers::*;

/// A socket on another node closes within this (a Redis round trip; generous on purpose).
const CLOSES: Duration = Duration::from_secs(5);

/// The row for `member`'s socket in a `/admin/connections` answer: its conn id, user and node.
fn row<'a>(list: &'a Value, member: &Member) -> Option<&'a Value> {
    let welcome = &member.welcome;
    list["connections"].as_array()?.iter().find(|row| {
        row["conn_id"] == welcome["conn_id"] && row["user"] == welcome["user"] && row["node"] == welcome["node"]
    })
}

#[tokio::test]
async fn any_node_lists_every_nodes_connections() {
    let cluster = Cluster::start().await;
    let mut alice = cluster.node(1).member("alice").await;
    alice.join("ops").await;
    let bob = cluster.node(2).member("bob").await;
    let carol = cluster.node(3).member("carol").await;

    for node in cluster.nodes() {
        let (status, list) = node.admin(Method::GET, "/admin/connections").await;
        assert_eq!(status, 200, "{list}");
        for member in [&alice, &bob, &carol] {
            assert!(
                row(&list, member).is_some(),
                "the list through {} has no row for {}'s socket (conn_id {}): {list}",
                node.id,
                member.who,
                member.welcome["conn_id"]
            );
        }
        assert_eq!(list["connections"].as_array().unwrap().len(), 3, "through {}: {list}", node.id);
        assert_eq!(list["missing"], json!([]), "every node answered {}: {list}", node.id);
    }
    let list = cluster.node(3).admin(Method::GET, "/admin/connections").await.1;
    let alice_row = row(&list, &alice).unwrap();
    assert_eq!(alice_row["rooms"], json!(["ops"]), "the owning node fills in the rows: {alice_row}");

    let (status, only_bob) = cluster.node(1).admin(Method::GET, "/admin/connections?user=bob").await;
    assert_eq!(status, 200);
    let rows = only_bob["connections"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{only_bob}");
    assert_eq!((&rows[0]["user"], &rows[0]["node"]), (&json!("bob"), &json!("n2")));
}

#[tokio::test]
async fn a_node_that_does_not_hold_a_socket_disconnects_it_and_a_users_sockets_everywhere() {
    let cluster = Cluster::start().await;
    let mut alice = cluster.node(1).member("alice").await;
    let mut bob_n2 = cluster.node(2).member("bob").await;
    let mut bob_n3 = cluster.node(3).member("bob").await;
    let mut carol = cluster.node(3).member("carol").await;

    // alice's socket is on n1; ask n2.
    let path = format!("/admin/connections/{}", alice.welcome["conn_id"]);
    let (status, body) = cluster.node(2).admin(Method::DELETE, &path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(alice.expect_close(CLOSES).await, (4004, "disconnected by an operator".into()));
    assert_eq!(body["closed"], 1, "{body}");
    // every node answers, the one that held it with its close
    assert_eq!(body["nodes"], json!({"n1": 1, "n2": 0, "n3": 0}), "{body}");
    assert_eq!(body["missing"], json!([]), "{body}");
    // Today's per-node counters give bob on n2 the same conn id as alice on n1: n2 closed bob.
    bob_n2.ws.assert_alive().await;
    let (status, body) = cluster.node(3).admin(Method::DELETE, &path).await;
    assert_eq!((status, &body["error"]), (404, &json!("not_found")), "a closed socket is gone everywhere: {body}");

    // bob has sockets on n2 and n3; ask n1, which holds none of them.
    let (status, body) = cluster.node(1).admin(Method::DELETE, "/admin/users/bob/connections").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bob_n2.expect_close(CLOSES).await.0, 4004, "bob's socket on n2");
    assert_eq!(bob_n3.expect_close(CLOSES).await.0, 4004, "bob's socket on n3");
    assert_eq!(body["closed"], 2, "{body}");
    assert_eq!((&body["nodes"]["n2"], &body["nodes"]["n3"]), (&json!(1), &json!(1)), "{body}");
    let mut others =
        body["nodes"].as_object().unwrap().iter().filter(|(node, _)| !["n2", "n3"].contains(&node.as_str()));
    assert!(others.all(|(_, closed)| *closed == 0), "only n2 and n3 closed any: {body}");
    carol.ws.assert_alive().await;
}

/// The finding: a revoke handled by one node left the user's sockets on the others open.
#[tokio::test]
async fn a_revoke_through_node_2_closes_the_users_sockets_on_other_nodes_with_4003() {
    let cluster = Cluster::start().await;
    let token = sign("carol", 300, &[]);
    let mut carol_n3 = cluster.node(3).connect_with("carol", &token).await;
    let mut carol_n1 = cluster.node(1).connect_with("carol", &token).await;
    let mut alice = cluster.node(3).member("alice").await;

    let (status, body) = cluster.node(2).admin(Method::POST, "/admin/users/carol/revoke").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(carol_n3.expect_close(CLOSES).await, (4003, "token revoked".into()), "carol's socket on n3");
    assert_eq!(carol_n1.expect_close(CLOSES).await, (4003, "token revoked".into()), "carol's socket on n1");
    assert_eq!(body["closed"], 2, "{body}");
    alice.ws.assert_alive().await;
    // The mark was already shared before issue 12: every node refuses the old token.
    for node in cluster.nodes() {
        expect_refused(&format!("ws://127.0.0.1:{}/ws?token={token}", node.port), &[], 401, "token_revoked").await;
    }
}

/// Ending a login (refresh-token reuse, logout) on one node closes its sockets on every node,
/// with the close a single node sends (4002).
#[tokio::test]
async fn refresh_token_reuse_and_logout_close_that_logins_sockets_on_every_node() {
    let cluster = Cluster::start().await;
    let (access, first_cookie) = cluster.node(1).login("alice").await;
    let mut sockets = Vec::new();
    for n in 1..=3 {
        sockets.push(cluster.node(n).connect_with("alice", &access).await);
    }
    let (status, body, second_cookie) = cluster.node(2).post_with_refresh("/api/token/refresh", &first_cookie).await;
    assert_eq!(status, 200, "{body}");
    assert!(second_cookie.is_some(), "rotated");
    // The first cookie again, on n3: theft is assumed and the whole login ends.
    let (status, body, _) = cluster.node(3).post_with_refresh("/api/token/refresh", &first_cookie).await;
    assert_eq!((status, &body["error"]), (401, &json!("refresh_token_reused")), "{body}");
    for socket in &mut sockets {
        assert_eq!(socket.expect_close(CLOSES).await, (4002, "refresh token reused".into()), "{}", socket.who);
    }

    let (access, _) = cluster.node(3).login("bob").await;
    let (other_login, _) = cluster.node(3).login("bob").await;
    let mut on_n1 = cluster.node(1).connect_with("bob", &access).await;
    let mut on_n3 = cluster.node(3).connect_with("bob", &access).await;
    let mut other = cluster.node(1).connect_with("bob", &other_login).await;
    let (status, body) = cluster.node(2).request(Method::POST, "/api/logout", Some(&access)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(on_n1.expect_close(CLOSES).await, (4002, "logged out".into()), "{}", on_n1.who);
    assert_eq!(on_n3.expect_close(CLOSES).await, (4002, "logged out".into()), "{}", on_n3.who);
    other.ws.assert_alive().await;
}
