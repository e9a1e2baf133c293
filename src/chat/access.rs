//! Who may be in a room, as plain data: the operator's rules (`[[rooms.rules]]`, by a token's
//! roles and list claims), and the list a private room or a direct conversation carries. The
//! registry asks [`Rules::check`] and [`RoomAccess::admits`] at every join and again whenever an
//! identity, a rule or a list changes; it keeps the lists (in memory, or mirrored from Redis).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::RoomRule;
use crate::ids::{RoomId, UserId};
use crate::principal::Principal;
use crate::protocol::{AccessView, LeaveReason, RoomKind};

/// Room names starting with this are direct conversations: `dm.` and 32 hex digits that stand
/// for the two users ([`dm_room`]). Nobody creates or joins one by name without its list.
pub const DM_PREFIX: &str = "dm.";

/// Most users a private room's list may hold (its owner included), and most users one request
/// may invite.
pub const MAX_ALLOWED: usize = 1000;
/// Most users kept out of one room.
pub const MAX_KICKED: usize = 1000;

/// What a credential grants towards the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub roles: Vec<String>,
    /// The credential's claims that are lists of strings (see [`Principal::claims`]).
    pub claims: BTreeMap<String, Vec<String>>,
}

impl Grants {
    pub fn of(principal: &Principal) -> Self {
        Self { roles: principal.roles.clone(), claims: principal.claims.clone() }
    }
}

/// The operator's rules, longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct Rules(Vec<RoomRule>);

impl Rules {
    pub fn new(rules: &[RoomRule]) -> Self {
        let mut rules = rules.to_vec();
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.prefix.len()));
        Self(rules)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rule that decides `room`: the one with the longest prefix the name starts with, alone
    /// (a longer prefix narrows or widens what a shorter one says).
    pub fn rule_for(&self, room: &RoomId) -> Option<&RoomRule> {
        self.0.iter().find(|rule| room.as_str().starts_with(&rule.prefix))
    }

    /// Whether `grants` let their holder into `room`: no rule decides it (a public room), or
    /// the rule's roles or claim admit it.
    pub fn check(&self, room: &RoomId, grants: &Grants) -> Result<(), Denial> {
        let Some(rule) = self.rule_for(room) else { return Ok(()) };
        let by_role = rule.roles.iter().any(|r| grants.roles.contains(r));
        let by_claim = rule.claim.as_ref().and_then(|c| grants.claims.get(c)).is_some_and(|l| lists(l, room));
        if by_role || by_claim {
            return Ok(());
        }
        Err(Denial::Rule { prefix: rule.prefix.clone(), roles: rule.roles.clone(), claim: rule.claim.clone() })
    }
}

/// Whether a claim's list names `room`: exactly, or by a prefix written `prefix*`.
fn lists(entries: &[String], room: &RoomId) -> bool {
    entries.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => room.as_str().starts_with(prefix),
        None => entry == room.as_str(),
    })
}

/// Why someone may not be in a room. The text is for the user it refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("rooms whose names start with {prefix:?} are for {}", who(.roles, .claim))]
    Rule { prefix: String, roles: Vec<String>, claim: Option<String> },
    #[error("it is a private room: only its owner and the people they invite may join")]
    NotInvited,
    #[error("you were removed from it and cannot rejoin unless let back in")]
    Kicked,
    #[error("it is a direct conversation between two other people")]
    NotParticipant,
    #[error("direct conversations are opened with {{\"type\":\"dm\",\"user\":…}}, not joined by name")]
    NotOpened,
}

fn who(roles: &[String], claim: &Option<String>) -> String {
    let roles = (!roles.is_empty()).then(|| format!("the roles {}", roles.join(", ")));
    let claim = claim.as_ref().map(|c| format!("tokens whose {c:?} claim lists them"));
    roles.into_iter().chain(claim).collect::<Vec<_>>().join(", or ")
}

impl Denial {
    /// What a socket put out of the room for this is told.
    pub fn reason(&self) -> LeaveReason {
        match self {
            Self::Kicked => LeaveReason::Kicked,
            _ => LeaveReason::Forbidden,
        }
    }
}

/// The room name of the direct conversation between `a` and `b` (the same either way round).
/// User names may hold any character and any length, so the name is a digest of both; the
/// users themselves are in the conversation's [`RoomAccess`].
pub fn dm_room(a: &UserId, b: &UserId) -> RoomId {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    // The length first, so that no pair of names can spell another pair.
    let digest = Sha256::digest(format!("{}:{first}\n{second}", first.as_str().len()).as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    RoomId::parse(&format!("{DM_PREFIX}{hex}")).expect("dm. and hex digits make a room name")
}

pub fn is_dm_name(room: &RoomId) -> bool {
    room.as_str().starts_with(DM_PREFIX)
}

/// A room's own list: a private room's owner and invitees, a direct conversation's two users,
/// and for any room the users kept out of it. A room without one is public and keeps nobody out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomAccess {
    pub kind: RoomKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserId>,
    /// Who may join (private room, direct conversation).
    #[serde(default)]
    pub allowed: BTreeSet<UserId>,
    /// Who was kicked and may not rejoin.
    #[serde(default)]
    pub kicked: BTreeSet<UserId>,
    /// Grows with every change (with several nodes, from Redis's clock), so that a node hearing
    /// of two versions in either order keeps the newer.
    #[serde(default)]
    pub version: u64,
}

/// Who asks for a change to a room's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user, from a socket: only a private room's owner may change its list.
    User(UserId),
    /// An operator, through the admin API.
    Operator,
}

/// A change to a room's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Let users in: onto a private room's list, and out of any room's kicked list.
    Invite { users: Vec<UserId> },
    /// Put a user out and keep them out: off a private room's list, onto the kicked list.
    Kick { user: UserId },
}

/// Why a change was not made. The text is for whoever asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefusal {
    #[error("only the owner of a private room may invite to it or kick from it")]
    NotOwner,
    #[error("the owner of a private room cannot be kicked from it")]
    Owner,
    #[error("{0} is not on this room's list")]
    NotAllowed(UserId),
    #[error("a direct conversation is between its two users only")]
    Direct,
    #[error("a room's list holds at most {0} users")]
    TooMany(usize),
    #[error("no room {0} exists")]
    NoRoom(RoomId),
}

/// What a change did: users newly let in (to be told) and users put out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub invited: Vec<UserId>,
    pub kicked: Vec<UserId>,
}

impl RoomAccess {
    /// A public room that keeps nobody out yet.
    pub fn public() -> Self {
        Self { kind: RoomKind::Public, owner: None, allowed: BTreeSet::new(), kicked: BTreeSet::new(), version: 0 }
    }

    pub fn private(owner: UserId, invited: impl IntoIterator<Item = UserId>) -> Self {
        let mut allowed: BTreeSet<UserId> = invited.into_iter().collect();
        allowed.insert(owner.clone());
        Self { kind: RoomKind::Private, owner: Some(owner), allowed, ..Self::public() }
    }

    pub fn direct(a: UserId, b: UserId) -> Self {
        Self { kind: RoomKind::Dm, allowed: [a, b].into(), ..Self::public() }
    }

    /// Whether `user` may be in the room.
    pub fn admits(&self, user: &UserId) -> Result<(), Denial> {
        if self.kicked.contains(user) {
            return Err(Denial::Kicked);
        }
        match self.kind {
            RoomKind::Public => Ok(()),
            _ if self.allowed.contains(user) => Ok(()),
            RoomKind::Private => Err(Denial::NotInvited),
            RoomKind::Dm => Err(Denial::NotParticipant),
        }
    }

    pub fn view(&self) -> AccessView {
        let allowed = match self.kind {
            RoomKind::Public => Vec::new(),
            _ => self.allowed.iter().cloned().collect(),
        };
        AccessView { kind: self.kind, owner: self.owner.clone(), allowed }
    }

    /// Makes `change` as `actor` asks, if they may.
    pub fn apply(&mut self, change: &Change, actor: &Actor) -> Result<Applied, ChangeRefusal> {
        let owner_asks = matches!(actor, Actor::User(u) if self.owner.as_ref() == Some(u));
        if matches!(actor, Actor::User(_)) && !(self.kind == RoomKind::Private && owner_asks) {
            return Err(ChangeRefusal::NotOwner);
        }
        let mut applied = Applied::default();
        match change {
            Change::Invite { users } => {
                for user in users {
                    let was_out = self.kicked.remove(user);
                    match self.kind {
                        RoomKind::Private if self.allowed.insert(user.clone()) => applied.invited.push(user.clone()),
                        RoomKind::Private => {}
                        RoomKind::Dm if !self.allowed.contains(user) => return Err(ChangeRefusal::Direct),
                        _ if was_out => applied.invited.push(user.clone()),
                        _ => {}
                    }
                }
                if self.allowed.len() > MAX_ALLOWED {
                    return Err(ChangeRefusal::TooMany(MAX_ALLOWED));
                }
            }
            Change::Kick { user } => {
                if self.owner.as_ref() == Some(user) {
                    return Err(ChangeRefusal::Owner);
                }
                if self.kind == RoomKind::Private && !self.allowed.remove(user) && owner_asks {
                    return Err(ChangeRefusal::NotAllowed(user.clone()));
                }
                if self.kicked.len() >= MAX_KICKED && !self.kicked.contains(user) {
                    return Err(ChangeRefusal::TooMany(MAX_KICKED));
                }
                self.kicked.insert(user.clone());
                applied.kicked.push(user.clone());
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    fn user(name: &str) -> UserId {
        UserId::new(name)
    }

    fn rule(prefix: &str, roles: &[&str], claim: Option<&str>) -> RoomRule {
        RoomRule {
            prefix: prefix.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            claim: claim.map(str::to_owned),
        }
    }

    fn grants(roles: &[&str], rooms: &[&str]) -> Grants {
        let mut claims = BTreeMap::new();
        if !rooms.is_empty() {
            claims.insert("rooms".to_owned(), rooms.iter().map(|r| r.to_string()).collect());
        }
        Grants { roles: roles.iter().map(|r| r.to_string()).collect(), claims }
    }

    #[test]
    fn the_longest_matching_prefix_decides_alone_and_no_rule_means_public() {
        let rules = Rules::new(&[rule("team.", &["staff"], None), rule("team.open.", &["guest"], None)]);
        assert!(rules.check(&room("general"), &grants(&[], &[])).is_ok());
        assert!(rules.check(&room("team.x"), &grants(&["staff"], &[])).is_ok());
        assert!(rules.check(&room("team.x"), &grants(&["guest"], &[])).is_err());
        assert!(rules.check(&room("team.open.y"), &grants(&["guest"], &[])).is_ok());
        assert!(rules.check(&room("team.open.y"), &grants(&["staff"], &[])).is_err(), "the narrower rule alone");
        let everything = Rules::new(&[rule("", &["member"], None)]);
        assert!(everything.check(&room("anything"), &grants(&[], &[])).is_err(), "\"\" covers every room");
    }

    #[test]
    fn a_claim_admits_rooms_it_names_exactly_or_by_a_starred_prefix() {
        let rules = Rules::new(&[rule("proj-", &["admin"], Some("rooms")), rule("team.", &[], Some("rooms"))]);
        let token = grants(&[], &["proj-x", "team.ops.*"]);
        assert!(rules.check(&room("proj-x"), &token).is_ok());
        assert!(rules.check(&room("proj-xy"), &token).is_err(), "exact without a star");
        assert!(rules.check(&room("team.ops.eu"), &token).is_ok());
        assert!(rules.check(&room("team.opsx"), &token).is_err());
        assert!(rules.check(&room("proj-y"), &grants(&["admin"], &[])).is_ok(), "or the role");
        assert!(rules.check(&room("team.a"), &grants(&[], &["*"])).is_ok(), "* is every room the rule covers");
        let other_claim =
            Grants { claims: [("groups".to_owned(), vec!["proj-x".to_owned()])].into(), ..Grants::default() };
        let denial = rules.check(&room("proj-x"), &other_claim).unwrap_err();
        assert_eq!(
            denial.to_string(),
            "rooms whose names start with \"proj-\" are for the roles admin, or tokens whose \"rooms\" claim lists them"
        );
        assert_eq!(denial.reason(), LeaveReason::Forbidden);
    }

    #[test]
    fn a_private_room_admits_its_owner_and_invitees_until_kicked() {
        let mut access = RoomAccess::private(user("alice"), [user("bob")]);
        assert!(access.admits(&user("alice")).is_ok() && access.admits(&user("bob")).is_ok());
        assert_eq!(access.admits(&user("eve")), Err(Denial::NotInvited));
        let alice = Actor::User(user("alice"));
        let bob = Actor::User(user("bob"));
        let invite = |names: &[&str]| Change::Invite { users: names.iter().map(|n| user(n)).collect() };
        assert_eq!(access.apply(&invite(&["eve"]), &bob), Err(ChangeRefusal::NotOwner));
        assert_eq!(access.apply(&invite(&["eve", "bob"]), &alice).unwrap().invited, [user("eve")]);
        let kick = |name: &str| Change::Kick { user: user(name) };
        assert_eq!(access.apply(&kick("alice"), &Actor::Operator), Err(ChangeRefusal::Owner));
        assert_eq!(access.apply(&kick("bob"), &alice).unwrap().kicked, [user("bob")]);
        assert_eq!(access.admits(&user("bob")), Err(Denial::Kicked));
        assert_eq!(access.apply(&kick("bob"), &alice), Err(ChangeRefusal::NotAllowed(user("bob"))));
        assert_eq!(access.apply(&invite(&["bob"]), &alice).unwrap().invited, [user("bob")], "let back in");
        assert!(access.admits(&user("bob")).is_ok());
        assert_eq!(access.view().allowed, [user("alice"), user("bob"), user("eve")]);
    }

    #[test]
    fn only_an_operator_keeps_someone_out_of_a_public_room_or_a_conversation() {
        let mut public = RoomAccess::public();
        let kick = Change::Kick { user: user("troll") };
        assert_eq!(public.apply(&kick, &Actor::User(user("alice"))), Err(ChangeRefusal::NotOwner));
        public.apply(&kick, &Actor::Operator).unwrap();
        assert_eq!(public.admits(&user("troll")), Err(Denial::Kicked));
        assert!(public.admits(&user("anyone")).is_ok());
        let back = Change::Invite { users: vec![user("troll")] };
        assert_eq!(public.apply(&back, &Actor::Operator).unwrap().invited, [user("troll")]);
        assert!(public.admits(&user("troll")).is_ok() && public.view().allowed.is_empty());

        let mut dm = RoomAccess::direct(user("alice"), user("bob"));
        assert_eq!(dm.admits(&user("eve")), Err(Denial::NotParticipant));
        assert_eq!(
            dm.apply(&Change::Invite { users: vec![user("eve")] }, &Actor::Operator),
            Err(ChangeRefusal::Direct)
        );
        dm.apply(&Change::Kick { user: user("bob") }, &Actor::Operator).unwrap();
        assert_eq!(dm.admits(&user("bob")), Err(Denial::Kicked));
    }

    #[test]
    fn a_conversation_has_one_name_either_way_round_and_names_cannot_collide() {
        let (alice, bob) = (user("alice"), user("bob"));
        assert_eq!(dm_room(&alice, &bob), dm_room(&bob, &alice));
        assert!(is_dm_name(&dm_room(&alice, &bob)) && dm_room(&alice, &bob).as_str().len() == 35);
        assert_ne!(dm_room(&user("a\nb"), &user("c")), dm_room(&user("a"), &user("b\nc")));
        assert_ne!(dm_room(&alice, &bob), dm_room(&alice, &user("carol")));
    }
}
