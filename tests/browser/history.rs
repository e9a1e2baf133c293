//! "Load older messages" shows only when there is more to load, and the page says when a
//! room's older messages are no longer kept by the server.

use serde_json::json;

use crate::pages::*;
use crate::support::{spawn_app_with, TestApp};
use crate::webdriver::{Browser, Chromedriver};

/// Lets the test post hundreds of messages quickly from one socket.
const FAST: &str =
    "[ws.rate_limit]\nper_second = 10000.0\nburst = 10000.0\nuser_per_second = 10000.0\nuser_burst = 10000.0\n";

/// `{button, note, first, count}`: whether the button and the "no longer kept" note show, and the
/// first message id and the number of messages on the page.
const STATE: &str = r##"
    const ids = [...document.querySelectorAll("#messages li.message")].map((li) => Number(li.dataset.id));
    const note = document.getElementById("history-note");
    return { button: !document.getElementById("load-older").hidden, note: !!note && !note.hidden && note.innerText,
             first: ids[0] ?? null, count: ids.length };
"##;

#[actix_web::test]
async fn load_older_shows_only_when_there_is_more_and_the_page_says_when_history_is_gone() {
    let driver = Chromedriver::start().await;

    // The default keeps 100 messages per room: after 120, the first 20 are gone.
    let app = spawn_app_with(FAST).await;
    post_many(&app, 1..=120).await;
    let alice = driver.browser().await;
    open_chat(&alice, &app, "alice").await;
    let state = wait_count(&alice, 100).await;
    assert_eq!(
        (state["first"].clone(), state["button"].clone()),
        (json!(21), json!(false)),
        "nothing more to load: {state}"
    );
    let note = state["note"].as_str().unwrap_or_else(|| panic!("the page says older messages are gone: {state}"));
    assert!(note.contains("no longer kept"), "{note}");
    alice.quit().await;
    app.stop().await.unwrap();

    // A server keeping 600: the page holds 500 per room, so older ones can be loaded once the
    // page has let them go, until the first message of the room.
    let app = spawn_app_with(&format!("{FAST}[chat]\nhistory_size = 600")).await;
    post_many(&app, 1..=550).await;
    let alice = driver.browser().await;
    open_chat(&alice, &app, "alice").await;
    let state = wait_count(&alice, 550).await;
    assert_eq!(state, json!({"button": false, "note": false, "first": 1, "count": 550}), "the whole room is shown");
    post_many(&app, 551..=551).await;
    // Waits for the page to settle on its 500 newest (it may be read between two renders).
    let state = wait_until(&alice, "500 messages from 52 on", "s.count === 500 && s.first === 52").await;
    assert_eq!((state["first"].clone(), state["button"].clone()), (json!(52), json!(true)), "{state}");
    alice.click("#load-older").await;
    let state = wait_count(&alice, 550).await;
    assert_eq!((state["first"].clone(), state["button"].clone()), (json!(2), json!(true)), "{state}");
    alice.click("#load-older").await;
    let state = wait_count(&alice, 551).await;
    assert_eq!(state, json!({"button": false, "note": false, "first": 1, "count": 551}), "back to the room's start");
    assert_eq!(alice.console_errors().await, Vec::<String>::new());
    alice.quit().await;
}

/// bob posts "message {i}" for each i in `range` to general, waiting for each ack.
async fn post_many(app: &TestApp, range: std::ops::RangeInclusive<u32>) {
    let (mut bob, _) = app.connect_as("bob").await;
    bob.send(json!({"type": "join", "room": "general"})).await;
    bob.next_of("joined").await;
    for i in range {
        bob.send(json!({"type": "send", "room": "general", "text": format!("message {i}")})).await;
        bob.next_of("ack").await;
    }
    bob.close().await;
}

/// Waits until the page shows `count` messages, and answers [`STATE`].
async fn wait_until(browser: &Browser, what: &str, condition: &str) -> serde_json::Value {
    let script = format!("const s = (() => {{ {STATE} }})(); return ({condition}) && s;");
    browser.wait_for(what, &script).await
}

async fn wait_count(browser: &Browser, count: u64) -> serde_json::Value {
    let script = format!("const s = (() => {{ {STATE} }})(); return s.count === {count} && s;");
    browser.wait_for(&format!("{count} messages on the page"), &script).await
}
