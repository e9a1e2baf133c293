//! Admission: the caps on sockets (the node's total, each user's, each address's
//! unauthenticated ones) are checked by the worker that makes the handshake, in counts the
//! workers share, and the registry is told afterwards without waiting for it. A handshake so
//! never waits on the registry's thread, which may be busy with a fan-out or an expiry burst,
//! and a worker does not sleep between a handshake and its answer.
//!
//! A socket holds its [`Place`] until its TCP connection is gone, closing or not, so a client
//! cannot escape a cap by not answering a close. The registry hears of the socket in its
//! worker's next batch of notes ([`super::lifecycle`]), before the 101 goes out
//! ([`Place::sent`]), so anything the socket sends it later comes after.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use actix::prelude::*;

use super::lifecycle::{self, Note, Ticket};
use super::post::SocketOutbox;
use super::{Authenticate, Identity, Refusal, Register, Registry, Unregister};
use crate::config::Settings;
use crate::ids::{ConnId, UserId};

/// The caps, from `server.max_connections` and `ws.max_connections_per_user` /
/// `ws.max_unauthenticated_per_ip`.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_unauthenticated_per_ip: usize,
}

impl Caps {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            max_connections: settings.server.max_connections,
            max_connections_per_user: settings.ws.max_connections_per_user,
            max_unauthenticated_per_ip: settings.ws.max_unauthenticated_per_ip,
        }
    }
}

/// The node's admission, shared by its workers.
pub struct Admission {
    registry: Addr<Registry>,
    caps: Caps,
    held: Mutex<Held>,
}

/// The places taken: by every socket whose TCP connection is not gone yet.
#[derive(Default)]
struct Held {
    total: usize,
    by_user: HashMap<UserId, usize>,
    /// Sockets still to authenticate with their first message, per client address.
    unauthenticated_by_ip: HashMap<IpAddr, usize>,
}

impl Held {
    fn take(&mut self, caps: &Caps, holder: HolderRef<'_>) -> Result<(), Refusal> {
        if self.total >= caps.max_connections {
            return Err(Refusal::ServerFull);
        }
        match holder {
            HolderRef::User(user) => take_one(&mut self.by_user, user, caps.max_connections_per_user)?,
            HolderRef::Unauthenticated(ip) => {
                take_one(&mut self.unauthenticated_by_ip, ip, caps.max_unauthenticated_per_ip)?;
            }
        }
        self.total += 1;
        Ok(())
    }

    fn release(&mut self, holder: HolderRef<'_>) {
        match holder {
            HolderRef::User(user) => release_one(&mut self.by_user, user),
            HolderRef::Unauthenticated(ip) => release_one(&mut self.unauthenticated_by_ip, ip),
        }
        self.total -= 1;
    }
}

/// Whose count a place is in.
#[derive(Clone, Copy)]
enum HolderRef<'a> {
    User(&'a UserId),
    Unauthenticated(&'a IpAddr),
}

fn take_one<K: std::hash::Hash + Eq + Clone>(
    counts: &mut HashMap<K, usize>,
    key: &K,
    cap: usize,
) -> Result<(), Refusal> {
    // Looked up before inserting, so a refused key leaves no empty entry behind.
    match counts.get_mut(key) {
        Some(count) if *count >= cap => return Err(Refusal::TooManyConnections),
        Some(count) => *count += 1,
        None if cap == 0 => return Err(Refusal::TooManyConnections),
        None => {
            counts.insert(key.clone(), 1);
        }
    }
    Ok(())
}

fn release_one<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// Whose count a socket that opened without a credential is in: its address's until it
/// authenticates, then its user's; `Gone` once its place is freed. Shared by its [`Place`] and
/// its [`Unauthenticated`], and changed only while the counts are locked.
enum Pending {
    Address(IpAddr),
    User(UserId),
    Gone,
}

impl Pending {
    fn holder(&self) -> Option<HolderRef<'_>> {
        match self {
            Pending::Address(ip) => Some(HolderRef::Unauthenticated(ip)),
            Pending::User(user) => Some(HolderRef::User(user)),
            Pending::Gone => None,
        }
    }
}

impl Admission {
    pub fn new(registry: Addr<Registry>, caps: Caps) -> Arc<Self> {
        Arc::new(Self { registry, caps, held: Mutex::new(Held::default()) })
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().expect("no panic while holding the counts")
    }

    /// Takes a place for an authenticated socket within the caps (the node's, its user's). The
    /// registry hears of it only with [`Place::register`].
    pub fn admit(self: &Arc<Self>, conn_id: ConnId, user: &UserId) -> Result<Place, Refusal> {
        self.held().take(&self.caps, HolderRef::User(user))?;
        Ok(self.place(conn_id, Holding::User(user.clone())))
    }

    /// Takes a place for a socket that will authenticate with its first message, within the
    /// node's cap and its address's; the [`Unauthenticated`] moves it to its user.
    pub fn admit_unauthenticated(
        self: &Arc<Self>,
        conn_id: ConnId,
        ip: IpAddr,
    ) -> Result<(Place, Unauthenticated), Refusal> {
        self.held().take(&self.caps, HolderRef::Unauthenticated(&ip))?;
        let pending = Arc::new(Mutex::new(Pending::Address(ip)));
        let unauthenticated = Unauthenticated { admission: self.clone(), conn_id, pending: pending.clone() };
        Ok((self.place(conn_id, Holding::Pending(pending)), unauthenticated))
    }

    fn place(self: &Arc<Self>, conn_id: ConnId, holding: Holding) -> Place {
        Place { admission: self.clone(), conn_id, holding, registered: None }
    }

    /// Sockets holding a place (open or closing), and the number of users and addresses with one.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let held = self.held();
        (held.total, held.by_user.len(), held.unauthenticated_by_ip.len())
    }
}

/// A socket's place under the caps, held until its TCP connection is gone; dropping it frees
/// the place and tells the registry the socket is gone.
pub struct Place {
    admission: Arc<Admission>,
    conn_id: ConnId,
    holding: Holding,
    /// Once registered: the batch of this worker's notes the registration went in.
    registered: Option<Ticket>,
}

/// Whose count a [`Place`] is in.
enum Holding {
    User(UserId),
    Pending(Arc<Mutex<Pending>>),
}

impl Place {
    /// Tells the registry of the socket, in this worker's next batch of notes (not waiting for
    /// the registry).
    pub fn register(&mut self, outbox: SocketOutbox, ip: IpAddr, identity: Option<Identity>) {
        let register = Register { conn_id: self.conn_id, outbox, ip, identity };
        self.registered = Some(lifecycle::note(&self.admission.registry, Note::Register(register)));
    }

    /// Resolves once the registration is in the registry's mailbox. It first lets the other
    /// handshakes this worker is making now queue theirs, so that they go together.
    pub async fn sent(&self) {
        let Some(ticket) = self.registered else { return };
        if !lifecycle::is_sent(ticket) {
            // Behind the tasks runnable now, the batch's sending among them.
            tokio::task::yield_now().await;
        }
        if !lifecycle::is_sent(ticket) {
            lifecycle::send_now();
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.admission.held();
        match &self.holding {
            Holding::User(user) => held.release(HolderRef::User(user)),
            Holding::Pending(pending) => {
                let mut pending = lock(pending);
                if let Some(holder) = pending.holder() {
                    held.release(holder);
                }
                *pending = Pending::Gone;
            }
        }
        drop(held);
        if self.registered.is_some() {
            lifecycle::note(&self.admission.registry, Note::Unregister(Unregister { conn_id: self.conn_id }));
        }
    }
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Place").field("conn_id", &self.conn_id).finish_non_exhaustive()
    }
}

/// The place of a socket that opened without a credential, as its socket holds it.
#[derive(Clone)]
pub struct Unauthenticated {
    admission: Arc<Admission>,
    conn_id: ConnId,
    pending: Arc<Mutex<Pending>>,
}

impl Unauthenticated {
    /// The socket proved who it is: its place moves from its address's count to its user's
    /// (refused when the user is at the cap), and the registry hears of it.
    pub fn authenticate(&self, identity: Identity) -> Result<(), Refusal> {
        let admission = &self.admission;
        let mut held = admission.held();
        let mut pending = lock(&self.pending);
        let Pending::Address(ip) = *pending else {
            // Authenticated already, or its TCP connection is gone.
            return Err(Refusal::UnknownConnection);
        };
        take_one(&mut held.by_user, &identity.user, admission.caps.max_connections_per_user)?;
        release_one(&mut held.unauthenticated_by_ip, &ip);
        *pending = Pending::User(identity.user.clone());
        drop((pending, held));
        admission.registry.do_send(Authenticate { conn_id: self.conn_id, identity });
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("no panic while holding a place")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;
    use crate::registry::tests::{registry, Sink};
    use crate::registry::GetStats;

    fn caps(total: usize, per_user: usize, per_ip: usize) -> Caps {
        Caps { max_connections: total, max_connections_per_user: per_user, max_unauthenticated_per_ip: per_ip }
    }

    fn identity(user: &str) -> Identity {
        Identity {
            user: UserId::new(user),
            token_id: None,
            expires_at: crate::time::now_unix_s() + 3600,
            method: AuthMethod::Header,
            session_id: None,
            grants: Default::default(),
        }
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn user(name: &str) -> UserId {
        UserId::new(name)
    }

    #[actix::test]
    async fn a_user_at_the_cap_is_refused_until_one_of_its_places_is_freed() {
        let admission = Admission::new(registry(), caps(10, 2, 2));
        let first = admission.admit(ConnId(1), &user("alice")).unwrap();
        let _second = admission.admit(ConnId(2), &user("alice")).unwrap();
        assert_eq!(admission.admit(ConnId(3), &user("alice")).err(), Some(Refusal::TooManyConnections));
        assert!(admission.admit(ConnId(4), &user("bob")).is_ok(), "bob is not affected");
        drop(first);
        assert!(admission.admit(ConnId(5), &user("alice")).is_ok(), "alice's freed place is hers again");
    }

    #[actix::test]
    async fn the_node_is_full_at_max_connections_and_a_refusal_takes_nothing() {
        let admission = Admission::new(registry(), caps(2, 5, 5));
        let places: Vec<Place> =
            (1..=2).map(|id| admission.admit(ConnId(id), &user(&format!("u{id}"))).unwrap()).collect();
        assert_eq!(admission.admit(ConnId(3), &user("u3")).err(), Some(Refusal::ServerFull));
        assert_eq!(admission.admit_unauthenticated(ConnId(4), HOME).err(), Some(Refusal::ServerFull));
        assert_eq!(admission.counts(), (2, 2, 0), "the refused took no place and left no entry");
        drop(places);
        assert_eq!(admission.counts(), (0, 0, 0), "every count is back to nothing");
    }

    #[actix::test]
    async fn authenticating_moves_the_place_from_the_address_to_the_user_within_the_users_cap() {
        let admission = Admission::new(registry(), caps(10, 1, 1));
        let (place, pending) = admission.admit_unauthenticated(ConnId(1), HOME).unwrap();
        let refused = admission.admit_unauthenticated(ConnId(2), HOME).err();
        assert_eq!(refused, Some(Refusal::TooManyConnections), "one per address");
        let alice = admission.admit(ConnId(3), &user("alice")).unwrap();
        // alice is at her cap: the unauthenticated socket cannot become hers, and keeps its place.
        assert_eq!(pending.authenticate(identity("alice")), Err(Refusal::TooManyConnections));
        assert_eq!(admission.counts(), (2, 1, 1));
        assert_eq!(pending.authenticate(identity("bob")), Ok(()));
        assert_eq!(admission.counts(), (2, 2, 0), "the address's place went to bob");
        let _fourth = admission.admit_unauthenticated(ConnId(4), HOME).expect("so the address may open another");
        assert_eq!(pending.authenticate(identity("carol")), Err(Refusal::UnknownConnection), "once only");
        drop((place, alice));
        assert_eq!(admission.counts(), (1, 0, 1), "bob's and alice's places are freed");
    }

    #[actix::test]
    async fn a_socket_gone_before_its_first_message_is_not_authenticated() {
        let admission = Admission::new(registry(), caps(10, 1, 1));
        let (place, pending) = admission.admit_unauthenticated(ConnId(1), HOME).unwrap();
        drop(place);
        assert_eq!(pending.authenticate(identity("alice")), Err(Refusal::UnknownConnection));
        assert_eq!(admission.counts(), (0, 0, 0), "nothing is counted for it");
    }

    #[actix::test]
    async fn the_registry_hears_of_a_registered_place_and_of_its_end() {
        let registry = registry();
        let admission = Admission::new(registry.clone(), caps(10, 1, 1));
        let mut place = admission.admit(ConnId(1), &user("alice")).unwrap();
        place.register(SocketOutbox::new(Sink.start().recipient()), HOME, Some(identity("alice")));
        place.sent().await;
        assert_eq!(registry.send(GetStats).await.unwrap().connections, 1, "registered by the time it is sent");
        drop(place);
        lifecycle::send_now();
        assert_eq!(registry.send(GetStats).await.unwrap().connections, 0);
    }

    #[actix::test]
    async fn the_notes_made_in_one_turn_go_in_one_batch_and_keep_their_order() {
        let registry = registry();
        let admission = Admission::new(registry.clone(), caps(10, 10, 10));
        let register = |id| {
            let mut place = admission.admit(ConnId(id), &user("alice")).unwrap();
            place.register(SocketOutbox::new(Sink.start().recipient()), HOME, Some(identity("alice")));
            place
        };
        let mut places: Vec<Place> = (1..=3).map(register).collect();
        let tickets: Vec<_> = places.iter().map(|p| p.registered).collect();
        assert!(tickets.windows(2).all(|w| w[0] == w[1]), "one batch: {tickets:?}");
        // Gone before its registration was sent: the registry must see it come, then go.
        drop(places.pop());
        places[0].sent().await;
        assert_eq!(registry.send(GetStats).await.unwrap().connections, 2);
        let later = register(4);
        assert_ne!(later.registered, tickets[0], "a later turn's note goes in the next batch");
    }
}
