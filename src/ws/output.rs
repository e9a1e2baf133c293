//! A socket's sending side: its outbox and how the connection is ending, shared by the socket
//! actor and by the registry's deliveries. What the registry sends a socket is queued here on the
//! socket's own thread ([`crate::registry::post`]), without a trip through the actor's mailbox;
//! the actor keeps everything it receives.

use std::cell::Cell;
use std::sync::Arc;

use actix_http::ws::{CloseCode, CloseReason, Message};

use super::session::{SocketDeps, SocketMode};
use super::transport::{Full, Outbox};
use crate::ids::ConnId;
use crate::protocol::{close, ServerMessage};
use crate::registry::{self, post::Deliver, Outbound};

pub struct Output {
    conn_id: ConnId,
    mode: SocketMode,
    deps: Arc<SocketDeps>,
    outbox: Outbox,
    /// The close code this connection ends with, once its close has begun.
    close_code: Cell<Option<u16>>,
}

impl Output {
    pub fn new(conn_id: ConnId, mode: SocketMode, deps: Arc<SocketDeps>, outbox: Outbox) -> Self {
        Self { conn_id, mode, deps, outbox, close_code: Cell::new(None) }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// How the connection ends, once its close has begun (ours or the peer's).
    pub fn close_code(&self) -> Option<u16> {
        self.close_code.get()
    }

    /// Queues a frame; a peer too slow to take it is closed with 4009.
    pub fn push(&self, frame: Message) {
        if let Err(Full) = self.outbox.send(frame) {
            tracing::info!(conn_id = %self.conn_id, "closing a peer that does not read what it is sent");
            self.close_with(close::TOO_SLOW, "too slow: messages were not read in time", true);
        }
    }

    pub fn send(&self, message: &ServerMessage) {
        self.deps.metrics.messages_out.inc();
        self.push(Message::Text(message.to_json()));
    }

    /// Starts the close handshake ([`Output::close_with`], what is queued going out first).
    pub fn close(&self, code: u16, reason: &str) {
        self.close_with(code, reason, false);
    }

    /// Starts the close handshake: the close frame goes out (after what is queued, unless
    /// `discard`), further input is ignored, and the actor stops when the peer answers or the
    /// connection is dropped `ws.close_timeout` later.
    pub fn close_with(&self, code: u16, reason: &str, discard: bool) {
        if self.close_code.get().is_some() {
            return;
        }
        self.closing(code);
        self.send_close(code, reason, discard);
    }

    /// Queues the close frame; the close handshake is bounded by `ws.close_timeout`.
    fn send_close(&self, code: u16, reason: &str, discard: bool) {
        let reason = CloseReason { code: CloseCode::from(code), description: Some(reason.to_owned()) };
        self.outbox.close(Some(reason), self.deps.config.close_timeout, discard);
    }

    /// Records how the connection ends and tells the registry to stop delivering to it.
    pub fn closing(&self, code: u16) {
        self.record_close(code);
        let closing = registry::Closing { conn_id: self.conn_id };
        registry::lifecycle::note(&self.deps.registry, registry::lifecycle::Note::Closing(closing));
    }

    /// Records how the connection ends (the `closes_total` metric).
    fn record_close(&self, code: u16) {
        self.close_code.set(Some(code));
        self.deps.metrics.closes.with_label_values(&[&code.to_string()]).inc();
    }
}

impl Deliver for Output {
    /// Queues what the registry sends.
    fn deliver(&self, message: Outbound) {
        match message {
            // An echo socket sends only its echoes (the registry's `expiring`, for one).
            Outbound::Frame(_) if self.mode == SocketMode::Echo => {}
            Outbound::Frame(text) => {
                self.deps.metrics.messages_out.inc();
                self.push(Message::Text(text));
            }
            Outbound::Close { code, reason, deadline_ms } => {
                if let Some(deadline) = deadline_ms {
                    let lag = crate::time::now_unix_ms().saturating_sub(deadline);
                    self.deps.metrics.expiry_lag.observe(lag as f64 / 1000.0);
                }
                // The registry let go of this socket when it sent this: no `Closing` back (in a
                // burst of expiries, that was a wake-up of the registry per socket).
                if self.close_code.get().is_none() {
                    self.record_close(code);
                    self.send_close(code, reason, false);
                }
            }
        }
    }
}
