//! Expiry lag: how precisely authchat force-closes WebSockets at their token's `exp` when many
//! connections are open.
//!
//! The load generator opens N WebSocket connections (`/ws?token=<jwt>`), every token signed
//! (HS256, `kid` "hs1", claims `sub`, `exp`, `iat`, `iss`/`aud` "authchat") to expire at the same
//! whole second, a few seconds after the last one is open (ten connections per `sub` by default,
//! `--per-user`). It then waits, and on each socket records the wall-clock time the close frame
//! arrives. The registry should close every socket with 4001 at `exp`; the project's target is
//! every socket closed within 100 ms of `exp` with 100,000 connections.
//!
//! It prints:
//! - N, how many sockets got 4001, how many were closed before `exp`, got another code, ended
//!   without a close frame, or got nothing before `--close-timeout`;
//! - the client-side lag from `exp` to the close frame's receipt (min, p50, p90, p99, max, and
//!   receipts per time slice, which shows closes arriving in bursts), and how long the server
//!   then kept the TCP connection;
//! - the server's own `authchat_expiry_close_lag_seconds` histogram from `GET /metrics` (its
//!   change over the run): each socket's lag from `exp` to its actor handling the close, free of
//!   the client's scheduling noise;
//! - the CPU time each thread used (registry actor, HTTP workers, load generator, and the whole
//!   machine from /proc/stat) from just before `exp` until the last close frame arrived, and after;
//! - with `--poll-metrics-ms`, a server-side timeline: how many connections the registry still
//!   held and how many socket actors had stopped with 4001, polled from `GET /metrics`.
//!
//! It exits 0 when every socket was closed with 4001 and none before `exp`, 1 when one was not,
//! 2 when the run could not be set up (open-file limit, a server that did not start, opening
//! that ended less than 0.5 s before `exp`).
//!
//! ```sh
//! cargo run --release --example expiry_lag -- --connections 10000
//! cargo run --release --example expiry_lag -- --connections 1000 --server in-process
//! # against a server you started yourself (loopback only), e.g.
//! # AUTHCHAT__AUTH__SECRET=<32+ bytes> AUTHCHAT__WS__MAX_CONNECTIONS_PER_USER=100 cargo run --release
//! AUTHCHAT__AUTH__SECRET=<same> cargo run --release --example expiry_lag -- --url ws://127.0.0.1:8080
//! ```
//!
//! Where the server runs (`--server`): `in-process` starts it with
//! `authchat::startup::Application::build` on its own thread and actix `System` in this process
//! (port 0, `[server] workers = 2`, a fixed secret, log filter "warn"); `child` starts the same
//! server in a copy of this program (`--serve`), so each process holds only one end of every
//! connection; `auto` (the default) picks `in-process` when this process may open both ends of N
//! connections (two descriptors each), `child` otherwise. The process's open-files soft limit is
//! raised to its hard limit with `prlimit(1)` when that is needed; past the hard limit the run is
//! refused with a message saying how many connections fit.
//!
//! Everything stays on loopback addresses; every loop is bounded by `--open-timeout` and
//! `--close-timeout`, and the program stops by itself.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use authchat::config::{LoadOptions, Settings};
use authchat::startup::Application;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The HS256 secret of the server this program starts (at least 32 bytes).
const DEFAULT_SECRET: &str = "expiry-lag-benchmark-secret-0123456789abcdef";
/// What a `--serve` child prints once it listens.
const PORT_LINE: &str = "EXPIRY_LAG_PORT=";
/// Close code for an expired token.
const TOKEN_EXPIRED: u16 = 4001;
/// The project's target for the last socket's close after `exp`.
const TARGET_MS: f64 = 100.0;
/// Descriptors a process needs besides the sockets (runtime, listener, stdio, metrics, …).
const FD_SLACK: u64 = 128;

#[derive(Parser, Debug)]
#[command(about = "Measures how precisely authchat closes many WebSockets at their token's exp (close 4001)")]
struct Args {
    /// WebSocket connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Connections per user (`sub`); the server's `ws.max_connections_per_user` must allow it.
    #[arg(long, default_value_t = 10)]
    per_user: usize,
    /// Seconds from start to the common `exp` [default: 4 + N/2000, so opening ends a few seconds before it].
    #[arg(long)]
    exp_in: Option<u64>,
    /// Seconds one handshake (up to the `welcome` frame) may take.
    #[arg(long, default_value_t = 10)]
    open_timeout: u64,
    /// Seconds after `exp` a socket may take to be closed before it counts as not closed.
    #[arg(long, default_value_t = 10)]
    close_timeout: u64,
    /// Client threads, each running a single-threaded tokio runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Where the server runs (ignored with --url).
    #[arg(long, value_enum, default_value_t = ServerMode::Auto)]
    server: ServerMode,
    /// HTTP worker threads of the server this program starts.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Measure an already-running server instead, e.g. ws://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    url: Option<String>,
    /// HS256 secret to sign with: the `auth.secret` of the --url server (or of the server started here).
    #[arg(long, env = "AUTHCHAT__AUTH__SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// `kid` header of the tokens (the server's `auth.secret_kid`).
    #[arg(long, default_value = "hs1")]
    kid: String,
    /// Also poll GET /metrics every this many ms around `exp` for a server-side timeline
    /// (registry's open count, session actors stopped with 4001); 0 = off. It adds a little load.
    #[arg(long, default_value_t = 0)]
    poll_metrics_ms: u64,
    /// Internal (`--server child`): only run the server, until standard input closes.
    #[arg(long, hide = true)]
    serve: bool,
    /// Internal: a `--serve` server stops by itself after this many seconds.
    #[arg(long, hide = true, default_value_t = 900)]
    serve_for: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServerMode {
    Auto,
    InProcess,
    Child,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.serve { serve(&args).map(|()| ExitCode::SUCCESS) } else { run(&args) };
    result.unwrap_or_else(|e| {
        eprintln!("expiry_lag: {e:#}");
        ExitCode::from(2)
    })
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// The embedded default with a fixed secret, port 0, `workers` workers, a per-user cap of
/// `per_user_cap`, log filter "warn", and no process environment.
fn server_settings(secret: &str, workers: usize, per_user_cap: usize) -> anyhow::Result<Settings> {
    let toml = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\nworkers = {workers}\nnode_id = \"expiry-lag\"\n\
         shutdown_timeout = \"3s\"\n[auth]\nsecret = {secret:?}\n[ws]\nmax_connections_per_user = {per_user_cap}\n\
         [log]\nfilter = \"warn\"\n"
    );
    Settings::load(&LoadOptions { env_vars: Some(Default::default()), overrides: vec![toml], ..LoadOptions::default() })
        .map_err(|e| anyhow!("server settings: {e}"))
}

/// A server this program started, or none (`--url`).
enum Server {
    InProcess { stop: tokio::sync::oneshot::Sender<()>, thread: JoinHandle<std::io::Result<()>> },
    Child(Child),
    External,
}

impl Server {
    /// Stops a server started here, waiting at most 15 s.
    fn stop(self) {
        let give_up = std::time::Instant::now() + Duration::from_secs(15);
        match self {
            Server::InProcess { stop, thread } => {
                let _ = stop.send(());
                while !thread.is_finished() && std::time::Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if thread.is_finished() {
                    if let Ok(Err(e)) = thread.join() {
                        eprintln!("expiry_lag: the server stopped with an error: {e}");
                    }
                }
            }
            Server::Child(mut child) => {
                drop(child.stdin.take()); // the child stops when its standard input closes
                while std::time::Instant::now() < give_up {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Server::External => {}
        }
    }
}

/// Starts the server on its own thread with its own actix `System`, so the registry actor and
/// the load generator never share a thread.
fn start_in_process(settings: Settings) -> anyhow::Result<(u16, Server)> {
    authchat::telemetry::init(&settings.log);
    let (port_tx, port_rx) = mpsc::channel::<Result<u16, String>>();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new().name("authchat-server".into()).spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = match Application::build(settings).await {
                Ok(app) => app,
                Err(e) => {
                    let _ = port_tx.send(Err(format!("{e:#}")));
                    return Ok(());
                }
            };
            let _ = port_tx.send(Ok(app.port()));
            app.run_until_stopped(async move {
                let _ = stop_rx.await;
            })
            .await
        })
    })?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(30))
        .context("the in-process server did not start within 30 s")?
        .map_err(|e| anyhow!("the in-process server did not start: {e}"))?;
    Ok((port, Server::InProcess { stop, thread }))
}

/// Starts `--serve` in a copy of this program; its log lines are passed on to stderr.
fn start_child(args: &Args, secret: &str) -> anyhow::Result<(u16, Server)> {
    let exe = std::env::current_exe().context("cannot find this program to start the server child")?;
    let serve_for = args.exp_in.unwrap_or(300) + args.open_timeout + args.close_timeout + 120;
    let mut child = Command::new(exe)
        .args(["--serve", "--serve-for", &serve_for.to_string(), "--workers", &args.workers.to_string()])
        .args(["--per-user", &args.per_user.to_string()])
        .env("AUTHCHAT__AUTH__SECRET", secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the server child")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (port_tx, port_rx) = mpsc::channel::<u16>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match line.strip_prefix(PORT_LINE).and_then(|p| p.trim().parse().ok()) {
                Some(port) => drop(port_tx.send(port)),
                None => eprintln!("[server] {line}"),
            }
        }
    });
    match port_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(port) => Ok((port, Server::Child(child))),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the server child did not report its port within 30 s")
        }
    }
}

/// `--serve`: run the server until standard input closes (or `--serve-for` passes).
fn serve(args: &Args) -> anyhow::Result<()> {
    let secret = args.secret.as_deref().unwrap_or(DEFAULT_SECRET);
    let settings = server_settings(secret, args.workers, args.per_user.max(32))?;
    authchat::telemetry::init(&settings.log);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = stop.send(());
    });
    let serve_for = Duration::from_secs(args.serve_for);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        println!("{PORT_LINE}{}", app.port());
        std::io::stdout().flush()?;
        app.run_until_stopped(async move {
            tokio::select! {
                _ = stop_rx => {}
                () = tokio::time::sleep(serve_for) => {}
            }
        })
        .await?;
        Ok(())
    })
}

/// `GET path` over HTTP/1.0 on a fresh connection; the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = StdTcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// Prometheus text as `name{labels}` → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(key, value)| Some((key.to_owned(), value.parse().ok()?)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Open files
// ---------------------------------------------------------------------------------------------

/// This process's open-files limits (soft, hard) from /proc/self/limits.
fn open_files_limit() -> anyhow::Result<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").context("cannot read /proc/self/limits")?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no open-files line")?;
    let parse = |v: &str| if v == "unlimited" { Ok(u64::MAX) } else { v.parse::<u64>() };
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    match fields.as_slice() {
        [soft, hard, ..] => Ok((parse(soft)?, parse(hard)?)),
        _ => bail!("cannot parse {line:?}"),
    }
}

fn open_fds_now() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Makes sure this process may open `needed` files, raising the soft limit up to the hard one
/// with prlimit(1) if it must. `Err` says why not.
fn ensure_open_files(needed: u64) -> anyhow::Result<()> {
    let (soft, hard) = open_files_limit()?;
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        bail!("needs about {needed} open files, and the hard limit is {hard}");
    }
    let pid = std::process::id().to_string();
    let status = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status()
        .context("cannot run prlimit to raise the open-files soft limit")?;
    let (soft, _) = open_files_limit()?;
    if !status.success() || soft < needed {
        bail!("needs about {needed} open files; the soft limit is {soft} and prlimit could not raise it");
    }
    println!("raised the open-files soft limit to {soft}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------------------------

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// How one connection ended.
#[derive(Debug)]
enum End {
    /// The upgrade or the `welcome` frame failed.
    NotOpened(String),
    /// A close frame arrived at this time (Unix µs).
    /// `eof_us`: when the server then ended the TCP connection (`None`: not within 2 s).
    Close { code: u16, at_us: u64, eof_us: Option<u64> },
    /// The connection ended or failed without a close frame.
    Dropped { at_us: u64, why: String },
    /// Nothing arrived before `exp + close_timeout`.
    Timeout,
}

/// What every connection task shares.
struct Plan {
    base_url: String,
    key: EncodingKey,
    kid: String,
    iat: u64,
    /// The common `exp`, Unix seconds.
    exp: u64,
    per_user: usize,
    run_id: u64,
    open_timeout: Duration,
    /// `exp + close_timeout` as wall-clock µs (each runtime turns it into its own `Instant`).
    give_up_us: u64,
    handshakes: Semaphore,
    opened: AtomicUsize,
    failed: AtomicUsize,
    /// Open connections whose close frame (or end, or timeout) has arrived.
    settled: AtomicUsize,
    /// Client threads whose connections are all done.
    done: AtomicUsize,
}

impl Plan {
    fn token(&self, i: usize) -> anyhow::Result<String> {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        let claims = json!({
            "sub": format!("load-{:06}", i / self.per_user),
            "exp": self.exp,
            "iat": self.iat,
            "iss": "authchat",
            "aud": "authchat",
            "jti": format!("expiry-lag-{}-{i}", self.run_id),
        });
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

fn describe(error: WsError) -> String {
    match error {
        WsError::Http(response) => {
            let body = response.body().as_deref().unwrap_or_default();
            let code = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("HTTP {} {code}", response.status().as_u16())
        }
        other => other.to_string(),
    }
}

/// One connection: open it (bounded by the shared semaphore), read `welcome`, then wait for the
/// close and note when it arrives.
async fn connection(plan: Arc<Plan>, i: usize) -> End {
    let permit = plan.handshakes.acquire().await.expect("the semaphore is never closed");
    let open = async {
        let token = plan.token(i).map_err(|e| e.to_string())?;
        let url = format!("{}/ws?token={token}", plan.base_url);
        // Small buffers: thousands of idle sockets, each receiving a few short frames.
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.map_err(describe)?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    if frame["type"] == "welcome" {
                        return Ok(Ok(ws));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| f.code.into());
                    return Ok(Err(End::Close { code, at_us: now_us(), eof_us: None }));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the connection ended before welcome".to_owned()),
            }
        }
    };
    let opened = tokio::time::timeout(plan.open_timeout, open).await;
    drop(permit);
    let mut ws = match opened {
        Ok(Ok(Ok(ws))) => ws,
        Ok(Ok(Err(end))) => {
            plan.failed.fetch_add(1, Ordering::Relaxed);
            return end;
        }
        Ok(Err(why)) => {
            plan.failed.fetch_add(1, Ordering::Relaxed);
            return End::NotOpened(why);
        }
        Err(_) => {
            plan.failed.fetch_add(1, Ordering::Relaxed);
            return End::NotOpened(format!("no welcome within {:?}", plan.open_timeout));
        }
    };
    plan.opened.fetch_add(1, Ordering::Relaxed);

    let give_up = Instant::now() + Duration::from_micros(plan.give_up_us.saturating_sub(now_us()));
    loop {
        let next = tokio::time::timeout_at(give_up, ws.next()).await;
        // The receipt time is taken first, before anything else is done with the frame.
        let at_us = now_us();
        if !matches!(next, Ok(Some(Ok(ref m))) if !m.is_close()) {
            plan.settled.fetch_add(1, Ordering::Relaxed);
        }
        match next {
            Err(_) => return End::Timeout,
            Ok(Some(Ok(Message::Close(frame)))) => {
                let code = frame.map_or(1005, |f| f.code.into());
                // Finish the closing handshake: tungstenite sends the reply on the next poll,
                // and the server should then end the TCP connection.
                let eof = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = ws.next().await {}
                    now_us()
                });
                return End::Close { code, at_us, eof_us: eof.await.ok() };
            }
            Ok(Some(Ok(_))) => {} // `expiring`, pings (answered by tungstenite)
            Ok(Some(Err(e))) => return End::Dropped { at_us, why: e.to_string() },
            Ok(None) => return End::Dropped { at_us, why: "ended without a close frame".into() },
        }
    }
}

/// Runs connections `thread, thread + threads, …` on a single-threaded runtime. When they are
/// all done it counts itself in `plan.done` and waits at `exit` (so its CPU time can be read).
fn client_thread(plan: Arc<Plan>, exit: Arc<Barrier>, n: usize, thread: usize, threads: usize) -> JoinHandle<Vec<End>> {
    std::thread::Builder::new()
        .name(format!("client-{thread}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
            let ends = runtime.block_on(async {
                let tasks: Vec<_> =
                    (thread..n).step_by(threads).map(|i| tokio::spawn(connection(plan.clone(), i))).collect();
                let mut ends = Vec::with_capacity(tasks.len());
                for task in tasks {
                    ends.push(task.await.unwrap_or_else(|e| End::NotOpened(format!("task failed: {e}"))));
                }
                ends
            });
            plan.done.fetch_add(1, Ordering::SeqCst);
            exit.wait();
            ends
        })
        .expect("a client thread")
}

/// `host:port` of a `ws://` or `http://` URL, which must be a loopback address.
fn loopback_address(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = ["ws://", "http://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| anyhow!("--url must start with ws:// or http:// (TLS is not supported here): {url}"))?;
    let host_port = rest.split('/').next().unwrap_or_default();
    let addr = host_port
        .to_socket_addrs()
        .with_context(|| format!("--url needs host:port, got {host_port:?}"))?
        .next()
        .ok_or_else(|| anyhow!("{host_port} does not resolve"))?;
    if !addr.ip().is_loopback() {
        bail!("--url must be a loopback address (127.0.0.0/8 or [::1]); {addr} is not");
    }
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let n = args.connections;
    if n == 0 || args.concurrency == 0 || args.per_user == 0 || args.client_threads == 0 {
        bail!("--connections, --concurrency, --per-user and --client-threads must be above 0");
    }
    let secret = args.secret.clone().unwrap_or_else(|| DEFAULT_SECRET.to_owned());
    if args.url.is_some() && args.secret.is_none() {
        bail!("--url needs --secret (or AUTHCHAT__AUTH__SECRET): the HS256 secret of that server");
    }
    if secret.len() < 32 {
        bail!("the HS256 secret must be at least 32 bytes (a shorter one makes a dev-mode server use a random one)");
    }
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    println!(
        "expiry_lag: {n} connections, {} per user, {} client thread(s), {cores} cores",
        args.per_user, args.client_threads
    );

    // Where the server runs, given what this process may open.
    let base_fds = open_fds_now() + FD_SLACK;
    let one_end = base_fds + n as u64;
    let both_ends = one_end + n as u64;
    let (addr, server) = match &args.url {
        Some(url) => {
            ensure_open_files(one_end)?;
            let addr = loopback_address(url)?;
            println!(
                "server: {addr} (already running; its ws.max_connections_per_user must be at least {})",
                args.per_user
            );
            (addr, Server::External)
        }
        None => {
            let (mode, why_child) = match args.server {
                ServerMode::Auto => match ensure_open_files(both_ends) {
                    Ok(()) => (ServerMode::InProcess, None),
                    Err(why) => (ServerMode::Child, Some(why)),
                },
                mode => (mode, None),
            };
            let needed = if mode == ServerMode::InProcess { both_ends } else { one_end };
            ensure_open_files(needed).map_err(|why| {
                let (_, hard) = open_files_limit().unwrap_or((0, 0));
                let fit = hard.saturating_sub(base_fds);
                anyhow!(
                    "{n} connections are too many here: {why}. At most about {} fit with the server in this \
                     process, {fit} with --server child (one end each)",
                    fit / 2
                )
            })?;
            if let Some(why) = why_child {
                println!("server: in a child process, since this one cannot hold both ends of {n} connections ({why})");
            }
            let (port, server) = if mode == ServerMode::InProcess {
                start_in_process(server_settings(&secret, args.workers, args.per_user.max(32))?)?
            } else {
                start_child(args, &secret)?
            };
            let where_ = if mode == ServerMode::InProcess { "in this process" } else { "in a child process" };
            println!("server: 127.0.0.1:{port} {where_}, {} workers", args.workers);
            (SocketAddr::from(([127, 0, 0, 1], port)), server)
        }
    };
    let server_pid = match &server {
        Server::InProcess { .. } => Some(std::process::id()),
        Server::Child(child) => Some(child.id()),
        Server::External => None,
    };
    let result = measure(args, &secret, addr, server_pid);
    server.stop();
    result
}

fn measure(args: &Args, secret: &str, addr: SocketAddr, server_pid: Option<u32>) -> anyhow::Result<ExitCode> {
    let n = args.connections;
    let metrics_before = http_get(addr, "/metrics").map(|t| parse_metrics(&t));
    if let Err(e) = &metrics_before {
        println!("note: GET /metrics failed ({e:#}); the server-side histogram will be missing");
    }

    if let Some(busy) = machine_busy(Duration::from_millis(500)) {
        let note = if busy > 0.2 { ": other processes are using the CPU, so expect noisy figures" } else { "" };
        println!("machine: {:.0} % busy in the 0.5 s before the run{note}", 100.0 * busy);
    }
    let start_us = now_us();
    let exp_in = args.exp_in.unwrap_or(4 + n as u64 / 2000);
    let exp = (start_us / 1000 + exp_in * 1000).div_ceil(1000);
    let exp_us = exp * 1_000_000;
    let plan = Arc::new(Plan {
        base_url: format!("ws://{addr}"),
        key: EncodingKey::from_secret(secret.as_bytes())?,
        kid: args.kid.clone(),
        iat: start_us / 1_000_000,
        exp,
        per_user: args.per_user,
        run_id: start_us,
        open_timeout: Duration::from_secs(args.open_timeout),
        give_up_us: exp_us + args.close_timeout * 1_000_000,
        handshakes: Semaphore::new(args.concurrency),
        opened: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        settled: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    println!(
        "every token expires at {exp} (in {:.1} s); opening {n} connections, {} at a time",
        (exp_us - start_us) as f64 / 1e6,
        args.concurrency
    );

    let exit = Arc::new(Barrier::new(args.client_threads + 1));
    let threads: Vec<_> = (0..args.client_threads)
        .map(|t| client_thread(plan.clone(), exit.clone(), n, t, args.client_threads))
        .collect();
    let poller = (args.poll_metrics_ms > 0).then(|| {
        let closes_before = metrics_before.as_ref().ok().and_then(|m| m.get(CLOSES_4001).copied()).unwrap_or(0.0);
        let every = Duration::from_millis(args.poll_metrics_ms);
        poll_metrics(addr, every, exp_us.saturating_sub(100_000), plan.give_up_us, closes_before, n)
    });

    // Progress, until every client thread is done (each is bounded by exp + close_timeout).
    let mut all_open_at: Option<u64> = None;
    let mut last_print = start_us;
    let mut cpu_before = None;
    let mut cpu_at_last_close = None;
    while plan.done.load(Ordering::SeqCst) < args.client_threads {
        std::thread::sleep(Duration::from_millis(20));
        let (opened, failed) = (plan.opened.load(Ordering::Relaxed), plan.failed.load(Ordering::Relaxed));
        let now = now_us();
        if cpu_before.is_none() && now + 100_000 >= exp_us {
            cpu_before = Some(cpu_snapshot(server_pid));
        }
        let settled = plan.settled.load(Ordering::Relaxed) + failed;
        if cpu_before.is_some() && cpu_at_last_close.is_none() && settled >= n {
            cpu_at_last_close = Some((now, cpu_snapshot(server_pid)));
        }
        if all_open_at.is_none() && opened + failed >= n {
            all_open_at = Some(now);
            let secs = (now - start_us) as f64 / 1e6;
            println!(
                "opened {opened} ({failed} failed) in {secs:.1} s ({:.0}/s); exp in {:.1} s",
                opened as f64 / secs,
                exp_us.saturating_sub(now) as f64 / 1e6
            );
        } else if all_open_at.is_none() && now - last_print > 2_000_000 {
            last_print = now;
            println!("  … {opened} open, {failed} failed");
        }
    }
    let cpu_after = cpu_snapshot(server_pid);
    exit.wait();
    let ends: Vec<End> = threads.into_iter().flat_map(|t| t.join().expect("client thread")).collect();
    let samples = poller.map(|p| p.join().unwrap_or_default()).unwrap_or_default();
    let metrics_after = http_get(addr, "/metrics").map(|t| parse_metrics(&t));

    let (exit, verdict) = report(args, exp_us, all_open_at, &ends, metrics_before.ok().zip(metrics_after.ok()));
    if !samples.is_empty() {
        print_samples(&samples, exp_us, args.poll_metrics_ms);
    }
    if let Some(before) = &cpu_before {
        if let Some((at, last_close)) = &cpu_at_last_close {
            let title = format!("exp - 0.1 s to exp + {:.0} ms (every close frame received)", ms_from(*at, exp_us));
            print_cpu(&title, before, last_close, server_pid);
            let title = "then until every socket was done (the closing handshakes, TCP ends)";
            print_cpu(title, last_close, &cpu_after, server_pid);
        } else {
            print_cpu("exp - 0.1 s until every socket was done", before, &cpu_after, server_pid);
        }
    }
    println!();
    println!("{verdict}");
    Ok(exit)
}

/// On-CPU nanoseconds and name of every thread of this process and of the server's, by (pid, tid).
/// Also the whole machine's busy and total time (ms) from /proc/stat, to see other processes.
struct CpuSnapshot {
    threads: BTreeMap<(u32, u32), (String, u64)>,
    machine: Option<(f64, f64)>,
}

/// The whole machine's (busy, total) CPU time in ms, from the first line of /proc/stat
/// (user nice system idle iowait irq softirq steal, in 10 ms ticks); idle and iowait are not busy.
fn machine_cpu_ms() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(((total - idle) as f64 * 10.0, total as f64 * 10.0))
}

/// How busy the machine is over `window`, as a fraction of all its cores.
fn machine_busy(window: Duration) -> Option<f64> {
    let (busy0, total0) = machine_cpu_ms()?;
    std::thread::sleep(window);
    let (busy1, total1) = machine_cpu_ms()?;
    (total1 > total0).then(|| (busy1 - busy0) / (total1 - total0))
}

/// Reads /proc/PID/task/*/schedstat (first field: time on CPU, ns) and comm.
fn cpu_snapshot(server_pid: Option<u32>) -> CpuSnapshot {
    let mut threads = BTreeMap::new();
    let mut pids = vec![std::process::id()];
    pids.extend(server_pid.filter(|p| *p != std::process::id()));
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            let dir = task.path();
            let ns = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_owned();
            if let Some(ns) = ns {
                threads.insert((pid, tid), (name, ns));
            }
        }
    }
    CpuSnapshot { threads, machine: machine_cpu_ms() }
}

/// What a thread is, from its process and name.
fn thread_role(pid: u32, tid: u32, name: &str) -> String {
    let own = pid == std::process::id();
    if name.starts_with("client-") {
        format!("load generator ({name})")
    } else if name == "authchat-server" || (!own && tid == pid) {
        "server: actix System thread (registry actor)".to_owned()
    } else if name.starts_with("actix-server wo") || name.starts_with("actix-rt|system") {
        "server: HTTP worker (socket actors)".to_owned()
    } else if name.starts_with("actix-server ac") {
        "server: acceptor".to_owned()
    } else if own && tid == pid {
        "this program's main thread (progress)".to_owned()
    } else {
        format!("{} thread {name}", if own { "client-process" } else { "server-process" })
    }
}

fn ms_from(us: u64, exp_us: u64) -> f64 {
    (us as f64 - exp_us as f64) / 1000.0
}

/// CPU time each thread used between two snapshots.
fn print_cpu(title: &str, before: &CpuSnapshot, after: &CpuSnapshot, server_pid: Option<u32>) {
    println!();
    println!("CPU time per thread, {title} (ms):");
    let (mut server, mut client) = (0.0, 0.0);
    for ((pid, tid), (name, ns)) in &after.threads {
        let used = ns.saturating_sub(before.threads.get(&(*pid, *tid)).map_or(0, |(_, ns)| *ns)) as f64 / 1e6;
        let role = thread_role(*pid, *tid, name);
        if role.starts_with("server") {
            server += used;
        } else {
            client += used;
        }
        if used >= 1.0 {
            println!("  {used:>8.1}  {role}");
        }
    }
    match server_pid {
        Some(_) => println!("  server total {server:.1} ms, load generator total {client:.1} ms"),
        None => println!("  load generator total {client:.1} ms (the --url server's threads are not visible here)"),
    }
    if let (Some((busy0, total0)), Some((busy1, total1))) = (before.machine, after.machine) {
        let (busy, total) = (busy1 - busy0, total1 - total0);
        let others = (busy - server - client).max(0.0);
        let which = if server_pid.is_some() { "other processes" } else { "other processes (the server among them)" };
        println!(
            "  whole machine: {busy:.0} of {total:.0} ms busy ({:.0} %); {which} about {others:.0} ms \
             (/proc/stat, 10 ms ticks)",
            100.0 * busy / total.max(1.0)
        );
    }
}

/// `GET /metrics` once, for the server-side timeline.
struct Sample {
    sent_us: u64,
    answered_us: u64,
    /// `authchat_connections_open`: connections the registry still holds.
    open: f64,
    /// `authchat_closes_total{code="4001"}` since the run began: session actors that stopped.
    stopped: f64,
}

const CLOSES_4001: &str = "authchat_closes_total{code=\"4001\"}";

/// Polls `GET /metrics` every `every` from `from_us` until `n` sockets stopped with 4001 or
/// `until_us` passes.
fn poll_metrics(
    addr: SocketAddr,
    every: Duration,
    from_us: u64,
    until_us: u64,
    closes_before: f64,
    n: usize,
) -> JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_micros(from_us.saturating_sub(now_us())));
        let mut samples = Vec::new();
        while now_us() < until_us {
            let sent_us = now_us();
            let Ok(text) = http_get(addr, "/metrics") else { break };
            let answered_us = now_us();
            let metrics = parse_metrics(&text);
            let open = metrics.get("authchat_connections_open").copied().unwrap_or(f64::NAN);
            let stopped = metrics.get(CLOSES_4001).copied().unwrap_or(0.0) - closes_before;
            samples.push(Sample { sent_us, answered_us, open, stopped });
            if stopped >= n as f64 {
                break;
            }
            std::thread::sleep(every);
        }
        samples
    })
}

/// The server-side timeline: rows where a value changed.
fn print_samples(samples: &[Sample], exp_us: u64, every_ms: u64) {
    let ms = |us: u64| ms_from(us, exp_us);
    println!();
    println!("server timeline (GET /metrics every {every_ms} ms; each value was read between `sent` and `answered`, ms from exp):");
    println!("  {:>9} {:>9} {:>15} {:>18}", "sent", "answered", "registry holds", "stopped with 4001");
    let mut previous: Option<(f64, f64)> = None;
    for (i, s) in samples.iter().enumerate() {
        if previous != Some((s.open, s.stopped)) || i + 1 == samples.len() {
            println!("  {:>+9.1} {:>+9.1} {:>15} {:>18}", ms(s.sent_us), ms(s.answered_us), s.open, s.stopped);
        }
        previous = Some((s.open, s.stopped));
    }
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Prints the outcome and lag figures; returns the exit code and the verdict line.
fn report(
    args: &Args,
    exp_us: u64,
    all_open_at: Option<u64>,
    ends: &[End],
    metrics: Option<(BTreeMap<String, f64>, BTreeMap<String, f64>)>,
) -> (ExitCode, String) {
    let n = args.connections;
    let mut lags = Vec::new();
    // After each 4001: ms until the server ended TCP, and how many it left open past 2 s.
    let (mut eofs, mut no_eof) = (Vec::new(), 0);
    let (mut early, mut not_opened, mut timeouts) = (0, 0, 0);
    let mut other_codes: BTreeMap<u16, usize> = BTreeMap::new();
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    let mut not_opened_why: BTreeMap<String, usize> = BTreeMap::new();
    for end in ends {
        match end {
            End::Close { at_us, .. } | End::Dropped { at_us, .. } if *at_us < exp_us => early += 1,
            End::Close { code: TOKEN_EXPIRED, at_us, eof_us } => {
                lags.push((at_us - exp_us) as f64 / 1000.0);
                match eof_us {
                    Some(eof) => eofs.push((eof - at_us) as f64 / 1000.0),
                    None => no_eof += 1,
                }
            }
            End::Close { code, .. } => *other_codes.entry(*code).or_default() += 1,
            End::Dropped { why, .. } => *dropped.entry(why.clone()).or_default() += 1,
            End::Timeout => timeouts += 1,
            End::NotOpened(why) => {
                not_opened += 1;
                *not_opened_why.entry(why.clone()).or_default() += 1;
            }
        }
    }
    lags.sort_by(f64::total_cmp);

    println!();
    println!("connections              {n}");
    println!("closed with 4001         {}", lags.len());
    println!("closed before exp        {early}");
    for (code, count) in &other_codes {
        println!("closed with {code}         {count}");
    }
    for (why, count) in &dropped {
        println!("ended without close      {count} ({why})");
    }
    println!("not closed within {:>2} s   {timeouts}", args.close_timeout);
    println!("not opened               {not_opened}");
    for (why, count) in &not_opened_why {
        println!("    {count} × {why}");
    }

    if !lags.is_empty() {
        let within = lags.iter().filter(|l| **l <= TARGET_MS).count();
        println!();
        println!("client: lag from exp to the close frame's receipt, ms (includes this client's own scheduling)");
        println!(
            "  min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}   within {TARGET_MS} ms: {within}/{} ({:.1} %)",
            lags[0],
            percentile(&lags, 50.0),
            percentile(&lags, 90.0),
            percentile(&lags, 99.0),
            lags[lags.len() - 1],
            lags.len(),
            100.0 * within as f64 / lags.len() as f64
        );
        let edges = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, f64::INFINITY];
        let mut lower = 0.0;
        let mut line = String::from("  receipts by lag:");
        for edge in edges {
            let count = lags.iter().filter(|l| **l >= lower && **l < edge).count();
            if count > 0 {
                let label = if edge.is_finite() { format!("<{edge}") } else { format!(">={lower}") };
                line.push_str(&format!("  {label}: {count}"));
            }
            lower = edge;
        }
        println!("{line}");
        print_timeline(&lags);
        eofs.sort_by(f64::total_cmp);
        if let (Some(first), Some(last)) = (eofs.first(), eofs.last()) {
            println!(
                "  then the server ended TCP after  min {first:.1}  p50 {:.1}  max {last:.1} ms; not within 2 s: {no_eof}",
                percentile(&eofs, 50.0)
            );
        } else {
            println!("  the server ended TCP within 2 s of no 4001 close ({no_eof} left open)");
        }
    }

    match metrics {
        Some((before, after)) => server_histogram(&before, &after),
        None => println!("\nserver: no /metrics (see the note above)"),
    }

    let margin_ok = all_open_at.is_some_and(|at| at + 500_000 <= exp_us);
    if lags.len() != n {
        let missing = n - lags.len();
        (ExitCode::from(1), format!("FAILED: {missing} of {n} sockets were not closed with 4001 at or after exp"))
    } else if !margin_ok {
        let why = "SETUP PROBLEM: the last connection opened less than 0.5 s before exp, so the measurement \
                   overlaps the opening; rerun with a larger --exp-in";
        (ExitCode::from(2), why.to_owned())
    } else {
        (ExitCode::SUCCESS, format!("OK: all {n} sockets were closed with 4001, none before exp"))
    }
}

/// Receipts per time slice after `exp`, as bars, to show whether closes arrive in batches.
fn print_timeline(lags: &[f64]) {
    let max = lags.last().copied().unwrap_or(0.0);
    let width = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        .into_iter()
        .find(|w| max / w < 30.0)
        .unwrap_or(1000.0);
    let mut bins = vec![0usize; (max / width) as usize + 1];
    for lag in lags {
        bins[(lag / width) as usize] += 1;
    }
    let tallest = bins.iter().copied().max().unwrap_or(1).max(1);
    println!("  receipts per {width} ms after exp:");
    for (i, count) in bins.iter().enumerate() {
        let bar = "#".repeat((40 * count).div_ceil(tallest));
        println!("  {:>7.0} ms  {bar:<40} {count}", i as f64 * width);
    }
}

/// The change in `authchat_expiry_close_lag_seconds` (and 4001 closes) over this run.
fn server_histogram(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) {
    let delta = |key: &str| after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0);
    let name = "authchat_expiry_close_lag_seconds";
    let count = delta(&format!("{name}_count"));
    println!();
    println!("server: {name} (per socket: lag from exp to the socket actor handling the close)");
    if count == 0.0 {
        println!("  no observations");
        return;
    }
    let sum = delta(&format!("{name}_sum"));
    let mut buckets: Vec<(f64, String, f64)> = after
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .filter_map(|rest| rest.strip_suffix("\"}"))
        .map(|le| {
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
            (bound, le.to_owned(), delta(&format!("{name}_bucket{{le=\"{le}\"}}")))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let upper = |p: f64| {
        buckets.iter().find(|(_, _, c)| *c >= p * count).map_or("?".to_owned(), |(_, le, _)| format!("<= {le} s"))
    };
    println!(
        "  count {count}  mean {:.2} ms  p50 {}  p99 {}  max {}",
        1000.0 * sum / count,
        upper(0.5),
        upper(0.99),
        upper(1.0)
    );
    let cumulative: Vec<String> = buckets.iter().map(|(_, le, c)| format!("le {le}: {c}")).collect::<Vec<_>>();
    println!("  cumulative: {}", cumulative.join(", "));
    println!("  {CLOSES_4001} +{}", delta(CLOSES_4001));
}
