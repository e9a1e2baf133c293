//! The keyboard alone: Enter on a room in the list, or on its leave button, leaves the focus on
//! a control (never on `<body>`); and a fresh page load asks nothing that fails (no 401 in the
//! console from a sign-in it had no reason to resume).

use serde_json::json;

use crate::pages::*;
use crate::support::spawn_app;
use crate::webdriver::{Chromedriver, ENTER};

/// What has the focus: `[room of its list item or null, its class]`.
const FOCUSED: &str = r#"const a = document.activeElement;
    return [a.closest("li.room")?.dataset.room ?? null, a === document.body ? "body" : a.className || a.id];"#;

#[actix_web::test]
async fn enter_on_a_room_or_its_leave_button_keeps_the_focus_on_a_control() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;

    // A first visit: nothing to resume, so nothing is asked that fails.
    alice.goto(&app.url("/")).await;
    alice.find("#signin-view:not([hidden])").await;
    assert_eq!(alice.network_errors().await, Vec::<String>::new(), "a fresh page load logs no failed request");

    open_chat(&alice, &app, "alice").await;
    for room in ["alpha", "beta"] {
        alice.type_keys("#join-input", &format!("{room}{ENTER}")).await;
        wait_joined(&alice, room).await;
    }

    alice.type_keys("#room-list li[data-room='general'] .room-button", ENTER).await;
    alice
        .wait_for("general to be shown", "return document.getElementById('room-title').textContent === '# general'")
        .await;
    assert_eq!(alice.js(FOCUSED, json!([])).await, json!(["general", "room-button"]), "the focus stays on the room");

    alice.type_keys("#room-list li[data-room='alpha'] .room-button", ENTER).await;
    alice.wait_for("alpha to be shown", "return document.getElementById('room-title').textContent === '# alpha'").await;
    assert_eq!(alice.js(FOCUSED, json!([])).await, json!(["alpha", "room-button"]));

    // Leaving alpha: the focus moves to the room that takes its place in the list.
    alice.type_keys("#room-list li[data-room='alpha'] .leave-button", ENTER).await;
    alice.wait_for("alpha to be gone", "return !document.querySelector('#room-list li[data-room=\"alpha\"]')").await;
    assert_eq!(alice.js(FOCUSED, json!([])).await, json!(["beta", "room-button"]), "the next room has the focus");

    // Leaving the last room in the list: the previous one gets the focus.
    alice.type_keys("#room-list li[data-room='beta'] .leave-button", ENTER).await;
    alice.wait_for("beta to be gone", "return !document.querySelector('#room-list li[data-room=\"beta\"]')").await;
    assert_eq!(alice.js(FOCUSED, json!([])).await, json!(["general", "room-button"]));

    assert_eq!(alice.console_errors().await, Vec::<String>::new());
    alice.quit().await;
}
