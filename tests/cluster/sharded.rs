//! Issue 14 on a real Redis Cluster (three primaries, one replica each): rooms spread over the
//! shards on sharded channels, every store (refresh tokens, revocation marks, sessions and their
//! expiry notifications) working unchanged, and a primary killed with SIGKILL while members
//! chat: delivery resumes once its replica takes over, senders meanwhile get `unavailable`
//! (never silence), and no acknowledged message is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;
use crate::helpers::*;

/// A socket on another node closes within this.
const CLOSES: Duration = Duration::from_secs(5);

/// One room on each of the three primaries.
fn room_per_shard(cluster: &mut Cluster) -> Vec<String> {
    let shards = cluster.shards();
    let mut by_primary: BTreeMap<u16, String> = BTreeMap::new();
    for i in 0..64 {
        let room = format!("room-{i}");
        by_primary.entry(shards.primary_of(&room)).or_insert(room);
    }
    assert_eq!(by_primary.len(), 3, "64 room names land on all three primaries: {by_primary:?}");
    by_primary.into_values().collect()
}

#[tokio::test]
async fn rooms_on_every_shard_chat_across_nodes_over_sharded_channels() {
    let mut cluster = Cluster::start_sharded(&[]).await;
    let rooms = room_per_shard(&mut cluster);
    let mut members = Vec::new();
    for (n, user) in (1..=3).zip(["alice", "bob", "carol"]) {
        let mut member = cluster.node(n).member(user).await;
        for room in &rooms {
            member.join(room).await;
        }
        members.push(member);
    }
    for room in &rooms {
        for (sender, user) in ["alice", "bob", "carol"].iter().enumerate() {
            let text = format!("{user} in {room}");
            let id = members[sender].send_acked(room, &text).await;
            for member in &mut members {
                let message = member.expect_message(room, &text, WAIT).await;
                assert_eq!(message["id"], id, "{} sees the id the sender was acknowledged", member.who);
            }
        }
    }
    for member in &members {
        for room in &rooms {
            assert_eq!(member.ids(room), vec![1, 2, 3], "{} got each message of {room} once, in order", member.who);
        }
    }

    // Each room's messages went out on its own shard, as sharded publishes.
    let prefix = cluster.prefix().to_owned();
    let shards = cluster.shards();
    let spublish: BTreeMap<u16, u64> = shards.calls("spublish").into_iter().collect();
    for room in &rooms {
        let primary = shards.primary_of(room);
        assert!(spublish[&primary] >= 3, "the primary of {room} carried its messages: {spublish:?}");
        let channel = format!("{prefix}{{r:{room}}}:c");
        let subscribers = shards.shard_subscribers(primary, &channel);
        assert_eq!(subscribers, 3, "each node subscribes to {room}'s sharded channel on its shard");
    }
}

#[tokio::test]
async fn logins_refreshes_tickets_and_revocations_work_across_shards_and_nodes() {
    let cluster = Cluster::start_sharded(&[]).await;
    let (token, cookie) = cluster.node(1).login("alice").await;
    let mut on_n1 = cluster.node(1).connect_with("alice", &token).await;
    let (status, body, rotated) = cluster.node(2).post_with_refresh("/api/token/refresh", &cookie).await;
    assert_eq!(status, 200, "a refresh token issued by n1 is honoured by n2: {body}");
    let fresh = body["access_token"].as_str().unwrap().to_owned();
    let mut on_n2 = cluster.node(2).connect_with("alice", &fresh).await;
    // A list through any node names both sockets (operator requests over the cluster).
    let (status, list) = cluster.node(3).admin(Method::GET, "/admin/connections?user=alice").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["connections"].as_array().unwrap().len(), 2, "{list}");

    // the used refresh token is spent, on any node
    let (status, body, _) = cluster.node(3).post_with_refresh("/api/token/refresh", &cookie).await;
    assert_eq!(status, 401, "a refresh token is used once: {body}");
    assert!(rotated.is_some());

    // Reuse of the spent refresh token ended that login: both of its sockets closed.
    for ws in [&mut on_n1, &mut on_n2] {
        let (code, _) = ws.expect_close(CLOSES).await;
        assert_eq!(code, 4002, "{}: the login ended", ws.who);
    }

    // A one-time ticket taken on n1 opens one socket on n3, once.
    let carol = sign("carol", 300, &[]);
    let (status, body) = cluster.node(1).request(Method::POST, "/api/ticket", Some(&carol)).await;
    assert_eq!(status, 200, "{body}");
    let url = format!("ws://127.0.0.1:{}/ws?ticket={}", cluster.node(3).port, body["ticket"].as_str().unwrap());
    let (mut ws, _) = connect(&url, &[]).await.expect("n3 honours n1's ticket");
    assert_eq!(ws.next_of("welcome").await["user"], "carol");
    expect_refused(&url, &[], 401, "invalid_ticket").await;

    let mut bob_n1 = cluster.node(1).member("bob").await;
    let mut bob_n3 = cluster.node(3).member("bob").await;
    let (status, body) = cluster.node(2).admin(Method::POST, "/admin/users/bob/revoke").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bob_n1.expect_close(CLOSES).await, (4003, "token revoked".into()));
    assert_eq!(bob_n3.expect_close(CLOSES).await, (4003, "token revoked".into()));
    let token = sign("bob", 300, &[]);
    expect_refused(&format!("ws://127.0.0.1:{}/ws?token={token}", cluster.node(1).port), &[], 401, "token_revoked")
        .await;
}

#[tokio::test]
async fn sessions_end_on_every_node_when_deleted_or_idle_whichever_shard_holds_them() {
    let cluster = Cluster::start_sharded(&[
        ("AUTHCHAT__AUTH__MODE", "session"),
        ("AUTHCHAT__SESSION__IDLE_TIMEOUT", "3s"),
        ("AUTHCHAT__SESSION__TOUCH_INTERVAL", "200ms"),
        // Long, so that only a keyspace notification can close the idle socket in time.
        ("AUTHCHAT__SESSION__RECONCILE_INTERVAL", "1h"),
    ])
    .await;
    let http = reqwest::Client::new();
    let login = |n: usize, user: &str| {
        let (url, http, user) = (cluster.node(n).url("/api/login"), http.clone(), user.to_owned());
        async move {
            let body = json!({"username": user, "password": format!("{user}-password")});
            let res = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
            set_cookie.strip_prefix("authchat_session=").unwrap().split(';').next().unwrap().to_owned()
        }
    };
    let admin = login(1, "admin").await;
    let as_admin = |method: Method, n: usize, path: &str| {
        let request = http.request(method, cluster.node(n).url(path));
        let request = request.header("Cookie", format!("authchat_session={admin}"));
        async move {
            let res = request.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let open = |n: usize, cookie: &str| {
        let url = format!("ws://127.0.0.1:{}/ws", cluster.node(n).port);
        let header = format!("authchat_session={cookie}");
        async move {
            let (mut ws, _) = connect(&url, &[("Cookie", &header)]).await.expect("cookie accepted");
            ws.next_of("welcome").await;
            ws
        }
    };

    // Six logins: their session keys spread over the shards; any node lists them all.
    let mut cookies = Vec::new();
    for i in 0..6 {
        cookies.push(login(1 + i % 3, "alice").await);
    }
    let (status, alices) = as_admin(Method::GET, 2, "/admin/sessions?user=alice").await;
    assert_eq!(status, 200, "{alices}");
    assert_eq!(alices["sessions"].as_array().expect("a list").len(), 6, "{alices}");
    let (_, everyone) = as_admin(Method::GET, 3, "/admin/sessions").await;
    assert_eq!(everyone["sessions"].as_array().expect("a list").len(), 7, "every primary is scanned: {everyone}");

    // Deleted through n3: its socket on n1 closes at once.
    let bob = login(2, "bob").await;
    let mut bob_ws = open(1, &bob).await;
    let (_, bobs) = as_admin(Method::GET, 3, "/admin/sessions?user=bob").await;
    let id = bobs["sessions"][0]["id"].as_str().expect("bob's session").to_owned();
    let mut idle = open(2, &cookies[5]).await;
    let idle_from = Instant::now();
    let (status, body) = as_admin(Method::DELETE, 3, &format!("/admin/sessions/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(close_of(&mut bob_ws, CLOSES).await.0, 4002, "bob's socket on n1 ends with his session");

    // Idle: nothing touches alice's session, its key expires on its shard, and that shard's
    // keyspace notification closes the socket on n2 (reconciliation would take an hour).
    let (code, reason) = close_of(&mut idle, Duration::from_secs(20)).await;
    assert_eq!(code, 4002, "closed as its session ended ({reason})");
    assert!(idle_from.elapsed() < Duration::from_secs(15), "closed by the notification: {:?}", idle_from.elapsed());
}

/// The next close of `ws` within `within`: (code, reason).
async fn close_of(ws: &mut WsClient, within: Duration) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
        match ws.recv_within(left).await {
            Some(Event::Json(_)) => continue,
            Some(Event::Close(code, reason)) => return (code, reason),
            other => panic!("the socket was not closed within {within:?}: {other:?}"),
        }
    }
}

/// The failover test: a primary killed with SIGKILL mid-chat.
#[tokio::test]
async fn a_killed_primary_fails_over_without_losing_an_acknowledged_message() {
    let mut cluster = Cluster::start_sharded(&[("AUTHCHAT__REDIS__ACK_REPLICAS", "1")]).await;
    let room = "failover";
    let mut alice = cluster.node(1).member("alice").await;
    let mut bob = cluster.node(2).member("bob").await;
    alice.join(room).await;
    bob.join(room).await;
    alice.send_acked(room, "before").await;
    bob.expect_message(room, "before", WAIT).await;

    let primary = cluster.shards().primary_of(room);
    cluster.shards().kill9(primary);
    let killed_at = Instant::now();
    // An orchestrator restarts the dead server; it comes back as the new primary's replica.
    // Until then the new primary has no replica, and with redis.ack_replicas = 1 nothing sent
    // there can be acknowledged: that is the promise, not a fault.
    let restart = async {
        cluster.shards().wait_failed_over().await;
        cluster.shards().restart(primary).await;
    };

    let sending = async {
        // Alice keeps sending, as a client does: every send is answered (ack or error), and one
        // answered `unavailable` is sent again with the same ref until it is acknowledged.
        let mut answers: BTreeMap<String, u64> = BTreeMap::new();
        let mut unavailable = 0;
        let mut other_errors = Vec::new();
        let mut next = 0;
        let mut pending: Option<String> = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while answers.len() < 40 {
            assert!(Instant::now() < deadline, "no recovery within 60 s: {answers:?}, {unavailable} unavailable");
            let text = pending.take().unwrap_or_else(|| {
                next += 1;
                format!("during {next}")
            });
            alice.ws.send(json!({"type": "send", "room": room, "text": text, "ref": text})).await;
            let answer = alice
                .wait_for(Duration::from_secs(10), "an answer to a send", |f| {
                    let is_answer = (f["type"] == "ack" || f["type"] == "error") && f["ref"] == text.as_str();
                    is_answer.then(|| f.clone())
                })
                .await;
            if answer["type"] == "ack" {
                answers.insert(text, answer["id"].as_u64().unwrap());
            } else if answer["code"] == "unavailable" {
                unavailable += 1;
                pending = Some(text);
                tokio::time::sleep(Duration::from_millis(100)).await;
            } else {
                other_errors.push(answer);
            }
        }
        (answers, unavailable, other_errors)
    };
    let ((answers, unavailable, other_errors), ()) = tokio::join!(sending, restart);
    let recovered_in = killed_at.elapsed();
    assert!(other_errors.is_empty(), "only `unavailable` while the shard fails over: {other_errors:?}");
    assert!(unavailable > 0, "sends during the failover were refused, not lost or left unanswered");
    eprintln!(
        "failover: 40 sends acknowledged {recovered_in:?} after the kill ({unavailable} answered unavailable first)"
    );

    // Every acknowledged message reaches bob on the other node, once, and history has them all.
    let acked: BTreeSet<u64> = answers.values().copied().collect();
    assert_eq!(acked.len(), answers.len(), "one id per acknowledged message");
    for text in answers.keys() {
        bob.expect_message(room, text, Duration::from_secs(20)).await;
    }
    let received: Vec<u64> = bob.ids(room);
    let distinct: BTreeSet<u64> = received.iter().copied().collect();
    assert_eq!(distinct.len(), received.len(), "bob got no message twice: {received:?}");
    assert!(acked.is_subset(&distinct), "bob got every acknowledged id: acked {acked:?}, got {received:?}");
    let joined = cluster.node(3).member("carol").await.join(room).await;
    let history: BTreeSet<u64> = ids_of(&joined["history"]).into_iter().collect();
    assert!(acked.is_subset(&history), "history holds every acknowledged id: {history:?}");
}
