//! The real `authchat` binary: its logs never carry a credential, SIGTERM drains and exits 0,
//! the CLI mints tokens and rejects bad configuration with the key's name, and `healthcheck`
//! asks the server its configuration describes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_authchat");

fn authchat() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("AUTHCHAT_ENV").env_remove("AUTHCHAT_CONFIG").env_remove("RUST_LOG");
    cmd
}

/// A running server process with its stdout captured line by line.
struct Process {
    child: Child,
    port: u16,
    logs: Arc<Mutex<Vec<String>>>,
}

fn start_server() -> Process {
    start_server_with(&[])
}

/// Starts `authchat serve` with `env` over the test defaults (port 0, one worker, JSON logs).
fn start_server_with(env: &[(&str, &str)]) -> Process {
    let mut child = authchat()
        .arg("serve")
        .env("AUTHCHAT__SERVER__PORT", "0")
        .env("AUTHCHAT__SERVER__WORKERS", "1")
        .env("AUTHCHAT__AUTH__SECRET", SECRET)
        .env("AUTHCHAT__LOG__FORMAT", "json")
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (port_tx, port_rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let logs = logs.clone();
        let port_tx = port_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["fields"]["message"] == "listening" {
                        let address = v["fields"]["address"].as_str().unwrap_or_default().to_owned();
                        let _ = port_tx.send(address.rsplit(':').next().unwrap().parse::<u16>().unwrap());
                    }
                }
                logs.lock().unwrap().push(line);
            }
        });
    }
    let port = port_rx.recv_timeout(WAIT).expect("the server logs its address");
    Process { child, port, logs }
}

impl Process {
    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn sigterm(&self) {
        self.signal("TERM");
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "the server did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[actix_web::test]
async fn logs_never_contain_a_credential_and_sigterm_drains_then_exits_0() {
    let mut server = start_server();
    let base = format!("http://127.0.0.1:{}", server.port);
    let ws_base = format!("ws://127.0.0.1:{}", server.port);
    let http = reqwest::Client::new();

    let res = http
        .post(format!("{base}/api/login"))
        .json(&json!({"username":"alice","password":"alice-password"}))
        .send()
        .await
        .unwrap();
    let refresh_cookie = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let login: Value = res.json().await.unwrap();
    let login_token = login["access_token"].as_str().unwrap().to_owned();
    let res = http.post(format!("{base}/api/token/refresh")).header("Cookie", &refresh_cookie).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let rotated_cookie = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let ticket: Value =
        http.post(format!("{base}/api/ticket")).bearer_auth(&login_token).send().await.unwrap().json().await.unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let (mut by_ticket, _) = connect(&format!("{ws_base}/ws?ticket={ticket}"), &[]).await.unwrap();
    by_ticket.next_of("welcome").await;
    assert_eq!(http.get(format!("{base}/api/me")).bearer_auth(&login_token).send().await.unwrap().status(), 200);

    let (mut by_query, _) = connect(&format!("{ws_base}/ws?token={login_token}"), &[]).await.unwrap();
    by_query.next_of("welcome").await;
    let protocol_token = sign("bob", 300, &[]);
    let offered = format!("authchat.v1, authchat.bearer.{protocol_token}");
    let (mut by_protocol, _) =
        connect(&format!("{ws_base}/ws"), &[("Sec-WebSocket-Protocol", &offered)]).await.unwrap();
    by_protocol.next_of("welcome").await;
    let first_message_token = sign("carol", 300, &[]);
    let (mut by_message, _) = connect(&format!("{ws_base}/ws"), &[]).await.unwrap();
    by_message.send(json!({"type":"auth","token": first_message_token})).await;
    by_message.next_of("welcome").await;
    let reauth_token = sign("carol", 600, &[]);
    by_message.send(json!({"type":"reauth","token": reauth_token})).await;
    by_message.next_of("reauthed").await;
    let bad_token = "bad-token-value-that-must-not-be-logged";
    expect_refused(&format!("{ws_base}/ws?token={bad_token}"), &[], 401, "invalid_token").await;
    expect_refused(&format!("{ws_base}/ws?ticket=ticket-value-not-logged"), &[], 401, "invalid_ticket").await;

    server.sigterm();
    for ws in [&mut by_query, &mut by_protocol, &mut by_message, &mut by_ticket] {
        assert_eq!(ws.next_json().await["type"], "server_shutdown");
        assert_eq!(ws.expect_close().await.0, 1001);
    }
    let status = server.wait_exit(Duration::from_secs(8));
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");

    let logs = server.logs.lock().unwrap().join("\n");
    assert!(logs.contains("[REDACTED]"), "the access log shows where a token was, redacted");
    assert!(logs.contains("websocket accepted"), "logs were captured at debug level");
    let refresh_values = [&refresh_cookie, &rotated_cookie].map(|c| c.split_once('=').unwrap().1.to_owned());
    let credentials = [
        &login_token,
        &protocol_token,
        &first_message_token,
        &reauth_token,
        &ticket,
        &refresh_values[0],
        &refresh_values[1],
    ];
    let known = [bad_token, "ticket-value-not-logged", "alice-password", SECRET];
    for secret in credentials.into_iter().map(String::as_str).chain(known) {
        assert!(!logs.contains(secret), "a credential leaked into the logs: {}…", &secret[..12]);
    }
}

#[actix_web::test]
async fn the_access_log_records_the_client_a_trusted_proxy_names() {
    let server = start_server_with(&[("AUTHCHAT__SERVER__TRUSTED_PROXIES", "127.0.0.1")]);
    let res = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", server.port))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let deadline = std::time::Instant::now() + WAIT;
    let request = loop {
        let logs = server.logs.lock().unwrap().clone();
        let line = logs
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["target"] == "authchat::access" && v["fields"]["target"] == "/healthz");
        if let Some(line) = line {
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "no access log line for /healthz");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(request["fields"]["client"], "203.0.113.9", "{request}");
    assert!(request["fields"]["peer"].as_str().is_some_and(|p| p.contains("127.0.0.1")), "{request}");
}

/// A port free right now: bound, read and let go, for a server that must listen on a port
/// known in advance (`healthcheck` reads it from the same configuration).
fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()
}

/// `authchat healthcheck` with this environment: exit code, stdout, stderr.
fn healthcheck(env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = authchat().arg("healthcheck").envs(env.iter().copied()).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim_end().to_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn healthcheck_exits_0_while_the_server_answers_and_1_with_a_reason_once_it_stopped() {
    let port = free_port();
    let env = [("AUTHCHAT__SERVER__PORT", port.as_str())];
    let mut server = start_server_with(&env);
    assert_eq!(server.port.to_string(), port, "the server listens where its configuration says");
    let (code, said, stderr) = healthcheck(&env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(said.contains(&format!("http://127.0.0.1:{port}/healthz")), "{said}");

    server.sigterm();
    assert_eq!(server.wait_exit(Duration::from_secs(8)).code(), Some(0));
    let (code, _, stderr) = healthcheck(&env);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("refused"), "{stderr}");
}

/// A self-signed CA certificate for another name, as `openssl req -x509` makes them: the
/// healthcheck trusts the server's own certificate, whatever it says.
fn write_certificate(dir: &std::path::Path) {
    let mut params = rcgen::CertificateParams::new(vec!["chat.example.com".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

#[test]
fn healthcheck_speaks_tls_to_a_tls_server_and_accepts_only_its_certificate() {
    let dir = std::env::temp_dir().join(format!("authchat-healthcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_certificate(&dir);
    let (cert, key) = (dir.join("cert.pem").display().to_string(), dir.join("key.pem").display().to_string());
    let port = free_port();
    let env = [("AUTHCHAT__SERVER__PORT", port.as_str()), ("AUTHCHAT__TLS__CERT", &cert), ("AUTHCHAT__TLS__KEY", &key)];
    let _server = start_server_with(&env);
    let (code, said, stderr) = healthcheck(&env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(said.contains(&format!("https://127.0.0.1:{port}/healthz")), "{said}");

    // A certificate file that is not the one the server presents (replaced, not yet re-read).
    write_certificate(&dir);
    let (code, _, stderr) = healthcheck(&env);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("tls.cert") && stderr.lines().count() == 1, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_names_the_key_to_fix() {
    let out = authchat().arg("check-config").env("AUTHCHAT__DEV_MODE", "false").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auth.secret"), "{stderr}");

    let out = authchat().arg("check-config").env("AUTHCHAT__SERVER__PROT", "1").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prot"));

    let out = authchat().arg("check-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("dev_mode = true") && said.contains("auth.mode = jwt") && said.contains("TLS off"), "{said}");
    let out = authchat().arg("check-config").env("AUTHCHAT__AUTH__MODE", "session").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("auth.mode = session"),
        "check-config says what it validated"
    );
}

#[actix_web::test]
async fn check_config_fetches_the_jwks_as_start_up_does() {
    let idp = crate::idp::Idp::start("check-config", &[("k1", jsonwebtoken::Algorithm::ES256)]).await;
    let check = |ca_file: Option<String>| {
        let mut cmd = authchat();
        cmd.arg("check-config")
            .env("AUTHCHAT__AUTH__ISSUER", &idp.issuer)
            .env("AUTHCHAT__AUTH__OIDC_DISCOVERY", "true");
        if let Some(ca_file) = ca_file {
            cmd.env("AUTHCHAT__AUTH__JWKS_CA_FILE", ca_file);
        }
        // The provider answers from its own threads; the blocking wait stays off this one.
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let out = check(Some(idp.ca_file.display().to_string())).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    let discovery = format!("{}/.well-known/openid-configuration", idp.issuer);
    assert!(said.contains(&format!("jwt, verify-only (keys from OpenID discovery at {discovery})")), "{said}");
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));

    let out = check(None).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UnknownIssuer") && stderr.contains("auth.jwks_ca_file"), "{stderr}");
}

#[test]
fn the_token_command_mints_a_token_the_server_accepts() {
    let out = authchat()
        .args(["token", "--user", "ops", "--role", "admin", "--ttl", "15m"])
        .env("AUTHCHAT__AUTH__SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["authchat"]);
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "ops");
    assert_eq!(claims["roles"], json!(["admin"]));
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 900);

    let out = authchat().args(["token", "--user", "ops"]).output().unwrap();
    assert!(!out.status.success(), "without a configured secret the token would not verify");
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.secret is empty"));
    let out = authchat().args(["token", "--user", "ops"]).env("AUTHCHAT__AUTH__SECRET", "short").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("auth.secret has 5 bytes"), "says what is wrong: {stderr}");
    assert!(!stderr.contains("no verification key"), "{stderr}");
}

#[test]
fn hash_password_prints_a_phc_string() {
    use std::io::Write;
    let mut child = authchat().arg("hash-password").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("correct horse"));
}

/// On a terminal (a pty from util-linux's `script`) the password is read without echo, twice.
#[test]
fn hash_password_does_not_echo_on_a_terminal() {
    let typed = "(sleep 1; printf 'typed-on-a-tty\\n'; sleep 1; printf 'typed-on-a-tty\\n')";
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{typed} | script -qec '{BIN} hash-password' /dev/null"))
        .env_remove("AUTHCHAT_ENV")
        .output()
        .expect("script (util-linux) runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("password:") && screen.contains("$argon2id$"), "{screen}");
    assert!(!screen.contains("typed-on-a-tty"), "the password was echoed: {screen}");
}

#[actix_web::test]
async fn sighup_rereads_the_jwks_file_without_dropping_sockets() {
    use crate::jwks::{idp_token, temp_jwks, write_jwks, ISSUER};
    use jsonwebtoken::Algorithm;

    let path = temp_jwks("sighup");
    write_jwks(&path, &[("before", Algorithm::ES256)]);
    let jwks_file = path.display().to_string();
    let server = start_server_with(&[
        ("AUTHCHAT__AUTH__JWKS_FILE", &jwks_file),
        ("AUTHCHAT__AUTH__ISSUER", ISSUER),
        ("AUTHCHAT__AUTH__JWKS_POLL_INTERVAL", "0s"),
    ]);
    let ws_url = |token: &str| format!("ws://127.0.0.1:{}/ws?token={token}", server.port);
    let (mut ws, _) = connect(&ws_url(&idp_token("before", Algorithm::ES256, "alice")), &[]).await.unwrap();
    ws.next_of("welcome").await;

    write_jwks(&path, &[("after", Algorithm::EdDSA)]);
    let after = idp_token("after", Algorithm::EdDSA, "alice");
    expect_refused(&ws_url(&after), &[], 401, "invalid_token").await;
    server.signal("HUP");
    let deadline = std::time::Instant::now() + WAIT;
    while connect(&ws_url(&after), &[]).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "SIGHUP did not reload the JWKS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ws.assert_alive().await;
}

#[actix_web::test]
async fn sighup_rereads_the_room_rules_and_puts_sockets_out_of_rooms_they_no_longer_allow() {
    let file = std::env::temp_dir().join(format!("authchat-rules-{}.toml", std::process::id()));
    std::fs::write(&file, "").unwrap();
    let config = file.display().to_string();
    let server = start_server_with(&[("AUTHCHAT_CONFIG", &config)]);
    let ws_url =
        |user: &str, roles: &[&str]| format!("ws://127.0.0.1:{}/ws?token={}", server.port, sign(user, 300, roles));
    let (mut guest, _) = connect(&ws_url("gus", &[]), &[]).await.unwrap();
    let (mut ops, _) = connect(&ws_url("olga", &["ops"]), &[]).await.unwrap();
    for ws in [&mut guest, &mut ops] {
        ws.next_of("welcome").await;
        ws.send(json!({"type":"join","room":"ops.deploy"})).await;
        ws.next_of("joined").await;
    }

    std::fs::write(&file, "[[rooms.rules]]\nprefix = \"ops.\"\nroles = [\"ops\"]\n").unwrap();
    server.signal("HUP");
    assert_eq!(guest.next_of("left").await, json!({"type":"left","room":"ops.deploy","reason":"forbidden"}));
    let presence = ops.next_of("presence").await;
    assert_eq!((presence["user"].as_str(), presence["event"].as_str()), (Some("gus"), Some("leave")));
    guest.send(json!({"type":"join","room":"ops.deploy"})).await;
    assert_eq!(guest.next_of("error").await["code"], "forbidden");
    ops.send(json!({"type":"send","room":"ops.deploy","text":"still in"})).await;
    ops.next_of("ack").await;
    let _ = std::fs::remove_file(&file);
}

#[actix_web::test]
async fn on_sigterm_readiness_flips_before_sockets_close() {
    let mut server = start_server_with(&[("AUTHCHAT__SERVER__DRAIN_DELAY", "1500ms")]);
    let base = format!("http://127.0.0.1:{}", server.port);
    let ws_url = format!("ws://127.0.0.1:{}/ws?token={}", server.port, sign("alice", 300, &[]));
    let (mut ws, _) = connect(&ws_url, &[]).await.unwrap();
    ws.next_of("welcome").await;
    assert_eq!(reqwest::get(format!("{base}/readyz")).await.unwrap().status(), 200);

    server.sigterm();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let res = reqwest::get(format!("{base}/readyz")).await.unwrap();
        if res.status() == 503 {
            assert_eq!(res.json::<Value>().await.unwrap()["status"], "draining");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "readiness never flipped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // not ready, yet the socket is still open and new upgrades are turned away
    assert!(ws.recv_within(Duration::from_millis(200)).await.is_none(), "sockets close only after the drain delay");
    expect_refused(&ws_url, &[], 503, "shutting_down").await;
    assert_eq!(ws.next_json().await["type"], "server_shutdown");
    assert_eq!(ws.expect_close().await, (1001, "server shutting down".into()));
    assert_eq!(server.wait_exit(Duration::from_secs(8)).code(), Some(0));
}

#[test]
fn the_production_layer_refuses_to_start_unsafely() {
    let production = |env: &[(&str, &str)]| {
        authchat()
            .arg("check-config")
            .env("AUTHCHAT_ENV", "production")
            .env("AUTHCHAT_CONFIG_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/config"))
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = production(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.secret"));
    let secret = ("AUTHCHAT__AUTH__SECRET", "0123456789abcdef0123456789abcdef0123");
    let out = production(&[secret]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.allowed_origins"));
    let origins = ("AUTHCHAT__SERVER__ALLOWED_ORIGINS", "https://chat.example.com");
    let out = production(&[secret, origins]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("tls.cert"),
        "the shipped cert path does not exist here: {stderr}"
    );
}

/// `authchat serve` on `port` with its stdout and stderr written to `log` (no line splitting
/// on the way: the file holds exactly the bytes the process wrote). Ready once `/healthz` answers.
async fn start_server_logging_to(log: &std::path::Path, port: &str, format: &str) -> Child {
    let file = std::fs::File::create(log).unwrap();
    let child = authchat()
        .arg("serve")
        .env("AUTHCHAT__SERVER__PORT", port)
        .env("AUTHCHAT__SERVER__WORKERS", "1")
        .env("AUTHCHAT__AUTH__SECRET", SECRET)
        .env("AUTHCHAT__LOG__FORMAT", format)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("the binary starts");
    let deadline = std::time::Instant::now() + WAIT;
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the server did not answer /healthz");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// Requests that put credentials and control characters where the logs look: in paths, after
/// `;` in queries, as a user name in an admin path, in a token's `sub`. Returns the
/// credentials used, which the log must not contain.
async fn hostile_requests(port: &str) -> Vec<String> {
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base}/api/login"))
        .json(&json!({"username":"alice","password":"alice-password"}))
        .send()
        .await
        .unwrap();
    let refresh = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let refresh = refresh.split_once('=').unwrap().1.to_owned();
    let jwt = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let ticket: Value =
        http.post(format!("{base}/api/ticket")).bearer_auth(&jwt).send().await.unwrap().json().await.unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    // An admin whose token names a user with a line break in it (an identity provider's `sub`).
    let admin = sign("root\nFORGED-BY-SUB", 300, &["admin"]);
    let signed = sign("bob", 300, &[]);

    let ws = format!("ws://127.0.0.1:{port}");
    // Upgrades: the token after `;`, and a ticket after `;`; neither is taken as a credential.
    for target in [format!("/ws?x=1;token={signed}"), format!("/ws?x=1;ticket={ticket}")] {
        if let Ok((client, _)) = connect(&format!("{ws}{target}"), &[]).await {
            client.close().await;
        }
    }
    let forged = "%0a2001-01-01T00:00:00.000000Z%20%20INFO%20FORGED-LINE";
    let paths = [
        format!("/nonexistent/{jwt}"),
        format!("/nonexistent/{ticket}"),
        format!("/static/{refresh}.js"),
        format!("/api/me;token={jwt}"),
        format!("/healthz?{jwt}"),
        format!("/healthz?a=1;b={ticket};c={refresh}"),
        format!("/x{forged}"),
        format!("/x?q=1{forged}%0d%00%1b[2J%e2%80%a8%c2%85"),
    ];
    for path in &paths {
        http.get(format!("{base}{path}")).bearer_auth(&signed).send().await.unwrap();
    }
    for (method, path) in [
        (reqwest::Method::POST, format!("/admin/users/x{forged}%00%1b[31m/revoke")),
        (reqwest::Method::DELETE, "/admin/users/x%0d%0aFORGED-CR/connections".to_owned()),
        (reqwest::Method::DELETE, format!("/admin/users/{jwt}/connections")),
        (reqwest::Method::POST, format!("/admin/users/{ticket}/revoke")),
    ] {
        let res = http.request(method, format!("{base}{path}")).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    vec![jwt, ticket, refresh, admin, signed]
}

#[actix_web::test]
async fn no_credential_or_forged_line_reaches_the_log_from_any_part_of_a_request() {
    for format in ["text", "json"] {
        let log = std::env::temp_dir().join(format!("authchat-hostile-{}-{format}.log", std::process::id()));
        let port = free_port();
        let mut child = start_server_logging_to(&log, &port, format).await;
        let secrets = hostile_requests(&port).await;
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
        let bytes = std::fs::read(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        let text = String::from_utf8(bytes).expect("the log is UTF-8");
        assert!(text.contains("operator revoked a user"), "{format}: the attempts were logged:\n{text}");
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{format}: a credential reached the log: {}…\n{text}",
                &secret[..12]
            );
            // Nor any long piece of it (a JWT's header or payload alone is a tell).
            for piece in secret.split('.').filter(|p| p.len() >= 16) {
                assert!(!text.contains(piece), "{format}: part of a credential reached the log: {piece}\n{text}");
            }
        }
        assert!(!text.contains("eyJ"), "{format}: something JWT-shaped reached the log:\n{text}");
        for c in ['\r', '\0', '\u{1b}', '\u{85}', '\u{2028}'] {
            assert!(!text.contains(c), "{format}: a raw {c:?} reached the log:\n{text}");
        }
        for line in text.lines() {
            match format {
                "json" => assert!(serde_json::from_str::<Value>(line).is_ok(), "not one JSON event: {line:?}"),
                _ => {
                    let stamp = line.get(..20).unwrap_or_default().as_bytes();
                    let starts_with_timestamp = stamp.len() == 20
                        && stamp[4] == b'-'
                        && stamp[10] == b'T'
                        && stamp[19] == b'.'
                        && stamp[..4].iter().all(u8::is_ascii_digit);
                    assert!(starts_with_timestamp, "a line that is not an event: {line:?}");
                }
            }
            assert!(!line.starts_with("2001-") && !line.starts_with("FORGED"), "{format}: a forged line: {line:?}");
        }
    }
}
