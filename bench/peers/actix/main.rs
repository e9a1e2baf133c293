//! The minimal actix peer: authchat's stack with nothing else on it. actix-web with
//! actix-web-actors, one actor per socket, one registry actor holding the rooms, and the subset
//! of authchat's protocol the load tool speaks (docs/benchmarks.md, "The peers"):
//!
//! - the token at the upgrade, `?token=` or `Authorization: Bearer` (HS256, `iss` and `aud`
//!   "authchat", `exp` enforced exactly), else 401;
//! - `welcome` on open; `join` answered with `joined`; `send` answered with `ack` and fanned out
//!   as `message` to every member of the room, the sender included;
//! - close 4001 at the token's `exp`, from a timer in the socket's actor.
//!
//! No heartbeat, presence, history, limits, metrics or logging: it is the floor the load tool
//! measures authchat against, not a chat server. Configured from the environment:
//! `PEER_HOST`, `PEER_PORT`, `PEER_SECRET` (at least 32 bytes), `PEER_WORKERS` (0 = one per core).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;

/// Who a token says the socket is.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// What a client may send (of authchat's messages, the two the load tool uses).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Join {
        room: String,
    },
    Send {
        room: String,
        text: String,
        #[serde(rename = "ref", default)]
        client_ref: serde_json::Value,
    },
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

// --- The registry --------------------------------------------------------------------------

/// A frame for one socket, already serialised.
#[derive(Message, Clone)]
#[rtype(result = "()")]
struct Frame(bytestring::ByteString);

/// A socket joins a room; the registry answers it with `joined`.
#[derive(Message)]
#[rtype(result = "()")]
struct Join {
    conn: u64,
    room: String,
    to: Recipient<Frame>,
}

/// A socket posts to a room; the registry answers it with `ack` and sends `message` to every
/// member.
#[derive(Message)]
#[rtype(result = "()")]
struct Post {
    conn: u64,
    room: String,
    from: String,
    text: String,
    client_ref: serde_json::Value,
    reply: Recipient<Frame>,
}

/// A socket has gone: it leaves its rooms.
#[derive(Message)]
#[rtype(result = "()")]
struct Gone {
    conn: u64,
    rooms: Vec<String>,
}

/// Rooms and their members: the one shared actor, as in authchat.
#[derive(Default)]
struct Registry {
    rooms: HashMap<String, Room>,
}

#[derive(Default)]
struct Room {
    members: HashMap<u64, Recipient<Frame>>,
    /// Id of the room's last message.
    last_id: u64,
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Join> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let room = self.rooms.entry(msg.room.clone()).or_default();
        let joined = json!({"type": "joined", "room": msg.room, "offset": room.last_id}).to_string();
        msg.to.do_send(Frame(joined.into()));
        room.members.insert(msg.conn, msg.to);
    }
}

impl Handler<Post> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Post, _: &mut Context<Self>) {
        let Some(room) = self.rooms.get_mut(&msg.room).filter(|r| r.members.contains_key(&msg.conn)) else {
            let error = json!({"type": "error", "code": "not_member", "request": "send", "room": msg.room});
            msg.reply.do_send(Frame(error.to_string().into()));
            return;
        };
        room.last_id += 1;
        let id = room.last_id;
        let ack = json!({"type": "ack", "ref": msg.client_ref, "room": msg.room, "id": id});
        msg.reply.do_send(Frame(ack.to_string().into()));
        // Serialised once, shared by every member's frame.
        let message =
            json!({"type": "message", "room": msg.room, "id": id, "from": msg.from, "text": msg.text, "ts": now_ms()});
        let frame = Frame(message.to_string().into());
        for member in room.members.values() {
            member.do_send(frame.clone());
        }
    }
}

impl Handler<Gone> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Gone, _: &mut Context<Self>) {
        for name in msg.rooms {
            if let Some(room) = self.rooms.get_mut(&name) {
                room.members.remove(&msg.conn);
                if room.members.is_empty() {
                    self.rooms.remove(&name);
                }
            }
        }
    }
}

// --- One socket ----------------------------------------------------------------------------

struct Session {
    conn: u64,
    user: String,
    exp: u64,
    carrier: &'static str,
    registry: Addr<Registry>,
    rooms: HashSet<String>,
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let welcome = json!({
            "type": "welcome", "conn_id": self.conn, "user": self.user, "auth": self.carrier,
            "expires_at": self.exp, "node": "actix-peer", "boot": "peer",
        });
        ctx.text(welcome.to_string());
        let left = Duration::from_millis((self.exp * 1000).saturating_sub(now_ms()));
        ctx.run_later(left, |_, ctx| {
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Other(4001),
                description: Some("token expired".into()),
            }));
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if !self.rooms.is_empty() {
            self.registry.do_send(Gone { conn: self.conn, rooms: self.rooms.drain().collect() });
        }
    }
}

impl Handler<Frame> for Session {
    type Result = ();

    fn handle(&mut self, frame: Frame, ctx: &mut Self::Context) {
        ctx.text(frame.0);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Text(text)) => match serde_json::from_str::<Request>(&text) {
                Ok(Request::Join { room }) => {
                    self.rooms.insert(room.clone());
                    self.registry.do_send(Join { conn: self.conn, room, to: ctx.address().recipient() });
                }
                Ok(Request::Send { room, text, client_ref }) => self.registry.do_send(Post {
                    conn: self.conn,
                    room,
                    from: self.user.clone(),
                    text,
                    client_ref,
                    reply: ctx.address().recipient(),
                }),
                Err(e) => ctx.text(json!({"type": "error", "code": "bad_json", "message": e.to_string()}).to_string()),
            },
            Ok(ws::Message::Ping(data)) => ctx.pong(&data),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

// --- The upgrade ---------------------------------------------------------------------------

struct Shared {
    registry: Addr<Registry>,
    key: DecodingKey,
    validation: Validation,
    next_conn: std::sync::atomic::AtomicU64,
}

/// The token and how it came: `Authorization: Bearer` first, then `?token=`.
fn presented(req: &HttpRequest) -> Option<(String, &'static str)> {
    if let Some(token) =
        req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some((token.to_owned(), "header"));
    }
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string()).ok()?;
    query.get("token").map(|t| (t.clone(), "query"))
}

async fn upgrade(req: HttpRequest, stream: web::Payload, shared: web::Data<Shared>) -> actix_web::Result<HttpResponse> {
    let refuse =
        |code: &str| HttpResponse::Unauthorized().json(json!({"error": code, "message": "a valid token is required"}));
    let Some((token, carrier)) = presented(&req) else { return Ok(refuse("missing_credentials")) };
    let claims = match jsonwebtoken::decode::<Claims>(&token, &shared.key, &shared.validation) {
        Ok(data) => data.claims,
        Err(_) => return Ok(refuse("invalid_token")),
    };
    let session = Session {
        conn: shared.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
        user: claims.sub,
        exp: claims.exp,
        carrier,
        registry: shared.registry.clone(),
        rooms: HashSet::new(),
    };
    ws::start(session, &req, stream)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name}"))
}

fn main() -> std::io::Result<()> {
    let settings = (|| -> Result<_, String> {
        let host = std::env::var("PEER_HOST").unwrap_or_else(|_| "127.0.0.1".into());
        let port: u16 = env("PEER_PORT")?.parse().map_err(|_| "PEER_PORT must be a port number")?;
        let secret = env("PEER_SECRET")?;
        if secret.len() < 32 {
            return Err("PEER_SECRET must be at least 32 bytes".into());
        }
        let workers = match std::env::var("PEER_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Ok((host, port, secret, workers))
    })();
    let (host, port, secret, workers) =
        settings.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["authchat"]);
    validation.set_audience(&["authchat"]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    // exp is enforced exactly, as authchat does.
    validation.leeway = 0;
    let key = DecodingKey::from_secret(secret.as_bytes()).map_err(std::io::Error::other)?;

    actix_web::rt::System::new().block_on(async move {
        // Started on the System's thread before the workers, like authchat's registry.
        let registry = Registry::default().start();
        let shared = web::Data::new(Shared { registry, key, validation, next_conn: Default::default() });
        HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route("/ws", web::get().to(upgrade))
                .route("/healthz", web::get().to(healthz))
        })
        .workers(workers)
        .max_connections(25_000)
        .bind((host.as_str(), port))?
        .run()
        .await
    })
}
