//! The server restarts under an open page: the page shows it is reconnecting, comes back by
//! itself, and rejoins its room. The new server numbers the room's messages from 1 again, which
//! the page learns from the new `boot` id in `welcome`: it asks for the whole history (not
//! `since` the last id it saw) and shows it in place of the old server's messages. A reconnect
//! to the same server asks only for what was missed, and shows nothing twice.

use std::time::Duration;

use serde_json::{json, Value};

use crate::pages::*;
use crate::support::{sign, spawn_app, spawn_app_with, TestApp, WsClient};
use crate::webdriver::{Browser, Chromedriver};

#[actix_web::test]
async fn the_page_reconnects_by_itself_after_a_server_restart() {
    let app = spawn_app().await;
    let port = app.port;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;
    open_chat(&alice, &app, "alice").await;

    // The page sees ids 1 to 3 of general on the first server.
    let (mut bob, first_welcome, _) = join_general(&app, "bob").await;
    for i in 1..=3 {
        post(&mut bob, &format!("before the restart {i}")).await;
    }
    wait_message(&alice, "bob", "before the restart 3").await;
    bob.close().await;

    app.stop().await.expect("the first server stops cleanly");
    let down = wait_badge(&alice, "reconnecting", "reconnecting").await;
    assert!(down["text"].as_str().unwrap().contains("Reconnecting"), "{down}");

    // The page stays offline until the new server holds a message, so it rejoins after it.
    alice.set_offline(true).await;
    // Same port, same signing secret: the page's token is still good.
    let app = spawn_app_with(&format!("[server]\nport = {port}")).await;
    let (mut bob, welcome, joined) = join_general(&app, "bob").await;
    assert_eq!((&joined["members"], &joined["history"]), (&json!(["bob"]), &json!([])), "alice is not back yet");
    assert!(welcome["boot"].is_string() && first_welcome["boot"].is_string(), "{first_welcome} {welcome}");
    assert_ne!(welcome["boot"], first_welcome["boot"], "a new process, a new boot id");
    let id = post(&mut bob, "posted while you were away").await;
    assert_eq!(id, 1, "the new server numbers general from 1 again");
    alice.set_offline(false).await;

    // Backoff may have grown to a few seconds while the server was down, hence the longer wait
    // (going back online should cut it short).
    assert_eq!(wait_connects(&alice, 2, Duration::from_secs(25)).await, 2, "a second welcome, on a new socket");

    // It rejoined general without `since` (which, at 3, would have skipped message 1), and shows
    // the new server's messages in place of the old ones: same ids, other messages.
    let seen = wait_message(&alice, "bob", "posted while you were away").await;
    assert_eq!(seen["id"], 1, "{seen}");
    assert_eq!(shown_messages(&alice).await, json!([[1, "bob", "posted while you were away"]]));

    // It is back in general: a newcomer finds it there, and it sees them and their message.
    let (mut carol, _) = app.connect_as("carol").await;
    carol.send(json!({"type": "join", "room": "general"})).await;
    let joined = carol.next_of("joined").await;
    assert_eq!(joined["members"], json!(["alice", "bob", "carol"]), "alice is back in general");
    post(&mut carol, "welcome back").await;
    wait_message(&alice, "carol", "welcome back").await;
    wait_member(&alice, "carol").await;

    // A reconnect to the same server (after an operator's disconnect) asks only for what was
    // missed: it is added after what the page shows, and nothing shows twice.
    let conn_id = badge(&alice).await["connId"].as_u64().expect("a connection id");
    let admin = sign("admin", 300, &["admin"]);
    let (status, body) =
        app.send_json(reqwest::Method::DELETE, &format!("/admin/connections/{conn_id}"), Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    wait_badge(&alice, "disconnected", "disconnected").await;
    post(&mut bob, "while you were out").await;
    alice.click("#reconnect").await;
    assert_eq!(wait_connects(&alice, 3, Duration::from_secs(15)).await, 3);
    wait_message(&alice, "bob", "while you were out").await;
    assert_eq!(
        shown_messages(&alice).await,
        json!([
            [1, "bob", "posted while you were away"],
            [2, "carol", "welcome back"],
            [3, "bob", "while you were out"],
        ]),
    );
    alice.quit().await;
}

#[actix_web::test]
async fn a_restart_that_lost_the_sign_in_is_said_once_at_the_next_renewal() {
    // 20 s tokens, renewed after 10 s: by then the new server, whose memory store starts empty,
    // does not know the page's refresh token.
    let ttl = "[auth]\naccess_ttl = \"20s\"\n";
    let app = spawn_app_with(ttl).await;
    let port = app.port;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;
    open_chat(&alice, &app, "alice").await;
    app.stop().await.expect("the first server stops cleanly");
    let _app = spawn_app_with(&format!("{ttl}[server]\nport = {port}")).await;
    assert_eq!(wait_connects(&alice, 2, Duration::from_secs(25)).await, 2, "back on the still valid token");

    let said = alice
        .wait_for_within(
            "the sign-in form saying why",
            "const n = document.getElementById('signin-reason');
             return !document.getElementById('signin-view').hidden && !n.hidden && n.innerText;",
            Duration::from_secs(30),
        )
        .await;
    assert!(said.as_str().unwrap().contains("the server restarted"), "{said}");
    let times = alice.js("return document.body.innerText.split('server restarted').length - 1", json!([])).await;
    assert_eq!(times, 1, "said once");
    assert_eq!(alice.console_errors().await, Vec::<String>::new());
    alice.quit().await;
}

/// A plain WebSocket client for `user`, in general; returns it, its `welcome` and its `joined`.
async fn join_general(app: &TestApp, user: &str) -> (WsClient, Value, Value) {
    let (mut client, welcome) = app.connect_as(user).await;
    client.send(json!({"type": "join", "room": "general"})).await;
    let joined = client.next_of("joined").await;
    (client, welcome, joined)
}

/// Posts to general and returns the id the server gave the message.
async fn post(client: &mut WsClient, text: &str) -> u64 {
    client.send(json!({"type": "send", "room": "general", "text": text})).await;
    client.next_of("ack").await["id"].as_u64().expect("an id in the ack")
}

/// Waits until the page is connected after `connects` welcomes, and returns that count.
async fn wait_connects(browser: &Browser, connects: u64, limit: Duration) -> u64 {
    let script = format!(
        "const b = document.getElementById('conn-badge');
         return b.dataset.state === 'connected' && Number(b.dataset.connects) >= {connects} && Number(b.dataset.connects);"
    );
    let seen =
        browser.wait_for_within(&format!("the page to be connected ({connects} welcomes)"), &script, limit).await;
    seen.as_u64().expect("a count")
}
