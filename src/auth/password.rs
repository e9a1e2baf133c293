//! The built-in user directory: names, Argon2 password hashes and roles from the config file.

use std::collections::HashMap;

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use argon2::Argon2;
use secrecy::{ExposeSecret, SecretString};

use super::hashing::{verify_phc, HashMemory};
use crate::config::UserEntry;
use crate::ids::UserId;

/// An account as the directory knows it.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: UserId,
    pub roles: Vec<String>,
}

struct Entry {
    hash: String,
    roles: Vec<String>,
}

/// Checks name and password; unknown names cost the same as wrong passwords.
pub struct UserDirectory {
    users: HashMap<String, Entry>,
    /// Verified against when the name is unknown, so timing does not reveal which names exist.
    dummy_hash: String,
}

impl UserDirectory {
    pub fn new(entries: &[UserEntry]) -> Self {
        let users = entries
            .iter()
            .map(|u| (u.name.clone(), Entry { hash: u.password_hash.clone(), roles: u.roles.clone() }))
            .collect();
        let dummy_hash = hash_password(&SecretString::from(crate::ids::random_id(16)))
            .expect("hashing a random password cannot fail");
        Self { users, dummy_hash }
    }

    /// The account, when `password` is right for `name`, computed in `memory`. Slow on purpose
    /// (Argon2): call it through a [`super::hashing::HashGate`], off the async executor.
    pub fn verify(&self, name: &str, password: &SecretString, memory: &mut HashMemory) -> Option<Account> {
        let (hash, known) = match self.users.get(name) {
            Some(entry) => (entry.hash.as_str(), true),
            None => (self.dummy_hash.as_str(), false),
        };
        let ok = verify_phc(hash, password.expose_secret().as_bytes(), memory);
        (ok && known).then(|| Account { user: UserId::new(name), roles: self.users[name].roles.clone() })
    }

    /// Roles of a known user (used when a token is minted for an existing account).
    pub fn roles(&self, name: &str) -> Option<&[String]> {
        self.users.get(name).map(|e| e.roles.as_slice())
    }
}

/// Argon2id PHC string for `password`, with a fresh salt.
pub fn hash_password(password: &SecretString) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.expose_secret().as_bytes(), &salt)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_password_wrong_password_and_unknown_user() {
        let hash = hash_password(&"s3cret-pass".into()).unwrap();
        let dir =
            UserDirectory::new(&[UserEntry { name: "alice".into(), password_hash: hash, roles: vec!["admin".into()] }]);
        let memory = &mut HashMemory::default();
        let account = dir.verify("alice", &"s3cret-pass".into(), memory).unwrap();
        assert_eq!(account.user.as_str(), "alice");
        assert_eq!(account.roles, ["admin"]);
        assert!(dir.verify("alice", &"wrong".into(), memory).is_none());
        assert!(dir.verify("mallory", &"s3cret-pass".into(), memory).is_none());
    }
}
