//! What the registry sends sockets (frames, closes, warnings) goes to their worker threads in
//! batches: the messages of one turn of the registry's event loop for the sockets of one worker
//! go as one task on that worker, which delivers them there. The reverse of [`super::lifecycle`].
//!
//! Why: a message sent to an actor from another thread wakes it through its worker's queue of
//! tasks woken from outside, and a worker with tasks of its own to run serves that queue once in
//! 31 tasks (tokio's `LocalSet`). In a burst of expiries, the registry's closes waited behind the
//! close handshakes and releases of the sockets closed before them: with 10,000 tokens expiring
//! in one second, the actors handled their closes 110 to 150 ms after `exp` on average. Handed
//! over on the worker, a batch's messages queue among that work in turn, and the worker is woken
//! once per batch rather than once per socket.
//!
//! A socket is delivered to directly ([`SocketOutbox::local`]): the batch's task queues each
//! message into the socket's outbox itself, through the socket's [`Deliver`] in its worker's
//! table, rather than through the actor's mailbox (an envelope, a wake-up and a turn of the
//! actor per message: in a burst of expiries, most of what the sockets' threads spent beyond a
//! plain actix server's). An actor standing in for a socket ([`SocketOutbox::new`]) gets them in
//! its mailbox.
//!
//! Order is kept: all of a socket's messages from the registry take the same path, and a batch
//! hands them over in the order they were sent.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::ThreadId;

use actix::prelude::*;
use rustc_hash::FxHashMap;

use super::{lifecycle, Outbound};

/// The most messages a batch holds: its task hands them over without yielding, so a fan-out to
/// a large room goes in several.
const MAX_BATCH: usize = 1024;

/// What takes the registry's messages for one socket, on the socket's own thread.
pub trait Deliver {
    fn deliver(&self, message: Outbound);
}

/// A socket as the registry holds it: where what it sends the socket goes. Cloning it is cheap.
#[derive(Clone)]
pub struct SocketOutbox(Arc<Inner>);

struct Inner {
    target: Target,
    /// The socket's worker thread; `None` off an actix thread, where each message goes at once.
    worker: Option<(ThreadId, ArbiterHandle)>,
}

enum Target {
    /// The key of the socket's [`Deliver`] in its worker's table.
    Local(u64),
    /// An actor's mailbox.
    Mailbox(Recipient<Outbound>),
}

impl SocketOutbox {
    /// An actor's mailbox, made on the actor's own thread: that is the worker its messages are
    /// handed to.
    pub fn new(recipient: Recipient<Outbound>) -> Self {
        let worker = Arbiter::try_current().map(|arbiter| (std::thread::current().id(), arbiter));
        Self(Arc::new(Inner { target: Target::Mailbox(recipient), worker }))
    }

    /// A socket of this thread, delivered to through `deliver` for as long as the returned
    /// [`Delivery`] is kept (once it is dropped, what is still sent to the socket is dropped,
    /// as a stopped actor's mailbox would).
    ///
    /// # Panics
    /// Off an actix `Arbiter` thread: the messages reach this thread through its arbiter.
    /// authchat's HTTP workers are arbiters of its actix `System`.
    pub fn local(deliver: Rc<dyn Deliver>) -> (Self, Delivery) {
        let arbiter = Arbiter::try_current().expect("a socket is made on an actix thread");
        let key = LOCAL.with(|local| local.add(deliver));
        let worker = Some((std::thread::current().id(), arbiter));
        (
            Self(Arc::new(Inner { target: Target::Local(key), worker })),
            Delivery { key, _local: std::marker::PhantomData },
        )
    }

    /// Sends `message` in this thread's next batch for the socket's worker.
    pub fn do_send(&self, message: Outbound) {
        let Some((worker, arbiter)) = &self.0.worker else {
            return self.deliver_here(message);
        };
        let mut message = Some(message);
        let _ = BATCHES.try_with(|batches| batches.borrow_mut().queue(self, *worker, arbiter, &mut message));
        if let Some(message) = message {
            // This thread is exiting and its batches are gone: the message goes alone.
            let messages = vec![(self.clone(), message)];
            Batch { worker: *worker, arbiter: arbiter.clone(), messages }.send();
        }
    }

    /// Delivers `message`; on the socket's worker (or, for a mailbox, on any thread).
    fn deliver_here(&self, message: Outbound) {
        match &self.0.target {
            Target::Mailbox(recipient) => recipient.do_send(message),
            Target::Local(key) => {
                // Out of the table first: delivering may close the socket.
                if let Some(socket) = LOCAL.with(|local| local.get(*key)) {
                    socket.deliver(message);
                }
            }
        }
    }
}

/// Keeps a socket in its worker's table ([`SocketOutbox::local`]); held by the socket.
#[derive(Debug)]
pub struct Delivery {
    key: u64,
    /// Dropped on its own thread only: the key is that thread's.
    _local: std::marker::PhantomData<Rc<()>>,
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|local| local.remove(self.key));
    }
}

/// A worker's sockets, by a key never reused (a key the registry still holds for a socket that
/// is gone must not reach a socket made since).
#[derive(Default)]
struct LocalSockets {
    next_key: Cell<u64>,
    sockets: RefCell<FxHashMap<u64, Rc<dyn Deliver>>>,
}

impl LocalSockets {
    fn add(&self, deliver: Rc<dyn Deliver>) -> u64 {
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        self.sockets.borrow_mut().insert(key, deliver);
        key
    }

    fn get(&self, key: u64) -> Option<Rc<dyn Deliver>> {
        self.sockets.borrow().get(&key).cloned()
    }

    fn remove(&self, key: u64) {
        let gone = self.sockets.borrow_mut().remove(&key);
        // Dropped once the table is no longer borrowed.
        drop(gone);
    }
}

/// One worker's messages, in the order sent.
struct Batch {
    worker: ThreadId,
    arbiter: ArbiterHandle,
    messages: Vec<(SocketOutbox, Outbound)>,
}

impl Batch {
    /// Delivers the messages on their worker. If it has stopped, so have its sockets, and the
    /// messages are dropped, as their closed mailboxes would.
    fn send(self) {
        let messages = self.messages;
        self.arbiter.spawn(async move {
            for (outbox, message) in messages {
                outbox.deliver_here(message);
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
    /// schedules the sending, behind what this thread runs now.
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
    static LOCAL: LocalSockets = LocalSockets::default();
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

    /// A socket's own [`Deliver`]: what it was delivered, named, and on which thread.
    struct Delivered(&'static str, Arc<Mutex<Vec<(ThreadId, String)>>>);

    impl Deliver for Delivered {
        fn deliver(&self, message: Outbound) {
            let Outbound::Frame(text) = message else { panic!("only frames are sent here") };
            self.1.lock().unwrap().push((std::thread::current().id(), format!("{}:{text}", self.0)));
        }
    }

    #[actix::test]
    async fn a_local_socket_is_delivered_to_on_its_worker_until_its_delivery_is_dropped() {
        let worker = Arbiter::new();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (made_tx, made_rx) = tokio::sync::oneshot::channel();
        let (drop_tx, drop_rx) = tokio::sync::oneshot::channel::<()>();
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
        let on_worker = received.clone();
        // Spawned from the worker, not onto it: the deliveries stay on their thread.
        assert!(worker.spawn_fn(move || {
            actix::spawn(async move {
                let (first, first_delivery) = SocketOutbox::local(Rc::new(Delivered("first", on_worker.clone())));
                let (second, _second_delivery) = SocketOutbox::local(Rc::new(Delivered("second", on_worker.clone())));
                let _ = made_tx.send((first, second, std::thread::current().id()));
                let _ = drop_rx.await;
                drop(first_delivery);
                // A socket made since: it must not receive what is still sent to the first.
                let (third, _third_delivery) = SocketOutbox::local(Rc::new(Delivered("third", on_worker)));
                let _ = dropped_tx.send(third);
                let _ = end_rx.await;
            });
        }));
        let (first, second, thread) = made_rx.await.unwrap();

        for i in 0..3 {
            first.do_send(frame(i));
            second.do_send(frame(10 + i));
        }
        until_received(&received, 6).await;
        let names = |from: usize| -> Vec<String> {
            let received = received.lock().unwrap();
            assert!(received.iter().all(|(t, _)| *t == thread), "delivered on the sockets' worker");
            received[from..].iter().map(|(_, text)| text.clone()).collect()
        };
        assert_eq!(names(0), ["first:0", "second:10", "first:1", "second:11", "first:2", "second:12"]);

        drop_tx.send(()).unwrap();
        let third = dropped_rx.await.unwrap();
        first.do_send(frame(99));
        second.do_send(frame(13));
        third.do_send(frame(20));
        until_received(&received, 8).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(names(6), ["second:13", "third:20"], "nothing for a socket whose delivery is dropped");
        let _ = end_tx.send(());
        worker.stop();
    }

    #[actix::test]
    async fn a_socket_made_off_an_actix_thread_is_sent_to_at_once() {
        let worker = Arbiter::new();
        let (on_worker, thread, received) = socket_on(&worker).await;
        let Target::Mailbox(recipient) = &on_worker.0.target else { unreachable!("made as a mailbox") };
        let recipient = recipient.clone();
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
