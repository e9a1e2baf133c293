//! The admin page: a live table of connections; an operator disconnects a user's socket (after
//! a confirm step) and that user's page says why and stays disconnected; revoking is shown too.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::pages::*;
use crate::support::{sign, spawn_app};
use crate::webdriver::Chromedriver;

/// Long enough for several reconnect attempts (backoff starts at 0.5 s) had the page made any.
const NO_RECONNECT_WINDOW: Duration = Duration::from_secs(6);

#[actix_web::test]
async fn an_admin_disconnects_a_user_whose_page_shows_why_and_does_not_reconnect() {
    let app = spawn_app().await;
    let driver = Chromedriver::start().await;
    let (alice, admin) = (driver.browser().await, driver.browser().await);

    let connected = open_chat(&alice, &app, "alice").await;
    let conn_id = connected["connId"].as_u64().unwrap();
    let (mut bob, _) = app.connect_as("bob").await;
    bob.send(json!({"type": "join", "room": "general"})).await;
    bob.next_of("joined").await;

    sign_in(&admin, &app, "/admin.html", "admin").await;
    let row = format!("#connection-rows tr[data-conn-id='{conn_id}']");
    let cells = admin
        .wait_for(
            "alice's connection in the table",
            &format!(
                "const r = document.querySelector({}); return r && r.cells[6].textContent !== '' && [...r.cells].map((c) => c.innerText);",
                js_str(&row)
            ),
        )
        .await;
    assert!(cells[1].as_str().unwrap().contains("alice"), "{cells}");
    assert!(cells[4].as_str().unwrap().contains("#general"), "rooms are listed: {cells}");
    assert!(cells[6].as_str().unwrap().starts_with("4:"), "expires in about 5 min: {cells}");
    admin.wait_for("bob's user card", "return !!document.querySelector('#user-list [data-user=\"bob\"]')").await;
    assert_eq!(unlabelled_controls(&admin).await, Vec::<String>::new(), "every control has a label");
    admin.emulate_viewport(1200, 800, false).await;
    save_screenshot(&admin, "admin.png").await;

    // Cancelling the confirm step does nothing.
    admin.click(&format!("{row} .disconnect-conn")).await;
    admin.wait_for("the confirm dialog", "return document.getElementById('confirm').open").await;
    admin.click("#confirm-cancel").await;
    admin.wait_for("the dialog to close", "return !document.getElementById('confirm').open").await;
    assert_eq!(badge(&alice).await["state"], "connected", "cancel must not disconnect");

    // Confirming disconnects, and the result is shown.
    admin.click(&format!("{row} .disconnect-conn")).await;
    admin.wait_for("the confirm dialog", "return document.getElementById('confirm').open").await;
    admin.click("#confirm-ok").await;
    let result = admin
        .wait_for(
            "the result of the disconnect",
            "const r = document.getElementById('admin-result'); return !r.hidden && r.dataset.outcome === 'ok' && r.innerText",
        )
        .await;
    assert!(result.as_str().unwrap().contains(&format!("#{conn_id}")), "{result}");

    // Alice's page says why, offers a manual reconnect, and does not reconnect by itself.
    let gone = wait_badge(&alice, "disconnected", "disconnected").await;
    assert_eq!(gone["closeCode"], 4004, "{gone}");
    assert!(gone["text"].as_str().unwrap().contains("an operator closed the connection"), "{gone}");
    assert_eq!(alice.js("return !document.getElementById('reconnect').hidden", json!([])).await, true);
    let watch = Instant::now();
    while watch.elapsed() < NO_RECONNECT_WINDOW {
        let now = badge(&alice).await;
        assert_eq!((now["state"].as_str(), now["connects"].as_u64()), (Some("disconnected"), Some(1)), "{now}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let token = sign("admin", 300, &["admin"]);
    let (_, body) = app.get_json("/admin/connections?user=alice", Some(&token)).await;
    assert_eq!(body["connections"], json!([]), "alice has no socket on the server");
    admin
        .wait_for("alice's row to leave the live table", &format!("return !document.querySelector({})", js_str(&row)))
        .await;

    // Revoking, from the user card, closes bob's socket with 4003.
    admin.click("#user-list [data-user='bob'] .revoke-user").await;
    admin.wait_for("the confirm dialog", "return document.getElementById('confirm').open").await;
    admin.click("#confirm-ok").await;
    let result = admin
        .wait_for(
            "the result of the revoke",
            "const r = document.getElementById('admin-result'); return r.innerText.startsWith('bob revoked') && r.innerText",
        )
        .await;
    assert!(result.as_str().unwrap().contains("1 connection closed"), "{result}");
    assert_eq!(bob.expect_close().await.0, 4003);

    // At phone width the page fits; only the table scrolls sideways, inside its frame.
    admin.emulate_viewport(390, 844, true).await;
    assert_eq!(fits_window(&admin, "#refresh-now").await["overflowX"], 0, "the admin page fits a phone screen");

    assert_eq!(admin.console_errors().await, Vec::<String>::new(), "no console errors (CSP included)");
    alice.quit().await;
    admin.quit().await;
}
