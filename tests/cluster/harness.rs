//! The cluster under test: three `authchat serve` processes sharing one redis-server (or a
//! Redis Cluster, [`Cluster::start_sharded`]), each configured only through `AUTHCHAT__…`
//! environment variables, and [`Member`], a socket that remembers every chat message it was sent.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::{Mutex, MutexGuard};

use crate::helpers::*;
use crate::shards::RedisCluster;

const BIN: &str = env!("CARGO_BIN_EXE_authchat");

/// Whether nodes get the `[cluster]` keys issue 12's engine adds. Today's configuration refuses
/// an unknown section and names it, so on a build without the engine every node refuses to
/// start; turn this off to watch each test fail for its own reason on such a build.
pub const SET_CLUSTER_KEYS: bool = true;

/// A node (a debug build on a busy machine, with Redis to reach) is ready within this.
const START_WAIT: Duration = Duration::from_secs(30);
/// A SIGTERM'd node exits within this: `shutdown_timeout` (3 s) plus margin.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// One cluster at a time. Heartbeats, node timeouts and readiness are real time; a two-core
/// machine running a dozen nodes at once would turn every timing margin into a coin toss.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::const_new(());
/// Makes each cluster's key prefix unique.
static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// A token with the admin role, for the operator API on any node.
pub fn admin_token() -> String {
    sign("admin", 300, &["admin"])
}

/// Three nodes, `n1` to `n3`, on one Redis or on a Redis Cluster.
pub struct Cluster {
    /// First, so they stop before their Redis does.
    nodes: Vec<Node>,
    store: Store,
    /// `redis.key_prefix` of every node.
    prefix: String,
    /// Holds the node logs; removed unless a test failed.
    dir: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts Redis and three nodes with `extra` environment variables over the cluster's own.
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        let turn = ONE_CLUSTER_AT_A_TIME.lock().await;
        Self::start_on(Store::One(RedisServer::start().await), extra, turn).await
    }

    /// Starts a Redis Cluster (three primaries, one replica each) and three nodes on it.
    pub async fn start_sharded(extra: &[(&str, &str)]) -> Self {
        let turn = ONE_CLUSTER_AT_A_TIME.lock().await;
        Self::start_on(Store::Sharded(RedisCluster::start().await), extra, turn).await
    }

    async fn start_on(store: Store, extra: &[(&str, &str)], turn: MutexGuard<'static, ()>) -> Self {
        let redis_url = match &store {
            Store::One(redis) => redis.url(),
            Store::Sharded(_) => "redis://unused.invalid:6379".to_owned(),
        };
        let serial = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("authchat-ct{}-{serial}:", std::process::id());
        let dir = std::env::temp_dir().join(format!("authchat-cluster-{}-{serial}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes: Vec<Node> = (1..=3)
            .map(|n| {
                let id = format!("n{n}");
                let port = free_port();
                let mut env = node_env(&id, port, &redis_url, &prefix);
                if let Store::Sharded(shards) = &store {
                    env.push(("AUTHCHAT__REDIS__CLUSTER_NODES".to_owned(), shards.seeds()));
                }
                env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                Node::new(id.clone(), port, env, dir.join(format!("{id}.log")))
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        join_all(nodes.iter_mut().map(Node::wait_ready)).await;
        Self { nodes, store, prefix, dir, _turn: turn }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The one Redis (of [`Cluster::start_with`]).
    pub fn redis(&mut self) -> &mut RedisServer {
        match &mut self.store {
            Store::One(redis) => redis,
            Store::Sharded(_) => panic!("this cluster runs on a Redis Cluster"),
        }
    }

    /// The Redis Cluster (of [`Cluster::start_sharded`]).
    pub fn shards(&mut self) -> &mut RedisCluster {
        match &mut self.store {
            Store::Sharded(shards) => shards,
            Store::One(_) => panic!("this cluster runs on one Redis"),
        }
    }

    /// Node `n` (1, 2 or 3).
    pub fn node(&self, n: usize) -> &Node {
        &self.nodes[n - 1]
    }

    pub fn node_mut(&mut self, n: usize) -> &mut Node {
        &mut self.nodes[n - 1]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
}

enum Store {
    One(RedisServer),
    Sharded(RedisCluster),
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!("---- last lines of {}'s log ({}) ----\n{}", node.id, node.log.display(), node.log_tail());
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The environment of one node: everything a node needs, and nothing from the test's own
/// environment (see [`Node::spawn`]).
fn node_env(id: &str, port: u16, redis_url: &str, prefix: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("AUTHCHAT__SERVER__HOST", "127.0.0.1".to_owned()),
        ("AUTHCHAT__SERVER__PORT", port.to_string()),
        ("AUTHCHAT__SERVER__NODE_ID", id.to_owned()),
        ("AUTHCHAT__SERVER__WORKERS", "1".to_owned()),
        ("AUTHCHAT__SERVER__SHUTDOWN_TIMEOUT", "3s".to_owned()),
        ("AUTHCHAT__SERVER__STATIC_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/static").to_owned()),
        ("AUTHCHAT__AUTH__SECRET", SECRET.to_owned()),
        ("AUTHCHAT__STORE__BACKEND", "redis".to_owned()),
        ("AUTHCHAT__REDIS__URL", redis_url.to_owned()),
        ("AUTHCHAT__REDIS__KEY_PREFIX", prefix.to_owned()),
        ("AUTHCHAT__LOG__FILTER", "warn".to_owned()),
        // Tests open many sockets and send bursts from one address; the limits are not under test.
        ("AUTHCHAT__WS__HANDSHAKE_LIMIT__PER_SECOND", "1000".to_owned()),
        ("AUTHCHAT__WS__HANDSHAKE_LIMIT__BURST", "1000".to_owned()),
        ("AUTHCHAT__WS__RATE_LIMIT__PER_SECOND", "1000".to_owned()),
        ("AUTHCHAT__WS__RATE_LIMIT__BURST", "1000".to_owned()),
        ("AUTHCHAT__WS__RATE_LIMIT__USER_PER_SECOND", "1000".to_owned()),
        ("AUTHCHAT__WS__RATE_LIMIT__USER_BURST", "1000".to_owned()),
    ];
    if SET_CLUSTER_KEYS {
        env.extend([
            ("AUTHCHAT__CLUSTER__HEARTBEAT_INTERVAL", "500ms".to_owned()),
            ("AUTHCHAT__CLUSTER__NODE_TIMEOUT", "3s".to_owned()),
            ("AUTHCHAT__CLUSTER__REQUEST_TIMEOUT", "1s".to_owned()),
            ("AUTHCHAT__CLUSTER__PROBE_INTERVAL", "500ms".to_owned()),
        ]);
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A port nobody listens on now (bound and released; a node binds it moments later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `authchat serve` process; killed when dropped.
pub struct Node {
    /// `n1`, `n2` or `n3`: its `server.node_id`.
    pub id: String,
    /// Kept across restarts, so clients reconnect to the same address.
    pub port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// stdout and stderr of every start of this node, appended.
    log: PathBuf,
    http: reqwest::Client,
}

impl Node {
    fn new(id: String, port: u16, env: Vec<(String, String)>, log: PathBuf) -> Self {
        let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
        Self { id, port, env, child: None, log, http }
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(BIN);
        // Only the variables above configure a node: none of the test runner's AUTHCHAT_* or
        // RUST_LOG (which would override log.filter) leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AUTHCHAT") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .env_remove("RUST_LOG")
            .arg("serve")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        self.child = Some(child);
    }

    /// Polls `/readyz` until 200; fails with the node's log if it exits or takes too long.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                panic!("{}", self.exit_report(status));
            }
            if self.readyz().await == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} was not ready within {START_WAIT:?}; its log:\n{}",
                self.id,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn exit_report(&self, status: ExitStatus) -> String {
        let log = self.log_tail();
        let mut report = format!("node {} exited before it was ready ({status}); its log:\n{log}", self.id);
        if SET_CLUSTER_KEYS && log.contains("unknown field") {
            report.push_str(
                "\n=> the configuration refused a key. If it is `cluster` or one of its keys, this build has \
                 no cluster engine yet (issue 12), or names its keys differently than node_env in \
                 tests/cluster/harness.rs; SET_CLUSTER_KEYS = false there runs the tests without them.",
            );
        }
        report
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Starts it again on the same port, with the same environment.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.id);
        self.spawn();
        self.wait_ready().await;
    }

    /// A graceful stop (SIGTERM), waiting for the process to exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        signal(&child, "TERM");
        let deadline = Instant::now() + STOP_WAIT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not exit within {STOP_WAIT:?} of SIGTERM", self.id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A crash: SIGKILL, so the node says goodbye to nobody.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "KILL");
            let _ = child.wait();
        }
    }

    /// [`stop`](Self::stop), then [`start`](Self::start).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `/readyz`'s status, or 0 when the node does not answer.
    pub async fn readyz(&self) -> u16 {
        let res = self.http.get(self.url("/readyz")).timeout(Duration::from_secs(3)).send().await;
        res.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// Polls `/readyz` until it answers `status`; returns how long that took.
    pub async fn wait_readyz(&self, status: u16, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let now = self.readyz().await;
            if now == status {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{}'s /readyz still answers {now} after {within:?}, not {status}",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Any request with an optional Bearer token: status and JSON body.
    pub async fn request(&self, method: Method, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// An operator request (admin token).
    pub async fn admin(&self, method: Method, path: &str) -> (u16, Value) {
        self.request(method, path, Some(&admin_token())).await
    }

    /// `POST` with the refresh cookie (`/api/token/…`): status, body, and the new cookie if set.
    pub async fn post_with_refresh(&self, path: &str, cookie: &str) -> (u16, Value, Option<String>) {
        let res =
            self.http.post(self.url(path)).header("Cookie", format!("authchat_refresh={cookie}")).send().await.unwrap();
        let cookie = refresh_cookie(&res);
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null), cookie)
    }

    /// `POST /api/login` with a dev user's password: the access token and the refresh cookie.
    pub async fn login(&self, user: &str) -> (String, String) {
        let body = json!({"username": user, "password": format!("{user}-password")});
        let res = self.http.post(self.url("/api/login")).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 200, "login of {user} on {}", self.id);
        let cookie = refresh_cookie(&res).expect("login sets the refresh cookie");
        let body: Value = res.json().await.unwrap();
        (body["access_token"].as_str().unwrap().to_owned(), cookie)
    }

    /// Opens a socket with `token` and reads its welcome.
    pub async fn connect_with(&self, user: &str, token: &str) -> Member {
        let url = format!("ws://127.0.0.1:{}/ws?token={token}", self.port);
        let (mut ws, _) = connect(&url, &[]).await.unwrap_or_else(|r| panic!("upgrade on {} refused: {r:?}", self.id));
        let welcome = ws.next_of("welcome").await;
        Member::new(format!("{user} on {}", self.id), ws, welcome)
    }

    /// Opens a socket as `user` (a fresh token) and reads its welcome.
    pub async fn member(&self, user: &str) -> Member {
        self.connect_with(user, &sign(user, 300, &[])).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {}", child.id());
}

fn refresh_cookie(res: &reqwest::Response) -> Option<String> {
    let set_cookie = res.headers().get("set-cookie")?.to_str().ok()?;
    let value = set_cookie.strip_prefix("authchat_refresh=")?.split(';').next()?;
    (!value.is_empty()).then(|| value.to_owned())
}

/// A socket in the chat that keeps every frame it was sent, whichever wait read it, so a test
/// can ask for a message or presence event that came while it waited for something else, and
/// check the whole sequence at the end.
pub struct Member {
    /// "alice on n1", for failure messages.
    pub who: String,
    pub ws: WsClient,
    pub welcome: Value,
    /// Every JSON frame after `welcome`, in arrival order.
    pub frames: Vec<Value>,
    /// `ref` → `id` of every `ack`.
    pub acks: HashMap<String, u64>,
}

impl Member {
    fn new(who: String, ws: WsClient, welcome: Value) -> Self {
        Self { who, ws, welcome, frames: Vec::new(), acks: HashMap::new() }
    }

    /// The next frame before `deadline`, recorded; `None` at the deadline. A close fails the
    /// test: no test here expects one without saying so.
    async fn next_frame(&mut self, deadline: Instant, what: &str) -> Option<Value> {
        let left = deadline.checked_duration_since(Instant::now())?;
        match self.ws.recv_within(left).await? {
            Event::Json(frame) => {
                if let ("ack", Some(r), Some(id)) =
                    (frame["type"].as_str().unwrap_or(""), frame["ref"].as_str(), frame["id"].as_u64())
                {
                    self.acks.insert(r.to_owned(), id);
                }
                self.frames.push(frame.clone());
                Some(frame)
            }
            other => panic!("{}: the socket ended ({other:?}) while waiting for {what}", self.who),
        }
    }

    /// Reads until `pick` accepts a new frame. An `error` frame `pick` does not accept fails
    /// the test, and so does waiting longer than `within`.
    pub async fn wait_for<T>(&mut self, within: Duration, what: &str, mut pick: impl FnMut(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        let mut skipped = Vec::new();
        loop {
            let Some(frame) = self.next_frame(deadline, what).await else {
                panic!("{} never received {what} (waited {within:?}); other frames: {skipped:?}", self.who);
            };
            if let Some(found) = pick(&frame) {
                return found;
            }
            assert_ne!(frame["type"], "error", "{}: an error while waiting for {what}: {frame}", self.who);
            if skipped.len() < 20 {
                skipped.push(frame);
            }
        }
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.ws.send(json!({"type": "join", "room": room})).await;
        self.joined(room).await
    }

    /// Joins with `since`, and the `epoch` of an earlier `joined` when it had one.
    pub async fn join_since(&mut self, room: &str, since: u64, epoch: &Value) -> Value {
        let mut join = json!({"type": "join", "room": room, "since": since});
        if !epoch.is_null() {
            join["epoch"] = epoch.clone();
        }
        self.ws.send(join).await;
        self.joined(room).await
    }

    async fn joined(&mut self, room: &str) -> Value {
        let what = format!("joined for {room}");
        self.wait_for(WAIT, &what, |f| (f["type"] == "joined" && f["room"] == room).then(|| f.clone())).await
    }

    /// Forgets what was received so far: only what arrives from now on counts.
    pub fn forget(&mut self) {
        self.frames.clear();
        self.acks.clear();
    }

    /// Sends `text` with `ref` = `text`, without waiting.
    pub async fn send(&mut self, room: &str, text: &str) {
        self.ws.send(json!({"type": "send", "room": room, "text": text, "ref": text})).await;
    }

    /// Sends `text` and waits for its ack; returns the id.
    pub async fn send_acked(&mut self, room: &str, text: &str) -> u64 {
        self.send(room, text).await;
        self.ack_of(text).await
    }

    /// The id the ack of `text` (sent by [`send`](Self::send)) gave, waiting for it if it has
    /// not come yet.
    pub async fn ack_of(&mut self, text: &str) -> u64 {
        if let Some(id) = self.acks.get(text) {
            return *id;
        }
        let what = format!("the ack of {text:?}");
        self.wait_for(WAIT, &what, |f| (f["type"] == "ack" && f["ref"] == text).then(|| f["id"].as_u64().unwrap()))
            .await
    }

    /// The message with this text in `room`: one already received (while waiting for something
    /// else), or the next one to arrive within `within`.
    pub async fn expect_message(&mut self, room: &str, text: &str, within: Duration) -> Value {
        let is_it = |f: &Value| f["type"] == "message" && f["room"] == room && f["text"] == text;
        if let Some(message) = self.frames.iter().find(|f| is_it(f)) {
            return message.clone();
        }
        let what = format!("the message {text:?} in {room}");
        self.wait_for(within, &what, |f| is_it(f).then(|| f.clone())).await
    }

    /// `user`'s presence `event` in `room`: already received, or within `within`.
    pub async fn expect_presence(&mut self, room: &str, user: &str, event: &str, within: Duration) {
        let is_it =
            |f: &Value| f["type"] == "presence" && f["room"] == room && f["user"] == user && f["event"] == event;
        if self.frames.iter().any(is_it) {
            return;
        }
        let what = format!("presence {event} of {user} in {room}");
        self.wait_for(within, &what, |f| is_it(f).then_some(())).await
    }

    /// Reads messages until `count` of `room` have arrived in all, or `within` passes (then the
    /// caller's assertions on [`ids`](Self::ids) say what was missing).
    pub async fn collect(&mut self, room: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.ids(room).len() < count {
            let Some(frame) = self.next_frame(deadline, "messages").await else { return };
            assert_ne!(frame["type"], "error", "{}: an error while collecting messages: {frame}", self.who);
        }
    }

    fn messages<'a>(&'a self, room: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.frames.iter().filter(move |f| f["type"] == "message" && f["room"] == room)
    }

    /// The ids of the messages received in `room`, in arrival order.
    pub fn ids(&self, room: &str) -> Vec<u64> {
        self.messages(room).map(|m| m["id"].as_u64().expect("a numeric id")).collect()
    }

    /// (id, from, text) of the messages received in `room`, in arrival order.
    pub fn received(&self, room: &str) -> Vec<(u64, String, String)> {
        self.messages(room)
            .map(|m| {
                (
                    m["id"].as_u64().unwrap(),
                    m["from"].as_str().unwrap().to_owned(),
                    m["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Waits for the close frame; fails if it does not come within `within`.
    pub async fn expect_close(&mut self, within: Duration) -> (u16, String) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_default();
            match self.ws.recv_within(left).await {
                Some(Event::Json(_)) => continue,
                Some(Event::Close(code, reason)) => return (code, reason),
                Some(Event::Ended) => panic!("{}: the connection ended without a close frame", self.who),
                None => panic!("{}: the socket was not closed within {within:?}", self.who),
            }
        }
    }
}

/// The ids in a `joined` or `history` list of messages.
pub fn ids_of(messages: &Value) -> Vec<u64> {
    messages.as_array().expect("a list of messages").iter().map(|m| m["id"].as_u64().expect("a numeric id")).collect()
}

/// The texts in a `joined` or `history` list of messages.
pub fn texts_of(messages: &Value) -> Vec<String> {
    messages.as_array().expect("a list of messages").iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect()
}

/// A `joined`'s members, sorted.
pub fn members_of(joined: &Value) -> Vec<String> {
    let mut members: Vec<String> =
        joined["members"].as_array().expect("members").iter().map(|m| m.as_str().unwrap().to_owned()).collect();
    members.sort();
    members
}
