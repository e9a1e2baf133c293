//! What sockets tell the registry about their own lifecycle (registered, closing, gone) goes in
//! batches, one per worker thread: the notes a worker makes in one turn of its event loop reach
//! the registry as one message, so the registry's thread wakes once for all of them. Waking a
//! sleeping thread costs a context switch on each side, and at connect rates those wake-ups
//! were most of what the registry's thread cost.
//!
//! Order is kept: a worker's notes go in the order they were made, a socket's registration is
//! in the registry's mailbox before its 101 goes out ([`super::admission::Place::sent`] waits
//! for that), so whatever the socket sends the registry directly afterwards comes after it;
//! and closing and gone are the last things a socket tells the registry.

use std::cell::RefCell;

use actix::prelude::*;

use super::{Closing, Register, Registry, Unregister};

/// One socket's lifecycle event.
pub enum Note {
    Register(Register),
    Closing(Closing),
    Unregister(Unregister),
}

/// A worker's notes, in the order they were made.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Notes(pub Vec<Note>);

/// The notes not sent yet on this thread, and for which registry (one per server; a thread
/// that talks to another one sends what it holds first). The registry's address is held only
/// while notes wait, so a thread keeps no stopped server's registry alive.
#[derive(Default)]
struct Batch {
    registry: Option<Addr<Registry>>,
    notes: Vec<Note>,
    /// Batches sent from this thread so far.
    sent: u64,
}

impl Batch {
    fn send(&mut self) {
        if self.notes.is_empty() {
            return;
        }
        self.sent += 1;
        let notes = std::mem::take(&mut self.notes);
        if let Some(registry) = self.registry.take() {
            registry.do_send(Notes(notes));
        }
    }
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::default();
}

/// Which batch of this thread a note went in: [`is_sent`] tells when it has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// Queues `note` for `registry`. The first note of a batch schedules its sending, behind what
/// this worker has to run now; off an actix thread, or on one being torn down, it goes at once.
pub fn note(registry: &Addr<Registry>, note: Note) -> Ticket {
    let mut note = Some(note);
    let queued = BATCH.try_with(|batch| {
        let mut batch = batch.borrow_mut();
        if batch.registry.as_ref().is_some_and(|r| r != registry) {
            batch.send();
        }
        let first = batch.notes.is_empty();
        if first {
            batch.registry = Some(registry.clone());
        }
        batch.notes.extend(note.take());
        if first && !after_this_turn(send_now) {
            batch.send();
            return Ticket(batch.sent);
        }
        Ticket(batch.sent + 1)
    });
    queued.unwrap_or_else(|_| {
        // This thread is exiting and its batch is gone: the note goes alone.
        registry.do_send(Notes(note.into_iter().collect()));
        Ticket(0)
    })
}

/// Runs `send` behind what this thread has to run now, through its arbiter; `false` off an
/// actix thread or on one being torn down, where the caller sends at once. Shared with
/// [`super::post`], which batches the other way.
pub(super) fn after_this_turn(send: fn()) -> bool {
    Arbiter::try_current().is_some_and(|arbiter| arbiter.spawn(async move { send() }))
}

/// Sends what this thread holds now.
pub fn send_now() {
    let _ = BATCH.try_with(|batch| batch.borrow_mut().send());
}

/// Whether the batch `ticket` names has been sent.
pub fn is_sent(ticket: Ticket) -> bool {
    BATCH.try_with(|batch| batch.borrow().sent >= ticket.0).unwrap_or(true)
}
