//! The server restarts under an open page: the page shows it is reconnecting, comes back by
//! itself, and rejoins its room.

use std::time::Duration;

use serde_json::json;

use crate::pages::*;
use crate::support::{spawn_app, spawn_app_with};
use crate::webdriver::Chromedriver;

#[actix_web::test]
async fn the_page_reconnects_by_itself_after_a_server_restart() {
    let app = spawn_app().await;
    let port = app.port;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;
    open_chat(&alice, &app, "alice").await;

    app.stop().await.expect("the first server stops cleanly");
    let down = wait_badge(&alice, "reconnecting", "reconnecting").await;
    assert!(down["text"].as_str().unwrap().contains("Reconnecting"), "{down}");

    // Same port, same signing secret: the page's token is still good.
    let app = spawn_app_with(&format!("[server]\nport = {port}")).await;
    // Backoff may have grown to a few seconds while the server was down, hence the longer wait.
    let up = alice
        .wait_for_within(
            "the page to reconnect to the new server",
            "const b = document.getElementById('conn-badge'); return b.dataset.state === 'connected' && b.dataset.connects;",
            Duration::from_secs(25),
        )
        .await;
    assert_eq!(up, "2", "a second welcome, on a new socket");

    // It rejoined general on the new server: it sees a newcomer and their message.
    let (mut bob, _) = app.connect_as("bob").await;
    bob.send(json!({"type": "join", "room": "general"})).await;
    let joined = bob.next_of("joined").await;
    assert_eq!(joined["members"], json!(["alice", "bob"]), "alice is back in general");
    bob.send(json!({"type": "send", "room": "general", "text": "welcome back"})).await;
    wait_message(&alice, "bob", "welcome back").await;
    wait_member(&alice, "bob").await;
    alice.quit().await;
}
