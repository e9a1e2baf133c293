//! Password login as a whole: failed-login throttling per client address and per user name,
//! then the Argon2 check behind the [`HashGate`]. The HTTP handler only maps the outcome.
//!
//! Throttling design: a failure counts against the client's address (`per_ip`) and against the
//! user name (`per_user`, from every address). `per_user` is looser than `per_ip`, at once and
//! over time (the config refuses otherwise), so one address alone never exhausts a user name's
//! allowance: an attacker on one machine is stopped by `per_ip` while the real user, elsewhere,
//! still signs in. Only an attacker spread over several addresses can lock a name out, and then
//! only for `user_window`. Unknown names are counted like known ones, so answers do not reveal
//! which names exist.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::hashing::{HashGate, HashingError};
use super::password::{Account, UserDirectory};
use crate::config::AuthSettings;
use crate::ratelimit::Gcra;
use crate::store::{sha256_hex, AttemptStore, Counter, StoreError};

/// What a client is told to wait when every hashing slot and queue place is taken: hashes take
/// tens of milliseconds, so a queue frees up within a second.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a login did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("unknown user or wrong password")]
    InvalidCredentials,
    #[error("too many failed logins")]
    Throttled { retry_after: Duration },
    #[error("too many logins in progress")]
    Busy { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Checks passwords, at a bounded cost.
pub struct PasswordLogin {
    users: Arc<UserDirectory>,
    gate: HashGate,
    attempts: Arc<dyn AttemptStore>,
    per_ip: Option<Gcra>,
    per_user: Option<Gcra>,
}

impl PasswordLogin {
    pub fn new(users: Arc<UserDirectory>, attempts: Arc<dyn AttemptStore>, settings: &AuthSettings) -> Self {
        let throttle = &settings.login_throttle;
        let limit = |count: u32, window: Duration| (count > 0).then(|| Gcra::new(count, window));
        Self {
            users,
            gate: HashGate::new(settings.max_concurrent_hashes, settings.hash_queue),
            attempts,
            per_ip: limit(throttle.per_ip, throttle.ip_window),
            per_user: limit(throttle.per_user, throttle.user_window),
        }
    }

    /// The account, when `password` is right for `name` and neither `client` nor `name` is
    /// throttled. The attempt is counted as a failure up front and given back on success, so
    /// that concurrent guesses cannot all pass the check before the first is counted.
    pub async fn attempt(&self, client: IpAddr, name: &str, password: SecretString) -> Result<Account, LoginError> {
        let counters = self.counters(client, name);
        if let Some(retry_after) = self.attempts.acquire(&counters).await? {
            // Not the name: people type passwords into the name field.
            tracing::info!(%client, "login throttled");
            return Err(LoginError::Throttled { retry_after });
        }
        let users = self.users.clone();
        let owned_name = name.to_owned();
        let outcome = self.gate.run(move |memory| users.verify(&owned_name, &password, memory)).await;
        if !matches!(outcome, Ok(None)) {
            // Only a wrong password counts: give back what a success or an unanswered attempt took.
            if let Err(e) = self.attempts.release(&counters).await {
                tracing::warn!(error = %e, "could not give back a login attempt; it counts as a failure");
            }
        }
        match outcome {
            Ok(Some(account)) => Ok(account),
            Ok(None) => Err(LoginError::InvalidCredentials),
            Err(HashingError::Busy) => Err(LoginError::Busy { retry_after: BUSY_RETRY_AFTER }),
            Err(HashingError::Failed(e)) => Err(LoginError::Internal(e)),
        }
    }

    fn counters(&self, client: IpAddr, name: &str) -> Vec<Counter> {
        let ip =
            self.per_ip.map(|limit| Counter { key: format!("{{login-failures}}:ip:{}", address_key(client)), limit });
        // Hashed: names are client input of any length, and a key should not be.
        let user =
            self.per_user.map(|limit| Counter { key: format!("{{login-failures}}:user:{}", sha256_hex(name)), limit });
        ip.into_iter().chain(user).collect()
    }
}

/// What one client's failures are counted under: the address, but for IPv6 its /64, which is
/// what one subscriber typically holds (counting single IPv6 addresses would give each attacker
/// billions of fresh allowances).
fn address_key(client: IpAddr) -> String {
    match client.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }
}
