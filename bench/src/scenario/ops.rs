//! Operator closes across nodes: sockets opened on the nodes other than the first (on the one
//! node, when there is one) are closed one at a time through the first node's admin API
//! (`DELETE /admin/connections/{id}`), timing each from the request to the close frame's
//! arrival and to the HTTP answer. authchat only.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use authchat::protocol::close::DISCONNECTED;
use clap::Args;
use futures_util::StreamExt as _;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{close_code, now_s, Carrier, ClientArgs, Dialer, Tokens};
use crate::stats::Dist;

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Sockets to open and close.
    #[arg(long, default_value_t = 200)]
    pub sockets: usize,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub sockets: usize,
    pub across_nodes: bool,
    /// Request to close frame, ms.
    pub to_close: Dist,
    /// Request to HTTP answer, ms.
    pub to_answer: Dist,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.across_nodes { "the other nodes" } else { "that node" };
        write!(
            f,
            "operator closes through the first node of {} sockets on {place} (ms):\n  to the close frame: {}\n  to the HTTP answer: {}",
            self.sockets, self.to_close, self.to_answer
        )
    }
}

pub fn run(
    nodes: &[SocketAddr],
    secret: &str,
    kid: &str,
    client: &ClientArgs,
    options: &Options,
) -> anyhow::Result<Report> {
    let first = *nodes.first().ok_or_else(|| anyhow!("no nodes"))?;
    let holders = if nodes.len() > 1 { &nodes[1..] } else { nodes };
    let tokens = Tokens::new(secret, kid)?;
    let exp = now_s() + 900;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut sockets = Vec::new();
        for i in 0..options.sockets {
            let dialer = Dialer::new(holders[i % holders.len()], client);
            let token = tokens.token(&tokens.user("ops", i), exp, &[]);
            let (ws, welcome) = dialer.open(i, Carrier::Query, &token).await.map_err(|e| anyhow!("opening: {e}"))?;
            let conn_id = welcome.conn_id.ok_or_else(|| anyhow!("welcome without conn_id"))?;
            sockets.push((conn_id, welcome.node.unwrap_or_default(), ws));
        }
        let admin = tokens.token(&tokens.user("ops-admin", 0), exp, &["admin"]);
        let (mut to_close, mut to_answer) = (Vec::new(), Vec::new());
        for (conn_id, node, mut ws) in sockets {
            let t0 = Instant::now();
            let path = format!("/admin/connections/{conn_id}");
            let answer = async {
                let answer = crate::http::request(first, None, "DELETE", &path, Some(&admin)).await;
                (answer.map(|a| a.status), t0.elapsed())
            };
            let closed = async {
                let code = loop {
                    match ws.next().await {
                        Some(Ok(Message::Close(frame))) => break Some(close_code(frame)),
                        Some(Ok(_)) => continue,
                        _ => break None,
                    }
                };
                (code, t0.elapsed())
            };
            let ((status, answered), (code, closed_after)) =
                tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(answer, closed) })
                    .await
                    .map_err(|_| anyhow!("socket {conn_id} on {node}: no close within 10 s"))?;
            if status.as_ref().ok() != Some(&200) || code != Some(DISCONNECTED) {
                bail!(
                    "socket {conn_id} on {node}: answer {status:?}, close {code:?} (expected 200 and {DISCONNECTED})"
                );
            }
            to_close.push(closed_after.as_secs_f64() * 1000.0);
            to_answer.push(answered.as_secs_f64() * 1000.0);
        }
        Ok(Report {
            sockets: options.sockets,
            across_nodes: nodes.len() > 1,
            to_close: Dist::of(to_close),
            to_answer: Dist::of(to_answer),
        })
    })
}
