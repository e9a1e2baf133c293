//! Signing out in one tab ends the login everywhere: the other tab's socket closes with 4002,
//! and that page says why, shows the sign-in form and does not reconnect. In both auth modes.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::pages::*;
use crate::support::{spawn_app_with, TestApp};
use crate::webdriver::Chromedriver;

#[actix_web::test]
async fn signing_out_in_one_tab_ends_the_other_tabs_socket_with_4002_in_jwt_mode() {
    sign_out_in_another_tab("").await;
}

#[actix_web::test]
async fn signing_out_in_one_tab_ends_the_other_tabs_socket_with_4002_in_session_mode() {
    sign_out_in_another_tab("[auth]\nmode = \"session\"").await;
}

async fn sign_out_in_another_tab(overrides: &str) {
    let app = spawn_app_with(overrides).await;
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    open_chat(&browser, &app, "alice").await;

    // A second tab resumes the same login from its cookie, without the form.
    let first_tab = browser.open_tab().await;
    browser.goto(&app.url("/")).await;
    wait_badge(&browser, "the second tab connected", "connected").await;
    assert_eq!(browser.js("return document.getElementById('signin-view').hidden", json!([])).await, true);
    browser.click("#signout").await;
    browser.find("#signin-view:not([hidden])").await;
    let note = browser
        .js(
            "const n = document.getElementById('signin-reason'); return [n.innerText, n.classList.contains('info')];",
            json!([]),
        )
        .await;
    assert_eq!(note, json!(["You signed out.", true]), "a deliberate sign-out is no alarm");

    browser.switch_to_tab(&first_tab).await;
    let ended = wait_badge(&browser, "the session ended", "disconnected").await;
    assert_eq!(ended["closeCode"], 4002, "{ended}");
    assert!(ended["text"].as_str().unwrap().contains("the session ended"), "{ended}");
    browser.find("#signin-view:not([hidden]) #signin-reason:not([hidden])").await;
    let shown = browser.js("return document.getElementById('signin-reason').innerText", json!([])).await;
    assert!(shown.as_str().unwrap().contains("the session ended"), "the sign-in form says why: {shown}");

    // No reconnect: the page stays down, and the server has no socket of alice's.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(4) {
        let now = badge(&browser).await;
        assert_eq!((now["state"].as_str(), now["connects"].as_u64()), (Some("disconnected"), Some(1)), "{now}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let body = alice_connections(&app).await;
    assert_eq!(body["connections"], json!([]), "{body}");
    browser.quit().await;
}

/// The server's list of alice's sockets, asked by an operator signed in the way the mode
/// allows (a bearer token in JWT mode, the session cookie in session mode).
async fn alice_connections(app: &TestApp) -> serde_json::Value {
    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let login = json!({"username": "admin", "password": "admin-password"});
    let res = client.post(app.url("/api/login")).json(&login).send().await.unwrap();
    assert_eq!(res.status(), 200, "the operator signs in");
    let token = res.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().map(str::to_owned);
    let mut request = client.get(app.url("/admin/connections?user=alice"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}
