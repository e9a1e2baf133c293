//! Memory per idle authenticated socket: the server's resident memory (/proc/PID/status)
//! before and after opening N sockets that then sit idle, divided by N.
//!
//! Before the baseline, a warm-up batch of sockets is opened and closed, so memory the server
//! allocates once (thread-local pools, lazily built tables) is not charged to the sockets.
//! Each reading is the median of samples taken over two seconds, after `--settle` seconds. With `--join`, every socket
//! also joins one room, so the room's member entries are counted too.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use tokio::sync::{watch, Semaphore};

use super::{join, reasons, wait_for, Crowd};
use crate::client::{now_s, Carrier, ClientArgs, Dialer, Tokens};
use crate::sys::{settled_memory, Memory};
use crate::target::Server;

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Sockets to open and hold.
    #[arg(long, default_value_t = 10000)]
    pub connections: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Also join this room on every socket.
    #[arg(long)]
    pub join: Option<String>,
    /// Seconds to let the server settle once every socket is open, before reading its memory.
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
    /// Sockets opened and closed before the baseline.
    #[arg(long, default_value_t = 200)]
    pub warm_up: usize,
    /// Each memory reading is the median of samples over this many ms.
    #[arg(long, default_value_t = 2000)]
    pub window_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub opened: usize,
    pub failed: BTreeMap<String, usize>,
    pub before: Memory,
    pub held: Memory,
    /// After every socket was closed and the server had `--settle` seconds to let go of them.
    pub after: Memory,
    pub fds_held: Option<u64>,
    pub in_process: bool,
}

impl Report {
    /// Resident memory per held socket, KiB.
    pub fn rss_per_socket_kib(&self) -> f64 {
        (self.held.rss_kib as f64 - self.before.rss_kib as f64) / self.opened.max(1) as f64
    }

    pub fn anon_per_socket_kib(&self) -> f64 {
        (self.held.anon_kib as f64 - self.before.anon_kib as f64) / self.opened.max(1) as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: usize = self.failed.values().sum();
        writeln!(f, "sockets held       {} (failed {failed}){}", self.opened, reasons(&self.failed))?;
        let row = |name: &str, m: &Memory| {
            format!("{name:<18} RSS {:>9} KiB   anon {:>9} KiB   threads {}", m.rss_kib, m.anon_kib, m.threads)
        };
        writeln!(f, "{}", row("before", &self.before))?;
        writeln!(f, "{}", row("holding", &self.held))?;
        writeln!(f, "{}", row("after closing", &self.after))?;
        if let Some(fds) = self.fds_held {
            writeln!(f, "descriptors held   {fds}")?;
        }
        write!(
            f,
            "per idle socket    {:.2} KiB RSS ({:.2} KiB anonymous)",
            self.rss_per_socket_kib(),
            self.anon_per_socket_kib()
        )?;
        if self.in_process {
            write!(f, "\nnote: the server ran in this process, so these figures include the load generator's sockets")?;
        }
        Ok(())
    }
}

struct Plan {
    dialer: Dialer,
    tokens: Vec<String>,
    join: Option<String>,
    handshakes: Vec<Semaphore>,
    threads: usize,
    settled: AtomicUsize,
}

/// Opens `n` sockets (tokens `offset..offset + n`), joins when asked, holds them until
/// `release`, then closes them.
fn open_and_hold(plan: &Arc<Plan>, n: usize, released: &watch::Receiver<bool>) -> Crowd<Result<(), String>> {
    let (plan, released) = (plan.clone(), released.clone());
    Crowd::start(n, plan.threads, move |i| {
        let (plan, mut released) = (plan.clone(), released.clone());
        async move {
            let permit = plan.handshakes[i % plan.threads].acquire().await.expect("never closed");
            let opened = plan.dialer.open(i, Carrier::Query, &plan.tokens[i]).await;
            let joined = match (opened, &plan.join) {
                (Ok((mut ws, _)), Some(room)) => join(&mut ws, room).await.map(|()| ws),
                (opened, _) => opened.map(|(ws, _)| ws),
            };
            drop(permit);
            plan.settled.fetch_add(1, Ordering::Relaxed);
            let mut ws = joined?;
            // Held idle: read nothing (the server sends nothing to an idle socket but pings,
            // which wait in the kernel), until released.
            let _ = released.wait_for(|r| *r).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            Ok(())
        }
    })
}

pub fn run(server: &Server, secret: &str, kid: &str, client: &ClientArgs, options: &Options) -> anyhow::Result<Report> {
    let Some(pid) = server.pid else {
        bail!("hold reads the server's memory from /proc: it needs a server started here")
    };
    let n = options.connections;
    crate::sys::ensure_room_for(n.max(options.warm_up))?;
    let tokens = Tokens::new(secret, kid)?;
    let exp = now_s() + 3600;
    let threads = client.client_threads.max(1);
    let plan = |count: usize, what: &str| {
        Arc::new(Plan {
            dialer: Dialer::new(server.addr, client),
            tokens: (0..count).map(|i| tokens.token(&tokens.user(what, i), exp, &[])).collect(),
            join: options.join.clone(),
            handshakes: (0..threads).map(|_| Semaphore::new(options.concurrency.div_ceil(threads).max(1))).collect(),
            threads,
            settled: AtomicUsize::new(0),
        })
    };
    let window = Duration::from_millis(options.window_ms);
    let every = Duration::from_millis(options.window_ms.clamp(10, 200));
    let settle = Duration::from_secs(options.settle);

    // Warm-up: open and close a batch, then let the server drop them.
    if options.warm_up > 0 {
        let warm = plan(options.warm_up, "warm");
        let (release, released) = watch::channel(false);
        let crowd = open_and_hold(&warm, options.warm_up, &released);
        wait_for(Duration::from_secs(30), || warm.settled.load(Ordering::Relaxed) >= options.warm_up);
        let _ = release.send(true);
        crowd.join();
        std::thread::sleep(settle);
    }
    let before = settled_memory(pid, window, every).ok_or_else(|| anyhow::anyhow!("the server has gone"))?;

    let held_plan = plan(n, "hold");
    let (release, released) = watch::channel(false);
    let crowd = open_and_hold(&held_plan, n, &released);
    let limit = Duration::from_secs(120);
    if !wait_for(limit, || held_plan.settled.load(Ordering::Relaxed) >= n) {
        eprintln!("authchat-bench: not every socket opened within {limit:?}");
    }
    std::thread::sleep(settle);
    let held = settled_memory(pid, window, every).ok_or_else(|| anyhow::anyhow!("the server has gone"))?;
    let fds_held = crate::sys::open_fds(pid);
    let _ = release.send(true);
    let results = crowd.join();
    std::thread::sleep(settle);
    let after = settled_memory(pid, window, every).unwrap_or_default();

    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for why in results.iter().filter_map(|r| r.as_ref().err()) {
        *failed.entry(why.clone()).or_default() += 1;
    }
    let opened = results.iter().filter(|r| r.is_ok()).count();
    Ok(Report { opened, failed, before, held, after, fds_held, in_process: server.in_process() })
}
