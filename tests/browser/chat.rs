//! Two people chatting through the web UI: messages with sender and time, presence, the newest
//! message in view, server errors on screen, labels on every control, and a phone-width layout.

use serde_json::json;

use crate::pages::*;
use crate::support::spawn_app_with;
use crate::webdriver::{Chromedriver, ENTER};

#[actix_web::test]
async fn two_users_chat_in_a_room_and_each_sees_the_others_messages_and_presence() {
    // Two rooms per connection, so a third join is refused by the server.
    let app = spawn_app_with("[chat]\nmax_rooms_per_connection = 2").await;
    let driver = Chromedriver::start().await;
    let (alice, bob) = (driver.browser().await, driver.browser().await);

    open_chat(&alice, &app, "alice").await;
    open_chat(&bob, &app, "bob").await;

    // Presence: each lists the other, and alice's log says bob arrived.
    wait_member(&alice, "bob").await;
    wait_member(&bob, "alice").await;
    wait_member(&alice, "alice").await;
    alice
        .wait_for(
            "a 'bob joined' line",
            "return [...document.querySelectorAll('#messages li.event')].some((li) => li.textContent === 'bob joined')",
        )
        .await;

    // Enter sends; the other side sees sender, text and time.
    send(&alice, "Hi Bob! Is the release build green?").await;
    let seen = wait_message(&bob, "alice", "Hi Bob! Is the release build green?").await;
    assert_eq!(seen["mine"], false, "bob's page shows alice's message as someone else's");
    assert_eq!(seen["timeOk"], true, "the message shows when it was sent: {seen}");
    assert!(seen["time"].as_str().is_some_and(|t| t.contains(':')), "a clock time: {seen}");
    let own = wait_message(&alice, "alice", "Hi Bob! Is the release build green?").await;
    assert_eq!(own["mine"], true);
    assert_eq!(own["id"], seen["id"], "both pages show the same stored message");
    assert_eq!(alice.js("return document.getElementById('composer-input').value", json!([])).await, "");

    send(&bob, "Yes, every check passed a minute ago.").await;
    send(&bob, "Sockets renew their tokens in-band now, so nobody gets kicked at expiry.").await;
    wait_message(&alice, "bob", "Yes, every check passed a minute ago.").await;
    wait_message(&alice, "bob", "Sockets renew their tokens in-band now, so nobody gets kicked at expiry.").await;
    // A third person (the dev account admin), on a plain WebSocket.
    let (mut admin, _) = app.connect_as("admin").await;
    admin.send(json!({"type": "join", "room": "general"})).await;
    admin.next_of("joined").await;
    admin.send(json!({"type": "send", "room": "general", "text": "Release notes are in the wiki, have a look."})).await;
    wait_message(&alice, "admin", "Release notes are in the wiki, have a look.").await;
    wait_member(&bob, "admin").await;
    send(&alice, "Great, I will tag it after lunch.").await;
    wait_message(&bob, "alice", "Great, I will tag it after lunch.").await;

    // A second room, joined from the form.
    alice.type_keys("#join-input", &format!("release-train{ENTER}")).await;
    wait_joined(&alice, "release-train").await;
    alice.click("#room-list li[data-room='general'] .room-button").await;
    wait_message(&alice, "alice", "Great, I will tag it after lunch.").await;

    assert_eq!(unlabelled_controls(&alice).await, Vec::<String>::new(), "every control has a label");
    alice.emulate_viewport(1200, 800, false).await;
    save_screenshot(&alice, "chat.png").await;

    // The newest message is scrolled into view when the list overflows.
    for i in 1..=25 {
        admin.send(json!({"type": "send", "room": "general", "text": format!("status update {i}")})).await;
        admin.next_of("ack").await;
    }
    wait_message(&alice, "admin", "status update 25").await;
    let scrolled = alice
        .wait_for(
            "the message list to overflow and sit at the newest message",
            "const s = document.getElementById('scroller');
             return s.scrollHeight > s.clientHeight + 200 && s.scrollTop + s.clientHeight >= s.scrollHeight - 4;",
        )
        .await;
    assert_eq!(scrolled, true);

    // Scrolled up to read, a new message does not pull the reader down: a button says it came.
    // (The page learns of a scroll from its event, which comes with the next frames.)
    let scrolled = "document.getElementById('scroller').scrollTop = 0;
                    return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => done(true))));";
    alice.js(scrolled, json!([])).await;
    admin.send(json!({"type": "send", "room": "general", "text": "one more while you read"})).await;
    let button = alice
        .wait_for(
            "the new-messages button",
            "const b = document.getElementById('new-messages'); return !b.hidden && b.innerText;",
        )
        .await;
    assert!(button.as_str().unwrap().starts_with("1 new message"), "{button}");
    assert_eq!(alice.js("return document.getElementById('scroller').scrollTop", json!([])).await, 0, "still reading");
    alice.click("#new-messages").await;
    alice
        .wait_for(
            "the newest message in view, the button gone",
            "const s = document.getElementById('scroller');
             return document.getElementById('new-messages').hidden && s.scrollTop + s.clientHeight >= s.scrollHeight - 4;",
        )
        .await;

    // A refused request is shown, not swallowed: a third room is one too many.
    alice.type_keys("#join-input", &format!("one-too-many{ENTER}")).await;
    let notice = wait_notice(&alice, "too_many_rooms").await;
    assert!(notice.contains("one-too-many"), "the notice names the room: {notice}");
    alice
        .wait_for(
            "the refused room to be dropped from the list",
            "return !document.querySelector('#room-list li[data-room=\"one-too-many\"]')",
        )
        .await;

    // Leaving a room from its button.
    alice.click("#room-list li[data-room='release-train'] .leave-button").await;
    alice
        .wait_for(
            "release-train to be gone",
            "return !document.querySelector('#room-list li[data-room=\"release-train\"]')",
        )
        .await;
    assert_eq!(badge(&alice).await["state"], "connected", "errors do not cost the connection");

    // Phone width: nothing wider than the screen, the composer on screen.
    alice.emulate_viewport(390, 844, true).await;
    let fit = fits_window(&alice, "#composer-input").await;
    save_screenshot(&alice, "chat-phone.png").await;
    assert_eq!(fit, json!({"overflowX": 0, "overflowY": 0, "controlVisible": true}), "the chat fits a phone screen");
    alice
        .wait_for(
            "the newest message to stay in view after the resize",
            "const s = document.getElementById('scroller'); return s.scrollTop + s.clientHeight >= s.scrollHeight - 4;",
        )
        .await;
    // The member list is a panel there, opened and closed from the keyboard-reachable buttons.
    alice.click("#members-toggle").await;
    assert_eq!(fits_window(&alice, "#member-list [data-user='bob']").await["controlVisible"], true);
    alice.click("#members-close").await;
    assert_eq!(fits_window(&alice, "#composer-input").await["controlVisible"], true);

    for browser in [&alice, &bob] {
        assert_eq!(browser.console_errors().await, Vec::<String>::new(), "no console errors (CSP included)");
    }
    alice.quit().await;
    bob.quit().await;
}
