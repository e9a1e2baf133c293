//! What the sign-in views say: in verify-only mode (`/api/config` says `login: false`) no
//! password form, but where to sign in; a non-admin on the admin page is offered the way back
//! to the chat, not a sign-out that would end their sign-in everywhere.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde_json::json;

use crate::pages::*;
use crate::support::spawn_app_with;
use crate::webdriver::Chromedriver;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

#[actix_web::test]
async fn verify_only_mode_says_where_to_sign_in_instead_of_asking_for_a_password() {
    let dir = std::env::temp_dir().join(format!("authchat-browser-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(format!("{KEYS}/ed.pem")).unwrap()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::EdDSA).unwrap();
    jwk.common.key_id = Some("idp1".into());
    std::fs::write(&path, serde_json::to_vec(&JwkSet { keys: vec![jwk] }).unwrap()).unwrap();
    let app =
        spawn_app_with(&format!("[auth]\nissuer = \"https://idp.example\"\njwks_file = \"{}\"", path.display())).await;
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;

    for page in ["/", "/admin.html"] {
        browser.goto(&app.url(page)).await;
        browser.find("#signin-view:not([hidden]) #signin-elsewhere:not([hidden])").await;
        let shown = browser
            .js(
                "return { fields: document.getElementById('signin-fields').hidden,
                          note: document.getElementById('signin-elsewhere').innerText };",
                json!([]),
            )
            .await;
        assert_eq!(shown["fields"], true, "no password form on {page}: {shown}");
        assert!(shown["note"].as_str().unwrap().contains("identity provider"), "{shown}");
        assert_eq!(browser.network_errors().await, Vec::<String>::new(), "nothing asked that fails on {page}");
    }
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    browser.quit().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[actix_web::test]
async fn a_non_admin_on_the_admin_page_goes_back_to_the_chat_still_signed_in() {
    let app = spawn_app_with("").await;
    let driver = Chromedriver::start().await;
    let bob = driver.browser().await;
    open_chat(&bob, &app, "bob").await;

    bob.goto(&app.url("/admin.html")).await;
    bob.find("#not-admin:not([hidden])").await;
    let buttons = bob
        .js(
            "return [...document.querySelectorAll('#not-admin button, #not-admin a')].map((b) => b.innerText)",
            json!([]),
        )
        .await;
    assert_eq!(buttons, json!(["Back to chat"]), "the only way out does not sign out");
    bob.click("#not-admin a").await;
    wait_badge(&bob, "bob back in the chat", "connected").await;
    assert_eq!(bob.js("return document.getElementById('account-user').textContent", json!([])).await, "bob");
    assert_eq!(bob.console_errors().await, Vec::<String>::new());
    bob.quit().await;
}
