//! Sending fast, and while the connection is down: the page paces its messages below the
//! server's limits (published in `/api/config`), queues what it cannot send yet, sends it
//! after a reconnect, and never drops or doubles what the user typed.

use std::time::Duration;

use serde_json::{json, Value};

use crate::pages::*;
use crate::support::{sign, spawn_app, WsClient};
use crate::webdriver::{Browser, Chromedriver, STEP};

/// Types and submits `count` messages ("fast 1", "fast 2", …), one every `gap` ms, as a person
/// hammering Enter would; resolves once the last is submitted.
const TYPE_FAST: &str = r#"
    const [prefix, count, gap] = arguments;
    const input = document.getElementById("composer-input");
    return (async () => {
        for (let i = 1; i <= count; i++) {
            input.value = `${prefix} ${i}`;
            input.dispatchEvent(new Event("input"));
            document.getElementById("composer").requestSubmit();
            await new Promise((resolve) => setTimeout(resolve, gap));
        }
    })();
"#;

/// The page's messages not yet confirmed by the server: `[state, text]`.
const PENDING: &str = r##"return [...document.querySelectorAll("#pending li.message")]
    .map((li) => [li.dataset.state, li.querySelector(".text").textContent]);"##;

#[actix_web::test]
async fn two_hundred_messages_sent_as_fast_as_possible_all_arrive_once_in_order_without_4008() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;
    let first = open_chat(&alice, &app, "alice").await;
    let mut bob = watcher(&app).await;

    // 200 messages in about 3.3 s: four times the server's sustained rate per socket.
    alice.js(TYPE_FAST, json!(["fast", 200, 16])).await;
    assert_eq!(alice.js("return document.getElementById('composer-input').value", json!([])).await, "");
    let expected: Vec<String> = (1..=200).map(|i| format!("fast {i}")).collect();
    assert_eq!(received(&mut bob, 200, Duration::from_secs(60)).await, expected, "bob gets each once, in order");
    wait_all_sent(&alice).await;
    let shown: Vec<String> = texts(&shown_messages(&alice).await);
    assert_eq!(shown, expected, "the page shows each once, in order");

    let now = badge(&alice).await;
    assert_eq!(
        (now["connId"].clone(), now["connects"].clone()),
        (first["connId"].clone(), json!(1)),
        "one socket: {now}"
    );
    let notices =
        alice.js("return [...document.querySelectorAll('#notices .notice')].map((n) => n.innerText)", json!([])).await;
    assert_eq!(notices, json!([]), "nothing went wrong, so nothing to say");
    assert_eq!(alice.console_errors().await, Vec::<String>::new());
    alice.quit().await;
}

#[actix_web::test]
async fn messages_typed_while_disconnected_wait_in_the_page_and_go_out_once_after_reconnecting() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;
    let first = open_chat(&alice, &app, "alice").await;
    let mut bob = watcher(&app).await;

    // An operator closes alice's socket: the page does not reconnect by itself.
    let admin = sign("admin", 300, &["admin"]);
    let conn_id = first["connId"].as_u64().unwrap();
    let (status, body) =
        app.send_json(reqwest::Method::DELETE, &format!("/admin/connections/{conn_id}"), Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    wait_badge(&alice, "disconnected", "disconnected").await;

    for text in ["typed while away 1", "typed while away 2", "typed while away 3"] {
        send(&alice, text).await;
    }
    let pending = alice
        .wait_for(
            "three messages waiting",
            &format!("const p = (() => {{ {PENDING} }})(); return p.length === 3 && p;"),
        )
        .await;
    assert_eq!(
        pending,
        json!([["queued", "typed while away 1"], ["queued", "typed while away 2"], ["queued", "typed while away 3"]]),
        "each is shown, waiting"
    );
    assert_eq!(alice.js("return document.getElementById('composer-input').value", json!([])).await, "");

    alice.click("#reconnect").await;
    let expected = ["typed while away 1", "typed while away 2", "typed while away 3"].map(String::from).to_vec();
    assert_eq!(received(&mut bob, 3, STEP).await, expected);
    wait_all_sent(&alice).await;
    assert_eq!(texts(&shown_messages(&alice).await), expected);
    while let Some(event) = bob.recv_within(Duration::from_secs(1)).await {
        assert!(
            !matches!(&event, crate::support::Event::Json(m) if m["type"] == "message"),
            "and nothing more: {event:?}"
        );
    }
    assert_eq!(alice.console_errors().await, Vec::<String>::new());
    alice.quit().await;
}

/// The page's socket drops right after a `send` left it, so the server stored the message but
/// its `ack` never arrived: the page sends it again with the same `ref` after reconnecting, and
/// the server answers with the original `ack` instead of posting it twice.
const DROP_AFTER_SEND: &str = r#"
    const original = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
        original.call(this, data);
        if (JSON.parse(data).text === arguments[0]) {
            WebSocket.prototype.send = original;
            this.close();
        }
    };
"#;

#[actix_web::test]
async fn a_message_whose_ack_was_lost_is_resent_after_reconnecting_and_posted_once() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;
    open_chat(&alice, &app, "alice").await;
    let mut bob = watcher(&app).await;

    let script = DROP_AFTER_SEND.replace("arguments[0]", &js_str("the ack of this one is lost"));
    alice.js(&script, json!([])).await;
    send(&alice, "the ack of this one is lost").await;
    assert_eq!(received(&mut bob, 1, STEP).await, ["the ack of this one is lost"]);
    alice
        .wait_for_within(
            "a second socket",
            "const b = document.getElementById('conn-badge'); return b.dataset.state === 'connected' && b.dataset.connects === '2';",
            Duration::from_secs(20),
        )
        .await;
    wait_all_sent(&alice).await;
    send(&alice, "and the next one").await;
    assert_eq!(received(&mut bob, 1, STEP).await, ["and the next one"], "the first was not posted twice");
    wait_message(&alice, "alice", "and the next one").await;
    assert_eq!(texts(&shown_messages(&alice).await), ["the ack of this one is lost", "and the next one"]);
    alice.quit().await;
}

/// The next `send` frame leaving the page goes to a room the server refuses, once.
const MISROUTE_NEXT_SEND: &str = r#"
    const original = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
        const frame = JSON.parse(data);
        if (frame.type === "send") {
            WebSocket.prototype.send = original;
            data = JSON.stringify({ ...frame, room: "not a room" });
        }
        original.call(this, data);
    };
"#;

#[actix_web::test]
async fn a_refused_message_stays_on_the_page_with_retry_and_goes_out_on_retry() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;
    open_chat(&alice, &app, "alice").await;
    let mut bob = watcher(&app).await;

    alice.js(MISROUTE_NEXT_SEND, json!([])).await;
    send(&alice, "refused the first time").await;
    let failed = alice
        .wait_for(
            "the message marked as not sent",
            r##"const li = document.querySelector("#pending li.message[data-state='failed']");
               return li && !li.querySelector(".retry").hidden && li.innerText;"##,
        )
        .await;
    let failed = failed.as_str().unwrap();
    assert!(failed.contains("refused the first time") && failed.contains("Not sent"), "{failed}");
    let notices = alice.js("return document.querySelectorAll('#notices .notice').length", json!([])).await;
    assert_eq!(notices, 0, "the message itself says it was not sent; no notice on top");

    alice.click("#pending li.message[data-state='failed'] .retry").await;
    assert_eq!(received(&mut bob, 1, STEP).await, ["refused the first time"]);
    wait_all_sent(&alice).await;
    assert_eq!(texts(&shown_messages(&alice).await), ["refused the first time"]);
    assert_eq!(alice.console_errors().await, Vec::<String>::new());
    alice.quit().await;
}

/// Records the `send` frames the page sends, and closes its socket right after the first.
const RECORD_AND_DROP: &str = r#"
    window.sentFrames = [];
    const original = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
        original.call(this, data);
        const frame = JSON.parse(data);
        if (frame.type === "send" && window.sentFrames.push(frame) === 1) this.close();
    };
"#;

#[actix_web::test]
async fn a_message_in_flight_when_the_socket_drops_is_sent_again_with_the_same_ref() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;
    open_chat(&alice, &app, "alice").await;

    alice.js(RECORD_AND_DROP, json!([])).await;
    send(&alice, "in flight").await;
    let frames = alice
        .wait_for_within(
            "the message sent again on a new socket",
            "return window.sentFrames.length >= 2 && window.sentFrames;",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(frames[0]["text"], "in flight");
    assert_eq!(frames[1]["text"], "in flight");
    assert!(frames[0]["ref"].is_string(), "{frames}");
    assert_eq!(frames[0]["ref"], frames[1]["ref"], "the same ref, for the server to recognise it: {frames}");
    assert_eq!(badge(&alice).await["connects"], 2, "after a reconnect");
    alice.quit().await;
}

/// bob on a plain socket in general, to see what the server broadcast.
async fn watcher(app: &crate::support::TestApp) -> WsClient {
    let (mut bob, _) = app.connect_as("bob").await;
    bob.send(json!({"type": "join", "room": "general"})).await;
    bob.next_of("joined").await;
    bob
}

/// The texts of the next `count` messages from alice, within `limit` in all.
async fn received(bob: &mut WsClient, count: usize, limit: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + limit;
    let mut texts = Vec::new();
    while texts.len() < count {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match bob.recv_within(left).await {
            Some(crate::support::Event::Json(m)) if m["type"] == "message" && m["from"] == "alice" => {
                texts.push(m["text"].as_str().unwrap().to_owned())
            }
            Some(crate::support::Event::Json(_)) => {}
            other => panic!("after {} of {count} messages: {other:?}", texts.len()),
        }
    }
    texts
}

/// Waits until the page has no message left to send.
async fn wait_all_sent(browser: &Browser) {
    let script = format!("const p = (() => {{ {PENDING} }})(); return p.length === 0;");
    browser.wait_for_within("every message confirmed", &script, Duration::from_secs(30)).await;
}

fn texts(shown: &Value) -> Vec<String> {
    shown.as_array().unwrap().iter().map(|m| m[2].as_str().unwrap().to_owned()).collect()
}
