//! A real Redis Cluster for the tests: six `redis-server --cluster-enabled yes` processes made
//! into three primaries with one replica each by `redis-cli --cluster create`, with a short
//! `cluster-node-timeout` so that a killed primary's replica takes over within seconds.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Three primaries, each with one replica.
const SERVERS: usize = 6;
/// How long a primary may be unreachable before its replica takes over (ms).
const NODE_TIMEOUT_MS: u64 = 1000;
/// Forming the cluster (a busy machine) is done within this.
const FORM_WAIT: Duration = Duration::from_secs(60);

pub struct RedisCluster {
    servers: Vec<Server>,
    dir: PathBuf,
}

struct Server {
    port: u16,
    child: Option<Child>,
}

impl RedisCluster {
    /// Starts the six servers, forms the cluster and waits until every server sees every slot
    /// served and every replica is in sync.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("authchat-shards-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut servers = Vec::new();
        for _ in 0..SERVERS {
            let port = port_with_free_bus();
            let child = spawn(&dir, port);
            servers.push(Server { port, child: Some(child) });
        }
        let cluster = Self { servers, dir };
        for server in &cluster.servers {
            let deadline = Instant::now() + FORM_WAIT;
            while tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.is_err() {
                assert!(Instant::now() < deadline, "redis-server on {} did not start", server.port);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let addresses: Vec<String> = cluster.servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli (package redis-tools) creates the cluster");
        assert!(out.status.success(), "redis-cli --cluster create failed:\n{}", String::from_utf8_lossy(&out.stdout));
        cluster.wait_formed().await;
        cluster
    }

    /// Seed URLs, comma separated, for `AUTHCHAT__REDIS__CLUSTER_NODES`.
    pub fn seeds(&self) -> String {
        self.servers.iter().map(|s| format!("redis://127.0.0.1:{}", s.port)).collect::<Vec<_>>().join(",")
    }

    /// Waits until a live server reports `cluster_state:ok` and every live primary has its
    /// slots and a replica, as seen from every live server.
    async fn wait_formed(&self) {
        let deadline = Instant::now() + FORM_WAIT;
        loop {
            let mut ready = true;
            for server in self.servers.iter().filter(|s| s.child.is_some()) {
                let info = cli(server.port, &["cluster", "info"]);
                ready &= info.contains("cluster_state:ok");
            }
            let primaries = self.primaries();
            // Every primary's replica has finished its first sync, so WAIT can count it.
            ready &= primaries.iter().all(|(port, _)| {
                let replication = cli(*port, &["info", "replication"]);
                replication.contains("connected_slaves:1") && replication.contains("state=online")
            });
            if ready && primaries.len() == 3 {
                return;
            }
            assert!(Instant::now() < deadline, "the Redis Cluster did not form within {FORM_WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (port, slot ranges) of each live primary, as a live server sees them.
    pub fn primaries(&self) -> Vec<(u16, Vec<(u16, u16)>)> {
        let Some(server) = self.servers.iter().find(|s| s.child.is_some()) else { return Vec::new() };
        cli(server.port, &["cluster", "nodes"])
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let port = fields[1].split('@').next()?.rsplit_once(':')?.1.parse().ok()?;
                let ranges: Vec<(u16, u16)> = fields[8..]
                    .iter()
                    .filter(|r| !r.starts_with('['))
                    .filter_map(|r| match r.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => r.parse().ok().map(|s| (s, s)),
                    })
                    .collect();
                (!ranges.is_empty()).then_some((port, ranges))
            })
            .collect()
    }

    /// The port of the primary that serves `room` now.
    pub fn primary_of(&self, room: &str) -> u16 {
        let server = self.servers.iter().find(|s| s.child.is_some()).expect("a live server");
        let slot: u16 = cli(server.port, &["cluster", "keyslot", &format!("{{r:{room}}}")]).trim().parse().unwrap();
        self.primaries()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(port, _)| port)
            .unwrap_or_else(|| panic!("no primary serves slot {slot} of {room}"))
    }

    /// A crash: SIGKILL the server on `port`.
    pub fn kill9(&mut self, port: u16) {
        let server = self.servers.iter_mut().find(|s| s.port == port).expect("one of ours");
        if let Some(mut child) = server.child.take() {
            let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Starts the killed server on `port` again, as an orchestrator would: it rejoins the
    /// cluster as a replica of the primary that replaced it. Answers once that replica is in sync.
    pub async fn restart(&mut self, port: u16) {
        let server = self.servers.iter_mut().find(|s| s.port == port).expect("one of ours");
        assert!(server.child.is_none(), "{port} is running");
        server.child = Some(spawn(&self.dir, port));
        self.wait_formed().await;
    }

    /// Waits until the cluster serves every slot again without the killed servers; answers
    /// how long that took.
    pub async fn wait_failed_over(&self) -> Duration {
        let start = Instant::now();
        loop {
            let primaries = self.primaries();
            let live: Vec<u16> = self.servers.iter().filter(|s| s.child.is_some()).map(|s| s.port).collect();
            let served: usize = primaries.iter().flat_map(|(_, r)| r.iter().map(|(a, b)| usize::from(b - a) + 1)).sum();
            let state_ok = live.iter().all(|p| cli(*p, &["cluster", "info"]).contains("cluster_state:ok"));
            if served == 16384 && state_ok && primaries.iter().all(|(p, _)| live.contains(p)) {
                return start.elapsed();
            }
            assert!(start.elapsed() < FORM_WAIT, "no replica took over within {FORM_WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Subscribers of the sharded `channel` on the server on `port` (`PUBSUB SHARDNUMSUB`).
    pub fn shard_subscribers(&self, port: u16, channel: &str) -> u64 {
        let out = cli(port, &["pubsub", "shardnumsub", channel]);
        out.lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// `INFO commandstats` calls of `command` on each live primary, by port.
    pub fn calls(&self, command: &str) -> Vec<(u16, u64)> {
        let field = format!("cmdstat_{}:calls=", command.to_lowercase());
        self.primaries()
            .into_iter()
            .map(|(port, _)| {
                let stats = cli(port, &["info", "commandstats"]);
                let calls = stats
                    .lines()
                    .find_map(|l| l.strip_prefix(&field))
                    .and_then(|rest| rest.split(',').next()?.parse().ok())
                    .unwrap_or(0);
                (port, calls)
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One cluster-enabled server; its `nodes-<port>.conf` in `dir` keeps its identity across
/// restarts.
fn spawn(dir: &std::path::Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        .arg("--cluster-config-file")
        .arg(dir.join(format!("nodes-{port}.conf")))
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); install it: apt-get install redis-server"))
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free port whose cluster bus port (+10000) is free too.
fn port_with_free_bus() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
