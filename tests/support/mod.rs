//! Shared by the test binaries: start the real server in-process on port 0, and a small WebSocket client.
#![allow(dead_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use authchat::config::{LoadOptions, Settings};
use authchat::startup::Application;
use authchat::testkit::{access_claims, TokenSigner};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The HS256 secret every test server uses, so tests can sign their own tokens.
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub port: u16,
    /// What SIGHUP does in the binary.
    pub reload: authchat::startup::ReloadHandle,
    /// `tls.redirect_port`'s bound port, when set.
    pub redirect_port: Option<u16>,
    /// `metrics.listen`'s bound port, when set.
    pub metrics_port: Option<u16>,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Test settings: the embedded default, a fixed secret, port 0, one worker, no process env.
pub fn test_settings(overrides: &str) -> Settings {
    Settings::load(&test_options(overrides)).expect("test settings are valid")
}

/// The layers [`test_settings`] reads, e.g. for [`authchat::startup::ReloadHandle::with_config`].
pub fn test_options(overrides: &str) -> LoadOptions {
    let base = format!(
        "[server]\nport = 0\nworkers = 1\nnode_id = \"test-node\"\nshutdown_timeout = \"3s\"\n[auth]\nsecret = \"{SECRET}\"\n\
         [ws.handshake_limit]\nper_second = 1000.0\nburst = 1000.0\n"
    );
    LoadOptions {
        env_vars: Some(Default::default()),
        overrides: vec![base, overrides.to_owned()],
        ..LoadOptions::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

/// Starts a server with `overrides` (TOML) layered over the test settings.
pub async fn spawn_app_with(overrides: &str) -> TestApp {
    spawn_app_from(test_settings(overrides)).await
}

/// Starts a server with exactly these settings (e.g. the production layer).
pub async fn spawn_app_from(settings: Settings) -> TestApp {
    let app = Application::build(settings).await.expect("server builds");
    let port = app.port();
    let reload = app.reload_handle();
    let redirect_port = app.redirect_port();
    let metrics_port = app.metrics_port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = actix_web::rt::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        port,
        reload,
        redirect_port,
        metrics_port,
        http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        shutdown: Some(tx),
        stopped: Some(stopped),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// `POST /api/login` with a dev user's password (`<user>-password`), whatever the answer.
    pub async fn post_login(&self, user: &str) -> reqwest::Response {
        self.post_login_with(&self.http, user, &format!("{user}-password")).await
    }

    /// `POST /api/login` through `client` (e.g. one bound to another source address).
    pub async fn post_login_with(&self, client: &reqwest::Client, user: &str, password: &str) -> reqwest::Response {
        let body = json!({"username": user, "password": password});
        client.post(self.url("/api/login")).json(&body).send().await.unwrap()
    }

    /// Logs in through the API and returns the access token.
    pub async fn login(&self, user: &str) -> String {
        let res = self.post_login(user).await;
        assert_eq!(res.status(), 200, "login of {user}");
        res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// Begins a graceful stop and waits for the server to finish.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.begin_stop();
        tokio::time::timeout(WAIT, self.stopped.take().unwrap()).await.expect("server stops in time").unwrap()
    }

    /// Begins a graceful stop without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn send_json(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Opens a socket with `?token=`.
    pub async fn connect(&self, token: &str) -> WsClient {
        let (client, _) = connect(&self.ws_url(&format!("/ws?token={token}")), &[]).await.expect("upgrade accepted");
        client
    }

    /// Opens a socket as `user` and reads its welcome.
    pub async fn connect_as(&self, user: &str) -> (WsClient, Value) {
        let token = sign(user, 300, &[]);
        let mut client = self.connect(&token).await;
        let welcome = client.next_of("welcome").await;
        (client, welcome)
    }
}

/// An HTTP client whose connections come from `ip`, a loopback address such as 127.0.0.2, so
/// one test can be several clients as the server sees them.
pub fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder().local_address(std::net::IpAddr::from(ip)).timeout(WAIT).build().unwrap()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.begin_stop();
    }
}

pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Signs `claims` with the test secret (HS256, kid hs1).
pub fn sign_claims(claims: Value) -> String {
    TokenSigner::hs256(SECRET.as_bytes(), "hs1").unwrap().sign(&claims)
}

/// A valid token for `user` that lives `ttl_s` seconds from now (a negative `ttl_s`: expired).
pub fn sign(user: &str, ttl_s: i64, roles: &[&str]) -> String {
    let now = now_s();
    let exp = now.saturating_add_signed(ttl_s);
    sign_claims(access_claims(user, now, exp, &format!("{user}-{}", now_ms()), roles))
}

/// What a socket received next.
#[derive(Debug)]
pub enum Event {
    Json(Value),
    Close(u16, String),
    /// The stream ended without a close frame.
    Ended,
}

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// A refused upgrade: status and JSON body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

/// Connects with extra request headers; on refusal returns the HTTP status and body.
pub async fn connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(WsClient, tokio_tungstenite::tungstenite::handshake::client::Response), Refused> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await.expect("handshake in time") {
        Ok((stream, response)) => Ok((WsClient { stream }, response)),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            Err(Refused { status, body })
        }
        Err(e) => panic!("handshake failed unexpectedly: {e}"),
    }
}

/// Sends `GET /ws` as a WebSocket upgrade by hand on `stream`: the Host, Upgrade, Connection
/// and Sec-WebSocket-Key lines, then `headers` as given (repeated names stay separate lines,
/// which no client library lets a test do), then `behind` in the same write. Reads the response
/// head byte by byte, so nothing after it is consumed, and returns it with its status.
pub async fn raw_upgrade_on(
    stream: &mut TcpStream,
    port: u16,
    headers: &[(&str, &str)],
    behind: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(behind);
    stream.write_all(&bytes).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte)).await.expect("a response in time").unwrap();
        assert_eq!(n, 1, "the server hung up during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, head)
}

/// Expects a refusal with this status and `error` code.
pub async fn expect_refused(url: &str, headers: &[(&str, &str)], status: u16, code: &str) {
    match connect(url, headers).await {
        Ok(_) => panic!("upgrade to {url} was accepted; expected {status} {code}"),
        Err(refused) => {
            assert_eq!(refused.status, status, "{:?}", refused.body);
            assert_eq!(refused.body["error"], code, "{:?}", refused.body);
            assert!(refused.body["message"].as_str().is_some_and(|m| !m.is_empty()), "a refusal says what was wrong");
        }
    }
}

impl WsClient {
    pub fn from_stream(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { stream }
    }

    pub async fn send(&mut self, value: Value) {
        self.stream.send(Message::text(value.to_string())).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text.to_owned())).await.unwrap();
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.stream.send(Message::binary(data.to_vec())).await.unwrap();
    }

    /// Sends one raw frame (fragments, invalid UTF-8, a close frame's payload as is).
    pub async fn send_frame(&mut self, data: Vec<u8>, opcode: OpCode, is_final: bool) {
        let header = FrameHeader { is_final, opcode, ..FrameHeader::default() };
        self.stream.send(Message::Frame(Frame::from_payload(header, data.into()))).await.unwrap();
    }

    pub const TEXT: OpCode = OpCode::Data(Data::Text);
    pub const BINARY: OpCode = OpCode::Data(Data::Binary);
    pub const CLOSE: OpCode = OpCode::Control(Control::Close);
    pub const CONTINUE: OpCode = OpCode::Data(Data::Continue);

    /// The next JSON message or close, skipping pings; fails after [`WAIT`].
    pub async fn recv(&mut self) -> Event {
        self.recv_within(WAIT).await.expect("a message in time")
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Option<Event> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let next = tokio::time::timeout(left, self.stream.next()).await.ok()?;
            return Some(match next {
                Some(Ok(Message::Text(text))) => Event::Json(serde_json::from_str(&text).expect("server sends JSON")),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) =
                        frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    Event::Close(code, reason)
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Event::Ended,
            });
        }
    }

    /// The next text, binary or close message as it came, skipping pings and pongs; `None` if
    /// nothing comes within `wait`.
    pub async fn next_message_within(&mut self, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.stream.next()).await.ok()?? {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(message) => return Some(message),
                Err(e) => panic!("the connection failed: {e}"),
            }
        }
    }

    /// The next JSON message of type `kind`, skipping others (presence, expiring, …).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            match self.recv().await {
                Event::Json(v) if v["type"] == kind => return v,
                Event::Json(_) => continue,
                other => panic!("expected {kind}, got {other:?}"),
            }
        }
    }

    /// The next message, which must be JSON (not a close).
    pub async fn next_json(&mut self) -> Value {
        match self.recv().await {
            Event::Json(v) => v,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }

    /// Reads until the close frame, skipping JSON; returns code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.recv().await {
                Event::Json(_) => continue,
                Event::Close(code, reason) => return (code, reason),
                Event::Ended => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Proves the connection still works: a join answers `joined`.
    pub async fn assert_alive(&mut self) {
        self.send(json!({"type":"join","room":"alive-check"})).await;
        let joined = self.next_of("joined").await;
        assert_eq!(joined["room"], "alive-check");
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// A private `redis-server` on a free port, in its own folder, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts one (append-only file on, so a restart keeps what it had). Fails the test with
    /// the install command when `redis-server` is missing.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("authchat-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self { port, dir, child: None };
        server.launch().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); install it: apt-get install redis-server"));
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (SIGTERM: it flushes its append-only file) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and folder.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    /// A plain connection, to act as "another process".
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
