//! Fan-out: how fast one room's messages reach every member, on one server, or spread over
//! several authchat nodes that share Redis (the cross-node fan-out).
//!
//! It opens `--members` sockets (one user each), dealt round-robin over the nodes, and has each
//! join `--room`. When every member has its `joined` and the traffic has died down (authchat
//! announces each join to the room: members² presence frames), the first `--senders` members
//! send `--messages` messages between them, back to back or at `--rate`, each text carrying its
//! send time. Every member records, per message, the time from send to receipt. It reports
//! deliveries received, missing and duplicated, sends refused, throughput (deliveries / (last
//! receipt - first send)) and latency (p50, p99, max), overall, per receiving node (as its
//! `welcome` named it) and, with several nodes, from each sending node to each receiving node.
//!
//! Without a shared engine (`--backend memory`) a room lives on one node: with several nodes
//! members receive only the messages sent on their own node, and the rest count as missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use super::Crowd;
use crate::client::{now_s, now_us, Carrier, ClientArgs, Dialer, ServerFrame, Tokens};
use crate::stats::percentile;
use crate::target::{Backend, Fleet, ProgramArgs, ServerArgs};

/// Quiet time after the last join before sending: presence announcements must be over, or
/// their fan-out would be measured with the messages.
const SETTLE_QUIET: Duration = Duration::from_millis(500);

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Members of the room, one socket and one user each.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Messages sent in all.
    #[arg(long, default_value_t = 200)]
    pub messages: usize,
    /// Members that send (the first N, dealt over the nodes like every member).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Messages per second per sender; 0 = back to back.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Seconds opening and joining may take in all.
    #[arg(long, default_value_t = 60)]
    pub join_timeout: u64,
    /// Seconds to wait for the last deliveries after the last send was answered.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            members: 1000,
            messages: 200,
            senders: 10,
            rate: 0.0,
            room: "bench".into(),
            concurrency: 100,
            join_timeout: 60,
            timeout: 10,
        }
    }
}

/// Which nodes: one server (`--target`, `--url`), authchat nodes started here, or nodes
/// already running.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Start a redis-server (with --backend redis) and this many authchat nodes per run; a list
    /// runs each in turn and compares them, e.g. 1,3.
    #[arg(long, value_delimiter = ',', conflicts_with = "nodes")]
    pub spawn: Vec<usize>,
    /// With --spawn: the nodes' store.backend; a list runs each.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "redis")]
    pub backend: Vec<Backend>,
    /// authchat nodes already running, comma-separated ws:// or http:// URLs (loopback only),
    /// e.g. scripts/cluster.sh's; needs --secret or --secret-file.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// A file holding the nodes' secret (scripts/cluster.sh writes one).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
}

impl NodeArgs {
    /// The secret of `--nodes`, from --secret or --secret-file.
    pub fn given_secret(&self, server: &ServerArgs) -> anyhow::Result<String> {
        let secret = match (&server.secret, &self.secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => bail!("--nodes needs --secret, --secret-file or AUTHCHAT__AUTH__SECRET"),
        };
        if secret.len() < 32 {
            bail!("the secret must be at least 32 bytes, as the nodes' auth.secret is");
        }
        Ok(secret)
    }
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub label: String,
    pub members: usize,
    pub deliveries: usize,
    pub expected: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub missing: usize,
    pub duplicates: usize,
    pub refused: usize,
    /// Members that gave up (failed handshake, refused join, lost connection).
    pub failed: usize,
    /// The full report, as printed.
    pub text: String,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.refused == 0 && self.failed == 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The fan-out subcommand: every run asked for, then a comparison when there was more than one.
pub fn main(server: &ServerArgs, nodes: &NodeArgs, client: &ClientArgs, options: &Options) -> anyhow::Result<bool> {
    check(options, client)?;
    let mut summaries = Vec::new();
    if !nodes.nodes.is_empty() {
        let secret = nodes.given_secret(server)?;
        let addrs =
            nodes.nodes.iter().map(|u| crate::target::loopback_address(u)).collect::<anyhow::Result<Vec<_>>>()?;
        let summary = run(&addrs, &secret, &server.kid, client, options, "given nodes")?;
        println!("{summary}");
        summaries.push(summary);
    } else if !nodes.spawn.is_empty() {
        for backend in &nodes.backend {
            for &n in &nodes.spawn {
                let label = format!("{n} node{}, {}", if n == 1 { "" } else { "s" }, backend.name());
                println!("=== {label} ===");
                let secret = server.secret.clone().unwrap_or_else(crate::target::random_secret);
                let summary = on_fleet(n, *backend, &secret, server.workers, &server.programs, |addrs| {
                    run(addrs, &secret, &server.kid, client, options, &label)
                })?;
                println!("{summary}");
                summaries.push(summary);
                println!();
            }
        }
    } else {
        let (target, secret, _dir) = crate::target::from_args(server, "fanout")?;
        println!("fanout: {} server at ws://{}", target.kind.name(), target.addr);
        let outcome = run(&[target.addr], &secret, &server.kid, client, options, target.kind.name());
        target.stop();
        let summary = outcome?;
        println!("{summary}");
        summaries.push(summary);
    }
    if summaries.len() > 1 {
        println!(
            "=== comparison ({} members, {} messages, {} senders) ===",
            options.members, options.messages, options.senders
        );
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
    Ok(summaries.iter().all(Summary::ok))
}

/// Starts `n` nodes, runs `f` on their addresses, and stops them whatever happened.
pub fn on_fleet<T>(
    n: usize,
    backend: Backend,
    secret: &str,
    workers: usize,
    programs: &ProgramArgs,
    f: impl FnOnce(&[SocketAddr]) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if n == 0 {
        bail!("--spawn needs node counts of at least 1");
    }
    let fleet = Fleet::start(n, backend, secret, workers, programs)?;
    let addrs: Vec<SocketAddr> = fleet.nodes.iter().map(|s| s.addr).collect();
    println!(
        "started {n} node{} ({}){}",
        if n == 1 { "" } else { "s" },
        addrs.iter().map(|a| format!("ws://{a}")).collect::<Vec<_>>().join(", "),
        fleet.redis_url.as_ref().map(|u| format!(" on {u}")).unwrap_or_default()
    );
    let outcome = f(&addrs);
    fleet.stop();
    outcome
}

fn check(options: &Options, client: &ClientArgs) -> anyhow::Result<()> {
    if options.members == 0 || options.senders == 0 || options.senders > options.members {
        bail!("need --members >= --senders >= 1");
    }
    if options.concurrency == 0 || options.messages == 0 || client.client_threads == 0 {
        bail!("need --concurrency, --messages and --client-threads of at least 1");
    }
    crate::sys::ensure_room_for(options.members)
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
    dialers: Vec<Dialer>,
    room: String,
    tokens: Vec<String>,
    /// Tells this run's messages apart from older ones in the room's history.
    run: String,
    messages: usize,
    senders: usize,
    /// Pause between one sender's messages (`--rate`).
    pace: Option<Duration>,
    handshakes: Vec<Semaphore>,
    threads: usize,
    opened: AtomicUsize,
    /// Members that got `joined`.
    joined: AtomicUsize,
    /// Members that gave up.
    failed: AtomicUsize,
    /// Every frame received, and when the last one came, to see traffic settle.
    frames: AtomicUsize,
    last_frame_us: AtomicU64,
    /// Sends answered with `ack`, or refused with `error`.
    acked: AtomicUsize,
    refused: AtomicUsize,
    /// Members that received every message.
    complete: AtomicUsize,
}

impl Plan {
    /// The text of message `g`: run id, message number, send time.
    fn text(&self, g: usize, sent_us: u64) -> String {
        format!("fanout {} {g} {sent_us}", self.run)
    }

    /// Message number and send time of a text of this run.
    fn parse_text(&self, text: &str) -> Option<(usize, u64)> {
        let mut words = text.split(' ');
        if words.next()? != "fanout" || words.next()? != self.run {
            return None;
        }
        let g = words.next()?.parse().ok().filter(|g| *g < self.messages)?;
        Some((g, words.next()?.parse().ok()?))
    }
}

/// What one member saw.
#[derive(Default)]
struct MemberResult {
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

/// One member: open, join, wait for [`Phase::Sending`] and send its share (senders only), and
/// receive until [`Phase::Stopping`].
async fn member(plan: Arc<Plan>, i: usize, phase: watch::Receiver<Phase>) -> MemberResult {
    let mut result = MemberResult::default();
    let dialer = &plan.dialers[i % plan.dialers.len()];
    let permit = plan.handshakes[i % plan.threads].acquire().await.expect("never closed");
    let opened = dialer.open(i, Carrier::Query, &plan.tokens[i]).await;
    drop(permit);
    let ws = match opened {
        Ok((ws, welcome)) => {
            result.node = welcome.node;
            ws
        }
        Err(why) => {
            plan.failed.fetch_add(1, Ordering::Relaxed);
            result.error = Some(why);
            return result;
        }
    };
    plan.opened.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let join = serde_json::json!({"type": "join", "room": plan.room}).to_string();
    if let Err(e) = sink.send(Message::text(join)).await {
        plan.failed.fetch_add(1, Ordering::Relaxed);
        result.error = Some(format!("join not sent: {e}"));
        return result;
    }

    // This member's messages, sent once the phase says so (the writer half), while the
    // reader half below keeps receiving.
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
                let sent_us = now_us();
                first.get_or_insert(sent_us);
                let frame =
                    serde_json::json!({"type": "send", "room": plan.room, "text": plan.text(g, sent_us), "ref": g});
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
            let at_us = now_us();
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
            let Ok(frame) = serde_json::from_str::<ServerFrame>(text.as_str()) else { continue };
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

/// One fan-out over these nodes.
pub fn run(
    nodes: &[SocketAddr],
    secret: &str,
    kid: &str,
    client: &ClientArgs,
    options: &Options,
    label: &str,
) -> anyhow::Result<Summary> {
    check(options, client)?;
    let tokens = Tokens::new(secret, kid)?;
    let exp = now_s() + 900;
    let threads = client.client_threads.max(1);
    let plan = Arc::new(Plan {
        dialers: nodes.iter().map(|addr| Dialer::new(*addr, client)).collect(),
        room: options.room.clone(),
        tokens: (0..options.members).map(|i| tokens.token(&tokens.user("fanout", i), exp, &[])).collect(),
        run: tokens.run.clone(),
        messages: options.messages,
        senders: options.senders,
        pace: (options.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate)),
        handshakes: (0..threads).map(|_| Semaphore::new(options.concurrency.div_ceil(threads).max(1))).collect(),
        threads,
        opened: AtomicUsize::new(0),
        joined: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        frames: AtomicUsize::new(0),
        last_frame_us: AtomicU64::new(0),
        acked: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
    });
    let members = options.members;
    let per_node: Vec<usize> =
        (0..nodes.len()).map(|n| (0..members).filter(|i| i % nodes.len() == n).count()).collect();
    let mut text = format!(
        "{members} members over {} node{} ({}), room {:?}; {} messages from {} senders{}\n",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" },
        per_node.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("/"),
        options.room,
        options.messages,
        options.senders,
        plan.pace.map(|_| format!(" at {}/s each", options.rate)).unwrap_or_default()
    );

    let (phase, phase_rx) = watch::channel(Phase::Joining);
    let started = Instant::now();
    let crowd = {
        let plan = plan.clone();
        Crowd::start(members, threads, move |i| member(plan.clone(), i, phase_rx.clone()))
    };

    // 1. Everyone opened and joined (or gave up).
    let join_deadline = started + Duration::from_secs(options.join_timeout);
    let settled = || plan.joined.load(Ordering::Relaxed) + plan.failed.load(Ordering::Relaxed);
    while settled() < members && Instant::now() < join_deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let joined_in = started.elapsed();
    // 2. Presence traffic settled: no frame for SETTLE_QUIET.
    while now_us().saturating_sub(plan.last_frame_us.load(Ordering::Relaxed)) < SETTLE_QUIET.as_micros() as u64
        && Instant::now() < join_deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let failed_before = plan.failed.load(Ordering::Relaxed);
    let _ = writeln!(
        text,
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
    let go = Instant::now();
    if failed_before == 0 && plan.joined.load(Ordering::Relaxed) == members {
        let _ = phase.send(Phase::Sending);
        let mut answered_at: Option<Instant> = None;
        loop {
            let answered = plan.acked.load(Ordering::Relaxed) + plan.refused.load(Ordering::Relaxed);
            if answered >= options.messages && answered_at.is_none() {
                answered_at = Some(Instant::now());
            }
            let complete = plan.complete.load(Ordering::Relaxed) + plan.failed.load(Ordering::Relaxed);
            let waited_out = answered_at.is_some_and(|at| at.elapsed() > Duration::from_secs(options.timeout));
            if complete >= members && answered_at.is_some() || waited_out {
                break;
            }
            if answered_at.is_none() && go.elapsed() > Duration::from_secs(options.timeout + 60) {
                text.push_str("not every send was answered; gave up\n");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    } else {
        text.push_str("not every member joined; nothing sent\n");
    }
    let _ = phase.send(Phase::Stopping);
    let results = crowd.join();
    Ok(report(options, &plan, &results, label, text))
}

fn report(options: &Options, plan: &Plan, results: &[MemberResult], label: &str, mut text: String) -> Summary {
    let refused = plan.refused.load(Ordering::Relaxed);
    let acked = plan.acked.load(Ordering::Relaxed);
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
    let accepted = options.messages.saturating_sub(refused);
    let expected = accepted * options.members;
    let received: usize = results.iter().map(|r| r.latencies.len()).sum();
    let duplicates: usize = results.iter().map(|r| r.duplicates).sum();
    let missing = expected.saturating_sub(received);
    let first_send = results.iter().filter_map(|r| r.first_send_us).min();
    let last_receipt = results.iter().map(|r| r.last_receipt_us).max().unwrap_or(0);
    let span_s = first_send.map_or(0.0, |f| last_receipt.saturating_sub(f) as f64 / 1e6);
    let per_second = if span_s > 0.0 { received as f64 / span_s } else { 0.0 };
    let ms = |values: &[f64], p: f64| percentile(values, p);

    let _ = writeln!(text, "sends: {} messages, {acked} acknowledged, {refused} refused", options.messages);
    for (code, n) in &refusals {
        let _ = writeln!(text, "    {n} × {code}");
    }
    let _ = writeln!(text, "deliveries: {received} of {expected} expected; missing {missing}; duplicates {duplicates}");
    if failed > 0 {
        let _ = writeln!(text, "members that gave up: {failed}");
        for (why, n) in &errors {
            let _ = writeln!(text, "    {n} × {why}");
        }
    }
    let mut all: Vec<f64> =
        results.iter().flat_map(|r| r.latencies.iter().map(|(_, l)| f64::from(*l) / 1000.0)).collect();
    all.sort_by(f64::total_cmp);
    let _ = writeln!(
        text,
        "throughput: {received} deliveries in {span_s:.3} s (first send to last receipt) = {per_second:.0} deliveries/s"
    );
    let _ = writeln!(
        text,
        "latency, send to receipt (ms): p50 {:.1}  p99 {:.1}  max {:.1}",
        ms(&all, 50.0),
        ms(&all, 99.0),
        ms(&all, 100.0)
    );

    // Per node, as each member's `welcome` named it; members that never got one are "?".
    let node_of = |r: &MemberResult| r.node.clone().unwrap_or_else(|| "?".to_owned());
    let names: Vec<String> = results.iter().map(node_of).collect::<BTreeSet<_>>().into_iter().collect();
    if names.len() > 1 {
        let _ = writeln!(text, "per receiving node (as `welcome` named it):");
        let _ = writeln!(
            text,
            "  {:<10} {:>7} {:>10} {:>9} {:>6} {:>8} {:>8} {:>8}",
            "node", "members", "deliveries", "missing", "dups", "p50 ms", "p99 ms", "max ms"
        );
        for name in &names {
            let mine: Vec<&MemberResult> = results.iter().filter(|r| node_of(r) == *name).collect();
            let mut lat: Vec<f64> =
                mine.iter().flat_map(|r| r.latencies.iter().map(|(_, l)| f64::from(*l) / 1000.0)).collect();
            lat.sort_by(f64::total_cmp);
            let dups: usize = mine.iter().map(|r| r.duplicates).sum();
            let node_missing = (accepted * mine.len()).saturating_sub(lat.len());
            let _ = writeln!(
                text,
                "  {:<10} {:>7} {:>10} {:>9} {:>6} {:>8.1} {:>8.1} {:>8.1}",
                name,
                mine.len(),
                lat.len(),
                node_missing,
                dups,
                ms(&lat, 50.0),
                ms(&lat, 99.0),
                ms(&lat, 100.0)
            );
        }
        // Senders are members 0..senders, so results[j] is sender j (results are in member order).
        let sender_node: Vec<String> = results.iter().take(options.senders).map(node_of).collect();
        let _ = writeln!(text, "p99 ms from sending node (rows) to receiving node (columns); - = nothing arrived:");
        let _ = writeln!(text, "  {:<10}{}", "", names.iter().map(|n| format!(" {n:>8}")).collect::<String>());
        for from in &names {
            let mut line = format!("  {from:<10}");
            for to in &names {
                let mut lat: Vec<f64> = results
                    .iter()
                    .filter(|r| node_of(r) == *to)
                    .flat_map(|r| r.latencies.iter())
                    .filter(|(sender, _)| sender_node.get(*sender as usize) == Some(from))
                    .map(|(_, l)| f64::from(*l) / 1000.0)
                    .collect();
                lat.sort_by(f64::total_cmp);
                if lat.is_empty() {
                    line.push_str(&format!(" {:>8}", "-"));
                } else {
                    line.push_str(&format!(" {:>8.1}", ms(&lat, 99.0)));
                }
            }
            let _ = writeln!(text, "{line}");
        }
    }
    let mut summary = Summary {
        label: label.to_owned(),
        members: options.members,
        deliveries: received,
        expected,
        per_second,
        p50_ms: ms(&all, 50.0),
        p99_ms: ms(&all, 99.0),
        max_ms: ms(&all, 100.0),
        missing,
        duplicates,
        refused,
        failed,
        text: String::new(),
    };
    if summary.ok() {
        let _ = write!(text, "OK: every message reached all {} members exactly once", options.members);
    } else {
        text.push_str("FAILED: see missing, duplicates, refusals and members that gave up above");
    }
    summary.text = text;
    summary
}
