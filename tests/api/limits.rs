//! Hostile and slow clients: bursts of logins against the hashing cap, failed-login throttling
//! per address and per user name (memory and Redis, and across two nodes), and request bodies
//! trickled in to hold connections open.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A refusal or an answer: status, `Retry-After` in seconds, `error` code.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    error: Option<String>,
}

async fn answer(res: reqwest::Response) -> Answer {
    let status = res.status().as_u16();
    let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().expect("whole seconds"));
    let body: Value = res.json().await.unwrap_or(Value::Null);
    Answer { status, retry_after, error: body["error"].as_str().map(str::to_owned) }
}

async fn login_from(app: &TestApp, client: &reqwest::Client, user: &str, password: &str) -> Answer {
    answer(app.post_login_with(client, user, password).await).await
}

const RIGHT: &str = "alice-password";
const WRONG: &str = "not-alice-password";

/// No throttling: these tests are about the hashing cap alone.
const NO_THROTTLE: &str = "[auth.login_throttle]\nper_ip = 0\nper_user = 0\n";

#[actix_web::test]
async fn a_login_burst_past_the_hashing_cap_and_queue_gets_503_busy_and_the_rest_are_answered() {
    let app = spawn_app_with(&format!("[auth]\nmax_concurrent_hashes = 1\nhash_queue = 2\n{NO_THROTTLE}")).await;
    let burst: Vec<_> = (0..32)
        .map(|i| {
            let (user, password) = if i % 2 == 0 { ("alice", RIGHT) } else { ("alice", WRONG) };
            let app = &app;
            async move { (password, login_from(app, &app.http, user, password).await) }
        })
        .collect();
    let answers = futures_util::future::join_all(burst).await;
    let mut busy = 0;
    for (password, answer) in &answers {
        match answer.status {
            503 => {
                busy += 1;
                assert_eq!(answer.error.as_deref(), Some("busy"), "{answer:?}");
                assert!(answer.retry_after.is_some_and(|s| s >= 1), "503 busy says when to retry: {answer:?}");
            }
            200 => assert_eq!(*password, RIGHT),
            401 => {
                assert_eq!(*password, WRONG);
                assert_eq!(answer.error.as_deref(), Some("invalid_credentials"));
            }
            other => panic!("unexpected {other}: {answer:?}"),
        }
    }
    assert!(busy > 0, "32 logins at once against 1 slot and 2 queue places: some must be turned away");
    assert!(answers.len() - busy >= 3, "the slot and the queue were answered: {busy} of 32 busy");
    // the server keeps working afterwards
    assert_eq!(login_from(&app, &app.http, "alice", RIGHT).await.status, 200);
    assert_eq!(login_from(&app, &app.http, "alice", WRONG).await.status, 401);
}

/// 3 failures per address and 5 per user name, at once, refilling over 10 minutes (far longer
/// than a test), so that counts only grow while a test runs.
const THROTTLE: &str = "[auth.login_throttle]\nper_ip = 3\nip_window = \"10m\"\nper_user = 5\nuser_window = \"10m\"\n";

async fn throttled_app(redis: Option<&RedisServer>, node: &str) -> TestApp {
    let store = match redis {
        None => String::new(),
        Some(redis) => format!("[store]\nbackend = \"redis\"\n[redis]\nurl = \"{}\"\n", redis.url()),
    };
    spawn_app_with(&format!("{THROTTLE}{store}[server]\nnode_id = \"{node}\"\n")).await
}

fn assert_throttled(answer: &Answer) {
    assert_eq!((answer.status, answer.error.as_deref()), (429, Some("too_many_attempts")), "{answer:?}");
    let wait = answer.retry_after.expect("429 says when to retry");
    assert!((1..=600).contains(&wait), "Retry-After within the window: {wait}");
}

async fn failed_logins_are_throttled_per_address_and_the_user_still_signs_in_from_elsewhere(redis: bool) {
    let redis = if redis { Some(RedisServer::start().await) } else { None };
    let app = throttled_app(redis.as_ref(), "a").await;
    let (attacker, user) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    for _ in 0..3 {
        assert_eq!(login_from(&app, &attacker, "alice", WRONG).await.status, 401);
    }
    assert_throttled(&login_from(&app, &attacker, "alice", WRONG).await);
    // a throttled address is refused before any check: the right password, or another name
    assert_throttled(&login_from(&app, &attacker, "alice", RIGHT).await);
    assert_throttled(&login_from(&app, &attacker, "bob", "bob-password").await);
    // the real user, elsewhere, is not locked out, and that address is not throttled
    assert_eq!(login_from(&app, &user, "alice", RIGHT).await.status, 200);
    assert_eq!(login_from(&app, &user, "alice", WRONG).await.status, 401);
}

async fn failed_logins_are_throttled_per_user_name_across_addresses(redis: bool) {
    let redis = if redis { Some(RedisServer::start().await) } else { None };
    let app = throttled_app(redis.as_ref(), "a").await;
    let first = client_from([127, 0, 0, 2]);
    let second = client_from([127, 0, 0, 3]);
    let third = client_from([127, 0, 0, 4]);
    for _ in 0..3 {
        assert_eq!(login_from(&app, &first, "alice", WRONG).await.status, 401);
    }
    for _ in 0..2 {
        assert_eq!(login_from(&app, &second, "alice", WRONG).await.status, 401);
    }
    // five failures for alice from two addresses: her name is throttled, from anywhere
    assert_throttled(&login_from(&app, &third, "alice", WRONG).await);
    assert_throttled(&login_from(&app, &third, "alice", RIGHT).await);
    // other names are not, from an address with room
    assert_eq!(login_from(&app, &third, "bob", "wrong").await.status, 401);
    assert_eq!(login_from(&app, &third, "bob", "bob-password").await.status, 200);
}

mod memory {
    #[actix_web::test]
    async fn failed_logins_are_throttled_per_address_and_the_user_still_signs_in_from_elsewhere() {
        super::failed_logins_are_throttled_per_address_and_the_user_still_signs_in_from_elsewhere(false).await
    }

    #[actix_web::test]
    async fn failed_logins_are_throttled_per_user_name_across_addresses() {
        super::failed_logins_are_throttled_per_user_name_across_addresses(false).await
    }
}

mod redis {
    #[actix_web::test]
    async fn failed_logins_are_throttled_per_address_and_the_user_still_signs_in_from_elsewhere() {
        super::failed_logins_are_throttled_per_address_and_the_user_still_signs_in_from_elsewhere(true).await
    }

    #[actix_web::test]
    async fn failed_logins_are_throttled_per_user_name_across_addresses() {
        super::failed_logins_are_throttled_per_user_name_across_addresses(true).await
    }
}

#[actix_web::test]
async fn two_nodes_on_one_redis_share_the_failure_counts() {
    let redis = RedisServer::start().await;
    let node_a = throttled_app(Some(&redis), "node-a").await;
    let node_b = throttled_app(Some(&redis), "node-b").await;
    let attacker = client_from([127, 0, 0, 2]);
    for node in [&node_a, &node_b, &node_a] {
        assert_eq!(login_from(node, &attacker, "alice", WRONG).await.status, 401);
    }
    // the fourth failure from this address, on either node, is one too many
    assert_throttled(&login_from(&node_b, &attacker, "alice", WRONG).await);
    assert_throttled(&login_from(&node_a, &attacker, "alice", RIGHT).await);
    assert_eq!(login_from(&node_b, &client_from([127, 0, 0, 3]), "alice", RIGHT).await.status, 200);
}

/// Sends the head of a login with `Content-Length: 10000`, then one byte of body a second;
/// answers what the server sent and how long it took to close the connection, if it did
/// within `give_up`.
async fn trickle_a_body(port: u16, give_up: Duration) -> (String, Option<Duration>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = "POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Content-Length: 10000\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let closed = loop {
        if started.elapsed() > give_up {
            break None;
        }
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break Some(started.elapsed()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
            },
            _ = ticker.tick() => {
                if stream.write_all(b" ").await.is_err() {
                    break Some(started.elapsed());
                }
            }
        }
    };
    (String::from_utf8_lossy(&received).into_owned(), closed)
}

#[actix_web::test]
async fn a_request_body_trickled_in_is_answered_408_and_closed_at_the_request_timeout() {
    let app = spawn_app_with("[server]\nrequest_timeout = \"1s\"").await;
    let (response, closed) = trickle_a_body(app.port, Duration::from_secs(8)).await;
    let took = closed.expect("the server closes a connection whose body never finishes");
    assert!(took >= Duration::from_millis(800), "closed before the request timeout: {took:?}");
    assert!(took < Duration::from_secs(5), "request_timeout is 1s; closed after {took:?}");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(body["error"], "request_timeout");
    // other clients were served meanwhile and still are
    assert_eq!(app.post_login("alice").await.status(), 200);
}

#[actix_web::test]
async fn the_request_timeout_does_not_apply_to_websockets() {
    let app = spawn_app_with("[server]\nrequest_timeout = \"1s\"").await;
    let (mut ws, _) = app.connect_as("alice").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ws.assert_alive().await;
}
