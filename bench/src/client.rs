//! Opening sockets as a client would: a token per user, a source address spread across
//! 127.0.0.0/8, the credential in one of authchat's carriers, then the `welcome` frame; and the
//! server frames the scenarios read.
//!
//! Source addresses: a client binds each socket to one of `--sources` loopback addresses
//! (127.1.0.1, 127.1.0.2, …) before connecting, so runs of tens of thousands of connections,
//! and the TIME_WAIT they leave, are not capped by one address's ephemeral ports (about 28,000).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authchat::testkit::TokenSigner;
use authchat::ws::{BEARER_PROTOCOL_PREFIX, PROTOCOL};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::target::Kind;

pub type Ws = WebSocketStream<TcpStream>;

/// Unix time now, µs: the clock send and receipt times are compared on (one process).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

pub fn now_s() -> u64 {
    now_us() / 1_000_000
}

/// How the token reaches the server at the upgrade (authchat's carriers, `src/ws/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Carrier {
    /// `GET /ws?token=<jwt>`.
    Query,
    /// `Authorization: Bearer <jwt>`.
    Header,
    /// `Sec-WebSocket-Protocol: authchat.v1, authchat.bearer.<jwt>`.
    Subprotocol,
    /// `POST /api/ticket` with the token, then `GET /ws?ticket=<ticket>`: two requests.
    Ticket,
    /// `GET /ws` without a credential, then `{"type":"auth","token":…}` as the first message.
    FirstMessage,
}

impl Carrier {
    pub fn name(self) -> &'static str {
        match self {
            Carrier::Query => "query",
            Carrier::Header => "header",
            Carrier::Subprotocol => "subprotocol",
            Carrier::Ticket => "ticket",
            Carrier::FirstMessage => "first-message",
        }
    }

    /// Whether a server speaks it: the peers take the token at the upgrade, in the query or
    /// the `Authorization` header, and nothing else.
    pub fn spoken_by(self, kind: Kind) -> bool {
        kind == Kind::Authchat || matches!(self, Carrier::Query | Carrier::Header)
    }
}

/// The load generator's own settings, shared by every scenario.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Loopback source addresses to spread sockets over (127.1.0.1 onwards), each good for
    /// about 28,000 at once.
    #[arg(long, default_value_t = 64)]
    pub sources: u32,
    /// Threads of the load generator, each a single-threaded tokio runtime with its share of
    /// the sockets.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
}

impl Default for ClientArgs {
    fn default() -> Self {
        Self { sources: 64, client_threads: 1 }
    }
}

/// Signs the tokens of one run: one user per name, with `iat` now and the `exp` asked for.
#[derive(Debug, Clone)]
pub struct Tokens {
    signer: TokenSigner,
    /// Tells this run's users and token ids apart from an earlier run's on the same server.
    pub run: String,
    serial: std::sync::Arc<AtomicU64>,
}

impl Tokens {
    pub fn new(secret: &str, kid: &str) -> anyhow::Result<Self> {
        Ok(Self {
            signer: TokenSigner::hs256(secret.as_bytes(), kid)?,
            run: format!("{:x}", now_us() % 0xffff_ffff),
            serial: Default::default(),
        })
    }

    /// A user name of this run: `<what>-<run>-<i>`.
    pub fn user(&self, what: &str, i: usize) -> String {
        format!("{what}-{}-{i:06}", self.run)
    }

    /// A token for `user` expiring at `exp` (Unix seconds), with `roles`.
    pub fn token(&self, user: &str, exp: u64, roles: &[&str]) -> String {
        let jti = format!("{}-{}", self.run, self.serial.fetch_add(1, Ordering::Relaxed));
        self.signer.access(user, now_s(), exp, &jti, roles)
    }
}

/// Opens sockets to one server.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub server: SocketAddr,
    sources: u32,
    pub config: WebSocketConfig,
    /// `SO_RCVBUF` of each socket, to make a slow reader's kernel buffer small.
    pub receive_buffer: Option<u32>,
    /// Handshake and `welcome` within this.
    pub open_timeout: Duration,
}

/// What `welcome` said.
#[derive(Debug, Clone, Default)]
pub struct Welcome {
    pub conn_id: Option<u64>,
    pub node: Option<String>,
}

impl Dialer {
    pub fn new(server: SocketAddr, client: &ClientArgs) -> Self {
        Self {
            server,
            sources: client.sources.clamp(1, 250 * 256),
            // Small buffers: thousands of mostly idle sockets, each receiving short frames.
            config: WebSocketConfig::default().read_buffer_size(8192).write_buffer_size(0),
            receive_buffer: None,
            open_timeout: Duration::from_secs(10),
        }
    }

    /// The source address of socket `i`: 127.1.0.1, 127.1.0.2, … (never a .0 or .255).
    pub fn source(&self, i: usize) -> IpAddr {
        let k = (i as u64 % u64::from(self.sources)) as u32;
        IpAddr::V4(Ipv4Addr::new(127, 1, (k / 250) as u8, (k % 250 + 1) as u8))
    }

    async fn tcp(&self, i: usize) -> std::io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        if let Some(size) = self.receive_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        socket.bind(SocketAddr::new(self.source(i), 0))?;
        let stream = socket.connect(self.server).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Opens socket `i` with `token` in `carrier` and reads up to its `welcome`, within
    /// `open_timeout`.
    pub async fn open(&self, i: usize, carrier: Carrier, token: &str) -> Result<(Ws, Welcome), String> {
        tokio::time::timeout(self.open_timeout, self.open_unbounded(i, carrier, token))
            .await
            .map_err(|_| format!("no welcome within {:?}", self.open_timeout))?
    }

    async fn open_unbounded(&self, i: usize, carrier: Carrier, token: &str) -> Result<(Ws, Welcome), String> {
        let base = format!("ws://{}/ws", self.server);
        let url = match carrier {
            Carrier::Query => format!("{base}?token={token}"),
            Carrier::Ticket => {
                let answer =
                    crate::http::request(self.server, Some(self.source(i)), "POST", "/api/ticket", Some(token))
                        .await
                        .map_err(|e| format!("ticket: {e:#}"))?;
                if answer.status != 200 {
                    return Err(format!("ticket: HTTP {} {}", answer.status, error_code(answer.body.as_bytes())));
                }
                let body: serde_json::Value = serde_json::from_str(&answer.body).map_err(|e| format!("ticket: {e}"))?;
                let ticket = body["ticket"].as_str().ok_or("ticket: no ticket in the answer")?;
                format!("{base}?ticket={ticket}")
            }
            Carrier::Header | Carrier::Subprotocol | Carrier::FirstMessage => base,
        };
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        let header = |value: String| HeaderValue::from_str(&value).map_err(|e| e.to_string());
        match carrier {
            Carrier::Header => {
                request.headers_mut().insert("authorization", header(format!("Bearer {token}"))?);
            }
            Carrier::Subprotocol => {
                let offer = format!("{PROTOCOL}, {BEARER_PROTOCOL_PREFIX}{token}");
                request.headers_mut().insert("sec-websocket-protocol", header(offer)?);
            }
            _ => {}
        }
        let stream = self.tcp(i).await.map_err(|e| format!("connect: {e}"))?;
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(self.config)).await.map_err(describe)?;
        if carrier == Carrier::FirstMessage {
            let auth = serde_json::json!({"type": "auth", "token": token}).to_string();
            ws.send(Message::text(auth)).await.map_err(|e| e.to_string())?;
        }
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) {
                        if frame.kind == "welcome" {
                            let node = frame.node.map(Cow::into_owned);
                            return Ok((ws, Welcome { conn_id: frame.conn_id, node }));
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map_or("no code".to_owned(), |f| format!("{} {}", u16::from(f.code), f.reason));
                    return Err(format!("closed before welcome: {why}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the connection ended before welcome".into()),
            }
        }
    }
}

/// The `error` field of a JSON refusal, or nothing.
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A failed handshake, short: the HTTP status and authchat's error code for a refusal.
pub fn describe(error: WsError) -> String {
    match error {
        WsError::Http(response) => {
            let code = error_code(response.body().as_deref().unwrap_or_default());
            let hint = if response.status().as_u16() == 429 {
                " (raise the server's ws.handshake_limit, or see AUTHCHAT_TUNING in docs/benchmarks.md)"
            } else {
                ""
            };
            format!("HTTP {} {code}{hint}", response.status().as_u16())
        }
        other => other.to_string(),
    }
}

/// The fields of a server frame the scenarios read (authchat's and the peers' alike).
#[derive(Debug, Deserialize)]
pub struct ServerFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub node: Option<Cow<'a, str>>,
    #[serde(default)]
    pub conn_id: Option<u64>,
    /// On an `error`: the request it refuses.
    #[serde(borrow, default)]
    pub request: Option<Cow<'a, str>>,
}

/// A close code with authchat's name for it (`protocol::close`), for reports.
pub fn close_label(code: u16) -> String {
    use authchat::protocol::close::*;
    let name = match code {
        NORMAL => "normal",
        GOING_AWAY => "going away",
        PROTOCOL_ERROR => "protocol error",
        MESSAGE_TOO_BIG => "message too big",
        AUTH_REQUIRED => "auth required",
        TOKEN_EXPIRED => "token expired",
        SESSION_ENDED => "session ended",
        REVOKED => "revoked",
        DISCONNECTED => "disconnected by an operator",
        RATE_LIMITED => "rate limited",
        TOO_SLOW => "too slow",
        1005 => "no code",
        _ => return code.to_string(),
    };
    format!("{code} ({name})")
}

/// The code of a close frame (1005 when it has none).
pub fn close_code(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    frame.map_or(1005, |f| f.code.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cycle_over_loopback_addresses_without_0_or_255() {
        let client = ClientArgs { sources: 300, client_threads: 1 };
        let dialer = Dialer::new(SocketAddr::from(([127, 0, 0, 1], 1)), &client);
        assert_eq!(dialer.source(0).to_string(), "127.1.0.1");
        assert_eq!(dialer.source(249).to_string(), "127.1.0.250");
        assert_eq!(dialer.source(250).to_string(), "127.1.1.1");
        assert_eq!(dialer.source(300), dialer.source(0));
    }

    #[test]
    fn frames_of_authchat_and_the_peers_parse() {
        let welcome =
            r#"{"type":"welcome","conn_id":7,"user":"u","auth":"query","expires_at":1,"node":"n1","boot":"b"}"#;
        let frame: ServerFrame = serde_json::from_str(welcome).unwrap();
        assert_eq!((frame.kind.as_ref(), frame.conn_id, frame.node.as_deref()), ("welcome", Some(7), Some("n1")));
        let message = r#"{"type":"message","room":"r","id":1,"from":"u","text":"hi","ts":5}"#;
        assert_eq!(serde_json::from_str::<ServerFrame>(message).unwrap().text.as_deref(), Some("hi"));
    }

    #[test]
    fn close_codes_are_named_as_authchat_names_them() {
        assert_eq!(close_label(4009), "4009 (too slow)");
        assert_eq!(close_label(4001), "4001 (token expired)");
        assert_eq!(close_label(3999), "3999");
    }

    #[test]
    fn the_peers_speak_only_the_upgrade_carriers() {
        assert!(Carrier::Query.spoken_by(Kind::Node) && Carrier::Header.spoken_by(Kind::Actix));
        assert!(!Carrier::Ticket.spoken_by(Kind::Actix) && !Carrier::FirstMessage.spoken_by(Kind::Node));
        assert!(Carrier::FirstMessage.spoken_by(Kind::Authchat));
    }
}
