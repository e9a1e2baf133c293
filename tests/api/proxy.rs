//! Behind a proxy. The production layer behind a proxy that terminates TLS:
//! `tls.terminated_upstream = true` is all it takes (the layer's `tls.cert` and `tls.key` are
//! then not read), and an empty `AUTHCHAT__TLS__CERT=` means "no path", never a file named "".
//! And the client's address: from a peer in `server.trusted_proxies`, the per-address limits
//! count the client named by `X-Forwarded-For` or `Forwarded`; from any other peer those
//! headers change nothing.

use authchat::config::{LoadOptions, Settings};
use serde_json::json;

use crate::helpers::*;

/// `config/production.toml` as shipped, with what an operator must set, on a free local port.
fn production(extra_env: &[(&str, &str)]) -> Result<Settings, authchat::config::ConfigError> {
    let mut env = vec![
        ("AUTHCHAT__AUTH__SECRET", SECRET),
        ("AUTHCHAT__SERVER__ALLOWED_ORIGINS", "https://chat.example.com"),
        ("AUTHCHAT__SERVER__HOST", "127.0.0.1"),
        ("AUTHCHAT__SERVER__PORT", "0"),
        ("AUTHCHAT__SERVER__WORKERS", "1"),
        ("AUTHCHAT__SERVER__DRAIN_DELAY", "0s"),
    ];
    env.extend_from_slice(extra_env);
    Settings::load(&LoadOptions {
        env_name: Some("production".into()),
        config_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/config").into(),
        env_vars: Some(env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..LoadOptions::default()
    })
}

#[actix_web::test]
async fn production_behind_a_tls_terminating_proxy_needs_only_terminated_upstream() {
    let settings = production(&[("AUTHCHAT__TLS__TERMINATED_UPSTREAM", "true")])
        .expect("the production layer with terminated_upstream loads");
    assert!(settings.tls.files().is_none(), "the layer's certificate paths are not used behind a TLS proxy");
    let app = spawn_app_from(settings).await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200, "plain HTTP to the proxy");
    assert!(res.headers().get("strict-transport-security").is_none(), "HSTS is the proxy's business");
    let (status, config) = app.get_json("/api/config", None).await;
    assert_eq!((status, &config["mode"]), (200, &serde_json::json!("jwt")), "{config}");
}

#[actix_web::test]
async fn an_empty_tls_path_from_the_environment_means_no_path() {
    let empty = [("AUTHCHAT__TLS__CERT", ""), ("AUTHCHAT__TLS__KEY", "")];
    let mut behind_proxy = empty.to_vec();
    behind_proxy.push(("AUTHCHAT__TLS__TERMINATED_UPSTREAM", "true"));
    let app = spawn_app_from(production(&behind_proxy).expect("empty paths are no paths")).await;
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);

    // Without a proxy, empty paths are missing TLS, refused as such (not an I/O error on "").
    let err = production(&empty).expect_err("production without TLS is refused").to_string();
    assert!(err.contains("tls.cert") && err.contains("terminated_upstream"), "{err}");
    // Only one of them emptied: the message names what is missing.
    let err = production(&empty[..1]).expect_err("a key without a certificate").to_string();
    assert!(err.contains("tls.cert") && !err.contains("No such file"), "{err}");
}

/// Small per-address allowances, so each is spent in a few requests: 3 failed logins (the
/// per-name allowance is far above), 3 handshakes, 1 unauthenticated socket.
const TIGHT_LIMITS: &str =
    "[auth.login_throttle]\nper_ip = 3\nip_window = \"10m\"\nper_user = 100\nuser_window = \"10m\"\n\
     [ws]\nmax_unauthenticated_per_ip = 1\n[ws.handshake_limit]\nper_second = 0.1\nburst = 3.0\n";

const WRONG: &str = "not-alice-password";
const RIGHT: &str = "alice-password";

/// A login as alice with these extra headers: the status.
async fn login(app: &TestApp, headers: &[(&str, &str)], password: &str) -> u16 {
    let mut req = app.http.post(app.url("/api/login")).json(&json!({"username": "alice", "password": password}));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap().status().as_u16()
}

fn xff(address: &str) -> [(&str, &str); 1] {
    [("X-Forwarded-For", address)]
}

/// Opens `/ws` with a token (or, without one, for first-message auth): `Ok` when upgraded,
/// else the refusal's status and `error`.
async fn handshake(app: &TestApp, headers: &[(&str, &str)], token: Option<&str>) -> Result<WsClient, (u16, String)> {
    let url = app.ws_url(&token.map_or_else(|| "/ws".to_owned(), |t| format!("/ws?token={t}")));
    connect(&url, headers)
        .await
        .map(|(client, _)| client)
        .map_err(|refused| (refused.status, refused.body["error"].as_str().unwrap_or_default().to_owned()))
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowances() {
    let app =
        spawn_app_with(&format!("{TIGHT_LIMITS}[server]\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n"))
            .await;

    // Failed logins count per forwarded client, not against the proxy.
    for _ in 0..3 {
        assert_eq!(login(&app, &xff("203.0.113.1"), WRONG).await, 401);
    }
    assert_eq!(login(&app, &xff("203.0.113.1"), RIGHT).await, 429, "203.0.113.1 spent its allowance");
    assert_eq!(login(&app, &xff("203.0.113.2"), WRONG).await, 401, "another client behind the proxy has its own");
    assert_eq!(login(&app, &xff("203.0.113.2"), RIGHT).await, 200);
    assert_eq!(login(&app, &[], RIGHT).await, 200, "nor is the proxy itself throttled");
    // The client is the right-most address that is not a trusted proxy: what a client wrote on
    // the left is not believed, and trusted hops on the right are skipped.
    assert_eq!(login(&app, &xff("198.51.100.9, 203.0.113.1, 10.1.2.3"), RIGHT).await, 429);
    assert_eq!(login(&app, &[("X-Forwarded-For", "203.0.113.1"), ("X-Forwarded-For", "10.1.2.3")], RIGHT).await, 429);
    assert_eq!(login(&app, &xff("203.0.113.1, 198.51.100.9"), RIGHT).await, 200, "198.51.100.9 is the client");
    // RFC 7239 `Forwarded` too.
    assert_eq!(login(&app, &[("Forwarded", "for=203.0.113.1;proto=https")], RIGHT).await, 429);
    assert_eq!(login(&app, &[("Forwarded", "for=\"[2001:db8::7]:4711\";proto=https")], RIGHT).await, 200);

    // Handshakes count per forwarded client.
    let token = sign("alice", 300, &[]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(handshake(&app, &xff("203.0.113.1"), Some(&token)).await.expect("within the handshake burst"));
    }
    let refused = handshake(&app, &xff("203.0.113.1"), Some(&token)).await.err();
    assert_eq!(refused, Some((429, "too_many_handshakes".into())));
    open.push(handshake(&app, &xff("203.0.113.2"), Some(&token)).await.expect("another client's handshakes"));

    // Unauthenticated sockets count per forwarded client.
    let first = handshake(&app, &xff("203.0.113.3"), None).await.expect("one unauthenticated socket");
    let refused = handshake(&app, &xff("203.0.113.3"), None).await.err();
    assert_eq!(refused, Some((429, "too_many_connections".into())));
    let other = handshake(&app, &xff("203.0.113.4"), None).await.expect("another client's unauthenticated socket");
    drop((first, other, open));
}

#[actix_web::test]
async fn forwarded_headers_from_a_peer_that_is_not_a_trusted_proxy_change_nothing() {
    for trusted in ["", "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n"] {
        let app = spawn_app_with(&format!("{TIGHT_LIMITS}{trusted}")).await;
        for address in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
            assert_eq!(login(&app, &xff(address), WRONG).await, 401);
        }
        // every request from 127.0.0.1 shares one allowance, whatever it claims
        for headers in [xff("203.0.113.4"), [("Forwarded", "for=203.0.113.5")], xff("10.1.2.3")] {
            assert_eq!(login(&app, &headers, RIGHT).await, 429, "{trusted:?}: {headers:?}");
        }

        let token = sign("alice", 300, &[]);
        let mut open = Vec::new();
        for address in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
            open.push(handshake(&app, &xff(address), Some(&token)).await.expect("within the handshake burst"));
        }
        let refused = handshake(&app, &[("Forwarded", "for=203.0.113.4")], Some(&token)).await.err();
        assert_eq!(refused, Some((429, "too_many_handshakes".into())), "{trusted:?}");
        drop(open);
    }
}
