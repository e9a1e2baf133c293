//! TLS with rustls: HTTPS and wss:// on one listener, Secure cookies, HSTS, the redirect port,
//! and certificates re-read without dropping live sockets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::Connector;

use crate::helpers::*;

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files.
struct TestCert {
    dir: PathBuf,
    der: CertificateDer<'static>,
    pem: String,
}

impl TestCert {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("authchat-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cert = Self { dir, der: CertificateDer::from(Vec::new()), pem: String::new() };
        cert.rotate();
        cert
    }

    /// Writes a fresh key pair over the files.
    fn rotate(&mut self) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        self.pem = generated.cert.pem();
        self.der = generated.cert.der().clone();
        std::fs::write(self.cert_path(), &self.pem).unwrap();
        std::fs::write(self.key_path(), generated.signing_key.serialize_pem()).unwrap();
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn config(&self, extra: &str) -> String {
        format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}", self.cert_path().display(), self.key_path().display())
    }

    fn https(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    fn rustls_client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    async fn wss(&self, url: &str) -> Result<WsClient, String> {
        let request = url.into_client_request().unwrap();
        let connector = Connector::Rustls(self.rustls_client());
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
            .await
            .map(|(stream, _)| WsClient::from_stream(stream))
            .map_err(|e| e.to_string())
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[actix_web::test]
async fn https_login_wss_with_a_ticket_secure_cookies_and_hsts() {
    let cert = TestCert::new("main");
    let app = spawn_app_with(&cert.config("")).await;
    let https = cert.https();
    let base = format!("https://localhost:{}", app.port);

    let res = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["strict-transport-security"], "max-age=31536000");

    let res = https
        .post(format!("{base}/api/login"))
        .json(&json!({"username":"alice","password":"alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_ascii_lowercase();
    assert!(cookie.contains("; secure"), "cookies are Secure on TLS: {cookie}");
    let access = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let ticket: Value =
        https.post(format!("{base}/api/ticket")).bearer_auth(&access).send().await.unwrap().json().await.unwrap();

    let url = format!("wss://localhost:{}/ws?ticket={}", app.port, ticket["ticket"].as_str().unwrap());
    let mut ws = cert.wss(&url).await.expect("wss with a ticket");
    let welcome = ws.next_of("welcome").await;
    assert_eq!((welcome["user"].as_str(), welcome["auth"].as_str()), (Some("alice"), Some("ticket")));
    ws.assert_alive().await;

    // the TLS listener speaks nothing else
    assert!(reqwest::get(format!("http://127.0.0.1:{}/healthz", app.port)).await.is_err());
}

#[actix_web::test]
async fn the_redirect_port_sends_plain_http_to_https() {
    let cert = TestCert::new("redirect");
    let app = spawn_app_with(&cert.config(&format!("redirect_port = {}", free_port()))).await;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let redirect = app.redirect_port.expect("a redirect listener");
    let res = plain.get(format!("http://localhost:{redirect}/api/config?x=1")).send().await.unwrap();
    assert_eq!(res.status(), 308);
    // Without tls.redirect_origin: the listener's own address (server.host), not the Host header.
    assert_eq!(res.headers()["location"], format!("https://127.0.0.1:{}/api/config?x=1", app.port));
    assert!(res.headers().get("strict-transport-security").is_none(), "HSTS only over TLS");
}

#[actix_web::test]
async fn the_redirect_goes_to_the_configured_origin_whatever_the_host_header_says() {
    let cert = TestCert::new("redirect-origin");
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (extra, expected) in [
        ("", None),
        ("redirect_origin = \"https://chat.example.com\"", Some("https://chat.example.com")),
        ("redirect_origin = \"https://chat.example.com:8443/\"", Some("https://chat.example.com:8443")),
    ] {
        let app = spawn_app_with(&cert.config(&format!("redirect_port = {}\n{extra}", free_port()))).await;
        let redirect = app.redirect_port.expect("a redirect listener");
        let expected = expected.map_or_else(|| format!("https://127.0.0.1:{}", app.port), str::to_owned);
        for host in ["evil.example", "evil.example:443", "[::1]:1"] {
            let res =
                plain.get(format!("http://127.0.0.1:{redirect}/admin?a=1")).header("Host", host).send().await.unwrap();
            assert_eq!(res.status(), 308);
            assert_eq!(res.headers()["location"], format!("{expected}/admin?a=1"), "Host: {host}");
        }
    }
    // Listening on every address, there is no address of its own to send clients to.
    let load = |extra: &str| {
        authchat::config::Settings::load(&authchat::config::LoadOptions {
            env_vars: Some(Default::default()),
            overrides: vec![format!("[server]\nhost = \"0.0.0.0\"\n{}", cert.config(extra))],
            ..Default::default()
        })
    };
    let err = load("redirect_port = 8081").unwrap_err();
    assert!(err.to_string().contains("tls.redirect_origin"), "{err}");
    assert!(load("redirect_port = 8081\nredirect_origin = \"https://chat.example.com\"").is_ok());
    let err = load("redirect_origin = \"http://chat.example.com\"").unwrap_err();
    assert!(err.to_string().contains("tls.redirect_origin"), "{err}");
}

#[actix_web::test]
async fn certificates_are_reread_without_dropping_live_sockets() {
    let mut cert = TestCert::new("reload");
    let app = spawn_app_with(&cert.config("")).await;
    let before = cert.https();
    let mut ws = cert.wss(&format!("wss://localhost:{}/ws?token={}", app.port, sign("alice", 300, &[]))).await.unwrap();
    ws.next_of("welcome").await;

    cert.rotate();
    app.reload.reload();
    // new handshakes present the new certificate: only a client trusting it gets through
    assert!(before.get(format!("https://localhost:{}/healthz", app.port)).send().await.is_err());
    assert_eq!(cert.https().get(format!("https://localhost:{}/healthz", app.port)).send().await.unwrap().status(), 200);
    ws.assert_alive().await;

    // a broken file keeps the current pair
    std::fs::write(cert.key_path(), "not a key").unwrap();
    app.reload.reload();
    assert_eq!(cert.https().get(format!("https://localhost:{}/healthz", app.port)).send().await.unwrap().status(), 200);
}

#[actix_web::test]
async fn unreadable_or_mismatched_files_name_the_key() {
    let cert = TestCert::new("bad");
    let other = TestCert::new("other");
    let missing = format!("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"{}\"", cert.key_path().display());
    let err = authchat::startup::Application::build(test_settings(&missing)).await.err().expect("refused");
    assert!(err.to_string().contains("tls.cert") && err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    let mismatched =
        format!("[tls]\ncert = \"{}\"\nkey = \"{}\"", cert.cert_path().display(), other.key_path().display());
    let err = authchat::startup::Application::build(test_settings(&mismatched)).await.err().expect("refused");
    assert!(err.to_string().contains("tls.key"), "{err}");
    let only_cert = format!("[tls]\ncert = \"{}\"", cert.cert_path().display());
    let err = authchat::config::Settings::load(&authchat::config::LoadOptions {
        env_vars: Some(Default::default()),
        overrides: vec![only_cert],
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("tls.key"), "{err}");
    let _ = Path::new("");
}
