//! Fan-out: how fast one room's messages reach every member, on one node or spread over
//! several nodes that share a Redis engine (issue 12).
//!
//! The load generator opens `--members` WebSockets (`/ws?token=`, one user per socket, so the
//! per-user cap never bites), dealt round-robin over the nodes, and has each join `--room`.
//! When every member has its `joined` and the presence announcements have died down, the first
//! `--senders` members send `--messages` messages between them, each text carrying its send
//! time. Every member records, per message, the time from send to receipt. It prints:
//!
//! - deliveries (messages × members) received, missing, duplicated, and sends the server refused;
//! - throughput: deliveries / (last receipt − first send);
//! - latency from send to receipt (p50, p99, max), overall, per receiving node and, with several
//!   nodes, from each sending node to each receiving node.
//!
//! It exits 0 when every accepted message reached every member exactly once and none was
//! refused, 1 otherwise, 2 when the run could not be set up.
//!
//! ```sh
//! cargo build --release && cargo build --release --example fanout_bench
//! # start its own redis-server and nodes (target/release/authchat), 1 node then 3 nodes:
//! target/release/examples/fanout_bench --spawn 1,3 --backend redis
//! target/release/examples/fanout_bench --spawn 1 --backend memory,redis
//! # or nodes already running (loopback only), e.g. scripts/cluster.sh's:
//! target/release/examples/fanout_bench --secret-file /tmp/authchat-cluster.XXXX/secret \
//!     --nodes ws://127.0.0.1:P1,ws://127.0.0.1:P2,ws://127.0.0.1:P3
//! ```
//!
//! Tokens are HS256 with `kid` "hs1" and the claims `authchat` mints (`sub`, `exp`, `iat`,
//! `jti`, `iss`/`aud` "authchat"), signed with `--secret` (the nodes' `auth.secret`). Nodes it
//! does not start must allow the load: the per-address handshake limit
//! (`AUTHCHAT__WS__HANDSHAKE_LIMIT__PER_SECOND`, `__BURST`, 20/s and 60 by default) counts
//! every member, all from 127.0.0.1; and each sender's messages must fit the per-socket rate
//! limit (20/s, bursts of 40), or be paced with `--rate`. With `--spawn` the nodes get
//! `server.workers` from `--workers`, log filter "warn", and both limits raised far out of the
//! way; Redis runs with AOF on, as in scripts/cluster.sh.
//!
//! Without a shared engine (`--backend memory`, or a build from before issue 12's Redis engine)
//! a room lives on one node: with several nodes, members receive only the messages sent on
//! their own node, and the run reports the rest as missing.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Token lifetime: far beyond a run, and beyond `ws.warn_before` (60 s), so no `expiring` frame.
const TOKEN_TTL_SECS: u64 = 900;
/// Quiet time after the last join before sending: presence announcements must be over, or
/// their fan-out (members² frames) would be measured with the messages.
const SETTLE_QUIET: Duration = Duration::from_millis(500);
/// Descriptors this process needs besides the sockets.
const FD_SLACK: u64 = 128;
/// Limits raised on nodes this program starts, far above any run: handshakes per address (all
/// members come from 127.0.0.1) and messages per socket and per user (senders send back to back).
const RAISED_LIMITS: &[&str] = &[
    "AUTHCHAT__WS__HANDSHAKE_LIMIT__PER_SECOND",
    "AUTHCHAT__WS__HANDSHAKE_LIMIT__BURST",
    "AUTHCHAT__WS__RATE_LIMIT__PER_SECOND",
    "AUTHCHAT__WS__RATE_LIMIT__BURST",
    "AUTHCHAT__WS__RATE_LIMIT__USER_PER_SECOND",
    "AUTHCHAT__WS__RATE_LIMIT__USER_BURST",
];

#[derive(Parser, Debug)]
#[command(about = "Measures authchat's fan-out of one room's messages to every member, on one or several nodes")]
struct Args {
    /// Nodes to measure, comma-separated ws:// or http:// base URLs (loopback only).
    #[arg(long, value_delimiter = ',', required_unless_present = "spawn", conflicts_with = "spawn")]
    nodes: Vec<String>,
    /// Start a redis-server and this many nodes (target/release/authchat) per run; a list runs
    /// each in turn and compares them, e.g. 1,3.
    #[arg(long, value_delimiter = ',')]
    spawn: Vec<usize>,
    /// With --spawn: the nodes' store.backend; a list runs each.
    #[arg(long, value_delimiter = ',', default_value = "redis")]
    backend: Vec<Backend>,
    /// WebSocket connections (members of the room), one user each.
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Messages sent in all.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Members that send (the first N; dealt over the nodes like every member).
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages per second per sender; 0 = back to back.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value = "bench")]
    room: String,
    /// HS256 secret: the nodes' auth.secret (with --spawn, default: a random one per run).
    #[arg(long, env = "AUTHCHAT__AUTH__SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// A file holding the secret (scripts/cluster.sh writes one).
    #[arg(long, conflicts_with = "secret")]
    secret_file: Option<PathBuf>,
    /// `kid` header of the tokens (the nodes' auth.secret_kid).
    #[arg(long, default_value = "hs1")]
    kid: String,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Seconds opening and joining may take in all.
    #[arg(long, default_value_t = 60)]
    join_timeout: u64,
    /// Seconds to wait for the last deliveries after the last send was answered.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Client threads, each running a single-threaded tokio runtime with its share of members.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// With --spawn: server.workers per node (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// With --spawn: the authchat binary.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Instead of the fan-out: operator closes. Opens this many sockets on the nodes other than
    /// the first (on the one node, when there is one), then one by one asks the first node
    /// to close each (`DELETE /admin/connections/{id}`) and times it from the request to the
    /// close frame's arrival.
    #[arg(long, default_value_t = 0)]
    ops: usize,
    /// With --spawn: the redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Memory,
    Redis,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run_all(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fanout_bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Every run asked for, then a comparison when there was more than one.
fn run_all(args: &Args) -> anyhow::Result<ExitCode> {
    if args.members == 0 || args.senders == 0 || args.senders > args.members || args.client_threads == 0 {
        bail!("need --members >= --senders >= 1 and --client-threads >= 1");
    }
    if args.concurrency == 0 || args.messages == 0 {
        bail!("need --concurrency >= 1 and --messages >= 1");
    }
    ensure_open_files(args.members as u64 + FD_SLACK)?;
    let secret = match (&args.secret, &args.secret_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?.trim().to_owned(),
        ),
        (None, None) => None,
    };
    if secret.as_ref().is_some_and(|s| s.len() < 32) {
        bail!("the secret must be at least 32 bytes, as the nodes' auth.secret is");
    }

    if args.spawn.is_empty() {
        let secret =
            secret.ok_or_else(|| anyhow!("--nodes needs --secret, --secret-file or AUTHCHAT__AUTH__SECRET"))?;
        let urls = args.nodes.iter().map(|u| ws_base(u)).collect::<anyhow::Result<Vec<_>>>()?;
        if args.ops > 0 {
            ops_run(args, &urls, &secret)?;
            return Ok(ExitCode::SUCCESS);
        }
        let summary = run(args, &urls, &secret, "given nodes")?;
        return Ok(summary.exit_code());
    }

    let mut summaries = Vec::new();
    for backend in &args.backend {
        for &n in &args.spawn {
            if n == 0 {
                bail!("--spawn needs node counts of at least 1");
            }
            let secret = secret.clone().unwrap_or_else(random_secret);
            let label = format!("{n} node{}, {}", if n == 1 { "" } else { "s" }, backend.name());
            println!("=== {label} ===");
            let cluster = Cluster::start(args, n, *backend, &secret)?;
            if args.ops > 0 {
                let outcome = ops_run(args, &cluster.urls, &secret);
                cluster.stop();
                outcome?;
                continue;
            }
            let outcome = run(args, &cluster.urls, &secret, &label);
            cluster.stop();
            summaries.push(outcome?);
            println!();
        }
    }
    if summaries.len() > 1 {
        println!("=== comparison ({} members, {} messages, {} senders) ===", args.members, args.messages, args.senders);
        println!(
            "{:<20} {:>13} {:>9} {:>9} {:>9} {:>9} {:>6}",
            "run", "deliveries/s", "p50 ms", "p99 ms", "max ms", "missing", "dups"
        );
        for s in &summaries {
            println!(
                "{:<20} {:>13.0} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>6}",
                s.label, s.per_second, s.p50_ms, s.p99_ms, s.max_ms, s.missing, s.duplicates
            );
        }
    }
    let failed = summaries.iter().any(|s| s.exit_code() != ExitCode::SUCCESS);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

// ---------------------------------------------------------------------------------------------
// Nodes this program starts
// ---------------------------------------------------------------------------------------------

/// A redis-server (with the Redis backend) and N nodes, in a temporary directory.
struct Cluster {
    urls: Vec<String>,
    /// Nodes first, Redis last: stopped in that order.
    children: Vec<(String, Child)>,
    dir: PathBuf,
}

impl Cluster {
    fn start(args: &Args, n: usize, backend: Backend, secret: &str) -> anyhow::Result<Self> {
        let bin = match &args.bin {
            Some(bin) => bin.clone(),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/authchat"),
        };
        if !bin.is_file() {
            bail!("{} does not exist: run cargo build --release (or give --bin)", bin.display());
        }
        let dir = std::env::temp_dir().join(format!("fanout-bench-{}-{}", std::process::id(), now_ms()));
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Cluster { urls: Vec::new(), children: Vec::new(), dir };
        let started = cluster.start_processes(args, &bin, n, backend, secret);
        if let Err(e) = started {
            cluster.stop();
            return Err(e);
        }
        Ok(cluster)
    }

    fn start_processes(
        &mut self,
        args: &Args,
        bin: &Path,
        n: usize,
        backend: Backend,
        secret: &str,
    ) -> anyhow::Result<()> {
        let redis_url = match backend {
            Backend::Memory => None,
            Backend::Redis => {
                let port = free_port()?;
                let data = self.dir.join("redis");
                std::fs::create_dir_all(&data)?;
                let child = Command::new(&args.redis_server)
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "yes"])
                    .arg("--dir")
                    .arg(&data)
                    .stdin(Stdio::null())
                    .stdout(self.log("redis")?)
                    .stderr(Stdio::inherit())
                    .spawn()
                    .with_context(|| format!("cannot start {}", args.redis_server.display()))?;
                self.children.push(("redis".into(), child));
                wait_until(Duration::from_secs(10), || redis_ping(port))
                    .with_context(|| format!("redis-server did not answer on port {port}"))?;
                Some(format!("redis://127.0.0.1:{port}"))
            }
        };
        for i in 1..=n {
            let port = free_port()?;
            let name = format!("n{i}");
            let mut command = Command::new(bin);
            command
                .arg("serve")
                .env_remove("AUTHCHAT_ENV")
                .env_remove("AUTHCHAT_CONFIG")
                .env("AUTHCHAT__SERVER__HOST", "127.0.0.1")
                .env("AUTHCHAT__SERVER__PORT", port.to_string())
                .env("AUTHCHAT__SERVER__NODE_ID", &name)
                .env("AUTHCHAT__SERVER__WORKERS", args.workers.to_string())
                .env("AUTHCHAT__SERVER__SHUTDOWN_TIMEOUT", "2s")
                .env("AUTHCHAT__AUTH__SECRET", secret)
                .env("AUTHCHAT__STORE__BACKEND", backend.name())
                .env("AUTHCHAT__LOG__FILTER", "warn")
                .env("RUST_LOG", "warn");
            for key in RAISED_LIMITS {
                command.env(key, "1000000");
            }
            if let Some(url) = &redis_url {
                command.env("AUTHCHAT__REDIS__URL", url);
            }
            let child = command
                .stdin(Stdio::null())
                .stdout(self.log(&name)?)
                .stderr(self.log(&name)?)
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            // Nodes go before Redis, so they stop first.
            self.children.insert(0, (name.clone(), child));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_until(Duration::from_secs(30), || http_status(addr, "/readyz") == Some(200)).with_context(|| {
                format!(
                    "node {name} did not become ready on {addr}; its log: {}",
                    self.dir.join(format!("{name}.log")).display()
                )
            })?;
            self.urls.push(format!("ws://{addr}"));
        }
        println!(
            "started {n} node{} ({}){}",
            if n == 1 { "" } else { "s" },
            self.urls.join(", "),
            redis_url.map(|u| format!(" on {u}")).unwrap_or_default()
        );
        Ok(())
    }

    /// A log file in the run's directory, appended to.
    fn log(&self, name: &str) -> anyhow::Result<Stdio> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{name}.log")))?;
        Ok(file.into())
    }

    /// SIGTERM to each child (a graceful stop), SIGKILL after 5 s; the directory is removed.
    fn stop(mut self) {
        for (name, child) in &mut self.children {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let give_up = Instant::now() + Duration::from_secs(5);
            while Instant::now() < give_up && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("fanout_bench: {name} did not stop within 5 s; killing it");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let give_up = Instant::now() + limit;
    while Instant::now() < give_up {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("not within {limit:?}")
}

/// PING over RESP by hand (no client library needed for one command).
fn redis_ping(port: u16) -> bool {
    use std::io::Read as _;
    let Ok(mut stream) = StdTcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// The status of `GET path` over HTTP/1.0, or none when there is no answer.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::Read as _;
    let mut stream = StdTcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn random_secret() -> String {
    use rand::Rng as _;
    let bytes: [u8; 32] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `ws://host:port` from a ws:// or http:// base URL, which must be a loopback address.
fn ws_base(url: &str) -> anyhow::Result<String> {
    let rest = ["ws://", "http://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| anyhow!("a node URL must start with ws:// or http:// (TLS is not supported here): {url}"))?;
    let host_port = rest.split('/').next().unwrap_or_default();
    let addr = host_port
        .to_socket_addrs()
        .with_context(|| format!("a node URL needs host:port, got {host_port:?}"))?
        .next()
        .ok_or_else(|| anyhow!("{host_port} does not resolve"))?;
    if !addr.ip().is_loopback() {
        bail!("node URLs must be loopback addresses (127.0.0.0/8 or [::1]); {addr} is not");
    }
    Ok(format!("ws://{host_port}"))
}

/// Fails unless this process may open `needed` files (1000 sockets fit the usual limits).
fn ensure_open_files(needed: u64) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l["Max open files".len()..].split_whitespace().next().map(str::to_owned));
    match soft.as_deref() {
        Some("unlimited") | None => Ok(()),
        Some(v) => match v.parse::<u64>() {
            Ok(soft) if soft < needed => {
                bail!("needs about {needed} open files and the soft limit is {soft}: raise it (ulimit -n) or use fewer --members")
            }
            _ => Ok(()),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------------------------

/// Microseconds since this process's first call: the one clock for send and receipt times.
fn clock_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Where a run is; every member task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Opening and joining.
    Joining,
    /// Senders send.
    Sending,
    /// Everyone stops receiving and closes.
    Stopping,
}

/// What every member task shares.
struct Plan {
    urls: Vec<String>,
    room: String,
    key: EncodingKey,
    kid: String,
    /// Tells this run's messages apart from older ones in the room's history.
    run_id: String,
    members: usize,
    messages: usize,
    senders: usize,
    /// Pause between one sender's messages (`--rate`).
    pace: Option<Duration>,
    handshakes: Semaphore,
    opened: AtomicUsize,
    /// Members that got `joined`.
    joined: AtomicUsize,
    /// Members that gave up (failed handshake, join refused, connection lost).
    failed: AtomicUsize,
    /// Every frame received, and when the last one came (`clock_us`), to see traffic settle.
    frames: AtomicUsize,
    last_frame_us: AtomicU64,
    /// Sends answered with `ack`, or refused with `error`.
    acked: AtomicUsize,
    refused: AtomicUsize,
    /// Members that received every message.
    complete: AtomicUsize,
}

impl Plan {
    fn url_of(&self, member: usize) -> usize {
        member % self.urls.len()
    }

    fn token(&self, member: usize) -> anyhow::Result<String> {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        let iat = now_ms() / 1000;
        let claims = json!({
            "sub": format!("fanout-{}-{member:05}", self.run_id),
            "exp": iat + TOKEN_TTL_SECS,
            "iat": iat,
            "iss": "authchat",
            "aud": "authchat",
            "jti": format!("fanout-{}-{member}", self.run_id),
        });
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }

    /// The text of message `g`: run id, message number, send time.
    fn text(&self, g: usize, sent_us: u64) -> String {
        format!("fanout {} {g} {sent_us}", self.run_id)
    }

    /// Message number and send time of a text of this run.
    fn parse_text(&self, text: &str) -> Option<(usize, u64)> {
        let mut words = text.split(' ');
        if words.next()? != "fanout" || words.next()? != self.run_id {
            return None;
        }
        let g = words.next()?.parse().ok().filter(|g| *g < self.messages)?;
        Some((g, words.next()?.parse().ok()?))
    }
}

/// The fields of a server frame this program reads.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    node: Option<Cow<'a, str>>,
    /// On an `error`: the request it refuses.
    #[serde(borrow, default)]
    request: Option<Cow<'a, str>>,
}

/// What one member saw.
#[derive(Default)]
struct MemberResult {
    /// The member's number (0..members; senders first).
    index: usize,
    /// Which of the URLs it connected to.
    url: usize,
    /// The node that served it, from `welcome` (behind a proxy, the URL does not say).
    node: Option<String>,
    /// Why it gave up, if it did.
    error: Option<String>,
    /// (sender, latency µs) per first receipt of a message of this run; the sender is the
    /// sending member's index (message number modulo `--senders`).
    latencies: Vec<(u32, u32)>,
    duplicates: usize,
    last_receipt_us: u64,
    /// Sender only: first send time, and refusal codes.
    first_send_us: Option<u64>,
    refusals: BTreeMap<String, usize>,
}

fn describe(error: WsError) -> String {
    match error {
        WsError::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            let code = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let hint = if response.status().as_u16() == 429 {
                " (raise the nodes' ws.handshake_limit: AUTHCHAT__WS__HANDSHAKE_LIMIT__PER_SECOND, __BURST)"
            } else {
                ""
            };
            format!("HTTP {} {code}{hint}", response.status().as_u16())
        }
        other => other.to_string(),
    }
}

/// One member: open, join, wait for [`Phase::Sending`] and send its share (senders only), and
/// receive until [`Phase::Stopping`].
async fn member(plan: Arc<Plan>, i: usize, phase: watch::Receiver<Phase>) -> MemberResult {
    let mut result = MemberResult { index: i, url: plan.url_of(i), ..MemberResult::default() };
    let permit = plan.handshakes.acquire().await.expect("the semaphore is never closed");
    let opened = async {
        let token = plan.token(i).map_err(|e| e.to_string())?;
        let url = format!("{}/ws?token={token}", plan.urls[result.url]);
        let config = WebSocketConfig::default().read_buffer_size(8192);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.map_err(describe)?;
        Ok::<_, String>(ws)
    }
    .await;
    drop(permit);
    let ws = match opened {
        Ok(ws) => ws,
        Err(why) => {
            plan.failed.fetch_add(1, Ordering::Relaxed);
            result.error = Some(why);
            return result;
        }
    };
    plan.opened.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let join = json!({"type": "join", "room": plan.room}).to_string();
    if let Err(e) = sink.send(Message::text(join)).await {
        plan.failed.fetch_add(1, Ordering::Relaxed);
        result.error = Some(format!("join not sent: {e}"));
        return result;
    }

    // This member's messages, sent once `go` is set (the writer half), while the reader half
    // below keeps receiving.
    let mine: Vec<usize> = if i < plan.senders { (i..plan.messages).step_by(plan.senders).collect() } else { vec![] };
    let writer = {
        let plan = plan.clone();
        let mut phase = phase.clone();
        async move {
            let go = phase.wait_for(|p| *p >= Phase::Sending).await.map(|p| *p == Phase::Sending);
            if mine.is_empty() || !matches!(go, Ok(true)) {
                return (sink, None);
            }
            let mut first = None;
            for (n, g) in mine.into_iter().enumerate() {
                if let (Some(pace), true) = (plan.pace, n > 0) {
                    tokio::time::sleep(pace).await;
                }
                let sent_us = clock_us();
                first.get_or_insert(sent_us);
                let frame = json!({"type": "send", "room": plan.room, "text": plan.text(g, sent_us), "ref": g});
                if sink.send(Message::text(frame.to_string())).await.is_err() {
                    break;
                }
            }
            (sink, first)
        }
    };

    let mut phase = phase;
    let reader = async {
        let mut seen = vec![false; plan.messages];
        let mut distinct = 0;
        let mut joined = false;
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = phase.wait_for(|p| *p == Phase::Stopping) => break,
            };
            let at_us = clock_us();
            plan.frames.fetch_add(1, Ordering::Relaxed);
            plan.last_frame_us.fetch_max(at_us, Ordering::Relaxed);
            let text = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map_or("no code".to_owned(), |f| format!("{} {}", u16::from(f.code), f.reason));
                    result.error = Some(format!("closed by the server: {why}"));
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    result.error = Some(e.to_string());
                    break;
                }
                None => {
                    result.error = Some("the connection ended".into());
                    break;
                }
            };
            let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else { continue };
            match &*frame.kind {
                "message" => {
                    let Some((g, sent_us)) = frame.text.as_deref().and_then(|t| plan.parse_text(t)) else { continue };
                    if std::mem::replace(&mut seen[g], true) {
                        result.duplicates += 1;
                        continue;
                    }
                    distinct += 1;
                    result.latencies.push(((g % plan.senders) as u32, at_us.saturating_sub(sent_us) as u32));
                    result.last_receipt_us = at_us;
                    if distinct == plan.messages {
                        plan.complete.fetch_add(1, Ordering::Relaxed);
                    }
                }
                "welcome" => result.node = frame.node.map(Cow::into_owned),
                "joined" if !joined => {
                    joined = true;
                    plan.joined.fetch_add(1, Ordering::Relaxed);
                }
                "ack" => {
                    plan.acked.fetch_add(1, Ordering::Relaxed);
                }
                "error" => {
                    let code = frame.code.as_deref().unwrap_or("?").to_owned();
                    if frame.request.as_deref() == Some("join") {
                        // The join itself was refused: this member can never receive anything.
                        result.error = Some(format!("join refused: {code}"));
                        break;
                    }
                    plan.refused.fetch_add(1, Ordering::Relaxed);
                    *result.refusals.entry(code).or_default() += 1;
                }
                _ => {} // presence, expiring
            }
        }
    };

    let ((mut sink, first_send), _) = tokio::join!(writer, reader);
    result.first_send_us = first_send;
    if result.error.is_some() {
        plan.failed.fetch_add(1, Ordering::Relaxed);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    result
}

/// Runs members `thread, thread + threads, …` on a single-threaded runtime.
fn client_thread(
    plan: Arc<Plan>,
    phase: watch::Receiver<Phase>,
    thread: usize,
    threads: usize,
) -> JoinHandle<Vec<MemberResult>> {
    std::thread::Builder::new()
        .name(format!("client-{thread}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
            runtime.block_on(async {
                let tasks: Vec<_> = (thread..plan.members)
                    .step_by(threads)
                    .map(|i| (i, tokio::spawn(member(plan.clone(), i, phase.clone()))))
                    .collect();
                let mut results = Vec::with_capacity(tasks.len());
                for (index, task) in tasks {
                    results.push(task.await.unwrap_or_else(|e| MemberResult {
                        index,
                        error: Some(format!("task failed: {e}")),
                        ..MemberResult::default()
                    }));
                }
                results
            })
        })
        .expect("a client thread")
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

/// The figures of one run, for the comparison.
struct Summary {
    label: String,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    missing: usize,
    duplicates: usize,
    refused: usize,
    failed: usize,
}

impl Summary {
    fn exit_code(&self) -> ExitCode {
        if self.missing == 0 && self.duplicates == 0 && self.refused == 0 && self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args, urls: &[String], secret: &str, label: &str) -> anyhow::Result<Summary> {
    let nodes = urls.len();
    let run_id = format!("{:x}", now_ms() % 0xffff_ffff);
    let plan = Arc::new(Plan {
        urls: urls.to_vec(),
        room: args.room.clone(),
        key: EncodingKey::from_secret(secret.as_bytes())?,
        kid: args.kid.clone(),
        run_id,
        members: args.members,
        messages: args.messages,
        senders: args.senders,
        pace: (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate)),
        handshakes: Semaphore::new(args.concurrency),
        opened: AtomicUsize::new(0),
        joined: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        frames: AtomicUsize::new(0),
        last_frame_us: AtomicU64::new(0),
        acked: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
    });
    let per_url: Vec<usize> = (0..nodes).map(|n| (0..args.members).filter(|i| i % nodes == n).count()).collect();
    println!(
        "{} members over {nodes} URL{} ({}), room {:?}; {} messages from {} senders{}",
        args.members,
        if nodes == 1 { "" } else { "s" },
        per_url.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("/"),
        args.room,
        args.messages,
        args.senders,
        plan.pace.map(|_| format!(" at {}/s each", args.rate)).unwrap_or_default()
    );

    let (phase, phase_rx) = watch::channel(Phase::Joining);
    let started = Instant::now();
    let threads: Vec<_> = (0..args.client_threads)
        .map(|t| client_thread(plan.clone(), phase_rx.clone(), t, args.client_threads))
        .collect();

    // 1. Everyone opened and joined (or gave up).
    let join_deadline = started + Duration::from_secs(args.join_timeout);
    let settled = || plan.joined.load(Ordering::Relaxed) + plan.failed.load(Ordering::Relaxed);
    while settled() < args.members && Instant::now() < join_deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let joined_in = started.elapsed();
    // 2. Presence traffic settled: no frame for SETTLE_QUIET.
    while clock_us().saturating_sub(plan.last_frame_us.load(Ordering::Relaxed)) < SETTLE_QUIET.as_micros() as u64
        && Instant::now() < join_deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let failed_before = plan.failed.load(Ordering::Relaxed);
    println!(
        "opened {} and joined {} sockets in {:.2} s ({} gave up); traffic settled after {:.2} s ({} frames)",
        plan.opened.load(Ordering::Relaxed),
        plan.joined.load(Ordering::Relaxed),
        joined_in.as_secs_f64(),
        failed_before,
        started.elapsed().as_secs_f64(),
        plan.frames.load(Ordering::Relaxed)
    );

    // 3. Send, then wait until every member has every message, or `--timeout` after the last
    // send was answered.
    let go_at = clock_us();
    if failed_before == 0 && plan.joined.load(Ordering::Relaxed) == args.members {
        let _ = phase.send(Phase::Sending);
        let mut answered_at: Option<Instant> = None;
        loop {
            let answered = plan.acked.load(Ordering::Relaxed) + plan.refused.load(Ordering::Relaxed);
            if answered >= args.messages && answered_at.is_none() {
                answered_at = Some(Instant::now());
            }
            let complete = plan.complete.load(Ordering::Relaxed) + plan.failed.load(Ordering::Relaxed);
            let waited_out = answered_at.is_some_and(|at| at.elapsed() > Duration::from_secs(args.timeout));
            if complete >= args.members && answered_at.is_some() || waited_out {
                break;
            }
            if answered_at.is_none() && clock_us() - go_at > (args.timeout + 60) * 1_000_000 {
                eprintln!("fanout_bench: not every send was answered; giving up");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    } else {
        eprintln!("fanout_bench: not every member joined; nothing sent");
    }
    let _ = phase.send(Phase::Stopping);
    let mut results: Vec<MemberResult> = threads.into_iter().flat_map(|t| t.join().expect("a client thread")).collect();
    results.sort_by_key(|r| r.index);
    Ok(report(args, &plan, &results, label))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    f64::from(sorted[rank.min(sorted.len()) - 1]) / 1000.0
}

fn report(args: &Args, plan: &Plan, results: &[MemberResult], label: &str) -> Summary {
    let acked = plan.acked.load(Ordering::Relaxed);
    let refused = plan.refused.load(Ordering::Relaxed);
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for why in results.iter().filter_map(|r| r.error.as_deref()) {
        *errors.entry(why).or_default() += 1;
    }
    let mut refusals: BTreeMap<&str, usize> = BTreeMap::new();
    for (code, n) in results.iter().flat_map(|r| &r.refusals) {
        *refusals.entry(code).or_default() += n;
    }
    // Messages the server accepted reach every member; refused ones reach nobody.
    let accepted = args.messages.saturating_sub(refused);
    let expected = accepted * args.members;
    let received: usize = results.iter().map(|r| r.latencies.len()).sum();
    let duplicates: usize = results.iter().map(|r| r.duplicates).sum();
    let missing = expected.saturating_sub(received);
    let first_send = results.iter().filter_map(|r| r.first_send_us).min();
    let last_receipt = results.iter().map(|r| r.last_receipt_us).max().unwrap_or(0);
    let span_s = first_send.map_or(0.0, |f| last_receipt.saturating_sub(f) as f64 / 1e6);
    let per_second = if span_s > 0.0 { received as f64 / span_s } else { 0.0 };

    println!("sends: {} messages, {acked} acknowledged, {refused} refused", args.messages);
    for (code, n) in &refusals {
        println!("    {n} × {code}");
    }
    println!("deliveries: {received} of {expected} expected; missing {missing}; duplicates {duplicates}");
    if failed > 0 {
        println!("members that gave up: {failed}");
        for (why, n) in &errors {
            println!("    {n} × {why}");
        }
    }
    let mut all: Vec<u32> = results.iter().flat_map(|r| r.latencies.iter().map(|(_, l)| *l)).collect();
    all.sort_unstable();
    println!(
        "throughput: {received} deliveries in {span_s:.3} s (first send to last receipt) = {per_second:.0} deliveries/s"
    );
    println!(
        "latency, send to receipt (ms): p50 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        percentile(&all, 100.0)
    );

    // Per node, as each member's `welcome` named it; members that never got one are "?".
    let node_of = |r: &MemberResult| r.node.clone().unwrap_or_else(|| "?".to_owned());
    let names: Vec<String> =
        results.iter().map(node_of).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    println!("per receiving node (as `welcome` named it):");
    println!(
        "  {:<10} {:>7} {:>10} {:>9} {:>6} {:>8} {:>8} {:>8}",
        "node", "members", "deliveries", "missing", "dups", "p50 ms", "p99 ms", "max ms"
    );
    for name in &names {
        let mine: Vec<&MemberResult> = results.iter().filter(|r| node_of(r) == *name).collect();
        let mut lat: Vec<u32> = mine.iter().flat_map(|r| r.latencies.iter().map(|(_, l)| *l)).collect();
        lat.sort_unstable();
        let dups: usize = mine.iter().map(|r| r.duplicates).sum();
        let node_missing = (accepted * mine.len()).saturating_sub(lat.len());
        println!(
            "  {:<10} {:>7} {:>10} {:>9} {:>6} {:>8.1} {:>8.1} {:>8.1}",
            name,
            mine.len(),
            lat.len(),
            node_missing,
            dups,
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            percentile(&lat, 100.0)
        );
    }
    if names.len() > 1 {
        // Senders are members 0..senders, so results[j] is sender j (results are in member order).
        let sender_node: Vec<String> = results.iter().take(args.senders).map(node_of).collect();
        println!("p99 ms from sending node (rows) to receiving node (columns); - = nothing arrived:");
        println!("  {:<10}{}", "", names.iter().map(|n| format!(" {n:>8}")).collect::<String>());
        for from in &names {
            let mut line = format!("  {from:<10}");
            for to in &names {
                let mut lat: Vec<u32> = results
                    .iter()
                    .filter(|r| node_of(r) == *to)
                    .flat_map(|r| r.latencies.iter())
                    .filter(|(sender, _)| sender_node.get(*sender as usize) == Some(from))
                    .map(|(_, l)| *l)
                    .collect();
                lat.sort_unstable();
                if lat.is_empty() {
                    line.push_str(&format!(" {:>8}", "-"));
                } else {
                    line.push_str(&format!(" {:>8.1}", percentile(&lat, 99.0)));
                }
            }
            println!("{line}");
        }
    }
    let summary = Summary {
        label: label.to_owned(),
        per_second,
        p50_ms: percentile(&all, 50.0),
        p99_ms: percentile(&all, 99.0),
        max_ms: percentile(&all, 100.0),
        missing,
        duplicates,
        refused,
        failed,
    };
    println!(
        "{}",
        if summary.exit_code() == ExitCode::SUCCESS {
            format!("OK: every message reached all {} members exactly once", args.members)
        } else {
            "FAILED: see missing, duplicates, refusals and members that gave up above".to_owned()
        }
    );
    summary
}

// ---------------------------------------------------------------------------------------------
// Operator closes across nodes (--ops)
// ---------------------------------------------------------------------------------------------

/// Opens `--ops` sockets on the nodes after the first, then closes each through the first
/// node, one at a time, and prints the time from the request to the close frame (and to the
/// HTTP answer), p50/p99/max. Fails if a socket is not closed with 4004.
fn ops_run(args: &Args, urls: &[String], secret: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let key = EncodingKey::from_secret(secret.as_bytes())?;
        let sign = |user: &str, roles: &[&str]| -> anyhow::Result<String> {
            let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some(args.kid.clone());
            let iat = now_ms() / 1000;
            let claims = json!({
                "sub": user, "exp": iat + TOKEN_TTL_SECS, "iat": iat, "iss": "authchat", "aud": "authchat",
                "jti": format!("{user}-{}", now_ms()), "roles": roles,
            });
            Ok(jsonwebtoken::encode(&header, &claims, &key)?)
        };
        let holders: Vec<&String> = if urls.len() > 1 { urls[1..].iter().collect() } else { urls.iter().collect() };
        let mut sockets = Vec::new();
        for i in 0..args.ops {
            let url = format!("{}/ws?token={}", holders[i % holders.len()], sign(&format!("ops-{i:05}"), &[])?);
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.context("opening a socket")?;
            let welcome = loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => break serde_json::from_str::<serde_json::Value>(&text)?,
                    Some(Ok(_)) => continue,
                    other => bail!("no welcome: {other:?}"),
                }
            };
            let conn_id = welcome["conn_id"].as_u64().ok_or_else(|| anyhow!("welcome without conn_id"))?;
            sockets.push((conn_id, welcome["node"].as_str().unwrap_or("?").to_owned(), ws));
        }
        let admin = sign("ops-admin", &["admin"])?;
        let base = urls[0].replacen("ws://", "http://", 1);
        let http = reqwest::Client::new();
        let (mut to_close, mut to_answer) = (Vec::new(), Vec::new());
        for (conn_id, node, mut ws) in sockets {
            let t0 = Instant::now();
            let request = http.delete(format!("{base}/admin/connections/{conn_id}")).bearer_auth(&admin).send();
            let closed = async {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                        Some(Ok(_)) => continue,
                        _ => break None,
                    }
                }
            };
            let answer = async {
                let res = request.await;
                (res.map(|r| r.status().as_u16()), t0.elapsed())
            };
            let ((status, answered), code) =
                tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(answer, async { (closed.await, t0.elapsed()) }) })
                    .await
                    .map_err(|_| anyhow!("socket {conn_id} on {node}: no close within 10 s"))?;
            if status.as_ref().ok() != Some(&200) || code.0 != Some(4004) {
                bail!("socket {conn_id} on {node}: answer {status:?}, close {:?} (expected 200 and 4004)", code.0);
            }
            to_close.push(code.1.as_micros() as u32);
            to_answer.push(answered.as_micros() as u32);
        }
        to_close.sort_unstable();
        to_answer.sort_unstable();
        println!(
            "operator closes through the first node of {} socket{} on {}: to the close frame p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; to the HTTP answer p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            to_close.len(),
            if to_close.len() == 1 { "" } else { "s" },
            if urls.len() > 1 { "the other nodes" } else { "that node" },
            percentile(&to_close, 50.0),
            percentile(&to_close, 99.0),
            percentile(&to_close, 100.0),
            percentile(&to_answer, 50.0),
            percentile(&to_answer, 99.0),
            percentile(&to_answer, 100.0),
        );
        Ok(())
    })
}
