//! The WebSocket wire beneath the socket actor, on actix-http's frame codec, with every buffer
//! bounded. (actix-web-actors, which this replaces, reads a frame's whole payload before it
//! looks at the declared length, and queues outbound frames without limit.)
//!
//! - [`Inbound`] reads the request payload into whole messages. It looks at each frame header
//!   as soon as it arrives, so a frame declaring more than `max_message` bytes (alone, or with
//!   the fragments before it) fails at once, and it reads only while no whole frame is
//!   buffered: a socket holds at most `max_message` plus one read of the peer's bytes. Text is
//!   checked for UTF-8 as its bytes arrive, fragments and parts of a frame alike, so an invalid
//!   sequence fails at once rather than when the message is whole (RFC 6455 §8.1).
//! - [`Outbox`] holds encoded frames until the connection's [`super::pump::Pump`] takes them,
//!   refusing any frame that would take it past its byte limit. After a close frame, the pump
//!   waits `close_timeout` for the peer's answer and then drops the TCP connection whatever the
//!   peer does.
//!
//! The actor and the pump run on the same worker thread (an actor started in a handler lives on
//! that worker's arbiter), so they share the outbox through `Rc<RefCell<…>>`, without locks.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{CloseReason, Codec, Frame, Item, Message, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use tokio::time::Instant;

/// One complete thing from the peer.
#[derive(Debug)]
pub enum Incoming {
    Text(ByteString),
    Binary(Bytes),
    /// A frame of a fragmented message that is not its last (counted, so fragments cannot
    /// bypass the rate limit).
    Fragment,
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
}

/// Why the inbound side failed; each maps to a close code.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message too big")]
    TooBig,
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// The connection broke; there is nobody to tell.
    #[error("connection lost")]
    Gone,
}

/// Whole messages out of a request payload, holding at most one message's worth of bytes.
pub struct Inbound<S> {
    payload: S,
    codec: Codec,
    buf: BytesMut,
    max_message: usize,
    /// A fragmented message being reassembled: whether it is text, and its bytes so far.
    partial: Option<(bool, BytesMut)>,
    /// The UTF-8 check of the text message under way (begun before its first frame is whole).
    utf8: Option<Utf8Check>,
    /// Payload bytes of the text frame at the head of `buf` that `utf8` has seen already.
    frame_checked: usize,
    done: bool,
}

impl<S> Inbound<S> {
    pub fn new(payload: S, max_message: usize) -> Self {
        Self {
            payload,
            codec: Codec::new().max_size(max_message),
            buf: BytesMut::new(),
            max_message,
            partial: None,
            utf8: None,
            frame_checked: 0,
            done: false,
        }
    }

    /// Refuses a frame whose header declares too much, before its payload is read.
    fn check_header(&self) -> Result<(), WireError> {
        let Some((opcode, declared, _)) = frame_header(&self.buf) else { return Ok(()) };
        let is_control = opcode & 0x08 != 0;
        let held = if is_control { 0 } else { self.partial.as_ref().map_or(0, |(_, b)| b.len()) };
        if declared.saturating_add(held as u64) > self.max_message as u64 {
            return Err(WireError::TooBig);
        }
        Ok(())
    }

    /// Checks the part of a text frame that has arrived, while the frame is not whole yet.
    fn check_partial_text(&mut self) -> Result<(), WireError> {
        let Some((opcode, declared, length_end)) = frame_header(&self.buf) else { return Ok(()) };
        let is_text = match opcode {
            0x1 => self.partial.is_none(),
            0x0 => matches!(self.partial, Some((true, _))),
            _ => false,
        };
        if !is_text {
            return Ok(());
        }
        let Some(mask) = self.buf.get(length_end..length_end + 4) else { return Ok(()) };
        let start = length_end + 4;
        // Within max_message (checked before), so it fits.
        let arrived = (self.buf.len() - start).min(declared as usize);
        let utf8 = self.utf8.get_or_insert_with(Utf8Check::default);
        let mut chunk = [0u8; 64];
        for from in (self.frame_checked..arrived).step_by(chunk.len()) {
            let to = (from + chunk.len()).min(arrived);
            for (i, byte) in (from..to).zip(chunk.iter_mut()) {
                *byte = self.buf[start + i] ^ mask[i % 4];
            }
            if !utf8.feed(&chunk[..to - from]) {
                return Err(WireError::InvalidUtf8);
            }
        }
        self.frame_checked = self.frame_checked.max(arrived);
        Ok(())
    }

    /// A close frame whose reason is not UTF-8 fails with 1007, like any other text (the codec
    /// refuses it, but as a protocol error).
    fn check_close_reason(&self) -> Result<(), WireError> {
        let Some((0x8, declared @ 3..=125, length_end)) = frame_header(&self.buf) else { return Ok(()) };
        // Reserved bits or no mask: the codec's protocol error comes first.
        if self.buf[0] & 0x70 != 0 || self.buf[1] & 0x80 == 0 {
            return Ok(());
        }
        let start = length_end + 4;
        let Some(payload) = self.buf.get(start..start + declared as usize) else { return Ok(()) };
        let mask = &self.buf[length_end..start];
        let payload: Vec<u8> = payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        let code = u16::from_be_bytes([payload[0], payload[1]]);
        // The codes the codec accepts; any other is a protocol error, whatever the reason.
        let valid_code = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
        if valid_code && std::str::from_utf8(&payload[2..]).is_err() {
            return Err(WireError::InvalidUtf8);
        }
        Ok(())
    }

    /// Feeds a whole text frame's payload (past what was checked while it arrived) to the
    /// message's UTF-8 check; `last` ends the message, which must end on a whole character.
    fn check_text(&mut self, data: &[u8], checked: usize, last: bool) -> Result<(), WireError> {
        let utf8 = self.utf8.get_or_insert_with(Utf8Check::default);
        if !utf8.feed(&data[checked.min(data.len())..]) || (last && !utf8.is_complete()) {
            return Err(WireError::InvalidUtf8);
        }
        if last {
            self.utf8 = None;
        }
        Ok(())
    }

    /// Turns a frame into a message, reassembling fragments. `checked` bytes of its payload
    /// were checked for UTF-8 as they arrived.
    fn assemble(&mut self, frame: Frame, checked: usize) -> Result<Incoming, WireError> {
        let (first, data, last) = match frame {
            Frame::Text(data) => {
                self.check_text(&data, checked, true)?;
                return text(data);
            }
            Frame::Binary(data) => return Ok(Incoming::Binary(data)),
            Frame::Ping(data) => return Ok(Incoming::Ping(data)),
            Frame::Pong(_) => return Ok(Incoming::Pong),
            Frame::Close(reason) => return Ok(Incoming::Close(reason)),
            Frame::Continuation(Item::FirstText(data)) => (Some(true), data, false),
            Frame::Continuation(Item::FirstBinary(data)) => (Some(false), data, false),
            Frame::Continuation(Item::Continue(data)) => (None, data, false),
            Frame::Continuation(Item::Last(data)) => (None, data, true),
        };
        match (first, self.partial.as_mut()) {
            (Some(is_text), None) => self.partial = Some((is_text, BytesMut::from(&data[..]))),
            (None, Some((_, buf))) => buf.extend_from_slice(&data),
            // The codec tracks continuation state and refuses these first; kept total anyway.
            _ => return Err(WireError::Protocol(ProtocolError::ContinuationNotStarted)),
        }
        if matches!(self.partial, Some((true, _))) {
            self.check_text(&data, checked, last)?;
        }
        if self.partial.as_ref().is_some_and(|(_, b)| b.len() > self.max_message) {
            return Err(WireError::TooBig);
        }
        if !last {
            return Ok(Incoming::Fragment);
        }
        let (is_text, buf) = self.partial.take().expect("a fragmented message is in progress");
        if is_text {
            text(buf.freeze())
        } else {
            Ok(Incoming::Binary(buf.freeze()))
        }
    }

    fn fail(&mut self, error: WireError) -> Poll<Option<Result<Incoming, WireError>>> {
        self.done = true;
        self.buf = BytesMut::new();
        self.partial = None;
        self.utf8 = None;
        Poll::Ready(Some(Err(error)))
    }
}

fn text(data: Bytes) -> Result<Incoming, WireError> {
    ByteString::try_from(data).map(Incoming::Text).map_err(|_| WireError::InvalidUtf8)
}

/// The opcode, declared payload length and end of the length field (where the masking key
/// starts) of the frame at the start of `buf`, once its header up to the extended length has
/// arrived (RFC 6455 §5.2).
fn frame_header(buf: &[u8]) -> Option<(u8, u64, usize)> {
    let (first, second) = (*buf.first()?, *buf.get(1)?);
    let (declared, length_end) = match second & 0x7F {
        126 => (u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)), 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    Some((first & 0x0F, declared, length_end))
}

/// UTF-8 validation of a text message fed in pieces: a piece may end inside a character, and
/// a sequence that no continuation could make valid fails at once.
#[derive(Debug, Default)]
struct Utf8Check {
    /// The start of a character cut off at the end of the last piece.
    carry: [u8; 4],
    carried: usize,
}

impl Utf8Check {
    /// Whether the text is still valid UTF-8 with `piece` added.
    fn feed(&mut self, mut piece: &[u8]) -> bool {
        // Complete the character cut off last time, a byte at a time (it needs at most three).
        while self.carried > 0 {
            let Some((&byte, rest)) = piece.split_first() else { return true };
            self.carry[self.carried] = byte;
            self.carried += 1;
            piece = rest;
            match std::str::from_utf8(&self.carry[..self.carried]) {
                Ok(_) => self.carried = 0,
                Err(e) if e.error_len().is_some() => return false,
                Err(_) => {}
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => true,
            Err(e) if e.error_len().is_some() => false,
            Err(e) => {
                let tail = &piece[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carried = tail.len();
                true
            }
        }
    }

    /// Whether the text fed so far ends on a whole character.
    fn is_complete(&self) -> bool {
        self.carried == 0
    }
}

impl<S, E> Stream for Inbound<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Incoming, WireError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Err(e) = this.check_header().and_then(|()| this.check_close_reason()) {
                return this.fail(e);
            }
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => {
                    let checked = std::mem::take(&mut this.frame_checked);
                    return match this.assemble(frame, checked) {
                        Ok(message) => Poll::Ready(Some(Ok(message))),
                        Err(e) => this.fail(e),
                    };
                }
                Ok(None) => {
                    if let Err(e) = this.check_partial_text() {
                        return this.fail(e);
                    }
                }
                Err(ProtocolError::Overflow) => return this.fail(WireError::TooBig),
                Err(e) => return this.fail(WireError::Protocol(e)),
            }
            // No whole frame yet, and the one begun is within the limit: read more.
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(_))) => return this.fail(WireError::Gone),
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A frame did not fit: the peer is not reading fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the outbound queue is full")]
pub struct Full;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// A close frame is queued; the body ends when the peer answers, or fails at `deadline`.
    Closing {
        deadline: Instant,
    },
    /// Nothing more will be queued: the body ends once the queue is drained.
    Finished,
}

struct OutboxState {
    codec: Codec,
    queued: BytesMut,
    limit: usize,
    phase: Phase,
    waker: Option<Waker>,
}

/// What [`Outbox::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// Encoded frames, in order.
    Frames(Bytes),
    /// Nothing yet (the waker given to [`Outbox::wake_on_change`] is woken when something is
    /// queued).
    Nothing,
    /// Nothing, and nothing more will be queued.
    Finished,
}

/// Encoded frames waiting for the connection, at most `limit` bytes of them.
#[derive(Clone)]
pub struct Outbox(Rc<RefCell<OutboxState>>);

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Self(Rc::new(RefCell::new(OutboxState {
            codec: Codec::new(),
            queued: BytesMut::new(),
            limit,
            phase: Phase::Open,
            waker: None,
        })))
    }

    /// Queues a data or control frame. Once a close frame is queued, nothing more is sent
    /// (RFC 6455 §5.5.1), and this is a no-op.
    pub fn send(&self, message: Message) -> Result<(), Full> {
        let mut state = self.0.borrow_mut();
        if state.phase != Phase::Open {
            return Ok(());
        }
        let before = state.queued.len();
        let OutboxState { codec, queued, .. } = &mut *state;
        // Encoding a text, binary, ping or pong frame into a buffer cannot fail.
        let _ = codec.encode(message, queued);
        if state.queued.len() > state.limit {
            state.queued.truncate(before);
            return Err(Full);
        }
        state.wake();
        Ok(())
    }

    /// Queues the close frame and starts the close handshake: the body waits up to `timeout`
    /// for the peer's answer. With `discard`, frames still queued are dropped first (the peer
    /// is not reading them), so the close frame goes out next.
    pub fn close(&self, reason: Option<CloseReason>, timeout: Duration, discard: bool) {
        let mut state = self.0.borrow_mut();
        if state.phase != Phase::Open {
            return;
        }
        if discard {
            state.queued = BytesMut::new();
        }
        let OutboxState { codec, queued, .. } = &mut *state;
        let _ = codec.encode(Message::Close(reason), queued);
        state.phase = Phase::Closing { deadline: Instant::now() + timeout };
        state.wake();
    }

    /// Nothing more to send (the close handshake completed, or the actor stopped): the body
    /// ends once what is queued has been handed over.
    pub fn finish(&self) {
        let mut state = self.0.borrow_mut();
        state.phase = Phase::Finished;
        state.wake();
    }

    /// Whether a close frame has been queued.
    pub fn is_closing(&self) -> bool {
        self.0.borrow().phase != Phase::Open
    }

    /// `waker` is woken once on the next change: a frame queued, the close handshake started,
    /// or the end. The pump registers on every turn, not only when it has nothing to write: a
    /// close must reach it while it waits on a write the peer is not reading, or the close
    /// deadline is never armed (on TCP the kernel's `TCP_USER_TIMEOUT` ends such a connection
    /// too; the pump does not count on what its connection is).
    pub fn wake_on_change(&self, waker: &Waker) {
        let mut state = self.0.borrow_mut();
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
    }

    /// Takes every queued frame.
    pub fn take(&self) -> Taken {
        let mut state = self.0.borrow_mut();
        if !state.queued.is_empty() {
            return Taken::Frames(state.queued.split().freeze());
        }
        if state.phase == Phase::Finished {
            return Taken::Finished;
        }
        Taken::Nothing
    }

    /// `first`, followed by every queued frame, as one buffer to write (the 101 and the frames
    /// queued while it was being decided go out in one write).
    pub fn join_queued(&self, first: Bytes) -> Bytes {
        let mut state = self.0.borrow_mut();
        if state.queued.is_empty() {
            return first;
        }
        let mut joined = BytesMut::with_capacity(first.len() + state.queued.len());
        joined.extend_from_slice(&first);
        joined.extend_from_slice(&state.queued.split());
        joined.freeze()
    }

    /// When the peer's answer to the queued close frame is due, if one is queued and the
    /// handshake is not over.
    pub fn close_deadline(&self) -> Option<Instant> {
        match self.0.borrow().phase {
            Phase::Closing { deadline } => Some(deadline),
            Phase::Open | Phase::Finished => None,
        }
    }
}

impl OutboxState {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// A masked client frame header for `len` payload bytes.
    fn header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(&[0, 0, 0, 0]); // a zero mask leaves the payload as is
        out
    }

    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Bytes {
        let mut out = header(opcode, fin, payload.len() as u64);
        out.extend_from_slice(payload);
        Bytes::from(out)
    }

    fn inbound(chunks: Vec<Bytes>, max: usize) -> Inbound<impl Stream<Item = Result<Bytes, ()>> + Unpin> {
        Inbound::new(futures_util::stream::iter(chunks.into_iter().map(Ok)), max)
    }

    #[actix_rt::test]
    async fn a_huge_declared_length_fails_on_the_header_alone() {
        // The payload never comes: the header is enough to refuse.
        let mut stream = inbound(vec![Bytes::from(header(0x1, true, 1 << 40))], 1024);
        assert!(matches!(stream.next().await, Some(Err(WireError::TooBig))));
        assert!(stream.next().await.is_none());
    }

    #[actix_rt::test]
    async fn fragments_count_against_the_limit_before_they_arrive() {
        let first = frame(0x1, false, &[b'a'; 600]);
        let next = Bytes::from(header(0x0, true, 600));
        let mut stream = inbound(vec![first, next], 1024);
        assert!(matches!(stream.next().await, Some(Ok(Incoming::Fragment))));
        assert!(matches!(stream.next().await, Some(Err(WireError::TooBig))));
    }

    #[actix_rt::test]
    async fn fragments_reassemble_and_text_is_checked_for_utf8() {
        let chunks = vec![frame(0x1, false, b"hel"), frame(0x9, true, b"p"), frame(0x0, true, b"lo")];
        let mut stream = inbound(chunks, 1024);
        assert!(matches!(stream.next().await, Some(Ok(Incoming::Fragment))));
        assert!(matches!(stream.next().await, Some(Ok(Incoming::Ping(p))) if &p[..] == b"p"));
        assert!(matches!(stream.next().await, Some(Ok(Incoming::Text(t))) if &t[..] == "hello"));
        let mut bad = inbound(vec![frame(0x1, true, &[0xff, 0xfe])], 1024);
        assert!(matches!(bad.next().await, Some(Err(WireError::InvalidUtf8))));
    }

    #[actix_rt::test]
    async fn an_invalid_fragment_fails_before_the_message_is_whole() {
        // Autobahn 6.4.1: the first fragment is valid; the second holds U+110000, out of range.
        let first = frame(0x1, false, "κόσμε".as_bytes());
        let invalid = frame(0x0, false, &[0xf4, 0x90, 0x80, 0x80]);
        let mut stream = inbound(vec![first, invalid], 1024);
        assert!(matches!(stream.next().await, Some(Ok(Incoming::Fragment))));
        assert!(matches!(stream.next().await, Some(Err(WireError::InvalidUtf8))), "no need for the last fragment");
    }

    #[actix_rt::test]
    async fn an_invalid_sequence_fails_before_its_frame_is_whole() {
        // Autobahn 6.4.4: one frame, of which only the part up to the invalid byte has arrived.
        let mut whole = header(0x1, true, 20);
        whole.extend_from_slice(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xf4]);
        let mut stream = inbound(vec![Bytes::from(whole), Bytes::from_static(&[0x90])], 1024);
        assert!(matches!(stream.next().await, Some(Err(WireError::InvalidUtf8))));
    }

    #[actix_rt::test]
    async fn text_cut_inside_a_character_is_valid_across_frames_and_reads() {
        let text = "aé€😀".repeat(30);
        let (a, b) = text.as_bytes().split_at(2); // inside the é
        let second = frame(0x0, true, b);
        // the second frame's payload arrives a byte at a time, every cut point included
        let mut chunks = vec![frame(0x1, false, a)];
        chunks.extend(second.chunks(1).map(Bytes::copy_from_slice));
        let mut stream = inbound(chunks, 1024);
        assert!(matches!(stream.next().await, Some(Ok(Incoming::Fragment))));
        assert!(matches!(stream.next().await, Some(Ok(Incoming::Text(t))) if t == text.as_str()));
        // and a message may not end inside a character
        let mut cut = inbound(vec![frame(0x1, false, a), frame(0x0, true, b"")], 1024);
        assert!(matches!(cut.next().await, Some(Ok(Incoming::Fragment))));
        assert!(matches!(cut.next().await, Some(Err(WireError::InvalidUtf8))));
    }

    #[actix_rt::test]
    async fn a_close_reason_that_is_not_utf8_is_1007_and_a_bad_code_a_protocol_error() {
        let mut bad_reason = inbound(vec![frame(0x8, true, &[0x03, 0xe8, b'o', 0xff])], 1024);
        assert!(matches!(bad_reason.next().await, Some(Err(WireError::InvalidUtf8))));
        let mut bad_code = inbound(vec![frame(0x8, true, &[0x03, 0xed, b'o', 0xff])], 1024); // 1005
        assert!(matches!(bad_code.next().await, Some(Err(WireError::Protocol(_)))));
        let mut good = inbound(vec![frame(0x8, true, &[0x03, 0xe8, b'o', b'k'])], 1024);
        assert!(
            matches!(good.next().await, Some(Ok(Incoming::Close(Some(r)))) if r.description.as_deref() == Some("ok"))
        );
    }

    #[test]
    fn utf8_check_fails_at_the_first_byte_no_continuation_can_save() {
        let mut check = Utf8Check::default();
        assert!(check.feed(&[0xf4]) && !check.is_complete(), "a character begun");
        assert!(!check.feed(&[0x90]), "0xf4 0x90 is past U+10FFFF");
        let mut check = Utf8Check::default();
        assert!(check.feed(&[0xe2, 0x82]) && check.feed(&[0xac, b'x']) && check.is_complete());
        assert!(!Utf8Check::default().feed(&[0xc0, 0xaf]), "overlong");
        assert!(!Utf8Check::default().feed(&[0xed, 0xa0]), "a surrogate");
    }

    #[actix_rt::test]
    async fn frames_split_across_reads_are_put_together() {
        let whole = frame(0x1, true, b"split me");
        let chunks = whole.chunks(3).map(Bytes::copy_from_slice).collect();
        let mut stream = inbound(chunks, 1024);
        assert!(matches!(stream.next().await, Some(Ok(Incoming::Text(t))) if &t[..] == "split me"));
    }

    #[test]
    fn the_outbox_refuses_past_its_limit_and_close_discards_the_backlog() {
        let outbox = Outbox::new(100);
        assert_eq!(outbox.send(Message::Text("x".repeat(60).into())), Ok(()));
        assert_eq!(outbox.send(Message::Text("y".repeat(60).into())), Err(Full));
        outbox.close(None, Duration::from_secs(1), true);
        assert!(outbox.close_deadline().is_some());
        assert_eq!(outbox.take(), Taken::Frames(Bytes::from_static(&[0x88, 0x00])), "only the close frame is left");
        assert_eq!(outbox.take(), Taken::Nothing);
        outbox.finish();
        assert_eq!(outbox.take(), Taken::Finished);
        assert_eq!(outbox.close_deadline(), None, "the handshake is over");
    }
}
