//! The servers under test, and starting and stopping them: authchat's release binary as a
//! child process (the default: its memory and CPU are then its own), authchat in this process,
//! a server already running (`--url`), the two peers of `bench/peers/`, and several authchat
//! nodes sharing a private redis-server.
//!
//! Servers started here listen on 127.0.0.1 at a free port, sign nothing themselves and verify
//! tokens with a random secret the tool passes in their environment (never on a command line),
//! and log only warnings, to a file in a run folder that is removed afterwards.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use authchat::config::{LoadOptions, Settings};
use authchat::startup::Application;
use clap::{Args, ValueEnum};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Kind {
    /// authchat itself.
    Authchat,
    /// The minimal actix server (`bench/peers/actix`): actix-web-actors, one actor per socket,
    /// one registry actor.
    Actix,
    /// The Node server (`bench/peers/node`): `ws` and `jsonwebtoken`, one thread.
    Node,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Authchat => "authchat",
            Kind::Actix => "actix",
            Kind::Node => "node",
        }
    }

    /// The column heading in tables.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Authchat => "authchat",
            Kind::Actix => "minimal actix",
            Kind::Node => "Node ws",
        }
    }
}

/// The store of the authchat nodes started for a fan-out (`store.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Memory,
    Redis,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
        }
    }
}

/// authchat's settings for a load run, over its embedded default: the per-address and
/// per-socket limits out of the way (every socket comes from a few loopback addresses, and
/// senders send back to back), room for 19,000 sockets (the machine's open-files cap is 20,000
/// per process), and warnings only in the log. `--url` servers must be configured alike.
pub const AUTHCHAT_TUNING: &[(&str, &str)] = &[
    ("ws.handshake_limit.per_second", "1000000.0"),
    ("ws.handshake_limit.burst", "1000000.0"),
    ("ws.rate_limit.per_second", "1000000.0"),
    ("ws.rate_limit.burst", "1000000.0"),
    ("ws.rate_limit.user_per_second", "1000000.0"),
    ("ws.rate_limit.user_burst", "1000000.0"),
    ("ws.max_unauthenticated_per_ip", "100000"),
    ("server.max_connections", "19000"),
    ("log.filter", "warn"),
];

/// `AUTHCHAT__SECTION__KEY` for a dotted key.
fn env_key(key: &str) -> String {
    format!("AUTHCHAT__{}", key.replace('.', "__").to_uppercase())
}

/// The tuning as one TOML document of dotted keys (numbers as they are, anything else quoted).
fn tuning_toml() -> String {
    AUTHCHAT_TUNING
        .iter()
        .map(|(key, value)| match value.parse::<f64>() {
            Ok(_) => format!("{key} = {value}\n"),
            Err(_) => format!("{key} = {value:?}\n"),
        })
        .collect()
}

/// Where the server under test runs; every scenario takes these.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The server to start and measure.
    #[arg(long, value_enum, default_value_t = Kind::Authchat)]
    pub target: Kind,
    /// authchat only: run it in this process, on its own thread and actix System, rather than
    /// as a child process (its memory and CPU are then mixed with the load generator's).
    #[arg(long)]
    pub in_process: bool,
    /// Measure a server already running instead, e.g. ws://127.0.0.1:8080 (loopback only; it
    /// must allow the load: see `AUTHCHAT_TUNING` in docs/benchmarks.md). Needs --secret.
    #[arg(long, conflicts_with = "in_process")]
    pub url: Option<String>,
    /// With --url: the server's process id, so the scenarios that read /proc (hold's memory,
    /// the CPU per thread of expiry, churn's memory) see it; e.g. a server run under heaptrack.
    #[arg(long, requires = "url")]
    pub pid: Option<u32>,
    /// HS256 secret to sign tokens with: the --url server's `auth.secret`. Servers started
    /// here get a random one.
    #[arg(long, env = "AUTHCHAT__AUTH__SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// `kid` of the tokens (the server's `auth.secret_kid`).
    #[arg(long, default_value = "hs1")]
    pub kid: String,
    /// HTTP worker threads of authchat and of the actix peer; 0 = one per core (authchat's
    /// default). The Node peer has one thread.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    #[command(flatten)]
    pub programs: ProgramArgs,
}

/// Where the programs under test are.
#[derive(Args, Debug, Clone, Default)]
pub struct ProgramArgs {
    /// Folder holding `authchat` and `peer-actix` [default: this program's own, e.g. target/release].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The Node peer's folder, with its node_modules [default: bench/peers/node of this source tree].
    #[arg(long)]
    pub node_peer: Option<PathBuf>,
    /// The redis-server program, for fan-outs over several nodes.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Run each server started here under this command, split on spaces, e.g.
    /// "heaptrack -o /tmp/hold" or "valgrind --tool=callgrind"; the figures read from /proc are
    /// then the wrapped server's own, and a stop waits up to 60 s for the wrapper to finish.
    #[arg(long)]
    pub wrap: Option<String>,
}

impl ProgramArgs {
    fn bin(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = match &self.bin_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()?.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let path = dir.join(name);
        if !path.is_file() {
            bail!(
                "{} does not exist: build it (cargo build --release -p authchat -p authchat-bench, or \
                 scripts/bench.sh) or give --bin-dir",
                path.display()
            );
        }
        Ok(path)
    }

    fn node_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.node_peer.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/node"));
        if !dir.join("node_modules/ws").is_dir() || !dir.join("node_modules/jsonwebtoken").is_dir() {
            bail!(
                "the Node peer's packages are not installed in {}: run `npm ci --prefix {}` (scripts/bench.sh does)",
                dir.display(),
                dir.display()
            );
        }
        Ok(dir)
    }
}

/// A folder under the temporary directory for one run's logs and Redis data, removed on drop.
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(what: &str) -> anyhow::Result<Self> {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let dir = std::env::temp_dir().join(format!("authchat-bench-{what}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server being measured.
pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// Its process, when it is visible here (not for --url).
    pub pid: Option<u32>,
    /// The node name, for reports.
    pub name: String,
    how: How,
}

enum How {
    /// `child` is the server itself, or the wrapper (--wrap) whose descendant `pid` is.
    Child {
        child: Child,
        log: PathBuf,
        wrapped: bool,
    },
    InProcess {
        stop: tokio::sync::oneshot::Sender<()>,
        thread: JoinHandle<std::io::Result<()>>,
    },
    External,
}

impl Server {
    /// `ws://host:port`.
    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Whether it runs in this process (its figures then include the load generator's).
    pub fn in_process(&self) -> bool {
        matches!(self.how, How::InProcess { .. })
    }

    /// Whether the server is still there (a child that exited is not).
    pub fn is_alive(&mut self) -> bool {
        match &mut self.how {
            How::Child { child, .. } => matches!(child.try_wait(), Ok(None)),
            How::InProcess { thread, .. } => !thread.is_finished(),
            How::External => true,
        }
    }

    /// The last few KiB of a child's log, to show when something failed.
    pub fn log_tail(&self) -> String {
        let How::Child { log, .. } = &self.how else { return String::new() };
        let Ok(mut file) = File::open(log) else { return String::new() };
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
        let mut tail = String::new();
        let _ = file.read_to_string(&mut tail);
        tail
    }

    /// Stops a server started here: SIGTERM (a graceful stop) and SIGKILL 5 s later for a
    /// child, the stop signal for one in this process (waiting at most 15 s).
    pub fn stop(self) {
        match self.how {
            How::Child { child, wrapped: false, .. } => terminate(&self.name, child, Duration::from_secs(5)),
            How::Child { mut child, wrapped: true, .. } => {
                // Stop the server and let the wrapper, which waits for it, write what it recorded.
                if let Some(pid) = self.pid.filter(|p| *p != child.id()) {
                    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
                    let give_up = Instant::now() + Duration::from_secs(60);
                    while Instant::now() < give_up && matches!(child.try_wait(), Ok(None)) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                terminate(&self.name, child, Duration::from_secs(5));
            }
            How::InProcess { stop, thread } => {
                let _ = stop.send(());
                let give_up = Instant::now() + Duration::from_secs(15);
                while !thread.is_finished() && Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if thread.is_finished() {
                    if let Ok(Err(e)) = thread.join() {
                        eprintln!("authchat-bench: the in-process server stopped with an error: {e}");
                    }
                }
            }
            How::External => {}
        }
    }
}

/// SIGTERM unless it has exited, then SIGKILL after `patience`.
fn terminate(name: &str, mut child: Child, patience: Duration) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    }
    let give_up = Instant::now() + patience;
    while Instant::now() < give_up && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if matches!(child.try_wait(), Ok(None)) {
        eprintln!("authchat-bench: {name} did not stop within {patience:?}; killing it");
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A free port on 127.0.0.1 (a tiny race with other programs binding one, acceptable here).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Polls `ready` every 50 ms for at most `limit`.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let give_up = Instant::now() + limit;
    while Instant::now() < give_up {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("not within {limit:?}")
}

/// A random 64-character hex secret (32 random bytes).
pub fn random_secret() -> String {
    use rand::Rng as _;
    let bytes: [u8; 32] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a server started here is given.
#[derive(Debug, Clone)]
pub struct Launch {
    pub secret: String,
    /// HTTP workers (authchat and the actix peer); 0 = one per core.
    pub workers: usize,
    /// authchat's `server.node_id`.
    pub name: String,
    pub backend: Backend,
    pub redis_url: Option<String>,
}

impl Launch {
    pub fn single(secret: &str, workers: usize) -> Self {
        Self { secret: secret.to_owned(), workers, name: "bench".into(), backend: Backend::Memory, redis_url: None }
    }
}

/// Starts `kind` as a child process logging into `dir`, and waits until it answers.
pub fn start_child(kind: Kind, programs: &ProgramArgs, launch: &Launch, dir: &Path) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut command = match kind {
        Kind::Authchat => {
            let mut command = Command::new(programs.bin("authchat")?);
            command.arg("serve");
            // Only the settings given here: nothing of this shell's AUTHCHAT_* environment.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("AUTHCHAT") {
                    command.env_remove(key);
                }
            }
            command
                .env("AUTHCHAT__SERVER__HOST", "127.0.0.1")
                .env("AUTHCHAT__SERVER__PORT", port.to_string())
                .env("AUTHCHAT__SERVER__NODE_ID", &launch.name)
                .env("AUTHCHAT__SERVER__WORKERS", launch.workers.to_string())
                .env("AUTHCHAT__SERVER__SHUTDOWN_TIMEOUT", "2s")
                .env("AUTHCHAT__AUTH__SECRET", &launch.secret)
                .env("AUTHCHAT__STORE__BACKEND", launch.backend.name())
                .env("RUST_LOG", "warn");
            for (key, value) in AUTHCHAT_TUNING {
                command.env(env_key(key), value);
            }
            if let Some(url) = &launch.redis_url {
                command.env("AUTHCHAT__REDIS__URL", url);
            }
            command
        }
        Kind::Actix => {
            let mut command = Command::new(programs.bin("peer-actix")?);
            command.env("PEER_WORKERS", launch.workers.to_string());
            command
        }
        Kind::Node => {
            let dir = programs.node_dir()?;
            let mut command = Command::new("node");
            command.arg(dir.join("server.js"));
            command
        }
    };
    if kind != Kind::Authchat {
        command.env("PEER_HOST", "127.0.0.1").env("PEER_PORT", port.to_string()).env("PEER_SECRET", &launch.secret);
    }
    let program = Path::new(command.get_program()).file_name().map(|n| n.to_string_lossy().into_owned());
    let mut command = match &programs.wrap {
        Some(wrap) => wrapped(wrap, &command)?,
        None => command,
    };
    let log = dir.join(format!("{}-{}.log", launch.name, kind.name()));
    let out = File::options().create(true).append(true).open(&log)?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start the {} server", kind.name()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let wrapped = programs.wrap.is_some();
    let pid = Some(child.id());
    let mut server = Server { kind, addr, pid, name: launch.name.clone(), how: How::Child { child, log, wrapped } };
    // authchat's /readyz also waits for its Redis engine; the peers answer /healthz.
    let path = if kind == Kind::Authchat { "/readyz" } else { "/healthz" };
    let ready =
        wait_until(Duration::from_secs(30), || crate::http::status(addr, path) == Some(200) || !server.is_alive());
    if ready.is_err() || !server.is_alive() {
        let tail = server.log_tail();
        server.stop();
        bail!("the {} server did not become ready on {addr}; its log:\n{tail}", kind.name());
    }
    if wrapped {
        server.pid = program.and_then(|name| descendant(server.pid.unwrap_or_default(), &name));
        if server.pid.is_none() {
            eprintln!("authchat-bench: cannot find the wrapped server's process; /proc figures are missing");
        }
    }
    Ok(server)
}

/// `inner` run by the command `wrap` (split on spaces), with `inner`'s environment.
fn wrapped(wrap: &str, inner: &Command) -> anyhow::Result<Command> {
    let mut parts = wrap.split_whitespace();
    let mut outer = Command::new(parts.next().ok_or_else(|| anyhow!("--wrap is empty"))?);
    outer.args(parts).arg(inner.get_program()).args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => outer.env(key, value),
            None => outer.env_remove(key),
        };
    }
    Ok(outer)
}

/// The first process below `pid` (itself included) whose name is `name` (as /proc's `comm`
/// has it: at most 15 bytes).
fn descendant(pid: u32, name: &str) -> Option<u32> {
    let comm: String = name.chars().take(15).collect();
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        if std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm) {
            return Some(p);
        }
        let children = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        queue.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
    }
    None
}

/// Starts authchat in this process, on its own thread and actix System, so the registry actor
/// and the load generator never share a thread.
pub fn start_in_process(launch: &Launch) -> anyhow::Result<Server> {
    let base = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\nworkers = {}\nnode_id = {:?}\nshutdown_timeout = \"3s\"\n\
         [auth]\nsecret = {:?}\n",
        launch.workers, launch.name, launch.secret
    );
    let settings = Settings::load(&LoadOptions {
        env_vars: Some(Default::default()),
        overrides: vec![base, tuning_toml()],
        ..LoadOptions::default()
    })
    .map_err(|e| anyhow!("server settings: {e}"))?;
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
    Ok(Server {
        kind: Kind::Authchat,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        pid: Some(std::process::id()),
        name: launch.name.clone(),
        how: How::InProcess { stop, thread },
    })
}

/// A server already running at a `ws://` or `http://` loopback URL, as process `pid` if known.
pub fn external(kind: Kind, url: &str, pid: Option<u32>) -> anyhow::Result<Server> {
    let addr = loopback_address(url)?;
    Ok(Server { kind, addr, pid, name: addr.to_string(), how: How::External })
}

/// `host:port` of a `ws://` or `http://` URL, which must be an IPv4 loopback address (sockets
/// are opened from addresses across 127.0.0.0/8).
pub fn loopback_address(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = ["ws://", "http://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| anyhow!("a server URL must start with ws:// or http:// (TLS is not supported here): {url}"))?;
    let host_port = rest.split('/').next().unwrap_or_default();
    let addr = host_port
        .to_socket_addrs()
        .with_context(|| format!("a server URL needs host:port, got {host_port:?}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| anyhow!("{host_port} does not resolve to an IPv4 address"))?;
    if !addr.ip().is_loopback() {
        bail!("server URLs must be loopback addresses (127.0.0.0/8); {addr} is not");
    }
    Ok(addr)
}

/// The server a scenario measures, from its arguments, with the secret its tokens are signed
/// with and the run folder its logs go to (keep it until the server is stopped).
pub fn from_args(args: &ServerArgs, what: &str) -> anyhow::Result<(Server, String, RunDir)> {
    let dir = RunDir::new(what)?;
    if let Some(url) = &args.url {
        let secret = args.secret.clone().ok_or_else(|| anyhow!("--url needs --secret (or AUTHCHAT__AUTH__SECRET)"))?;
        return Ok((external(args.target, url, args.pid)?, secret, dir));
    }
    let secret = args.secret.clone().unwrap_or_else(random_secret);
    if secret.len() < 32 {
        bail!("the secret must be at least 32 bytes, as authchat's auth.secret is");
    }
    let launch = Launch::single(&secret, args.workers);
    let server = if args.in_process {
        if args.target != Kind::Authchat {
            bail!("--in-process runs authchat only");
        }
        start_in_process(&launch)?
    } else {
        start_child(args.target, &args.programs, &launch, dir.path())?
    };
    Ok((server, secret, dir))
}

/// A redis-server (with the Redis backend) and N authchat nodes sharing it.
pub struct Fleet {
    pub nodes: Vec<Server>,
    redis: Option<Child>,
    pub redis_url: Option<String>,
    _dir: RunDir,
}

impl Fleet {
    pub fn start(
        n: usize,
        backend: Backend,
        secret: &str,
        workers: usize,
        programs: &ProgramArgs,
    ) -> anyhow::Result<Self> {
        let dir = RunDir::new("fleet")?;
        let mut fleet = Fleet { nodes: Vec::new(), redis: None, redis_url: None, _dir: dir };
        if let Err(e) = fleet.start_processes(n, backend, secret, workers, programs) {
            fleet.stop();
            return Err(e);
        }
        Ok(fleet)
    }

    fn start_processes(
        &mut self,
        n: usize,
        backend: Backend,
        secret: &str,
        workers: usize,
        programs: &ProgramArgs,
    ) -> anyhow::Result<()> {
        let dir = self._dir.path().to_path_buf();
        if backend == Backend::Redis {
            let port = free_port()?;
            let data = dir.join("redis");
            std::fs::create_dir_all(&data)?;
            // AOF on, as scripts/cluster.sh runs it.
            let child = Command::new(&programs.redis_server)
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "yes"])
                .arg("--dir")
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(File::create(dir.join("redis.log"))?)
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("cannot start {}", programs.redis_server.display()))?;
            self.redis = Some(child);
            wait_until(Duration::from_secs(10), || redis_ping(port))
                .with_context(|| format!("redis-server did not answer on port {port}"))?;
            self.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        }
        for i in 1..=n {
            let launch = Launch {
                secret: secret.to_owned(),
                workers,
                name: format!("n{i}"),
                backend,
                redis_url: self.redis_url.clone(),
            };
            self.nodes.push(start_child(Kind::Authchat, programs, &launch, &dir)?);
        }
        Ok(())
    }

    /// Nodes first, then Redis.
    pub fn stop(mut self) {
        for node in self.nodes.drain(..) {
            node.stop();
        }
        if let Some(redis) = self.redis.take() {
            terminate("redis-server", redis, Duration::from_secs(5));
        }
    }
}

/// PING over RESP by hand (no client library for one command).
fn redis_ping(port: u16) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = StdTcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_renders_as_environment_and_as_toml() {
        assert_eq!(env_key("ws.handshake_limit.per_second"), "AUTHCHAT__WS__HANDSHAKE_LIMIT__PER_SECOND");
        let toml = tuning_toml();
        assert!(toml.contains("ws.rate_limit.burst = 1000000.0\n"));
        assert!(toml.contains("log.filter = \"warn\"\n"));
    }

    #[test]
    fn the_tuning_is_valid_authchat_configuration() {
        let settings = Settings::load(&LoadOptions {
            env_vars: Some(Default::default()),
            overrides: vec![tuning_toml()],
            ..LoadOptions::default()
        })
        .expect("the tuning loads");
        assert_eq!(settings.server.max_connections, 19000);
    }

    #[test]
    fn only_loopback_urls() {
        assert_eq!(loopback_address("ws://127.0.0.1:8080/ws").unwrap().port(), 8080);
        assert_eq!(loopback_address("http://127.0.0.9:1").unwrap().ip().to_string(), "127.0.0.9");
        assert!(loopback_address("ws://10.0.0.1:80").is_err());
        assert!(loopback_address("wss://127.0.0.1:443").is_err());
    }
}
