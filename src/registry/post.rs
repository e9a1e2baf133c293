//! What the registry sends sockets (frames, closes, warnings) goes to their worker threads in
//! batches: the messages of one turn of the registry's event loop for the sockets of one worker
//! go as one task on that worker, which hands them to the sockets' mailboxes there. The reverse
//! of [`super::lifecycle`].
//!
//! Why: a message sent to an actor from another thread wakes it through its worker's queue of
//! tasks woken from outside, and a worker with tasks of its own to run serves that queue once in
//! 31 tasks (tokio's `LocalSet`). In a burst of expiries, the registry's closes waited behind the
//! close handshakes and releases of the sockets closed before them: with 10,000 tokens expiring
//! in one second, the actors handled their closes 110 to 150 ms after `exp` on average. Handed
//! over on the worker, a batch's messages queue among that work in turn, and the worker is woken
//! once per batch rather than once per socket.
//!
//! Order is kept: all of a socket's messages from the registry take the same path, and a batch
//! hands them over in the order they were sent.

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::ThreadId;

use actix::prelude::*;

use super::{lifecycle, Outbound};

/// The most messages a batch holds: its task hands them over without yielding, so a fan-out to
/// a large room goes in several.
const MAX_BATCH: usize = 1024;

/// A socket's mailbox as the registry holds it. Cloning it is cheap.
#[derive(Clone)]
pub struct SocketOutbox(Arc<Inner>);

struct Inner {
    recipient: Recipient<Outbound>,
    /// The socket's worker thread; `None` off an actix thread, where each message goes at once.
    worker: Option<(ThreadId, ArbiterHandle)>,
}

impl SocketOutbox {
    /// Made on the socket actor's own thread: that is the worker its messages are handed to.
    pub fn new(recipient: Recipient<Outbound>) -> Self {
        let worker = Arbiter::try_current().map(|arbiter| (std::thread::current().id(), arbiter));
        Self(Arc::new(Inner { recipient, worker }))
    }

    /// Sends `message` in this thread's next batch for the socket's worker.
    pub fn do_send(&self, message: Outbound) {
        let Some((worker, arbiter)) = &self.0.worker else {
            return self.0.recipient.do_send(message);
        };
        let mut message = Some(message);
        let _ = BATCHES.try_with(|batches| batches.borrow_mut().queue(self, *worker, arbiter, &mut message));
        if let Some(message) = message {
            // This thread is exiting and its batches are gone: the message goes alone.
            self.0.recipient.do_send(message);
        }
    }
}

/// One worker's messages, in the order sent.
struct Batch {
    worker: ThreadId,
    arbiter: ArbiterHandle,
    messages: Vec<(SocketOutbox, Outbound)>,
}

impl Batch {
    /// Hands the messages over on their worker. If it has stopped, so have its sockets, and
    /// the messages are dropped, as their closed mailboxes would.
    fn send(self) {
        let messages = self.messages;
        self.arbiter.spawn(async move {
            for (outbox, message) in messages {
                outbox.0.recipient.do_send(message);
            }
        });
    }
}

/// The messages this thread has not handed over yet, per worker.
#[derive(Default)]
struct Batches {
    waiting: Vec<Batch>,
}

impl Batches {
    /// Queues the message for `worker` (taking it out of `message`); the first of a turn
    /// schedules the sending, behind what this thread runs now. Off an actix thread, it goes at
    /// once.
    fn queue(
        &mut self,
        outbox: &SocketOutbox,
        worker: ThreadId,
        arbiter: &ArbiterHandle,
        message: &mut Option<Outbound>,
    ) {
        let first = self.waiting.is_empty();
        let index = match self.waiting.iter().position(|batch| batch.worker == worker) {
            Some(index) => index,
            None => {
                self.waiting.push(Batch { worker, arbiter: arbiter.clone(), messages: Vec::new() });
                self.waiting.len() - 1
            }
        };
        self.waiting[index].messages.extend(message.take().map(|m| (outbox.clone(), m)));
        if self.waiting[index].messages.len() >= MAX_BATCH {
            self.waiting.swap_remove(index).send();
        }
        if first && !lifecycle::after_this_turn(send_now) {
            self.send();
        }
    }

    fn send(&mut self) {
        self.waiting.drain(..).for_each(Batch::send);
    }
}

thread_local! {
    static BATCHES: RefCell<Batches> = RefCell::default();
}

/// Hands over what this thread holds now.
pub fn send_now() {
    let _ = BATCHES.try_with(|batches| batches.borrow_mut().send());
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// A socket's stand-in: the frames it received, and on which thread.
    struct Recorder(Arc<Mutex<Vec<(ThreadId, String)>>>);

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<Outbound> for Recorder {
        type Result = ();

        fn handle(&mut self, msg: Outbound, _: &mut Context<Self>) {
            let Outbound::Frame(text) = msg else { panic!("only frames are sent here") };
            self.0.lock().unwrap().push((std::thread::current().id(), text.to_string()));
        }
    }

    /// A socket on `worker`: its outbox made there, as the registry receives it.
    async fn socket_on(worker: &Arbiter) -> (SocketOutbox, ThreadId, Arc<Mutex<Vec<(ThreadId, String)>>>) {
        let received = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let recorder = Recorder(received.clone());
        assert!(worker.spawn(async move {
            let outbox = SocketOutbox::new(recorder.start().recipient());
            let _ = tx.send((outbox, std::thread::current().id()));
        }));
        let (outbox, thread) = rx.await.unwrap();
        (outbox, thread, received)
    }

    async fn until_received(received: &Mutex<Vec<(ThreadId, String)>>, n: usize) {
        for _ in 0..500 {
            if received.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} of {n} messages arrived", received.lock().unwrap().len());
    }

    fn frame(i: usize) -> Outbound {
        Outbound::Frame(i.to_string().into())
    }

    #[actix::test]
    async fn a_turns_messages_go_when_it_ends_in_order_on_each_sockets_worker() {
        let (first_worker, second_worker) = (Arbiter::new(), Arbiter::new());
        let (first, first_thread, first_received) = socket_on(&first_worker).await;
        let (second, second_thread, second_received) = socket_on(&second_worker).await;

        // One turn of this thread, under a batch's size: nothing is handed over before it ends.
        for i in 0..100 {
            first.do_send(frame(i));
            second.do_send(frame(1000 + i));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(first_received.lock().unwrap().is_empty(), "held until the turn ends");
        assert!(second_received.lock().unwrap().is_empty(), "held until the turn ends");

        // The next turn goes past a batch's size for the first socket: what fills it goes at once.
        tokio::task::yield_now().await;
        for i in 100..(100 + MAX_BATCH) {
            first.do_send(frame(i));
        }
        until_received(&first_received, 100 + MAX_BATCH - 1).await;
        until_received(&second_received, 100).await;
        until_received(&first_received, 100 + MAX_BATCH).await;

        let first_received = first_received.lock().unwrap();
        let expected: Vec<(ThreadId, String)> = (0..100 + MAX_BATCH).map(|i| (first_thread, i.to_string())).collect();
        assert_eq!(*first_received, expected, "in the order sent, on the socket's own worker");
        let expected: Vec<(ThreadId, String)> = (1000..1100).map(|i| (second_thread, i.to_string())).collect();
        assert_eq!(*second_received.lock().unwrap(), expected);
        first_worker.stop();
        second_worker.stop();
    }

    #[actix::test]
    async fn a_socket_made_off_an_actix_thread_is_sent_to_at_once() {
        let worker = Arbiter::new();
        let (on_worker, thread, received) = socket_on(&worker).await;
        let recipient = on_worker.0.recipient.clone();
        let outbox = std::thread::spawn(move || SocketOutbox::new(recipient)).join().unwrap();
        outbox.do_send(frame(7));
        // Without this thread yielding, which a batch would wait for.
        for _ in 0..200 {
            if !received.lock().unwrap().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(*received.lock().unwrap(), [(thread, "7".to_owned())]);
        worker.stop();
    }
}
