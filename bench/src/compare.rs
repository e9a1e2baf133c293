//! authchat and the peers side by side, from one command: for each round, for each scenario,
//! each target in turn (A, B, C, A, B, C, …), each run on a freshly started server, so a
//! drift of the shared machine touches every target alike. The figures are the medians over
//! the rounds (the range beside them), and the ratios are authchat's median over the minimal
//! actix server's, the targets of issue 16.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::client::{Carrier, ClientArgs};
use crate::scenario::{connect, expiry, fanout, hold};
use crate::stats::median;
use crate::target::{Kind, Launch, ProgramArgs, RunDir};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Which {
    Connect,
    Fanout,
    Hold,
    Expiry,
}

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Rounds; each runs every scenario on every target once.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "authchat,actix,node")]
    pub targets: Vec<Kind>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "connect,fanout,hold,expiry")]
    pub scenarios: Vec<Which>,
    /// connect: sockets opened (`?token=`), and handshakes in flight at once.
    #[arg(long, default_value_t = 5000)]
    pub connect_sockets: usize,
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// fanout: members of the one room, messages, senders (back to back).
    #[arg(long, default_value_t = 1000)]
    pub fanout_members: usize,
    #[arg(long, default_value_t = 200)]
    pub fanout_messages: usize,
    #[arg(long, default_value_t = 10)]
    pub fanout_senders: usize,
    /// hold: idle authenticated sockets.
    #[arg(long, default_value_t = 15000)]
    pub hold_sockets: usize,
    /// expiry: sockets whose tokens expire in the same second.
    #[arg(long, default_value_t = 10000)]
    pub expiry_sockets: usize,
    /// Before each run, wait up to 30 s for a second in which the machine is less busy than
    /// this fraction of its cores (other processes share it).
    #[arg(long, default_value_t = 0.25)]
    pub quiet_below: f64,
    /// HTTP workers of authchat and the actix peer; 0 = one per core.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    #[command(flatten)]
    pub programs: ProgramArgs,
    /// Also write the table, in Markdown, to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

/// A figure the table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Metric {
    Handshakes,
    HandshakesAgain,
    HandshakeCpu,
    FanoutRate,
    FanoutP99,
    IdleKib,
    ExpiryP99,
    ExpiryMax,
    Release,
}

impl Metric {
    fn label(self, o: &Options) -> String {
        match self {
            Metric::Handshakes => format!(
                "handshakes/s, fresh server ({} sockets, `?token=`, {} in flight)",
                thousands(o.connect_sockets as f64),
                o.connect_concurrency
            ),
            Metric::HandshakesAgain => "… the same again, once those have closed".into(),
            Metric::HandshakeCpu => "… server CPU per handshake, both batches (µs; lower is better)".into(),
            Metric::FanoutRate => format!(
                "fan-out deliveries/s (1 room × {}, {} messages from {} senders, back to back)",
                thousands(o.fanout_members as f64),
                o.fanout_messages,
                o.fanout_senders
            ),
            Metric::FanoutP99 => "fan-out latency p99, send to receipt (ms)".into(),
            Metric::IdleKib => {
                format!(
                    "memory per idle authenticated socket, KiB of server RSS ({} sockets)",
                    thousands(o.hold_sockets as f64)
                )
            }
            Metric::ExpiryP99 => {
                format!(
                    "{} tokens expiring in the same second: close p99 after exp (ms)",
                    thousands(o.expiry_sockets as f64)
                )
            }
            Metric::ExpiryMax => "… last close after exp (ms)".into(),
            Metric::Release => "… TCP ended after the client answered the close, p50 (ms)".into(),
        }
    }

    fn decimals(self) -> usize {
        match self {
            Metric::Handshakes | Metric::HandshakesAgain | Metric::FanoutRate => 0,
            Metric::IdleKib => 2,
            _ => 1,
        }
    }
}

/// Figures by metric and target, one per round (NaN for a run that failed).
type Figures = BTreeMap<(Metric, Kind), Vec<f64>>;

pub fn run(client: &ClientArgs, options: &Options) -> anyhow::Result<bool> {
    let mut figures: Figures = BTreeMap::new();
    let mut problems = Vec::new();
    let machine = machine();
    println!("{machine}");
    for round in 1..=options.rounds {
        for which in &options.scenarios {
            for kind in &options.targets {
                let busy =
                    crate::sys::wait_until_quiet(options.quiet_below, Duration::from_secs(30)).unwrap_or(f64::NAN);
                let outcome = once(*which, *kind, client, options);
                let line = match outcome {
                    Ok(Outcome { figures: values, summary, problem }) => {
                        for (metric, value) in values {
                            figures.entry((metric, *kind)).or_default().push(value);
                        }
                        if let Some(problem) = problem {
                            problems.push(format!("round {round}, {which:?}, {}: {problem}", kind.name()));
                        }
                        summary
                    }
                    Err(e) => {
                        problems.push(format!("round {round}, {which:?}, {}: {e:#}", kind.name()));
                        format!("FAILED: {e:#}")
                    }
                };
                println!(
                    "round {round}/{}  {:<8} {:<9} {line}  (machine {:.0} % busy before)",
                    options.rounds,
                    format!("{which:?}").to_lowercase(),
                    kind.name(),
                    100.0 * busy
                );
            }
        }
    }
    let table = table(&figures, options);
    println!("\n{table}");
    println!("{}", per_round(&figures, options));
    if !problems.is_empty() {
        println!("problems:");
        for p in &problems {
            println!("  {p}");
        }
    }
    if let Some(path) = &options.markdown {
        std::fs::write(path, format!("{machine}\n\n{table}\n"))?;
        println!("table written to {}", path.display());
    }
    Ok(problems.is_empty())
}

/// What one run gave.
struct Outcome {
    figures: Vec<(Metric, f64)>,
    /// One line for the progress log.
    summary: String,
    /// What went wrong without stopping the run (sockets not closed, messages missing).
    problem: Option<String>,
}

/// One scenario on one freshly started target.
fn once(which: Which, kind: Kind, client: &ClientArgs, o: &Options) -> anyhow::Result<Outcome> {
    let dir = RunDir::new("compare")?;
    let secret = crate::target::random_secret();
    let server = crate::target::start_child(kind, &o.programs, &Launch::single(&secret, o.workers), dir.path())?;
    let kid = "hs1";
    let outcome = (|| match which {
        Which::Connect => {
            let options = connect::Options {
                connections: o.connect_sockets,
                concurrency: o.connect_concurrency,
                carriers: vec![Carrier::Query],
            };
            // The first batch on a fresh server also pays for its heap's growth (page faults);
            // the second, once the first has closed, reuses that memory.
            let first = connect::once(&server, &secret, kid, client, &options, Carrier::Query)?;
            connect::settle(&server);
            let again = connect::once(&server, &secret, kid, client, &options, Carrier::Query)?;
            let failed: usize = first.failed.values().chain(again.failed.values()).sum();
            let cpu = |us: Option<f64>| us.map_or("?".into(), |us| format!("{us:.0}"));
            let summary = format!(
                "{:.0} then {:.0} handshakes/s, p99 {:.1} and {:.1} ms, server CPU {} and {} µs each",
                first.per_second,
                again.per_second,
                first.latency.p99,
                again.latency.p99,
                cpu(first.server_cpu_us),
                cpu(again.server_cpu_us)
            );
            let problem =
                (failed > 0).then(|| format!("{failed} handshakes failed: {:?} {:?}", first.failed, again.failed));
            let mut figures = vec![(Metric::Handshakes, first.per_second), (Metric::HandshakesAgain, again.per_second)];
            if let (Some(a), Some(b)) = (first.server_cpu_us, again.server_cpu_us) {
                figures.push((Metric::HandshakeCpu, (a + b) / 2.0));
            }
            Ok(Outcome { figures, summary, problem })
        }
        Which::Fanout => {
            let options = fanout::Options {
                members: o.fanout_members,
                messages: o.fanout_messages,
                senders: o.fanout_senders,
                ..fanout::Options::default()
            };
            let s = fanout::run(&[server.addr], &secret, kid, client, &options, kind.name())?;
            let summary = format!("{:.0} deliveries/s, p99 {:.1} ms", s.per_second, s.p99_ms);
            if !s.ok() {
                return Ok(Outcome { figures: vec![], summary, problem: Some(s.text) });
            }
            let figures = vec![(Metric::FanoutRate, s.per_second), (Metric::FanoutP99, s.p99_ms)];
            Ok(Outcome { figures, summary, problem: None })
        }
        Which::Hold => {
            let options = hold::Options {
                connections: o.hold_sockets,
                concurrency: 200,
                join: None,
                settle: 3,
                warm_up: 200,
                window_ms: 2000,
            };
            let r = hold::run(&server, &secret, kid, client, &options)?;
            let failed: usize = r.failed.values().sum();
            let summary = format!(
                "{:.2} KiB RSS per idle socket ({} held, RSS {} → {} KiB)",
                r.rss_per_socket_kib(),
                r.opened,
                r.before.rss_kib,
                r.held.rss_kib
            );
            let problem = (failed > 0).then(|| format!("{failed} sockets failed: {:?}", r.failed));
            Ok(Outcome { figures: vec![(Metric::IdleKib, r.rss_per_socket_kib())], summary, problem })
        }
        Which::Expiry => {
            let options = expiry::Options {
                connections: o.expiry_sockets,
                concurrency: 200,
                per_user: 10,
                spread: 0,
                exp_in: None,
                close_timeout: 10,
                poll_metrics_ms: 0,
                join: None,
            };
            let r = expiry::run(&server, &secret, kid, client, &options)?;
            let summary = format!(
                "{}/{} closed with 4001; lag p50 {:.1}, p99 {:.1}, max {:.1} ms; TCP ended p50 {:.1} ms after",
                r.closed, r.n, r.lag.p50, r.lag.p99, r.lag.max, r.released.p50
            );
            let problem = (!r.ok()).then(|| r.verdict());
            // A run in which not every socket was closed with 4001 has no lag figure: the
            // sockets missing from it are the slowest or the lost.
            let valid = |v: f64| if r.ok() { v } else { f64::NAN };
            let figures = vec![
                (Metric::ExpiryP99, valid(r.lag.p99)),
                (Metric::ExpiryMax, valid(r.lag.max)),
                (Metric::Release, valid(r.released.p50)),
            ];
            Ok(Outcome { figures, summary, problem })
        }
    })();
    server.stop();
    outcome
}

/// 1234567.8 as "1,234,568".
fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "–".into();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn number(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        "–".into()
    } else if decimals == 0 {
        thousands(value)
    } else {
        format!("{value:.decimals$}")
    }
}

/// The Markdown table: medians, ranges, and authchat ÷ minimal actix.
fn table(figures: &Figures, o: &Options) -> String {
    let mut out = String::new();
    let _ = write!(out, "| median of {} runs (min–max) |", o.rounds);
    for kind in &o.targets {
        let _ = write!(out, " {} |", kind.title());
    }
    let ratio = o.targets.contains(&Kind::Authchat) && o.targets.contains(&Kind::Actix);
    if ratio {
        out.push_str(" authchat ÷ minimal actix |");
    }
    out.push_str("\n| --- |");
    for _ in &o.targets {
        out.push_str(" ---: |");
    }
    if ratio {
        out.push_str(" ---: |");
    }
    out.push('\n');
    let metrics: std::collections::BTreeSet<Metric> = figures.keys().map(|(m, _)| *m).collect();
    for metric in metrics {
        let _ = write!(out, "| {} |", metric.label(o));
        let mut medians = BTreeMap::new();
        for kind in &o.targets {
            let values: Vec<f64> = figures.get(&(metric, *kind)).cloned().unwrap_or_default();
            let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
            let m = median(&finite);
            medians.insert(*kind, m);
            let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
            if finite.is_empty() {
                out.push_str(" – |");
            } else {
                let d = metric.decimals();
                let missing = values.len() - finite.len();
                let note = if missing > 0 { format!("; {missing} failed") } else { String::new() };
                let _ = write!(out, " {} ({}–{}{note}) |", number(m, d), number(lo, d), number(hi, d));
            }
        }
        if ratio {
            let r = medians[&Kind::Authchat] / medians[&Kind::Actix];
            let _ = write!(out, " {} |", if r.is_finite() { format!("{r:.2}") } else { "–".into() });
        }
        out.push('\n');
    }
    out
}

/// Every run's figure, round by round, so the spread can be read.
fn per_round(figures: &Figures, o: &Options) -> String {
    let mut out = String::from("per run (round 1, 2, …):\n");
    for ((metric, kind), values) in figures {
        let d = metric.decimals();
        let list: Vec<String> = values.iter().map(|v| number(*v, d)).collect();
        let _ = writeln!(out, "  {:<10} {}: {}", kind.name(), metric.label(o), list.join(", "));
    }
    out
}

/// What the figures were measured on.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0));
    let busy = crate::sys::machine_busy(Duration::from_secs(1)).map_or("?".into(), |b| format!("{:.0} %", 100.0 * b));
    format!(
        "machine: {cores} cores ({cpu}), {memory}, Linux {}; {busy} busy at the start (other processes share it)",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_in_the_docs() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(number(13.456, 2), "13.46");
        assert_eq!(number(f64::NAN, 1), "–");
    }

    #[test]
    fn the_table_has_medians_ranges_and_the_ratio() {
        let o = Options {
            rounds: 3,
            targets: vec![Kind::Authchat, Kind::Actix],
            scenarios: vec![Which::Connect],
            connect_sockets: 5000,
            connect_concurrency: 100,
            fanout_members: 1000,
            fanout_messages: 200,
            fanout_senders: 10,
            hold_sockets: 15000,
            expiry_sockets: 10000,
            quiet_below: 0.25,
            workers: 0,
            programs: ProgramArgs::default(),
            markdown: None,
        };
        let mut figures = Figures::new();
        figures.insert((Metric::Handshakes, Kind::Authchat), vec![9000.0, 10000.0, 11000.0]);
        figures.insert((Metric::Handshakes, Kind::Actix), vec![10000.0, f64::NAN, 12500.0]);
        let table = table(&figures, &o);
        assert!(table.contains("| 10,000 (9,000–11,000) | 11,250 (10,000–12,500; 1 failed) | 0.89 |"), "{table}");
    }
}
