//! Nothing the user wrote is cut: a message over `chat.max_text_chars` (counted in characters,
//! as the server counts them, not UTF-16 units) and a room name over 64 characters are refused
//! with a reason, and left as they were typed.

use serde_json::json;

use crate::pages::*;
use crate::support::spawn_app;
use crate::webdriver::{Chromedriver, ENTER};

/// Pastes `arguments[1]` into the element `arguments[0]` as the browser would (limits such as
/// `maxlength` apply as to a real paste), and answers its length in characters afterwards.
const PASTE: &str = r#"
    const [id, text] = arguments;
    const input = document.getElementById(id);
    input.focus();
    document.execCommand("insertText", false, text);
    return [...input.value].length;
"#;

#[actix_web::test]
async fn a_long_message_or_room_name_is_refused_with_a_reason_never_cut() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;
    open_chat(&alice, &app, "alice").await;
    let (mut bob, _) = app.connect_as("bob").await;
    bob.send(json!({"type": "join", "room": "general"})).await;
    bob.next_of("joined").await;

    // 4,500 characters: kept whole, refused with the numbers, nothing sent.
    let long = "0123456789".repeat(450);
    assert_eq!(alice.js(PASTE, json!(["composer-input", long])).await, 4500, "the paste is kept whole");
    alice.type_keys("#composer-input", ENTER).await;
    let said = alice
        .wait_for(
            "the composer to say the message is too long",
            "const e = document.getElementById('composer-error'); return e && !e.hidden && e.innerText;",
        )
        .await;
    let said = said.as_str().unwrap();
    assert!(said.contains("4,500") && said.contains("4,000"), "says how long it is and may be: {said}");
    assert_eq!(alice.js("return document.getElementById('composer-input').value.length", json!([])).await, 4500);
    assert_eq!(
        alice.js("return document.getElementById('composer-input').getAttribute('aria-invalid')", json!([])).await,
        "true"
    );
    assert!(bob.recv_within(std::time::Duration::from_millis(500)).await.is_none(), "nothing was sent");

    // 2,100 emoji are 2,100 characters (4,200 UTF-16 units): within the limit, sent whole.
    alice
        .js(
            "const i = document.getElementById('composer-input'); i.value = ''; i.dispatchEvent(new Event('input'));",
            json!([]),
        )
        .await;
    let emoji = "😀".repeat(2100);
    assert_eq!(alice.js(PASTE, json!(["composer-input", emoji])).await, 2100);
    assert_eq!(
        alice.js("const e = document.getElementById('composer-error'); return !e || e.hidden", json!([])).await,
        true,
        "no complaint about a message within the limit"
    );
    alice.type_keys("#composer-input", ENTER).await;
    let got = bob.next_of("message").await;
    assert_eq!(got["text"].as_str().unwrap().chars().count(), 2100, "all 2,100 emoji arrive");
    wait_message(&alice, "alice", &emoji).await;

    // A 70-character room name: refused and left as typed; no other room is joined.
    let name = "a-room-name-that-is-much-too-long-for-the-server-to-accept-as-it-is-70";
    assert_eq!(name.len(), 70);
    alice.type_keys("#join-input", &format!("{name}{ENTER}")).await;
    let said = alice
        .wait_for(
            "the join form to say why",
            "const e = document.getElementById('join-error'); return !e.hidden && e.innerText;",
        )
        .await;
    let said = said.as_str().unwrap();
    assert!(said.contains("64") && said.contains("70"), "{said}");
    assert_eq!(alice.js("return document.getElementById('join-input').value", json!([])).await, name);
    let rooms = alice
        .js("return [...document.querySelectorAll('#room-list li.room')].map((li) => li.dataset.room)", json!([]))
        .await;
    assert_eq!(rooms, json!(["general"]), "no room was joined");
    assert_eq!(alice.console_errors().await, Vec::<String>::new());
    alice.quit().await;
}
