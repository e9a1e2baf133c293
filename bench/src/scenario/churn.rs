//! Churn: connects and disconnects per second. `--concurrency` clients each loop for
//! `--duration` seconds: open a socket (a new user each time) up to its `welcome`, optionally
//! join a room, close it from the client side, and wait for the server's answering close frame;
//! then the next cycle begins, while a task of its own waits for the server to end the TCP
//! connection (RFC 6455: the server ends it) and times that. The server's memory before and
//! after shows whether anything stays behind.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::{reasons, Crowd};
use crate::client::{now_s, Carrier, ClientArgs, Dialer, ServerFrame, Tokens};
use crate::stats::Dist;
use crate::sys::{settled_memory, Memory};
use crate::target::Server;

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Clients cycling at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Seconds to cycle.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Also join this room in each cycle.
    #[arg(long)]
    pub join: Option<String>,
    /// How each socket carries its token.
    #[arg(long, value_enum, default_value_t = Carrier::Query)]
    pub carrier: Carrier,
}

/// One cycle's times, ms.
#[derive(Debug, Clone, Copy)]
struct Cycle {
    /// Connect to `welcome` (and `joined`, with --join).
    open: f64,
    /// Client close sent to the server's close frame.
    answer: f64,
    /// Client close sent to the end of TCP (`None`: not within 2 s).
    release: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub cycles: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub failed: BTreeMap<String, usize>,
    pub open: Dist,
    pub answer: Dist,
    pub release: Dist,
    pub not_released: usize,
    pub before: Option<Memory>,
    pub after: Option<Memory>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: usize = self.failed.values().sum();
        writeln!(
            f,
            "cycles            {} in {:.1} s = {:.0} connects and as many disconnects per second; failed {failed}{}",
            self.cycles,
            self.seconds,
            self.per_second,
            reasons(&self.failed)
        )?;
        writeln!(f, "open (ms)         {}", self.open)?;
        writeln!(f, "close answered    {} (ms, from the client's close)", self.answer)?;
        write!(
            f,
            "TCP ended         {} (ms, from the client's close); not within 2 s: {}",
            self.release, self.not_released
        )?;
        if let (Some(before), Some(after)) = (self.before, self.after) {
            write!(
                f,
                "\nserver RSS        {} KiB before, {} KiB 3 s after ({:+} KiB)",
                before.rss_kib,
                after.rss_kib,
                after.rss_kib as i64 - before.rss_kib as i64
            )?;
        }
        Ok(())
    }
}

struct Plan {
    dialer: Dialer,
    tokens: Tokens,
    join: Option<String>,
    carrier: Carrier,
    deadline: Instant,
    next: AtomicUsize,
}

/// One open-close cycle on socket number `i`. Once the server has answered the close, the wait
/// for it to end TCP goes on in its own task, so a server that keeps the connection a while
/// does not slow the cycling; the task gives the time it ended (`None`: not within 2 s).
async fn cycle(plan: &Plan, i: usize, exp: u64) -> Result<(Cycle, JoinHandle<Option<f64>>), String> {
    let token = plan.tokens.token(&plan.tokens.user("churn", i), exp, &[]);
    let t0 = Instant::now();
    let (mut ws, _) = plan.dialer.open(i, plan.carrier, &token).await?;
    if let Some(room) = &plan.join {
        let frame = serde_json::json!({"type": "join", "room": room}).to_string();
        ws.send(Message::text(frame)).await.map_err(|e| e.to_string())?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    if serde_json::from_str::<ServerFrame>(text.as_str()).is_ok_and(|f| f.kind == "joined") {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                _ => return Err("the connection ended before joined".into()),
            }
        }
    }
    let open = t0.elapsed().as_secs_f64() * 1000.0;
    let t1 = Instant::now();
    ws.send(Message::Close(None)).await.map_err(|e| format!("close: {e}"))?;
    let answered = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return Ok(t1.elapsed()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the connection ended without answering the close".to_owned()),
            }
        }
    })
    .await
    .map_err(|_| "no close frame answered the client's within 2 s".to_owned())??;
    // tungstenite, as a client, ends the stream only once the server has ended TCP.
    let release = tokio::spawn(async move {
        let ended = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = ws.next().await {}
            t1.elapsed()
        });
        ended.await.ok().map(|r| r.as_secs_f64() * 1000.0)
    });
    Ok((Cycle { open, answer: answered.as_secs_f64() * 1000.0, release: None }, release))
}

pub fn run(server: &Server, secret: &str, kid: &str, client: &ClientArgs, options: &Options) -> anyhow::Result<Report> {
    if !options.carrier.spoken_by(server.kind) {
        anyhow::bail!("the {} server does not speak the {} carrier", server.kind.name(), options.carrier.name());
    }
    crate::sys::ensure_room_for(options.concurrency * 2)?;
    let memory =
        |pid: Option<u32>| pid.and_then(|p| settled_memory(p, Duration::from_secs(1), Duration::from_millis(200)));
    let before = memory(server.pid);
    let exp = now_s() + 900;
    let started = Instant::now();
    let plan = Arc::new(Plan {
        dialer: Dialer::new(server.addr, client),
        tokens: Tokens::new(secret, kid)?,
        join: options.join.clone(),
        carrier: options.carrier,
        deadline: started + Duration::from_secs(options.duration),
        next: AtomicUsize::new(0),
    });
    let crowd = {
        let plan = plan.clone();
        Crowd::start(options.concurrency, client.client_threads.max(1), move |_| {
            let plan = plan.clone();
            async move {
                let mut cycles = Vec::new();
                while Instant::now() < plan.deadline {
                    let i = plan.next.fetch_add(1, Ordering::Relaxed);
                    cycles.push(cycle(&plan, i, exp).await);
                }
                let mut done = Vec::with_capacity(cycles.len());
                for c in cycles {
                    done.push(match c {
                        Ok((mut cycle, release)) => {
                            cycle.release = release.await.ok().flatten();
                            Ok(cycle)
                        }
                        Err(why) => Err(why),
                    });
                }
                done
            }
        })
    };
    let results: Vec<Result<Cycle, String>> = crowd.join().into_iter().flatten().collect();
    let seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let after = memory(server.pid);

    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let (mut open, mut answer, mut release, mut not_released) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for result in results {
        match result {
            Ok(c) => {
                open.push(c.open);
                answer.push(c.answer);
                match c.release {
                    Some(r) => release.push(r),
                    None => not_released += 1,
                }
            }
            Err(why) => *failed.entry(why).or_default() += 1,
        }
    }
    let cycles = open.len();
    Ok(Report {
        cycles,
        seconds,
        per_second: cycles as f64 / seconds.max(1e-3),
        failed,
        open: Dist::of(open),
        answer: Dist::of(answer),
        release: Dist::of(release),
        not_released,
        before,
        after,
    })
}
