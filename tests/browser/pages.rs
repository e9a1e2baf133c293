//! What a user does on the pages (sign in, send, wait to see), read back through the DOM hooks
//! the pages expose: `#conn-badge` (data-state, data-conn-id, data-close-code, data-connects),
//! `#token-countdown` (data-expires-at, data-renewals), `li.message` (data-id, data-from).

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::support::TestApp;
use crate::webdriver::{Browser, ENTER};

/// The connection badge as data: `{state, connId, connects, closeCode, text}`.
const BADGE: &str = r#"
    const b = document.getElementById("conn-badge");
    const num = (v) => (v ? Number(v) : null);
    return { state: b.dataset.state, connId: num(b.dataset.connId), connects: Number(b.dataset.connects),
             closeCode: num(b.dataset.closeCode), text: b.innerText };
"#;

/// A JS string literal.
pub fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Opens `path` on the app, signs in through the form with the keyboard (the dev password,
/// then Enter), and waits for the page to leave the sign-in view.
pub async fn sign_in(browser: &Browser, app: &TestApp, path: &str, user: &str) {
    browser.goto(&app.url(path)).await;
    browser.find("#signin-view:not([hidden]) #signin-user").await;
    browser.type_keys("#signin-user", user).await;
    browser.type_keys("#signin-password", &format!("{user}-password{ENTER}")).await;
    browser.wait_for(&format!("{user} to be signed in"), "return document.getElementById('signin-view').hidden").await;
}

/// Signs `user` in on the chat page and waits until the socket is up and `general` joined.
pub async fn open_chat(browser: &Browser, app: &TestApp, user: &str) -> Value {
    sign_in(browser, app, "/", user).await;
    let badge = wait_badge(browser, "connected", "connected").await;
    wait_joined(browser, "general").await;
    badge
}

pub async fn badge(browser: &Browser) -> Value {
    browser.js(BADGE, json!([])).await
}

/// Waits until the badge is in `state`, and returns it.
pub async fn wait_badge(browser: &Browser, what: &str, state: &str) -> Value {
    let script = format!("const badge = (() => {{ {BADGE} }})(); return badge.state === {} && badge;", js_str(state));
    browser.wait_for(&format!("the badge to show {what}"), &script).await
}

/// Waits until the room is listed and its join confirmed by the server.
pub async fn wait_joined(browser: &Browser, room: &str) {
    let css = format!("#room-list li.room[data-room={}]:not(.pending)", js_str(room));
    browser
        .wait_for(&format!("room {room} joined"), &format!("return document.querySelector({}) !== null", js_str(&css)))
        .await;
}

/// Waits until `user` is listed in the room's members panel.
/// Waits for a visible notice of the server error `code` and answers its text.
pub async fn wait_notice(browser: &Browser, code: &str) -> String {
    let css = format!("#notices .notice[data-code={}]", js_str(code));
    let script = format!(
        "const n = document.querySelector({}); return n && n.getBoundingClientRect().height > 0 && n.innerText;",
        js_str(&css)
    );
    let text = browser.wait_for(&format!("the {code} error on screen"), &script).await;
    text.as_str().expect("the notice's text").to_owned()
}

pub async fn wait_member(browser: &Browser, user: &str) {
    let css = format!("#member-list [data-user={}]", js_str(user));
    browser
        .wait_for(
            &format!("{user} in the member list"),
            &format!("return document.querySelector({}) !== null", js_str(&css)),
        )
        .await;
}

/// Types a message into the composer and presses Enter.
pub async fn send(browser: &Browser, text: &str) {
    browser.type_keys("#composer-input", &format!("{text}{ENTER}")).await;
}

/// Waits until a message from `from` with exactly `text` is in the list; returns
/// `{id, mine, time, timeOk}` (timeOk: its `<time>` is within a minute of now).
pub async fn wait_message(browser: &Browser, from: &str, text: &str) -> Value {
    let script = format!(
        r##"const li = [...document.querySelectorAll("#messages li.message")]
               .find((li) => li.dataset.from === {from} && li.querySelector(".text").textContent === {text});
           if (!li) return null;
           const time = li.querySelector("time");
           return {{ id: Number(li.dataset.id), mine: li.classList.contains("mine"), time: time.textContent,
                    timeOk: Math.abs(Date.parse(time.dateTime) - Date.now()) < 60000 }};"##,
        from = js_str(from),
        text = js_str(text),
    );
    browser.wait_for(&format!("message {text:?} from {from}"), &script).await
}

/// The messages the room on screen shows, in order, as `[id, from, text]`.
pub async fn shown_messages(browser: &Browser) -> Value {
    let script = r##"return [...document.querySelectorAll("#messages li.message")]
        .map((li) => [Number(li.dataset.id), li.dataset.from, li.querySelector(".text").textContent]);"##;
    browser.js(script, json!([])).await
}

/// Every input, textarea, select and button on the page has an accessible name; returns the ones
/// that do not.
pub async fn unlabelled_controls(browser: &Browser) -> Vec<String> {
    let script = r#"
        const nameOf = (c) => [
            ...[...(c.labels ?? [])].map((l) => l.textContent),
            c.getAttribute("aria-label") ?? "",
            ...(c.getAttribute("aria-labelledby") ?? "").split(" ").map((id) => document.getElementById(id)?.textContent ?? ""),
            c.tagName === "BUTTON" ? c.textContent : "",
        ].join("").trim();
        return [...document.querySelectorAll("input, textarea, select, button")]
            .filter((c) => c.type !== "hidden" && !nameOf(c))
            .map((c) => c.outerHTML.slice(0, 160));
    "#;
    serde_json::from_value(browser.js(script, json!([])).await).unwrap()
}

/// How far the page overflows the window (it should not scroll as a whole), and whether
/// `control` is fully on screen.
pub async fn fits_window(browser: &Browser, control: &str) -> Value {
    let script = format!(
        r#"const page = document.documentElement;
           const r = document.querySelector({}).getBoundingClientRect();
           return {{ overflowX: page.scrollWidth - page.clientWidth, overflowY: page.scrollHeight - page.clientHeight,
                    controlVisible: r.top >= 0 && r.bottom <= page.clientHeight && r.width > 100 }};"#,
        js_str(control)
    );
    browser.js(&script, json!([])).await
}

/// Writes a screenshot to `target/browser-screenshots/{name}`. The ones the README shows are
/// copied into docs/ with `AUTHCHAT_UPDATE_DOCS=1 cargo test --test browser`, so an ordinary
/// run leaves the working tree clean.
pub async fn save_screenshot(browser: &Browser, name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("target/browser-screenshots").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let png = browser.screenshot().await;
    if std::env::var_os("AUTHCHAT_UPDATE_DOCS").is_some() && matches!(name, "chat.png" | "admin.png") {
        std::fs::write(root.join("docs").join(name), &png).unwrap();
    }
    std::fs::write(&path, png).unwrap();
    path
}
