//! Slow consumers: a fan-out in which some members never read. `--members` sockets join one
//! room; the last `--slow` of them have a small kernel receive buffer and read nothing while
//! the first `--senders` send `--messages` texts of `--size` characters, `--rate` a second
//! each (slow enough for the reading members to keep up; a faster burst than this one client
//! thread reads makes every member slow, and authchat closes them all with 4009). It
//! reports what the reading members got (deliveries, latency) and what became of the slow
//! ones once they start reading again: authchat closes a socket with more than
//! `ws.max_outbound_bytes` waiting with 4009 and drops what was queued, so its memory stays
//! bounded; a server that queues without limit holds every undelivered frame instead. The
//! server's RSS is sampled through the burst.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use super::{reasons, Crowd};
use crate::client::{close_code, close_label, now_s, now_us, Carrier, ClientArgs, Dialer, ServerFrame, Tokens};
use crate::stats::Dist;
use crate::target::Server;

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Members of the room.
    #[arg(long, default_value_t = 50)]
    pub members: usize,
    /// Of them, members that do not read (the last N).
    #[arg(long, default_value_t = 5)]
    pub slow: usize,
    /// Members that send (the first N).
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Messages sent in all.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Messages per second per sender, so that the reading members keep up (a burst faster
    /// than this client reads would make every member slow); 0 = back to back.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Characters per message (authchat's chat.max_text_chars is 4,000).
    #[arg(long, default_value_t = 3900)]
    pub size: usize,
    /// SO_RCVBUF of a slow member's socket, bytes.
    #[arg(long, default_value_t = 4096)]
    pub receive_buffer: u32,
    /// Seconds the slow members then read for.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
    /// Seconds to wait for the reading members' last deliveries after the last send was answered.
    #[arg(long, default_value_t = 20)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Joining,
    Sending,
    /// Slow members read what reached them.
    Draining,
    Stopping,
}

struct Plan {
    fast: Dialer,
    slow: Dialer,
    tokens: Vec<String>,
    run: String,
    room: String,
    members: usize,
    slow_from: usize,
    senders: usize,
    messages: usize,
    /// Pause between one sender's messages.
    pace: Option<Duration>,
    padding: String,
    handshakes: Semaphore,
    joined: AtomicUsize,
    failed: AtomicUsize,
    acked: AtomicUsize,
    /// Reading members that received every message.
    complete: AtomicUsize,
    last_frame_us: AtomicU64,
}

/// What one member saw.
#[derive(Debug, Default)]
struct Seen {
    slow: bool,
    error: Option<String>,
    /// Distinct messages of this run received, and the latency of each (reading members), ms.
    received: usize,
    latencies: Vec<f64>,
    last_receipt_us: u64,
    first_send_us: Option<u64>,
    /// The close code, if the server closed the socket.
    closed: Option<u16>,
}

async fn member(plan: Arc<Plan>, i: usize, phase: watch::Receiver<Phase>) -> Seen {
    let slow = i >= plan.slow_from;
    let mut seen = Seen { slow, ..Seen::default() };
    let dialer = if slow { &plan.slow } else { &plan.fast };
    let permit = plan.handshakes.acquire().await.expect("never closed");
    let opened = dialer.open(i, Carrier::Query, &plan.tokens[i]).await;
    drop(permit);
    let ws = match opened {
        Ok((ws, _)) => ws,
        Err(why) => {
            plan.failed.fetch_add(1, Ordering::Relaxed);
            seen.error = Some(why);
            return seen;
        }
    };
    let (mut sink, mut stream) = ws.split();
    let join = serde_json::json!({"type": "join", "room": plan.room}).to_string();
    if sink.send(Message::text(join)).await.is_err() {
        plan.failed.fetch_add(1, Ordering::Relaxed);
        seen.error = Some("join not sent".into());
        return seen;
    }
    let mine: Vec<usize> = if i < plan.senders { (i..plan.messages).step_by(plan.senders).collect() } else { vec![] };
    let writer = {
        let (plan, mut phase) = (plan.clone(), phase.clone());
        async move {
            let go = phase.wait_for(|p| *p >= Phase::Sending).await.map(|p| *p == Phase::Sending);
            let mut first = None;
            if matches!(go, Ok(true)) {
                for (n, g) in mine.into_iter().enumerate() {
                    if let (Some(pace), true) = (plan.pace, n > 0) {
                        tokio::time::sleep(pace).await;
                    }
                    let sent_us = now_us();
                    first.get_or_insert(sent_us);
                    let text = format!("slow {} {g} {sent_us} {}", plan.run, plan.padding);
                    let frame = serde_json::json!({"type": "send", "room": plan.room, "text": text, "ref": g});
                    if sink.send(Message::text(frame.to_string())).await.is_err() {
                        break;
                    }
                }
            }
            (sink, first)
        }
    };
    let mut phase = phase;
    let reader = async {
        let mut distinct = vec![false; plan.messages];
        let mut joined = false;
        loop {
            // A slow member reads only until it has joined, then nothing until the drain.
            if slow
                && joined
                && *phase.borrow() < Phase::Draining
                && phase.wait_for(|p| *p >= Phase::Draining).await.is_err()
            {
                break;
            }
            let next = tokio::select! {
                next = stream.next() => next,
                _ = phase.wait_for(|p| *p == Phase::Stopping) => break,
            };
            let at_us = now_us();
            plan.last_frame_us.fetch_max(at_us, Ordering::Relaxed);
            let text = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    seen.closed = Some(close_code(frame));
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    seen.error = Some(e.to_string());
                    break;
                }
                None => {
                    seen.error = Some("the connection ended without a close frame".into());
                    break;
                }
            };
            let Ok(frame) = serde_json::from_str::<ServerFrame>(text.as_str()) else { continue };
            match &*frame.kind {
                "joined" if !joined => {
                    joined = true;
                    plan.joined.fetch_add(1, Ordering::Relaxed);
                }
                "ack" => {
                    plan.acked.fetch_add(1, Ordering::Relaxed);
                }
                "message" => {
                    let mut words = frame.text.as_deref().unwrap_or_default().split(' ');
                    let ours = words.next() == Some("slow") && words.next() == Some(plan.run.as_str());
                    let g: Option<usize> = words.next().and_then(|g| g.parse().ok()).filter(|g| *g < plan.messages);
                    let sent: Option<u64> = words.next().and_then(|s| s.parse().ok());
                    let (true, Some(g), Some(sent_us)) = (ours, g, sent) else { continue };
                    if std::mem::replace(&mut distinct[g], true) {
                        continue;
                    }
                    seen.received += 1;
                    seen.last_receipt_us = at_us;
                    if !slow {
                        seen.latencies.push(at_us.saturating_sub(sent_us) as f64 / 1000.0);
                        if seen.received == plan.messages {
                            plan.complete.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ => {}
            }
        }
    };
    let ((mut sink, first), _) = tokio::join!(writer, reader);
    seen.first_send_us = first;
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    seen
}

#[derive(Debug, Clone)]
pub struct Report {
    pub readers: usize,
    /// Messages per second per sender (0: back to back).
    pub rate: f64,
    pub slow: usize,
    pub messages: usize,
    pub frame_bytes: usize,
    /// Reading members: deliveries received, expected, latency (ms), deliveries per second.
    pub delivered: usize,
    pub expected: usize,
    pub latency: Dist,
    pub per_second: f64,
    /// Slow members by how they ended (`closed 4009`, `still open`, …) and the messages they
    /// got in all.
    pub slow_ends: BTreeMap<String, usize>,
    pub slow_received: Dist,
    pub failed: BTreeMap<String, usize>,
    /// Server RSS before sending and at its highest through the burst and the drain, KiB.
    pub rss_before_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: usize = self.failed.values().sum();
        writeln!(
            f,
            "{} reading and {} slow members; {} messages of about {} bytes each{}{}",
            self.readers,
            self.slow,
            self.messages,
            self.frame_bytes,
            if self.rate > 0.0 { format!(", {} a second", self.rate) } else { String::new() },
            if failed > 0 {
                format!("; {failed} reading members failed or were closed{}", reasons(&self.failed))
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "reading members: {} of {} deliveries, {:.0}/s; latency (ms): {}",
            self.delivered, self.expected, self.per_second, self.latency
        )?;
        writeln!(f, "slow members, once they read: messages each: {}", self.slow_received)?;
        for (end, n) in &self.slow_ends {
            writeln!(f, "    {n} × {end}")?;
        }
        if let (Some(before), Some(peak)) = (self.rss_before_kib, self.rss_peak_kib) {
            write!(
                f,
                "server RSS: {before} KiB before sending, {peak} KiB at most (+{} KiB; undelivered bytes for the slow members: up to {} KiB)",
                peak.saturating_sub(before),
                (self.slow * self.messages * self.frame_bytes) / 1024
            )?;
        }
        Ok(())
    }
}

pub fn run(server: &Server, secret: &str, kid: &str, client: &ClientArgs, options: &Options) -> anyhow::Result<Report> {
    if options.slow >= options.members || options.senders == 0 || options.senders + options.slow > options.members {
        anyhow::bail!("need --senders >= 1 and --senders + --slow <= --members");
    }
    crate::sys::ensure_room_for(options.members)?;
    let tokens = Tokens::new(secret, kid)?;
    let exp = now_s() + 900;
    let mut slow_dialer = Dialer::new(server.addr, client);
    slow_dialer.receive_buffer = Some(options.receive_buffer);
    slow_dialer.config = slow_dialer.config.read_buffer_size(4096);
    let plan = Arc::new(Plan {
        fast: Dialer::new(server.addr, client),
        slow: slow_dialer,
        tokens: (0..options.members).map(|i| tokens.token(&tokens.user("slow", i), exp, &[])).collect(),
        run: tokens.run.clone(),
        room: format!("slow-{}", tokens.run),
        members: options.members,
        slow_from: options.members - options.slow,
        senders: options.senders,
        messages: options.messages,
        pace: (options.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate)),
        padding: "x".repeat(options.size.saturating_sub(40)),
        handshakes: Semaphore::new(100),
        joined: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        acked: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
        last_frame_us: AtomicU64::new(0),
    });
    let (phase, phase_rx) = watch::channel(Phase::Joining);
    let crowd = {
        let plan = plan.clone();
        Crowd::start(options.members, client.client_threads.max(1), move |i| member(plan.clone(), i, phase_rx.clone()))
    };
    let started = Instant::now();
    let settled = || plan.joined.load(Ordering::Relaxed) + plan.failed.load(Ordering::Relaxed) >= plan.members;
    while !settled() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    while now_us().saturating_sub(plan.last_frame_us.load(Ordering::Relaxed)) < 500_000
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let rss = |pid: Option<u32>| pid.and_then(crate::sys::memory).map(|m| m.rss_kib);
    let rss_before_kib = rss(server.pid);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (pid, sampling) = (server.pid, sampling.clone());
        std::thread::spawn(move || {
            let mut peak = None;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };

    let readers = options.members - options.slow;
    if plan.failed.load(Ordering::Relaxed) == 0 {
        let _ = phase.send(Phase::Sending);
        let go = Instant::now();
        let mut answered_at = None;
        loop {
            if answered_at.is_none() && plan.acked.load(Ordering::Relaxed) >= options.messages {
                answered_at = Some(Instant::now());
            }
            let waited_out = answered_at.is_some_and(|at: Instant| at.elapsed() > Duration::from_secs(options.timeout));
            if plan.complete.load(Ordering::Relaxed) >= readers || waited_out {
                break;
            }
            if go.elapsed() > Duration::from_secs(options.timeout + 60) {
                eprintln!("authchat-bench: not every send was answered; giving up");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = phase.send(Phase::Draining);
        std::thread::sleep(Duration::from_secs(options.drain));
    } else {
        eprintln!("authchat-bench: not every member joined; nothing sent");
    }
    let _ = phase.send(Phase::Stopping);
    let seen = crowd.join();
    sampling.store(false, Ordering::Relaxed);
    let rss_peak_kib = sampler.join().unwrap_or_default();

    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut slow_ends: BTreeMap<String, usize> = BTreeMap::new();
    let (mut latencies, mut delivered, mut slow_received) = (Vec::new(), 0, Vec::new());
    for s in &seen {
        if s.slow {
            let end = match (s.closed, &s.error) {
                (Some(code), _) => format!("closed with {}", close_label(code)),
                (None, Some(why)) => why.clone(),
                (None, None) => "still open".to_owned(),
            };
            *slow_ends.entry(end).or_default() += 1;
            slow_received.push(s.received as f64);
        } else {
            let why = match (s.closed, &s.error) {
                (Some(code), _) => Some(format!("closed by the server with {}", close_label(code))),
                (None, why) => why.clone(),
            };
            if let Some(why) = why {
                *failed.entry(why).or_default() += 1;
            }
            delivered += s.received;
            latencies.extend(&s.latencies);
        }
    }
    let first_send = seen.iter().filter_map(|s| s.first_send_us).min();
    let last_receipt = seen.iter().filter(|s| !s.slow).map(|s| s.last_receipt_us).max().unwrap_or(0);
    let span = first_send.map_or(0.0, |f| last_receipt.saturating_sub(f) as f64 / 1e6);
    Ok(Report {
        readers,
        rate: options.rate,
        slow: options.slow,
        messages: options.messages,
        frame_bytes: options.size + 100,
        delivered,
        expected: readers * options.messages,
        latency: Dist::of(latencies),
        per_second: if span > 0.0 { delivered as f64 / span } else { 0.0 },
        slow_ends,
        slow_received: Dist::of(slow_received),
        failed,
        rss_before_kib,
        rss_peak_kib,
    })
}
