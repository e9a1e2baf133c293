//! Refused room requests are reported for the room they named (the server's `room` field), not
//! guessed from the order of the joins in flight: in the page, a refused join is named and
//! dropped while the join sent with it goes through; in authchat.js used directly, a join still
//! goes through when a refusal of another room's request arrives before its answer.

use serde_json::json;

use crate::pages::*;
use crate::support::spawn_app_with;
use crate::webdriver::Chromedriver;

/// Submits the join form once per room name in `arguments`, all in one task, so every join is
/// on the wire before the first answer arrives.
const SUBMIT_JOINS: &str = r#"
    const input = document.getElementById("join-input");
    for (const room of arguments) {
        input.value = room;
        document.getElementById("join-form").requestSubmit();
    }
"#;

/// A second client on the page, from authchat.js: it resumes the page's sign-in from the cookie,
/// connects, and sends in one task a message to a room that cannot exist (which the server
/// refuses at once, before the room registry sees anything) and then three joins, of which the
/// third is one room too many. Returns the `joined` and `error` events it got, its `ref` for the
/// message, and the rooms it kept.
const SECOND_CLIENT: &str = r#"
    return (async () => {
        const { AuthChat } = await import("/authchat.js");
        const chat = new AuthChat();
        await chat.resume();
        const seen = [];
        let settle;
        const settled = new Promise((resolve) => (settle = resolve));
        for (const type of ["joined", "error"]) {
            chat.addEventListener(type, ({ detail }) => {
                seen.push({ type, room: detail.room ?? null, code: detail.code ?? null, ref: detail.ref ?? null });
                if (seen.length === 4) settle();
            });
        }
        const welcome = new Promise((resolve) => chat.addEventListener("welcome", resolve, { once: true }));
        chat.connect();
        await welcome;
        const ref = chat.send("no such room", "hello?");
        for (const room of ["side-room", "second", "one-too-many"]) chat.join(room);
        await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, 5000))]);
        const result = { ref, seen, rooms: chat.rooms };
        chat.close();
        return result;
    })();
"#;

#[actix_web::test]
async fn a_refused_join_is_reported_for_its_room_while_another_join_goes_through() {
    // Two rooms per connection: general and one more.
    let app = spawn_app_with("[chat]\nmax_rooms_per_connection = 2").await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;
    open_chat(&alice, &app, "alice").await;

    // Two joins from the form at once: the first takes the last place, the second is refused.
    alice.js(SUBMIT_JOINS, json!(["release-train", "one-too-many"])).await;
    wait_joined(&alice, "release-train").await;
    let notice = wait_notice(&alice, "too_many_rooms").await;
    assert!(notice.contains("Could not join # one-too-many"), "the notice names the refused room: {notice}");
    assert!(!notice.contains("release-train"), "and only that one: {notice}");
    alice
        .wait_for(
            "the refused room to be dropped from the list",
            "return !document.querySelector('#room-list li[data-room=\"one-too-many\"]')",
        )
        .await;
    let listed = alice
        .js("return [...document.querySelectorAll('#room-list li.room')].map((li) => li.dataset.room)", json!([]))
        .await;
    assert_eq!(listed, json!(["general", "release-train"]), "the join sent with it is kept");

    // The library itself: a refusal that arrives while a join is unanswered is about the room it
    // names, not about that join (matching it to the oldest join in flight would drop side-room).
    let result = alice.js(SECOND_CLIENT, json!([])).await;
    assert_eq!(
        result["seen"],
        json!([
            {"type": "error", "room": "no such room", "code": "invalid_room", "ref": result["ref"]},
            {"type": "joined", "room": "side-room", "code": null, "ref": null},
            {"type": "joined", "room": "second", "code": null, "ref": null},
            {"type": "error", "room": "one-too-many", "code": "too_many_rooms", "ref": null},
        ]),
        "{result}"
    );
    assert_eq!(result["rooms"], json!(["side-room", "second"]), "a refused join is forgotten: {result}");

    assert_eq!(alice.console_errors().await, Vec::<String>::new(), "no console errors");
    alice.quit().await;
}
