//! The socket's TCP (or TLS) connection once the 101 is written: [`Pump`] owns it, writes what
//! the [`Outbox`] holds, reads only when the socket's [`WireReader`] asks for more, and ends the
//! connection itself as soon as the WebSocket is done with it.
//!
//! Why not actix-http's HTTP/1 dispatcher, which carries a 101 response's body otherwise: it
//! holds an 8 KiB read buffer and an 8 KiB write buffer for the connection's whole life (most of
//! an idle socket's memory), and after the body ends it waits `client_disconnect_timeout` for
//! the rest of a request payload that, on a WebSocket, never ends, so a closed socket's TCP
//! connection lingered for up to a second. Here an idle socket holds no buffer, and the
//! connection is shut down (TLS `close_notify`, then FIN) the moment the close handshake is
//! over (RFC 6455 §7.1.1: the server closes the TCP connection first).
//!
//! One task does all the I/O of a connection, so one waker serves both directions (a TLS read
//! may have to write, and the reverse); the socket actor, on the same worker thread, only
//! exchanges bytes with it through [`Wire`].

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::transport::{Outbox, Taken};

/// The most read from the connection at once; what the peer sent beyond stays in the kernel.
const READ_CHUNK: usize = 8 * 1024;

/// How long the pump waits for a graceful shutdown (the TLS `close_notify` flushed, FIN sent)
/// before it drops the connection anyway.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// How the peer's side ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Open,
    /// The peer closed its side (EOF).
    Eof,
    /// The connection failed or was dropped.
    Failed,
}

#[derive(Debug)]
struct WireState {
    /// Bytes read from the peer that the reader has not taken yet.
    incoming: Bytes,
    /// The reader is waiting for bytes: the pump reads only then, so a socket with a whole
    /// frame waiting holds the rest in the kernel (TCP backpressure).
    wants_read: bool,
    ended: Ended,
    reader: Option<Waker>,
    pump: Option<Waker>,
}

/// The connection's end of what the socket actor and its pump share. Dropping it (with the
/// pump, or with a handoff that never reached one: a refused or failed handshake) ends the
/// reader, so the socket actor stops.
#[derive(Debug)]
pub struct Wire(Rc<RefCell<WireState>>);

impl Wire {
    /// The connection's end, and the reader's for [`super::transport::Inbound`].
    pub fn new() -> (Self, WireReader) {
        let state = Rc::new(RefCell::new(WireState {
            incoming: Bytes::new(),
            wants_read: false,
            ended: Ended::Open,
            reader: None,
            pump: None,
        }));
        (Self(state.clone()), WireReader(state))
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let mut state = self.0.borrow_mut();
        if state.ended == Ended::Open {
            state.ended = Ended::Failed;
        }
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
    }
}

/// The peer's bytes as the pump reads them, on the reader's demand.
#[derive(Debug)]
pub struct WireReader(Rc<RefCell<WireState>>);

impl Stream for WireReader {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut state = self.0.borrow_mut();
        if !state.incoming.is_empty() {
            return Poll::Ready(Some(Ok(std::mem::take(&mut state.incoming))));
        }
        match state.ended {
            Ended::Eof => return Poll::Ready(None),
            Ended::Failed => return Poll::Ready(Some(Err(io::ErrorKind::ConnectionAborted.into()))),
            Ended::Open => {}
        }
        state.reader = Some(cx.waker().clone());
        if !state.wants_read {
            state.wants_read = true;
            if let Some(waker) = state.pump.take() {
                waker.wake();
            }
        }
        Poll::Pending
    }
}

/// What the accepted handshake hands to the connection: it rides in the 101 response's
/// extensions from the handler to [`super::takeover`], which turns it into a [`Pump`]. `G`
/// is dropped with it, that is, when the connection is done with.
pub struct Handoff<G> {
    wire: Wire,
    outbox: Outbox,
    guard: G,
}

impl<G> Handoff<G> {
    pub fn new(wire: Wire, outbox: Outbox, guard: G) -> Self {
        Self { wire, outbox, guard }
    }

    /// What is dropped with the connection.
    pub fn guard(&self) -> &G {
        &self.guard
    }

    /// Starts pumping `io`: `head` (the 101) goes out first, with whatever the socket has
    /// queued by then; `early` are bytes the peer sent right behind its handshake.
    pub fn pump<T>(self, io: T, head: Bytes, early: Bytes) -> Pump<T, G> {
        if !early.is_empty() {
            let mut state = self.wire.0.borrow_mut();
            state.incoming = early;
            state.wants_read = false;
            if let Some(waker) = state.reader.take() {
                waker.wake();
            }
        }
        Pump {
            io,
            wire: self.wire,
            writing: self.outbox.join_queued(head),
            outbox: self.outbox,
            unflushed: false,
            phase: PumpPhase::Running,
            _guard: self.guard,
        }
    }
}

enum PumpPhase {
    Running,
    /// A close frame is queued: the peer has until this timer to answer, or the connection is
    /// dropped.
    CloseTimer(Pin<Box<Sleep>>),
    /// Everything is written: TLS `close_notify` and FIN, within [`SHUTDOWN_TIMEOUT`].
    ShuttingDown(Pin<Box<Sleep>>),
}

/// One socket's connection: the future that owns it until the WebSocket is done.
pub struct Pump<T, G> {
    io: T,
    wire: Wire,
    outbox: Outbox,
    /// The frames taken from the outbox and not yet all written.
    writing: Bytes,
    /// Written since the last completed flush (TLS holds records until flushed).
    unflushed: bool,
    phase: PumpPhase,
    _guard: G,
}

impl<T: AsyncRead + AsyncWrite + Unpin, G: Unpin> Pump<T, G> {
    /// Reads once if the reader is waiting for bytes.
    fn poll_read(&mut self, cx: &mut Context<'_>) {
        let mut state = self.wire.0.borrow_mut();
        if !state.wants_read || state.ended != Ended::Open || !state.incoming.is_empty() {
            return;
        }
        // Not zeroed: a read overwrites what it reports, and ReadBuf hands out nothing else.
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        let ended = match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Pending => return,
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Ended::Eof,
            Poll::Ready(Ok(())) => {
                state.incoming = Bytes::copy_from_slice(buf.filled());
                Ended::Open
            }
            Poll::Ready(Err(_)) => Ended::Failed,
        };
        state.ended = ended;
        state.wants_read = false;
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
    }

    /// Writes what the outbox holds; `Ready(Ok(()))` once everything is written and nothing
    /// more will come.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let finished = loop {
            if self.writing.is_empty() {
                match self.outbox.take() {
                    Taken::Frames(frames) => self.writing = frames,
                    Taken::Nothing => break false,
                    Taken::Finished => break true,
                }
            }
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.writing))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => {
                    let _ = self.writing.split_to(n);
                    self.unflushed = true;
                }
            }
        };
        if self.unflushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        if finished {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Whether the peer has let the close deadline pass (polled whatever the writing side is
    /// doing: a peer that reads nothing cannot hold the connection open).
    fn close_unanswered(&mut self, cx: &mut Context<'_>) -> bool {
        if let PumpPhase::Running = self.phase {
            match self.outbox.close_deadline() {
                Some(deadline) => self.phase = PumpPhase::CloseTimer(Box::pin(tokio::time::sleep_until(deadline))),
                None => return false,
            }
        }
        match &mut self.phase {
            PumpPhase::CloseTimer(timer) => timer.as_mut().poll(cx).is_ready(),
            PumpPhase::Running | PumpPhase::ShuttingDown(_) => false,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin, G: Unpin> Future for Pump<T, G> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let PumpPhase::ShuttingDown(timer) = &mut this.phase {
            // Done either way: shut down, failed, or out of time.
            let done = Pin::new(&mut this.io).poll_shutdown(cx).is_ready() || timer.as_mut().poll(cx).is_ready();
            return if done { Poll::Ready(()) } else { Poll::Pending };
        }
        this.wire.0.borrow_mut().pump = Some(cx.waker().clone());
        this.outbox.wake_on_change(cx.waker());
        this.poll_read(cx);
        match this.poll_write(cx) {
            Poll::Ready(Ok(())) => {
                this.phase = PumpPhase::ShuttingDown(Box::pin(tokio::time::sleep(SHUTDOWN_TIMEOUT)));
                // Behind whatever else this worker has to run now (in a burst of closes, the
                // close frames still to send come before tearing down those already answered).
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket connection failed while writing");
                Poll::Ready(())
            }
            Poll::Pending if this.close_unanswered(cx) => {
                tracing::debug!(
                    "WebSocket peer did not answer the close frame within ws.close_timeout; connection dropped"
                );
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::Message;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[actix_rt::test]
    async fn the_pump_reads_on_demand_and_shuts_down_once_the_outbox_is_finished() {
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let ((wire, mut reader), outbox) = (Wire::new(), Outbox::new(1024));
        outbox.send(Message::Text("hi".into())).unwrap();
        let head = Bytes::from_static(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        let pump = actix_rt::spawn(Handoff::new(wire, outbox.clone(), ()).pump(ours, head.clone(), "early".into()));
        let mut first = vec![0u8; head.len() + 4];
        peer.read_exact(&mut first).await.unwrap();
        assert_eq!(first[..head.len()], head[..], "the 101 first");
        assert_eq!(first[head.len()..], [0x81, 0x02, b'h', b'i'], "then what was queued meanwhile");

        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"early", "bytes behind the handshake come first");
        peer.write_all(b"later").await.unwrap();
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"later");

        outbox.send(Message::Text("yo".into())).unwrap();
        let mut frame = [0u8; 4];
        peer.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, [0x81, 0x02, b'y', b'o']);

        outbox.finish();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the connection ends with nothing more");
        pump.await.unwrap();
        assert!(reader.next().await.unwrap().is_err(), "the reader learns the connection is gone");
    }

    #[actix_rt::test]
    async fn the_peer_closing_its_side_ends_the_reader() {
        let (ours, peer) = tokio::io::duplex(1024);
        let ((wire, mut reader), outbox) = (Wire::new(), Outbox::new(1024));
        let pump = actix_rt::spawn(Handoff::new(wire, outbox.clone(), ()).pump(ours, Bytes::new(), Bytes::new()));
        drop(peer);
        assert!(reader.next().await.is_none());
        outbox.finish();
        pump.await.unwrap();
    }

    #[actix_rt::test]
    async fn a_handoff_never_pumped_ends_the_reader() {
        let (wire, mut reader) = Wire::new();
        drop(Handoff::new(wire, Outbox::new(16), ()));
        assert!(reader.next().await.unwrap().is_err());
    }

    #[actix_rt::test]
    async fn an_unanswered_close_drops_the_connection_at_the_deadline() {
        tokio::time::pause();
        let (ours, mut peer) = tokio::io::duplex(1024);
        let outbox = Outbox::new(1024);
        let pump =
            actix_rt::spawn(Handoff::new(Wire::new().0, outbox.clone(), ()).pump(ours, Bytes::new(), Bytes::new()));
        outbox.close(None, Duration::from_secs(3), false);
        let mut frame = [0u8; 2];
        peer.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, [0x88, 0x00]);
        let deadline = outbox.close_deadline().expect("closing");
        pump.await.unwrap();
        let late = tokio::time::Instant::now().checked_duration_since(deadline).expect("not before the deadline");
        assert!(late <= Duration::from_millis(1), "dropped {late:?} after the deadline (timers tick in ms)");
    }

    #[actix_rt::test]
    async fn a_close_while_the_peer_reads_nothing_drops_the_connection_at_the_deadline() {
        tokio::time::pause();
        // The peer never reads: the pump fills the pipe and is left waiting to write the rest.
        let (ours, _peer) = tokio::io::duplex(1024);
        let outbox = Outbox::new(64 * 1024);
        let pump =
            actix_rt::spawn(Handoff::new(Wire::new().0, outbox.clone(), ()).pump(ours, Bytes::new(), Bytes::new()));
        outbox.send(Message::Text("x".repeat(8 * 1024).into())).unwrap();
        tokio::task::yield_now().await;
        outbox.close(None, Duration::from_secs(3), true);
        let deadline = outbox.close_deadline().expect("closing");
        tokio::time::timeout(Duration::from_secs(60), pump)
            .await
            .expect("the connection is dropped although its write never completes")
            .unwrap();
        let late = tokio::time::Instant::now().checked_duration_since(deadline).expect("not before the deadline");
        assert!(late <= Duration::from_millis(1), "dropped {late:?} after the deadline (timers tick in ms)");
    }
}
