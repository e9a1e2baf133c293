//! A page whose access tokens live 20 s keeps one socket for over a minute: it answers each
//! `expiring` with /api/token/refresh and `reauth`, and the countdown resets each time.

use std::time::{Duration, Instant};

use crate::pages::*;
use crate::support::{sign, spawn_app_with};
use crate::webdriver::Chromedriver;

/// Longer than three token lifetimes, so only in-band renewal can keep the socket.
const HOLD: Duration = Duration::from_secs(65);

#[actix_web::test]
async fn a_page_with_20_second_tokens_keeps_the_same_socket_for_over_a_minute() {
    // The default warn_before (60 s) exceeds the lifetime, so `expiring` comes right after welcome.
    let app = spawn_app_with("[auth]\naccess_ttl = \"20s\"").await;
    let driver = Chromedriver::start().await;
    let alice = driver.browser().await;

    let first = open_chat(&alice, &app, "alice").await;
    let conn_id = first["connId"].as_u64().expect("the badge carries the connection id");
    let started = Instant::now();
    let countdown = "const c = document.getElementById('token-countdown');
                     return { expiresAt: Number(c.dataset.expiresAt), renewals: Number(c.dataset.renewals),
                              shown: !c.hidden && c.innerText, warn: c.classList.contains('warn') };";
    let initial = alice.js(countdown, serde_json::json!([])).await;
    let first_expiry = initial["expiresAt"].as_u64().unwrap();
    assert!(initial["shown"].as_str().is_some_and(|t| t.contains("0:")), "a visible countdown: {initial}");

    // Watch the whole time: never a second socket, never a gap.
    let mut last_expiry = first_expiry;
    let mut resets = 0;
    while started.elapsed() < HOLD {
        let now = badge(&alice).await;
        assert_eq!(now["state"], "connected", "still connected after {:?}: {now}", started.elapsed());
        assert_eq!(now["connId"], conn_id, "the same socket after {:?}", started.elapsed());
        assert_eq!(now["connects"], 1, "no reconnect after {:?}", started.elapsed());
        let now = alice.js(countdown, serde_json::json!([])).await;
        // Renewal is automatic and working: nothing to warn about, however short the token.
        assert_eq!(now["warn"], false, "the countdown warns only when renewing fails: {now}");
        let expiry = now["expiresAt"].as_u64().unwrap();
        if expiry > last_expiry {
            resets += 1;
            last_expiry = expiry;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let end = alice.js(countdown, serde_json::json!([])).await;
    // One renewal per ~10 s in theory; three is the least that can span 65 s of 20 s tokens.
    assert!(end["renewals"].as_u64().unwrap() >= 3, "the token was renewed in-band repeatedly: {end}");
    assert!(resets >= 3, "the countdown reset on each renewal ({resets} resets seen)");
    assert!(last_expiry >= first_expiry + 40, "the expiry moved forward: {first_expiry} -> {last_expiry}");

    // The server agrees: one connection for alice, the same one, with the moved expiry.
    let admin = sign("admin", 300, &["admin"]);
    let (status, body) = app.get_json("/admin/connections?user=alice", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let connections = body["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 1, "{body}");
    assert_eq!(connections[0]["conn_id"], conn_id);
    assert!(connections[0]["expires_at"].as_u64().unwrap() >= first_expiry + 40, "{body}");
    alice.quit().await;
}
