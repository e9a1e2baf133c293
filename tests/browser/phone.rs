//! At phone width (390 px) every control of the chat page and the admin page can be reached
//! without scrolling sideways: with six rooms (one with a 64-character name) the join form is
//! still on screen, room names are not clipped, the token countdown keeps its label, and the
//! admin table's Disconnect buttons are in view.

use serde_json::{json, Value};

use crate::pages::*;
use crate::support::spawn_app;
use crate::webdriver::{Browser, Chromedriver, ENTER};

/// Every rendered control (after focusing it and scrolling it into view vertically, as a
/// keyboard user would reach it) that is not fully inside the viewport, or that needed the page
/// or a container to scroll sideways.
const OUT_OF_REACH: &str = r#"
    const controls = [...document.querySelectorAll("button, input, textarea, select, a[href]")]
        .filter((c) => c.getClientRects().length > 0 && getComputedStyle(c).visibility !== "hidden");
    const sideways = (node) => { for (; node; node = node.parentElement) if (node.scrollLeft) return true; return false; };
    const out = [];
    for (const c of controls) {
        c.focus({ preventScroll: true });
        c.scrollIntoView({ block: "nearest", inline: "nearest" });
        const r = c.getBoundingClientRect();
        const inside = r.left >= 0 && r.right <= innerWidth + 0.5 && r.top >= 0 && r.bottom <= innerHeight + 0.5;
        if (!inside || sideways(c) || scrollX) {
            out.push(`${c.outerHTML.slice(0, 100)} at x ${Math.round(r.left)}..${Math.round(r.right)}, y ${Math.round(r.top)}..${Math.round(r.bottom)}`);
        }
        c.blur();
    }
    document.querySelectorAll("*").forEach((n) => { n.scrollLeft = 0; });
    return out;
"#;

const LONG_ROOM: &str = "a-room-with-the-longest-name-the-server-accepts-which-is-64chars";

#[actix_web::test]
async fn every_control_is_reachable_at_390_px_without_sideways_scrolling() {
    assert_eq!(LONG_ROOM.len(), 64);
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let (alice, admin) = (driver.browser().await, driver.browser().await);

    alice.emulate_viewport(390, 844, true).await;
    open_chat(&alice, &app, "alice").await;
    for room in ["design", "release-train", "ops", "random", LONG_ROOM] {
        alice.type_keys("#join-input", &format!("{room}{ENTER}")).await;
        wait_joined(&alice, room).await;
    }
    send(&alice, "Six rooms, one phone.").await;
    wait_message(&alice, "alice", "Six rooms, one phone.").await;
    save_screenshot(&alice, "chat-phone-rooms.png").await;
    assert_eq!(reach(&alice).await, Vec::<String>::new(), "every chat control is on screen at 390 px");
    let clipped = alice
        .js(
            "return [...document.querySelectorAll('#room-list .room-name')].filter((n) => n.scrollWidth > n.clientWidth + 1).map((n) => n.textContent)",
            json!([]),
        )
        .await;
    assert_eq!(clipped, json!([]), "room names are shown whole");
    let label = alice
        .js("const l = document.querySelector('#token-countdown .countdown-label'); return l.getClientRects().length > 0 && l.innerText", json!([]))
        .await;
    assert_eq!(label, "Token", "the countdown says what it counts");
    assert_eq!(
        fits_window(&alice, "#composer-input").await,
        json!({"overflowX": 0, "overflowY": 0, "controlVisible": true})
    );

    sign_in(&admin, &app, "/admin.html", "admin").await;
    admin.emulate_viewport(390, 844, true).await;
    admin.find("#connection-rows tr[data-user='alice'] .disconnect-conn").await;
    save_screenshot(&admin, "admin-phone.png").await;
    assert_eq!(reach(&admin).await, Vec::<String>::new(), "every admin control is on screen at 390 px");

    assert_eq!(alice.console_errors().await, Vec::<String>::new());
    assert_eq!(admin.console_errors().await, Vec::<String>::new());
    alice.quit().await;
    admin.quit().await;
}

async fn reach(browser: &Browser) -> Vec<String> {
    let out: Value = browser.js(OUT_OF_REACH, json!([])).await;
    serde_json::from_value(out).unwrap()
}
