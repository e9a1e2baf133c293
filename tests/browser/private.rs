//! Issue 15 in the pages: a direct conversation started from the member list shows up for the
//! other user; a private room is created from the join form, its owner invites and kicks from the
//! member panel, and a kicked user's page says why and refuses the room; the admin page lists
//! rooms and kicks, and lets back in.

use serde_json::json;

use crate::pages::*;
use crate::support::spawn_app;
use crate::webdriver::{Browser, Chromedriver, ENTER};

/// Waits until the room list has a joined room of `kind` shown as `name`; answers its
/// `data-room`.
async fn wait_room_of_kind(browser: &Browser, kind: &str, name: &str) -> String {
    let script = format!(
        r##"const li = [...document.querySelectorAll("#room-list li.room:not(.pending)")]
               .find((li) => li.dataset.kind === {kind} && li.querySelector(".room-name").textContent === {name});
           return li ? li.dataset.room : null;"##,
        kind = js_str(kind),
        name = js_str(name),
    );
    let room = browser.wait_for(&format!("a {kind} room shown as {name}"), &script).await;
    room.as_str().expect("a room name").to_owned()
}

/// Clicks a room in the list by its `data-room`.
async fn open_room(browser: &Browser, room: &str) {
    browser.click(&format!("#room-list li[data-room={}] .room-button", js_str(room))).await;
}

#[actix_web::test]
async fn a_direct_conversation_starts_from_the_member_list_and_appears_for_the_other_user() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let (alice, bob) = (driver.browser().await, driver.browser().await);
    open_chat(&alice, &app, "alice").await;
    open_chat(&bob, &app, "bob").await;

    wait_member(&alice, "bob").await;
    alice.click("#member-list [data-user='bob'] .dm-button").await;
    let room = wait_room_of_kind(&alice, "dm", "bob").await;
    assert!(room.starts_with("dm."), "{room}");
    let header = alice
        .wait_for(
            "the conversation on screen",
            "const t = document.getElementById('room-title').textContent; return t === '@ bob' && \
             document.getElementById('room-kind').innerText",
        )
        .await;
    assert!(header.as_str().unwrap().contains("only the two of you"), "{header}");
    send(&alice, "just between us").await;
    wait_message(&alice, "alice", "just between us").await;

    // bob's page is told, takes the conversation up, and names it after alice
    let told = wait_notice(&bob, "invited").await;
    assert!(told.contains("alice started a direct conversation with you"), "{told}");
    assert_eq!(wait_room_of_kind(&bob, "dm", "alice").await, room, "one conversation, seen from both sides");
    open_room(&bob, &room).await;
    wait_message(&bob, "alice", "just between us").await;
    send(&bob, "hi alice").await;
    wait_message(&alice, "bob", "hi alice").await;
    // in a conversation nobody is offered a conversation
    let offered = alice.js("return document.querySelectorAll('#member-list .dm-button').length", json!([])).await;
    assert_eq!(offered, 0);

    assert_eq!(unlabelled_controls(&alice).await, Vec::<String>::new(), "every control has a label");
    for browser in [&alice, &bob] {
        assert_eq!(browser.console_errors().await, Vec::<String>::new(), "no console errors");
    }
    alice.quit().await;
    bob.quit().await;
}

#[actix_web::test]
async fn an_owner_creates_a_private_room_invites_and_kicks_and_the_kicked_users_page_says_why() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let (alice, bob) = (driver.browser().await, driver.browser().await);
    open_chat(&alice, &app, "alice").await;
    open_chat(&bob, &app, "bob").await;

    alice.type_keys("#join-input", "club").await;
    alice.click("#join-private").await;
    alice.type_keys("#join-input", ENTER).await;
    assert_eq!(wait_room_of_kind(&alice, "private", "club").await, "club");
    let kind = alice
        .wait_for(
            "the private room's line",
            "const k = document.getElementById('room-kind'); return !k.hidden && k.innerText",
        )
        .await;
    assert!(kind.as_str().unwrap().contains("Private room of you"), "{kind}");

    // the owner invites bob from the member panel; bob's page is told and joins
    alice.type_keys("#invite-input", &format!("bob{ENTER}")).await;
    let told = wait_notice(&bob, "invited").await;
    assert!(told.contains("alice invited you to # club"), "{told}");
    assert_eq!(wait_room_of_kind(&bob, "private", "club").await, "club");
    wait_member(&alice, "bob").await;
    alice
        .wait_for(
            "bob as a member, not just invited",
            "return !!document.querySelector('#member-list [data-user=\"bob\"]:not([data-absent]) .kick-button')",
        )
        .await;

    // and kicks him: his page drops the room and says why, and the room refuses him
    alice.click("#member-list [data-user='bob'] .kick-button").await;
    let why = wait_notice(&bob, "kicked").await;
    assert!(why.contains("You were removed from # club"), "{why}");
    bob.wait_for("club to leave bob's list", "return !document.querySelector('#room-list li[data-room=\"club\"]')")
        .await;
    bob.type_keys("#join-input", &format!("club{ENTER}")).await;
    let refused = wait_notice(&bob, "forbidden").await;
    assert!(refused.contains("Could not join # club") && refused.contains("removed"), "the reason is shown: {refused}");
    alice
        .wait_for("bob to leave the member list", "return !document.querySelector('#member-list [data-user=\"bob\"]')")
        .await;

    // a room name another room has is refused with the reason, and the name is dropped
    bob.type_keys("#join-input", &format!("lounge{ENTER}")).await;
    wait_joined(&bob, "lounge").await;
    alice.type_keys("#join-input", "lounge").await;
    alice.click("#join-private").await;
    alice.type_keys("#join-input", ENTER).await;
    let exists = wait_notice(&alice, "room_exists").await;
    assert!(exists.contains("Could not create # lounge") && exists.contains("exists already"), "{exists}");
    alice
        .wait_for(
            "lounge to leave alice's list",
            "return !document.querySelector('#room-list li[data-room=\"lounge\"]')",
        )
        .await;

    assert_eq!(unlabelled_controls(&alice).await, Vec::<String>::new(), "every control has a label");
    for browser in [&alice, &bob] {
        assert_eq!(browser.console_errors().await, Vec::<String>::new(), "no console errors");
    }
    alice.quit().await;
    bob.quit().await;
}

#[actix_web::test]
async fn the_admin_page_lists_rooms_and_kicks_a_member_whose_page_says_why_then_lets_them_back() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let (alice, admin) = (driver.browser().await, driver.browser().await);
    open_chat(&alice, &app, "alice").await;
    sign_in(&admin, &app, "/admin.html", "admin").await;

    let row = "#room-rows tr[data-room='general']";
    let cells = admin
        .wait_for(
            "general in the rooms table, alice in it",
            &format!(
                "const r = document.querySelector({}); return r && r.querySelector('[data-user=\"alice\"]') && [...r.cells].map((c) => c.innerText);",
                js_str(row)
            ),
        )
        .await;
    assert_eq!((cells[0].as_str(), cells[1].as_str()), (Some("# general"), Some("public")), "{cells}");
    admin.click(&format!("{row} [data-user='alice'] .kick-member")).await;
    admin.wait_for("the confirm dialog", "return document.getElementById('confirm').open").await;
    admin.click("#confirm-ok").await;
    let result = admin
        .wait_for(
            "the result of the kick",
            "const r = document.getElementById('admin-result'); return !r.hidden && r.dataset.outcome === 'ok' && r.innerText",
        )
        .await;
    assert!(result.as_str().unwrap().contains("alice kicked from # general: 1 socket left"), "{result}");
    let why = wait_notice(&alice, "kicked").await;
    assert!(why.contains("You were removed from # general"), "{why}");
    assert_eq!(badge(&alice).await["state"], "connected", "a kick leaves the connection up");

    admin.click(&format!("{row} .kicked-chips [data-user='alice'] .let-back")).await;
    admin
        .wait_for(
            "the result of letting alice back",
            "return document.getElementById('admin-result').innerText.includes('may enter # general again')",
        )
        .await;
    alice.type_keys("#join-input", &format!("general{ENTER}")).await;
    wait_joined(&alice, "general").await;

    assert_eq!(unlabelled_controls(&admin).await, Vec::<String>::new(), "every control has a label");
    assert_eq!(admin.console_errors().await, Vec::<String>::new(), "no console errors (CSP included)");
    alice.quit().await;
    admin.quit().await;
}
