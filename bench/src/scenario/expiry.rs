//! Expiry: how precisely a server closes sockets with 4001 at their token's `exp`, when many
//! expire in the same second (the default) or spread evenly over `--spread` seconds.
//!
//! It opens N sockets (`?token=`, `--per-user` sockets per `sub`; with `--join`, each also joins
//! one room), every token expiring a few seconds after the last socket is open, and on each records when the close frame arrives and
//! when the server then ends the TCP connection, once this client has answered the close. It
//! reports, against each socket's own `exp`:
//! - how many got 4001, closed early, got another code, ended without a close, or timed out;
//! - the lag from `exp` to the close frame's receipt (it includes this client's scheduling);
//! - the time from the close frame to the end of the TCP connection (the server lets go);
//! - authchat only: the change in its `authchat_expiry_close_lag_seconds` histogram, and with
//!   `--poll-metrics-ms` a timeline of how many sockets its registry still held;
//! - the CPU time each thread of the server and of this program used around `exp`.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use authchat::protocol::close::TOKEN_EXPIRED;
use clap::Args;
use futures_util::StreamExt as _;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{connect, join, reasons, Crowd};
use crate::client::{close_code, close_label, now_us, Carrier, ClientArgs, Dialer, Tokens};
use crate::stats::Dist;
use crate::sys::{cpu_snapshot, cpu_used, CpuSnapshot, CpuUse, ThreadCpu};
use crate::target::{Kind, Server};

/// The project's target for a socket's close after its `exp`, ms.
pub const TARGET_MS: f64 = 100.0;
const CLOSES_4001: &str = "authchat_closes_total{code=\"4001\"}";
const LAG_HISTOGRAM: &str = "authchat_expiry_close_lag_seconds";

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Sockets to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Sockets per user (`sub`); authchat's `ws.max_connections_per_user` (32) must allow it.
    #[arg(long, default_value_t = 10)]
    pub per_user: usize,
    /// Seconds over which the `exp`s are spread evenly, in whole seconds; 0 = all in one second.
    #[arg(long, default_value_t = 0)]
    pub spread: u64,
    /// Seconds from the start to the first `exp` [default: 2 s plus twice the time N
    /// handshakes take at the rate a probe of a few hundred measures first, so opening ends well
    /// before `exp` on a slow server or a busy machine].
    #[arg(long)]
    pub exp_in: Option<u64>,
    /// Seconds after its `exp` a socket may take to be closed before it counts as not closed.
    #[arg(long, default_value_t = 10)]
    pub close_timeout: u64,
    /// authchat only: poll GET /metrics every this many ms around `exp` for a server-side
    /// timeline (its registry's open count, sockets stopped with 4001); 0 = off.
    #[arg(long, default_value_t = 0)]
    pub poll_metrics_ms: u64,
    /// Also join this room on every socket once it is open, so every expiry is also a departure
    /// from it (the room's presence traffic is then part of what the closes wait for).
    #[arg(long)]
    pub join: Option<String>,
}

/// How one connection ended.
#[derive(Debug)]
enum End {
    /// The upgrade or the `welcome` frame failed.
    NotOpened(String),
    /// A close frame arrived at `at_us` (Unix µs); the server ended the TCP connection at
    /// `eof_us` (`None`: not within 2 s of the close).
    Close { code: u16, at_us: u64, eof_us: Option<u64> },
    /// The connection ended without a close frame.
    Dropped { at_us: u64, why: String },
    /// Nothing arrived before `exp + close_timeout`.
    Timeout,
}

struct Plan {
    dialer: Dialer,
    tokens: Vec<String>,
    /// Each socket's `exp`, Unix µs.
    exps_us: Vec<u64>,
    close_timeout: Duration,
    handshakes: Vec<Semaphore>,
    threads: usize,
    join: Option<String>,
    opened: AtomicUsize,
    failed: AtomicUsize,
    /// Open sockets whose close frame (or end, or timeout) has arrived.
    settled: AtomicUsize,
}

/// One socket: open it, then wait for the close and note when it comes and when TCP ends.
async fn connection(plan: Arc<Plan>, i: usize) -> End {
    let permit = plan.handshakes[i % plan.threads].acquire().await.expect("never closed");
    let opened = match (plan.dialer.open(i, Carrier::Query, &plan.tokens[i]).await, &plan.join) {
        (Ok((mut ws, _)), Some(room)) => join(&mut ws, room).await.map(|()| ws),
        (opened, _) => opened.map(|(ws, _)| ws),
    };
    drop(permit);
    let mut ws = match opened {
        Ok(ws) => ws,
        Err(why) => {
            plan.failed.fetch_add(1, Ordering::Relaxed);
            return End::NotOpened(why);
        }
    };
    plan.opened.fetch_add(1, Ordering::Relaxed);
    let give_up_us = plan.exps_us[i] + plan.close_timeout.as_micros() as u64;
    let give_up = Instant::now() + Duration::from_micros(give_up_us.saturating_sub(now_us()));
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
                // tungstenite answers the close on the next poll; the server should then end
                // the TCP connection.
                let eof = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = ws.next().await {}
                    now_us()
                });
                return End::Close { code: close_code(frame), at_us, eof_us: eof.await.ok() };
            }
            Ok(Some(Ok(_))) => {} // `expiring`, pings (answered by tungstenite)
            Ok(Some(Err(e))) => return End::Dropped { at_us, why: e.to_string() },
            Ok(None) => return End::Dropped { at_us, why: "ended without a close frame".into() },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub n: usize,
    pub spread: u64,
    pub closed: usize,
    pub early: usize,
    pub other_codes: BTreeMap<u16, usize>,
    pub dropped: BTreeMap<String, usize>,
    pub timeouts: usize,
    pub not_opened: BTreeMap<String, usize>,
    /// Handshakes per second while opening.
    pub opened_per_second: f64,
    /// Whether the last socket opened at least 0.5 s before the first `exp`.
    pub margin_ok: bool,
    /// From each socket's `exp` to its close frame's receipt, ms.
    pub lag: Dist,
    pub within_target: usize,
    /// From the close frame's receipt to the end of TCP, ms.
    pub released: Dist,
    pub not_released: usize,
    /// Receipts per time slice after `exp`, as bars.
    pub bars: String,
    /// authchat's histogram, CPU per thread, the server timeline: already formatted.
    pub server_side: String,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.closed == self.n && self.early == 0 && self.margin_ok
    }

    pub fn verdict(&self) -> String {
        if self.closed != self.n {
            format!("FAILED: {} of {} sockets were not closed with 4001 at or after exp", self.n - self.closed, self.n)
        } else if !self.margin_ok {
            "SETUP PROBLEM: the last socket opened less than 0.5 s before the first exp, so the measurement \
             overlaps the opening; rerun with a larger --exp-in"
                .to_owned()
        } else {
            format!("OK: all {} sockets were closed with 4001, none before exp", self.n)
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spread = match self.spread {
            0 => "all in one second".to_owned(),
            s => format!("spread over {} seconds", s + 1),
        };
        writeln!(f, "sockets                  {} (exp {spread}; opened at {:.0}/s)", self.n, self.opened_per_second)?;
        writeln!(f, "closed with 4001         {}", self.closed)?;
        writeln!(f, "closed before exp        {}", self.early)?;
        for (code, count) in &self.other_codes {
            writeln!(f, "closed with {:<12} {count}", close_label(*code))?;
        }
        for (why, count) in &self.dropped {
            writeln!(f, "ended without close      {count} ({why})")?;
        }
        writeln!(f, "not closed in time       {}", self.timeouts)?;
        let not_opened: usize = self.not_opened.values().sum();
        writeln!(f, "not opened               {not_opened}{}", reasons(&self.not_opened))?;
        if self.lag.n > 0 {
            writeln!(f, "\nlag from exp to the close frame's receipt, ms (includes this client's own scheduling):")?;
            writeln!(
                f,
                "  {}   within {TARGET_MS} ms: {}/{} ({:.1} %)",
                self.lag,
                self.within_target,
                self.lag.n,
                100.0 * self.within_target as f64 / self.lag.n as f64
            )?;
            write!(f, "{}", self.bars)?;
            writeln!(
                f,
                "then the server ended TCP after (ms): {}; not within 2 s: {}",
                self.released, self.not_released
            )?;
        }
        write!(f, "{}", self.server_side)?;
        write!(f, "\n{}", self.verdict())
    }
}

pub fn run(server: &Server, secret: &str, kid: &str, client: &ClientArgs, options: &Options) -> anyhow::Result<Report> {
    let n = options.connections;
    if n == 0 || options.per_user == 0 || options.concurrency == 0 {
        anyhow::bail!("--connections, --per-user and --concurrency must be above 0");
    }
    crate::sys::ensure_room_for(n)?;
    let is_authchat = server.kind == Kind::Authchat;
    let metrics_before = if is_authchat { crate::http::metrics(server.addr).ok() } else { None };

    let tokens = Tokens::new(secret, kid)?;
    let exp_in = match options.exp_in {
        Some(exp_in) => exp_in,
        None => {
            let probe = connect::Options {
                connections: (n / 10).clamp(20, 500),
                concurrency: options.concurrency,
                carriers: vec![],
            };
            let rate = connect::batch(server, &tokens, client, &probe, Carrier::Query, "probe")?.per_second;
            connect::settle(server);
            2 + (2.0 * n as f64 / rate.max(1.0)).ceil() as u64
        }
    };
    let start_us = now_us();
    let first_exp = (start_us / 1000 + exp_in * 1000).div_ceil(1000);
    let exps: Vec<u64> = (0..n).map(|i| first_exp + (i as u64 * (options.spread + 1)) / n as u64).collect();
    let signed = exps
        .iter()
        .enumerate()
        .map(|(i, exp)| tokens.token(&tokens.user("expiry", i / options.per_user), *exp, &[]))
        .collect();
    let threads = client.client_threads.max(1);
    let plan = Arc::new(Plan {
        dialer: Dialer::new(server.addr, client),
        tokens: signed,
        exps_us: exps.iter().map(|e| e * 1_000_000).collect(),
        close_timeout: Duration::from_secs(options.close_timeout),
        handshakes: (0..threads).map(|_| Semaphore::new(options.concurrency.div_ceil(threads).max(1))).collect(),
        threads,
        join: options.join.clone(),
        opened: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        settled: AtomicUsize::new(0),
    });
    let first_exp_us = first_exp * 1_000_000;
    let last_exp_us = exps.last().copied().unwrap_or(first_exp) * 1_000_000;
    println!(
        "opening {n} sockets, {} at a time; the first token expires in {:.1} s",
        options.concurrency,
        (first_exp_us - start_us) as f64 / 1e6
    );
    let crowd = {
        let plan = plan.clone();
        Crowd::start(n, threads, move |i| connection(plan.clone(), i))
    };
    let poller = (is_authchat && options.poll_metrics_ms > 0).then(|| {
        let closes_before = metrics_before.as_ref().and_then(|m| m.get(CLOSES_4001).copied()).unwrap_or(0.0);
        let until_us = last_exp_us + options.close_timeout * 1_000_000;
        let every = Duration::from_millis(options.poll_metrics_ms);
        poll_metrics(server.addr, every, first_exp_us.saturating_sub(100_000), until_us, closes_before, n)
    });

    // Watch the run: when opening ended, and the CPU around the closes.
    let pids: Vec<u32> = std::iter::once(std::process::id())
        .chain(server.pid)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (mut all_open_at, mut cpu_before, mut cpu_at_last_close) = (None, None, None);
    while !crowd.is_finished() {
        std::thread::sleep(Duration::from_millis(10));
        let now = now_us();
        let (opened, failed) = (plan.opened.load(Ordering::Relaxed), plan.failed.load(Ordering::Relaxed));
        if all_open_at.is_none() && opened + failed >= n {
            all_open_at = Some(now);
        }
        if cpu_before.is_none() && now + 100_000 >= first_exp_us {
            cpu_before = Some(cpu_snapshot(&pids));
        }
        if cpu_before.is_some() && cpu_at_last_close.is_none() && plan.settled.load(Ordering::Relaxed) + failed >= n {
            cpu_at_last_close = Some((now, cpu_snapshot(&pids)));
        }
    }
    let cpu_after = cpu_snapshot(&pids);
    let ends = crowd.join();
    let samples = poller.map(|p| p.join().unwrap_or_default()).unwrap_or_default();
    let metrics_after = if is_authchat { crate::http::metrics(server.addr).ok() } else { None };

    let mut server_side = String::new();
    if let (Some(before), Some(after)) = (&metrics_before, &metrics_after) {
        server_side.push_str(&histogram(before, after));
    }
    if !samples.is_empty() {
        server_side.push_str(&timeline(&samples, first_exp_us, options.poll_metrics_ms));
    }
    if let Some(before) = &cpu_before {
        let own = std::process::id();
        match &cpu_at_last_close {
            Some((at, last)) => {
                let title = format!(
                    "first exp - 0.1 s to +{:.0} ms (every close frame received)",
                    (*at as f64 - first_exp_us as f64) / 1000.0
                );
                server_side.push_str(&cpu_table(&title, before, last, own, server.in_process()));
                let title = "then until every socket was done (closing handshakes, TCP ends)";
                server_side.push_str(&cpu_table(title, last, &cpu_after, own, server.in_process()));
            }
            None => server_side.push_str(&cpu_table(
                "first exp - 0.1 s until the end",
                before,
                &cpu_after,
                own,
                server.in_process(),
            )),
        }
    }
    let opened = plan.opened.load(Ordering::Relaxed);
    let opened_per_second =
        all_open_at.map_or(0.0, |at| opened as f64 / ((at.saturating_sub(start_us)) as f64 / 1e6).max(1e-3));
    Ok(summarise(
        &plan,
        options,
        ends,
        all_open_at.is_some_and(|at| at + 500_000 <= first_exp_us),
        opened_per_second,
        server_side,
    ))
}

fn summarise(
    plan: &Plan,
    options: &Options,
    ends: Vec<End>,
    margin_ok: bool,
    opened_per_second: f64,
    server_side: String,
) -> Report {
    let mut lags = Vec::new();
    let (mut eofs, mut not_released) = (Vec::new(), 0);
    let (mut early, mut timeouts) = (0, 0);
    let mut other_codes: BTreeMap<u16, usize> = BTreeMap::new();
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    let mut not_opened: BTreeMap<String, usize> = BTreeMap::new();
    for (i, end) in ends.into_iter().enumerate() {
        let exp_us = plan.exps_us[i];
        match end {
            End::Close { at_us, .. } | End::Dropped { at_us, .. } if at_us < exp_us => early += 1,
            End::Close { code: TOKEN_EXPIRED, at_us, eof_us } => {
                lags.push((at_us - exp_us) as f64 / 1000.0);
                match eof_us {
                    Some(eof) => eofs.push((eof - at_us) as f64 / 1000.0),
                    None => not_released += 1,
                }
            }
            End::Close { code, .. } => *other_codes.entry(code).or_default() += 1,
            End::Dropped { why, .. } => *dropped.entry(why).or_default() += 1,
            End::Timeout => timeouts += 1,
            End::NotOpened(why) => *not_opened.entry(why).or_default() += 1,
        }
    }
    lags.sort_by(f64::total_cmp);
    Report {
        n: plan.tokens.len(),
        spread: options.spread,
        closed: lags.len(),
        early,
        other_codes,
        dropped,
        timeouts,
        not_opened,
        opened_per_second,
        margin_ok,
        within_target: lags.iter().filter(|l| **l <= TARGET_MS).count(),
        bars: bars(&lags),
        lag: Dist::of(lags),
        released: Dist::of(eofs),
        not_released,
        server_side,
    }
}

/// Receipts per time slice after `exp`, as bars, to show whether closes arrive in batches.
fn bars(sorted_lags: &[f64]) -> String {
    let Some(max) = sorted_lags.last().copied() else { return String::new() };
    let width = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        .into_iter()
        .find(|w| max / w < 30.0)
        .unwrap_or(1000.0);
    let mut bins = vec![0usize; (max / width) as usize + 1];
    let last = bins.len() - 1;
    for lag in sorted_lags {
        bins[((lag / width) as usize).min(last)] += 1;
    }
    let tallest = bins.iter().copied().max().unwrap_or(1).max(1);
    let mut out = format!("  receipts per {width} ms after exp:\n");
    for (i, count) in bins.iter().enumerate() {
        let bar = "#".repeat((40 * count).div_ceil(tallest));
        let _ = writeln!(out, "  {:>7.0} ms  {bar:<40} {count}", i as f64 * width);
    }
    out
}

/// The change in authchat's `authchat_expiry_close_lag_seconds` over the run.
fn histogram(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> String {
    let delta = |key: &str| after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0);
    let count = delta(&format!("{LAG_HISTOGRAM}_count"));
    let mut out = format!("\nserver: {LAG_HISTOGRAM} (per socket: exp to its actor handling the close)\n");
    if count == 0.0 {
        out.push_str("  no observations\n");
        return out;
    }
    let sum = delta(&format!("{LAG_HISTOGRAM}_sum"));
    let prefix = format!("{LAG_HISTOGRAM}_bucket{{le=\"");
    let mut buckets: Vec<(f64, String, f64)> = after
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix("\"}")))
        .map(|le| {
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
            (bound, le.to_owned(), delta(&format!("{prefix}{le}\"}}")))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let upper = |p: f64| {
        buckets.iter().find(|(_, _, c)| *c >= p * count).map_or("?".to_owned(), |(_, le, _)| format!("<= {le} s"))
    };
    let _ = writeln!(
        out,
        "  count {count}  mean {:.2} ms  p50 {}  p99 {}  max {}",
        1000.0 * sum / count,
        upper(0.5),
        upper(0.99),
        upper(1.0)
    );
    let cumulative: Vec<String> = buckets.iter().map(|(_, le, c)| format!("le {le}: {c}")).collect();
    let _ = writeln!(out, "  cumulative: {}", cumulative.join(", "));
    let _ = writeln!(out, "  {CLOSES_4001} +{}", delta(CLOSES_4001));
    out
}

/// CPU per thread between two snapshots, and what the rest of the machine took.
fn cpu_table(title: &str, before: &CpuSnapshot, after: &CpuSnapshot, own: u32, in_process: bool) -> String {
    let CpuUse { threads, machine } = cpu_used(before, after);
    let mut out = format!("\nCPU time per thread, {title} (ms):\n");
    let (mut server, mut client) = (0.0, 0.0);
    for ThreadCpu { pid, name, ms } in &threads {
        let is_client = *pid == own && (!in_process || name.starts_with("client-"));
        let role = if is_client { "load generator" } else { "server" };
        if is_client {
            client += ms;
        } else {
            server += ms;
        }
        if *ms >= 1.0 {
            let _ = writeln!(out, "  {ms:>8.1}  {role}: {name}");
        }
    }
    let _ = writeln!(out, "  server total {server:.1} ms, load generator total {client:.1} ms");
    if let Some((busy, total)) = machine {
        let others = (busy - server - client).max(0.0);
        let _ = writeln!(
            out,
            "  whole machine: {busy:.0} of {total:.0} ms busy ({:.0} %); other processes about {others:.0} ms",
            100.0 * busy / total.max(1.0)
        );
    }
    out
}

/// One `GET /metrics` for the server timeline.
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent_us: u64,
    answered_us: u64,
    /// `authchat_connections_open`: connections the registry still holds.
    open: f64,
    /// Sockets stopped with 4001 since the run began.
    stopped: f64,
}

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
            let Ok(metrics) = crate::http::metrics(addr) else { break };
            let answered_us = now_us();
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
fn timeline(samples: &[Sample], exp_us: u64, every_ms: u64) -> String {
    let ms = |us: u64| (us as f64 - exp_us as f64) / 1000.0;
    let mut out = format!(
        "\nserver timeline (GET /metrics every {every_ms} ms; each read between `sent` and `answered`, ms from exp):\n"
    );
    let _ = writeln!(out, "  {:>9} {:>9} {:>15} {:>18}", "sent", "answered", "registry holds", "stopped with 4001");
    let mut previous: Option<(f64, f64)> = None;
    for (i, s) in samples.iter().enumerate() {
        if previous != Some((s.open, s.stopped)) || i + 1 == samples.len() {
            let _ =
                writeln!(out, "  {:>+9.1} {:>+9.1} {:>15} {:>18}", ms(s.sent_us), ms(s.answered_us), s.open, s.stopped);
        }
        previous = Some((s.open, s.stopped));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_bin_every_lag() {
        let text = bars(&[1.0, 2.0, 3.0, 250.0]);
        assert!(text.contains("receipts per 10 ms"), "{text}");
        let counted: usize =
            text.lines().skip(1).filter_map(|l| l.split_whitespace().last()?.parse::<usize>().ok()).sum();
        assert_eq!(counted, 4);
        assert_eq!(bars(&[]), "");
    }

    #[test]
    fn the_histogram_is_read_as_a_change_over_the_run() {
        let m = |count: f64, fast: f64| -> BTreeMap<String, f64> {
            [
                (format!("{LAG_HISTOGRAM}_count"), count),
                (format!("{LAG_HISTOGRAM}_sum"), count * 0.01),
                (format!("{LAG_HISTOGRAM}_bucket{{le=\"0.05\"}}"), fast),
                (format!("{LAG_HISTOGRAM}_bucket{{le=\"+Inf\"}}"), count),
            ]
            .into_iter()
            .collect()
        };
        let text = histogram(&m(10.0, 10.0), &m(110.0, 60.0));
        assert!(text.contains("count 100"), "{text}");
        assert!(text.contains("p50 <= 0.05 s") && text.contains("p99 <= +Inf s"), "{text}");
    }
}
