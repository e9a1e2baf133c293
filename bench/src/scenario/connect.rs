//! Handshakes per second: open N authenticated sockets, `--concurrency` at a time, for each
//! carrier of the credential in turn, and time each from the TCP connect to its `welcome`
//! frame. Sockets stay open until the last one is (a reconnect storm after a restart looks
//! like this), then close.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::{watch, Semaphore};

use super::{reasons, wait_for, Crowd};
use crate::client::{now_s, now_us, Carrier, ClientArgs, Dialer, Tokens};
use crate::stats::Dist;
use crate::sys::{cpu_snapshot, cpu_used};
use crate::target::{Kind, Server};

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Sockets to open per carrier.
    #[arg(long, default_value_t = 5000)]
    pub connections: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Carriers to measure, in turn (the peers speak query and header only).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "query,header,subprotocol,ticket,first-message")]
    pub carriers: Vec<Carrier>,
}

/// One carrier's figures.
#[derive(Debug, Clone)]
pub struct Report {
    pub carrier: Carrier,
    pub opened: usize,
    pub failed: BTreeMap<String, usize>,
    /// From the first connect to the last `welcome`.
    pub seconds: f64,
    pub per_second: f64,
    /// Connect to `welcome`, ms.
    pub latency: Dist,
    /// The server's CPU time (every thread, user and system) from the first connect to the
    /// last `welcome`, per socket opened, µs; `None` when its process is not visible here or
    /// is this one. Unlike the rate, it does not depend on how much of the two cores the load
    /// generator takes.
    pub server_cpu_us: Option<f64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: usize = self.failed.values().sum();
        write!(
            f,
            "{:<14} opened {} in {:.2} s = {:.0} handshakes/s; failed {failed}{}\n{:<14} connect to welcome (ms): {}",
            self.carrier.name(),
            self.opened,
            self.seconds,
            self.per_second,
            reasons(&self.failed),
            "",
            self.latency
        )?;
        if let Some(us) = self.server_cpu_us {
            write!(f, "\n{:<14} server CPU per handshake: {us:.1} µs", "")?;
        }
        Ok(())
    }
}

/// Every carrier asked for that the server speaks, one after the other.
pub fn run(
    server: &Server,
    secret: &str,
    kid: &str,
    client: &ClientArgs,
    options: &Options,
) -> anyhow::Result<Vec<Report>> {
    crate::sys::ensure_room_for(options.connections)?;
    let mut reports = Vec::new();
    for (n, carrier) in options.carriers.iter().enumerate() {
        if !carrier.spoken_by(server.kind) {
            println!("{:<14} skipped: the {} server does not speak it", carrier.name(), server.kind.name());
            continue;
        }
        if n > 0 {
            settle(server);
        }
        let report = once(server, secret, kid, client, options, *carrier)?;
        println!("{report}");
        reports.push(report);
    }
    Ok(reports)
}

/// Waits until the server has let go of the last batch's sockets (authchat's
/// `authchat_connections_open` is 0), then the same 2 s for every server, so each next batch
/// starts on a machine as quiet (the closed sockets' kernel work done, TIME_WAIT entries made).
/// The peers report no count; 2 s is well past their last close here.
pub(crate) fn settle(server: &Server) {
    if server.kind == Kind::Authchat {
        wait_for(Duration::from_secs(10), || {
            crate::http::metrics(server.addr).is_ok_and(|m| m.get("authchat_connections_open") == Some(&0.0))
        });
    }
    std::thread::sleep(Duration::from_secs(2));
}

struct Plan {
    dialer: Dialer,
    carrier: Carrier,
    tokens: Vec<String>,
    /// Handshakes in flight, per client thread.
    handshakes: Vec<Semaphore>,
    threads: usize,
    settled: AtomicUsize,
    last_welcome_us: AtomicU64,
}

/// Sockets opened and closed, untimed, before each carrier's timed batch, so the first
/// handshakes' one-time costs (a worker's first accept, lazily built tables) are not timed.
const WARM_UP: usize = 100;

/// One carrier: a warm-up batch, then N sockets timed.
pub fn once(
    server: &Server,
    secret: &str,
    kid: &str,
    client: &ClientArgs,
    options: &Options,
    carrier: Carrier,
) -> anyhow::Result<Report> {
    let tokens = Tokens::new(secret, kid)?;
    let warm = Options { connections: WARM_UP.min(options.connections), ..options.clone() };
    batch(server, &tokens, client, &warm, carrier, "warm")?;
    settle(server);
    batch(server, &tokens, client, options, carrier, "connect")
}

pub(crate) fn batch(
    server: &Server,
    tokens: &Tokens,
    client: &ClientArgs,
    options: &Options,
    carrier: Carrier,
    what: &str,
) -> anyhow::Result<Report> {
    let n = options.connections;
    let threads = client.client_threads.max(1);
    let exp = now_s() + 900;
    // Signed before the clock starts: the client's signing is not the server's handshake.
    let signed = (0..n).map(|i| tokens.token(&tokens.user(what, i), exp, &[])).collect();
    let per_thread = options.concurrency.div_ceil(threads).max(1);
    let plan = Arc::new(Plan {
        dialer: Dialer::new(server.addr, client),
        carrier,
        tokens: signed,
        handshakes: (0..threads).map(|_| Semaphore::new(per_thread)).collect(),
        threads,
        settled: AtomicUsize::new(0),
        last_welcome_us: AtomicU64::new(0),
    });
    let (release, released) = watch::channel(false);
    let cpu_before = server.pid.filter(|_| !server.in_process()).map(|pid| (pid, cpu_snapshot(&[pid])));
    let start_us = now_us();
    let crowd = {
        let plan = plan.clone();
        Crowd::start(n, threads, move |i| {
            let (plan, mut released) = (plan.clone(), released.clone());
            async move {
                let permit = plan.handshakes[i % plan.threads].acquire().await.expect("never closed");
                let t0 = Instant::now();
                let opened = plan.dialer.open(i, plan.carrier, &plan.tokens[i]).await;
                let took = t0.elapsed();
                drop(permit);
                plan.last_welcome_us.fetch_max(now_us(), Ordering::Relaxed);
                plan.settled.fetch_add(1, Ordering::Relaxed);
                let (mut ws, _) = match opened {
                    Ok(open) => open,
                    Err(why) => return Err(why),
                };
                let _ = released.wait_for(|r| *r).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                Ok(took)
            }
        })
    };
    let limit = Duration::from_secs(60) + plan.dialer.open_timeout;
    wait_for(limit, || plan.settled.load(Ordering::Relaxed) >= n);
    let cpu_ms = cpu_before.map(|(pid, before)| {
        let used = cpu_used(&before, &cpu_snapshot(&[pid]));
        used.threads.iter().map(|t| t.ms).sum::<f64>()
    });
    let _ = release.send(true);
    let results = crowd.join();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    for result in results {
        match result {
            Ok(took) => latencies.push(took.as_secs_f64() * 1000.0),
            Err(why) => *failed.entry(why).or_default() += 1,
        }
    }
    let seconds = plan.last_welcome_us.load(Ordering::Relaxed).saturating_sub(start_us) as f64 / 1e6;
    let opened = latencies.len();
    Ok(Report {
        carrier,
        opened,
        failed,
        seconds,
        per_second: if seconds > 0.0 { opened as f64 / seconds } else { 0.0 },
        latency: Dist::of(latencies),
        server_cpu_us: cpu_ms.filter(|_| opened > 0).map(|ms| ms * 1000.0 / opened as f64),
    })
}
