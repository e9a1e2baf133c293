//! Typed configuration: the embedded `config/default.toml`, then `config/<AUTHCHAT_ENV>.toml`,
//! then an optional `--config` file, then `AUTHCHAT__SECTION__KEY` environment variables.
//! Unknown keys and unsafe settings stop start-up with a message that names the key to fix.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The development configuration compiled into the binary, so `cargo run` needs no files.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Shortest HMAC secret accepted outside dev mode (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS_SECRET_BYTES: usize = 32;

/// A configuration problem, always naming the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read configuration: {0}")]
    Load(String),
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), problem: problem.into() }
    }
}

/// Longest duration any key accepts: far beyond any sensible setting, and far enough from
/// the limits of clock arithmetic (`Instant + Duration` panics on overflow) that no timer built
/// from a setting can overflow.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A humantime duration ("5s", "15m", "7d") of at most [`MAX_DURATION`].
fn bounded_duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let duration: Duration = humantime_serde::deserialize(deserializer)?;
    if duration > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "{} is longer than the 100 years any duration may be",
            humantime::format_duration(duration)
        )));
    }
    Ok(duration)
}

/// Everything the server reads at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Development conveniences: a generated HS secret when none is set, the server's own
    /// origin allowed at the upgrade. Never on in production.
    pub dev_mode: bool,
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub ws: WsSettings,
    pub chat: ChatSettings,
    pub rooms: RoomsSettings,
    pub tls: TlsSettings,
    pub store: StoreSettings,
    pub redis: RedisSettings,
    pub session: SessionSettings,
    pub cluster: ClusterSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    /// Accounts that may use `POST /api/login`.
    #[serde(default)]
    pub users: Vec<UserEntry>,
}

/// The listener and process-wide behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: IpAddr,
    /// 0 picks a free port (tests do this).
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Name of this node in `welcome` and the admin API; empty means the host name and the boot
    /// id (`vm-Xh3k9a2m`), new at each start.
    pub node_id: String,
    /// Exact `Origin` values allowed to open a WebSocket and to call the REST API cross-site.
    pub allowed_origins: Vec<String>,
    /// How long a graceful stop waits for connections to finish.
    #[serde(deserialize_with = "bounded_duration")]
    pub shutdown_timeout: Duration,
    /// On SIGTERM, how long `/readyz` reports draining (and new upgrades are refused) before
    /// sockets are told to close, so a load balancer stops routing here first.
    #[serde(deserialize_with = "bounded_duration")]
    pub drain_delay: Duration,
    /// Folder served at `/` (the web UI).
    pub static_dir: PathBuf,
    /// WebSockets this node holds at once (closing ones included); past it, upgrades get 503
    /// `server_full`. TCP connections are capped a little above it, so HTTP keeps answering.
    pub max_connections: usize,
    /// An HTTP request (body included) must arrive and be answered within this, or it gets 408
    /// and its connection is closed: a client trickling its body must not hold a connection
    /// forever. `/ws` is exempt once upgraded.
    #[serde(deserialize_with = "bounded_duration")]
    pub request_timeout: Duration,
    /// Proxies in front whose `Forwarded` / `X-Forwarded-For` names the client: behind one,
    /// every client shares the proxy's address, and the per-address limits would throttle them
    /// all at once. Empty: the TCP peer is the client, and those headers are ignored.
    pub trusted_proxies: Vec<ProxyNet>,
}

/// A network of trusted proxies: a CIDR (`10.0.0.0/8`, `fd00::/8`), or one address (its /32
/// or /128). A network with host bits set (`10.1.2.3/8`) is refused, as most likely a typo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProxyNet(ipnet::IpNet);

impl ProxyNet {
    /// Whether `ip` is in this network. IPv4 addresses in IPv6 form (`::ffff:10.0.0.1`, what a
    /// dual-stack listener sees) count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl TryFrom<String> for ProxyNet {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        let text = value.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self(ip.to_canonical().into()));
        }
        let net: ipnet::IpNet = text.parse().map_err(|_| {
            format!("{value:?} is not an address or a network like 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32")
        })?;
        if net.trunc() != net {
            return Err(format!("{value:?} has host bits set (the network is {})", net.trunc()));
        }
        Ok(Self(net))
    }
}

/// A closed set of config values, read from exactly these names: an unknown one is a config
/// error naming its key and the choices, and a `match` on it cannot fall through.
macro_rules! closed_set {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        pub enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl $name {
            /// The name used in config files.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(value: String) -> Result<Self, String> {
                match value.as_str() {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(format!("{value:?} is not one of {}", [$($text),+].join(", "))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

closed_set! {
    /// JWTs, or server-side sessions.
    AuthMode {
        Jwt = "jwt",
        Session = "session",
    }
}

/// How credentials are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `jwt` (tokens, the default) or `session` (a server-side session behind a cookie).
    pub mode: AuthMode,
    /// HS256 secret for tokens this server mints; empty in dev mode means "generate one".
    pub secret: SecretString,
    /// `kid` stamped on tokens signed with `secret`.
    pub secret_kid: String,
    /// Which key signs the tokens this server mints: `secret_kid` or a `kid` from `keys`.
    pub signing_kid: String,
    /// Further verification (and optionally signing) keys, for rotation and asymmetric algorithms.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    /// Expected (and required) `iss`; empty disables the check.
    pub issuer: String,
    /// Expected (and required) `aud`; empty disables the check.
    pub audience: String,
    /// Clock skew tolerated on `nbf` and `iat` (`exp` is enforced exactly).
    #[serde(deserialize_with = "bounded_duration")]
    pub leeway: Duration,
    /// Lifetime of access tokens minted by `/api/login` and `authchat token`.
    #[serde(deserialize_with = "bounded_duration")]
    pub access_ttl: Duration,
    /// Accept `?token=` on the upgrade (always redacted from logs).
    pub query_token: bool,
    /// Open sockets with no credential and wait for `{"type":"auth"}`.
    pub first_message: bool,
    /// How long such a socket may stay unauthenticated.
    #[serde(deserialize_with = "bounded_duration")]
    pub auth_timeout: Duration,
    /// Longest token accepted, in bytes; longer ones are refused before any parsing.
    pub max_token_bytes: usize,
    /// Longest lifetime a token may claim (`exp` minus `iat`, or minus now without `iat`);
    /// longer-lived tokens are refused, and none is minted.
    #[serde(deserialize_with = "bounded_duration")]
    pub max_token_lifetime: Duration,
    /// Lifetime of a refresh token; each refresh issues a new one for this long.
    #[serde(deserialize_with = "bounded_duration")]
    pub refresh_ttl: Duration,
    /// Lifetime of a one-time WebSocket ticket (never beyond its access token's `exp`).
    #[serde(deserialize_with = "bounded_duration")]
    pub ticket_ttl: Duration,
    /// Mark cookies `Secure` even without TLS here (TLS terminated by a proxy in front).
    pub secure_cookies: bool,
    /// Verify-only mode: keys come from this JWKS file (an identity provider's), `iss` and
    /// `aud` are required, and login and refresh are off.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// How often the JWKS file is checked for changes; 0s turns polling off (SIGHUP still re-reads).
    #[serde(deserialize_with = "bounded_duration")]
    pub jwks_poll_interval: Duration,
    /// Verify-only mode with the keys fetched over HTTPS from this URL (the provider's
    /// `jwks_uri`); empty is none.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub jwks_url: Option<url::Url>,
    /// Verify-only mode with the `jwks_uri` read from `<auth.issuer>/.well-known/openid-configuration`,
    /// whose `issuer` must be `auth.issuer` exactly.
    pub oidc_discovery: bool,
    /// Fetched keys are refreshed no sooner than this after the last fetch, whatever the
    /// provider's `Cache-Control` says and whatever `kid`s tokens name: a flood of made-up
    /// `kid`s must not turn this server into a request amplifier against the provider.
    #[serde(deserialize_with = "bounded_duration")]
    pub jwks_min_refresh: Duration,
    /// …and no later than this, however long the provider says its keys stay fresh: a key the
    /// provider withdraws stops verifying here within this long.
    #[serde(deserialize_with = "bounded_duration")]
    pub jwks_max_refresh: Duration,
    /// One fetch (connection, TLS, answer) must be done within this.
    #[serde(deserialize_with = "bounded_duration")]
    pub jwks_timeout: Duration,
    /// PEM certificates trusted for the provider besides the built-in roots (a private CA).
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub jwks_ca_file: Option<PathBuf>,
    /// Where the last key set fetched is kept, so that a start-up while the provider is
    /// unreachable can verify with it; empty is none (and then such a start-up fails).
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub jwks_cache_file: Option<PathBuf>,
    /// Argon2 checks run at once; 0 means one per core. Each holds ~19 MiB while it runs, so
    /// this is what bounds the memory a burst of logins can take.
    pub max_concurrent_hashes: usize,
    /// Logins that may wait for a hashing slot; the rest are turned away with 503 at once.
    pub hash_queue: usize,
    pub login_throttle: LoginThrottleSettings,
}

impl AuthSettings {
    /// Whether tokens come from an identity provider (keys from a JWKS file or fetched over
    /// HTTPS) rather than from this server.
    pub fn is_verify_only(&self) -> bool {
        self.jwks_file.is_some() || self.fetches_jwks()
    }

    /// Whether the identity provider's keys are fetched over HTTPS (`auth.jwks_url` or
    /// `auth.oidc_discovery`).
    pub fn fetches_jwks(&self) -> bool {
        self.jwks_url.is_some() || self.oidc_discovery
    }

    /// The key sources and their companions: one source at most, an HTTPS one only with TLS
    /// (plain HTTP to a loopback address in dev mode only), and bounds that make sense.
    fn validate_jwks(&self, mode: AuthMode, dev_mode: bool) -> Result<(), ConfigError> {
        let sources = [self.jwks_file.is_some(), self.jwks_url.is_some(), self.oidc_discovery];
        if sources.into_iter().filter(|set| *set).count() > 1 {
            return Err(ConfigError::invalid(
                if self.jwks_url.is_some() { "auth.jwks_url" } else { "auth.oidc_discovery" },
                "set only one of auth.jwks_file, auth.jwks_url and auth.oidc_discovery = true",
            ));
        }
        if !self.fetches_jwks() {
            for (key, set) in
                [("auth.jwks_ca_file", &self.jwks_ca_file), ("auth.jwks_cache_file", &self.jwks_cache_file)]
            {
                if set.is_some() {
                    return Err(ConfigError::invalid(
                        key,
                        "is only used when keys are fetched: set auth.jwks_url or auth.oidc_discovery = true, or unset it",
                    ));
                }
            }
            return Ok(());
        }
        if mode != AuthMode::Jwt {
            return Err(ConfigError::invalid(
                if self.oidc_discovery { "auth.oidc_discovery" } else { "auth.jwks_url" },
                "fetching an identity provider's keys is for auth.mode = \"jwt\"; unset it in session mode",
            ));
        }
        if let Some(url) = &self.jwks_url {
            check_provider_url(url, dev_mode).map_err(|why| ConfigError::invalid("auth.jwks_url", why))?;
        }
        if self.oidc_discovery {
            let issuer = url::Url::parse(&self.issuer).map_err(|e| {
                ConfigError::invalid(
                    "auth.issuer",
                    format!(
                        "with auth.oidc_discovery = true it must be the provider's issuer URL (e.g. \
                         https://sso.example.com/realms/main); {:?} is not a URL: {e}",
                        self.issuer
                    ),
                )
            })?;
            check_provider_url(&issuer, dev_mode).map_err(|why| ConfigError::invalid("auth.issuer", why))?;
            if issuer.query().is_some() || issuer.fragment().is_some() {
                return Err(ConfigError::invalid(
                    "auth.issuer",
                    "an OpenID issuer has no query or fragment (OpenID Connect Discovery 1.0, section 2)",
                ));
            }
        }
        if self.jwks_min_refresh < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "auth.jwks_min_refresh",
                "must be at least 1s: it is the most often the provider is asked, whatever tokens arrive",
            ));
        }
        if self.jwks_max_refresh < self.jwks_min_refresh {
            return Err(ConfigError::invalid("auth.jwks_max_refresh", "must be at least auth.jwks_min_refresh"));
        }
        if self.jwks_timeout < Duration::from_millis(100) {
            return Err(ConfigError::invalid("auth.jwks_timeout", "must be at least 100ms"));
        }
        Ok(())
    }
}

/// Whether `url` may be asked for an identity provider's keys: `https://`, or in dev mode
/// `http://` to a loopback address (a provider on the developer's machine). Also applied to
/// the `jwks_uri` a discovery document names and to every redirect. `Err` says why not.
pub fn check_provider_url(url: &url::Url, dev_mode: bool) -> Result<(), String> {
    // The URL is logged and shown in errors; credentials have no place in it.
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if dev_mode && is_loopback(url) => Ok(()),
        "http" if dev_mode => {
            Err(format!("{} is plain HTTP: allowed only to a loopback address (127.0.0.1, ::1, localhost)", redact_url(url)))
        }
        "http" => Err(format!(
            "{} is plain HTTP: keys must come over https:// (plain HTTP is allowed only to a loopback address in dev mode)",
            redact_url(url)
        )),
        _ => Err(format!("{} is not an https:// URL", redact_url(url))),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A URL as it may be logged: no user information, and the query (which may hold a key or a
/// signature) replaced by `?…`.
pub fn redact_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let had_query = shown.query().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    if had_query {
        format!("{shown}?…")
    } else {
        shown.to_string()
    }
}

/// Failed-login limits (GCRA), per client address and per user name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginThrottleSettings {
    /// Failures allowed at once from one address (any user names); 0 turns the limit off.
    pub per_ip: u32,
    /// Time for a full `per_ip` allowance to come back.
    #[serde(deserialize_with = "bounded_duration")]
    pub ip_window: Duration,
    /// Failures allowed at once for one user name (from any address); 0 turns the limit off.
    pub per_user: u32,
    /// Time for a full `per_user` allowance to come back.
    #[serde(deserialize_with = "bounded_duration")]
    pub user_window: Duration,
}

impl LoginThrottleSettings {
    /// One address alone must never exhaust a user name's allowance, or an attacker could lock
    /// the real user out from a single machine: `per_user` must be larger than `per_ip`, and
    /// refill at least as fast.
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, count, window) in
            [("per_ip", self.per_ip, self.ip_window), ("per_user", self.per_user, self.user_window)]
        {
            if count > 0 && window.as_millis() < u128::from(count) {
                return Err(ConfigError::invalid(
                    format!("auth.login_throttle.{key}"),
                    "its window must be at least one millisecond per allowed failure",
                ));
            }
        }
        if self.per_ip == 0 || self.per_user == 0 {
            return Ok(());
        }
        let ip_rate = f64::from(self.per_ip) / self.ip_window.as_secs_f64();
        let user_rate = f64::from(self.per_user) / self.user_window.as_secs_f64();
        if self.per_user <= self.per_ip || user_rate < ip_rate {
            return Err(ConfigError::invalid(
                "auth.login_throttle.per_user",
                format!(
                    "must be above per_ip ({}) and refill at least as fast (per_user / user_window >= per_ip / \
                     ip_window), so that one address alone cannot lock a user out",
                    self.per_ip
                ),
            ));
        }
        Ok(())
    }
}

closed_set! {
    /// The signature algorithm of a configured key. A closed set, so an unknown name is a
    /// config error naming the key, never a fallthrough to some other algorithm.
    KeyAlgorithm {
        Hs256 = "HS256",
        Rs256 = "RS256",
        Es256 = "ES256",
        EdDsa = "EdDSA",
    }
}

/// One verification key, selected by the token's `kid`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub kid: String,
    /// Pinned: a token's own `alg` must match.
    pub algorithm: KeyAlgorithm,
    /// For HS256 only.
    pub secret: Option<SecretString>,
    /// PEM file with the public key (RS256, ES256, EdDSA).
    pub public_key: Option<PathBuf>,
    /// PEM file with the private key, needed only to sign with this key.
    pub private_key: Option<PathBuf>,
}

/// Per-socket behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    /// Largest message after reassembly of fragments, in bytes; over it the socket closes 1009.
    pub max_message_size: usize,
    #[serde(deserialize_with = "bounded_duration")]
    pub heartbeat_interval: Duration,
    /// A peer silent this long is closed.
    #[serde(deserialize_with = "bounded_duration")]
    pub client_timeout: Duration,
    /// How long before `exp` the client is sent `expiring`.
    #[serde(deserialize_with = "bounded_duration")]
    pub warn_before: Duration,
    /// Sockets waiting for first-message auth, per client IP.
    pub max_unauthenticated_per_ip: usize,
    /// Authenticated sockets per user on this node.
    pub max_connections_per_user: usize,
    /// Bytes queued for a socket that its peer has not taken yet; past it the socket is closed
    /// with 4009 and the backlog dropped.
    pub max_outbound_bytes: usize,
    /// After a close frame, how long the peer has to answer before the TCP connection is
    /// dropped; also the kernel's `TCP_USER_TIMEOUT` for data a peer leaves unacknowledged.
    #[serde(deserialize_with = "bounded_duration")]
    pub close_timeout: Duration,
    pub rate_limit: RateLimitSettings,
    pub handshake_limit: HandshakeLimitSettings,
    /// Serve `GET /ws/echo`, which runs the same socket code but echoes each message instead
    /// of speaking the chat protocol: for conformance runs (`scripts/autobahn.sh`). Refused
    /// outside dev mode.
    pub echo: bool,
}

/// WebSocket handshakes per client address (GCRA).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandshakeLimitSettings {
    pub per_second: f64,
    pub burst: f64,
}

/// Token bucket applied to every client message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Sustained messages per second.
    pub per_second: f64,
    /// Messages allowed in a burst.
    pub burst: f64,
    /// Refused messages in a row before the socket is closed with 4008.
    pub max_violations: u32,
    /// The same for all of one user's sockets on this node together.
    pub user_per_second: f64,
    pub user_burst: f64,
}

/// Rooms and history.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    /// Messages kept per room.
    pub history_size: usize,
    /// Longest `send` text, in characters.
    pub max_text_chars: usize,
    pub max_rooms_per_connection: usize,
    /// Rooms this node keeps; joining a new room past this is refused (`too_many_rooms`).
    pub max_rooms: usize,
    /// Rooms one user may have created that still exist.
    pub max_rooms_created_per_user: usize,
    /// New rooms one user may create per minute.
    pub room_creations_per_minute: u32,
    /// A room with nobody in it and no activity for this long is dropped with its history.
    #[serde(deserialize_with = "bounded_duration")]
    pub idle_room_ttl: Duration,
}

/// Who may join which rooms (beyond private rooms and direct conversations, which carry their
/// own lists). Re-read on SIGHUP; sockets no longer allowed in a room leave it at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsSettings {
    /// A room is decided by the rule with the longest `prefix` it starts with; a room no rule
    /// matches is public.
    #[serde(default)]
    pub rules: Vec<RoomRule>,
}

/// One `[[rooms.rules]]` entry: who may join the rooms whose names start with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomRule {
    /// Room names starting with this ("" is every room).
    pub prefix: String,
    /// A token with any of these roles may join.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The name of a token claim listing rooms: a token whose claim lists the room by name, or
    /// a prefix of it written `prefix*`, may join.
    #[serde(default)]
    pub claim: Option<String>,
}

/// The claims authchat reads itself: a rule naming one would test something else than a list
/// of rooms (`roles` has its own key).
const RESERVED_CLAIMS: &[&str] = &["sub", "exp", "iat", "iat_ms", "nbf", "jti", "iss", "aud", "sid", "roles"];

impl RoomsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let mut prefixes = std::collections::HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| format!("rooms.rules[{i}].{field}");
            let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if rule.prefix.len() > 64 || !rule.prefix.chars().all(valid_char) {
                return Err(ConfigError::invalid(
                    at("prefix"),
                    format!(
                        "{:?} can never begin a room name (at most 64 characters of A-Z, a-z, 0-9, '.', '_', '-')",
                        rule.prefix
                    ),
                ));
            }
            if !prefixes.insert(rule.prefix.as_str()) {
                return Err(ConfigError::invalid(
                    at("prefix"),
                    format!("{:?} is the prefix of an earlier rule too; one rule per prefix", rule.prefix),
                ));
            }
            if rule.roles.is_empty() && rule.claim.is_none() {
                return Err(ConfigError::invalid(
                    at("roles"),
                    "a rule needs roles, a claim, or both (a room no rule matches is public already)",
                ));
            }
            if rule.roles.iter().any(|r| r.is_empty()) {
                return Err(ConfigError::invalid(at("roles"), "role names must not be empty"));
            }
            match rule.claim.as_deref() {
                Some("") => return Err(ConfigError::invalid(at("claim"), "must name a claim, e.g. \"rooms\"")),
                Some(claim) if RESERVED_CLAIMS.contains(&claim) => {
                    return Err(ConfigError::invalid(
                        at("claim"),
                        format!("{claim:?} is not a list of rooms (for roles, use roles = [...])"),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// TLS on the listener itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain; with `key`, the listener serves https:// and wss:// only. An
    /// empty path (`AUTHCHAT__TLS__CERT=`) is no path, so the environment can unset the
    /// production layer's.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); empty is none, as for `cert`.
    #[serde(default, deserialize_with = "empty_path_is_none")]
    pub key: Option<PathBuf>,
    /// A plain-HTTP port that only redirects to HTTPS (0: none).
    pub redirect_port: u16,
    /// Where the redirect port sends clients: `https://host[:port]`, never taken from the
    /// request's `Host` (which the client writes). Empty: `server.host` and the TLS port, which
    /// only works when `server.host` is one address; listening on all of them, set it.
    pub redirect_origin: String,
    /// `Strict-Transport-Security` max-age on TLS responses (0s: no header).
    #[serde(deserialize_with = "bounded_duration")]
    pub hsts_max_age: Duration,
    /// A proxy in front terminates TLS: this listener serves plain HTTP, and `cert` and `key`
    /// are not read (so the production layer's paths need no unsetting behind a proxy).
    pub terminated_upstream: bool,
}

impl TlsSettings {
    /// The certificate and key paths, when this listener does TLS itself.
    pub fn files(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        if self.terminated_upstream {
            return None;
        }
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }

    /// How TLS is done, in words, for `check-config` and the start-up log.
    pub fn describe(&self) -> &'static str {
        match (self.terminated_upstream, self.files().is_some()) {
            (true, _) => "terminated by a proxy in front",
            (false, true) => "on this listener",
            (false, false) => "off",
        }
    }
}

/// `Option<PathBuf>` where an empty string means `None`.
fn empty_path_is_none<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    let path: Option<PathBuf> = Option::deserialize(deserializer)?;
    Ok(path.filter(|p| !p.as_os_str().is_empty()))
}

/// Where refresh tokens, tickets, revocation marks and sessions live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub backend: StoreBackend,
}

closed_set! {
    /// The store behind refresh tokens, tickets, revocation marks and sessions.
    StoreBackend {
        /// One process, lost on restart (the default).
        Memory = "memory",
        /// Shared by every node on that Redis, durable as Redis is.
        Redis = "redis",
    }
}

/// The Redis connection, when `store.backend = "redis"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port/db`; may hold a password, so it is never logged.
    pub url: SecretString,
    /// Prepended to every key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    #[serde(deserialize_with = "bounded_duration")]
    pub connect_timeout: Duration,
    /// A command slower than this fails (and the request gets 503) instead of hanging.
    #[serde(deserialize_with = "bounded_duration")]
    pub response_timeout: Duration,
    /// Seed URLs of a Redis Cluster (`redis://host:port`, any few of its nodes); non-empty
    /// means cluster mode, and `url` is then unused. May hold passwords: never logged.
    #[serde(default)]
    pub cluster_nodes: Vec<SecretString>,
    /// A chat message is acknowledged only once this many replicas hold it (`WAIT`), so a
    /// primary's failover cannot lose an acknowledged message; 0 acknowledges on the primary's
    /// write. When fewer replicas confirm within half of `response_timeout` the sender gets
    /// `unavailable` (the message may still appear; resending with the same `ref` is safe).
    #[serde(default)]
    pub ack_replicas: u32,
}

impl RedisSettings {
    /// Whether `cluster_nodes` names a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }
}

/// Server-side sessions (`auth.mode = "session"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Inactivity after which a session ends (sliding).
    #[serde(deserialize_with = "bounded_duration")]
    pub idle_timeout: Duration,
    /// Hard end of a session, whatever the activity.
    #[serde(deserialize_with = "bounded_duration")]
    pub absolute_lifetime: Duration,
    /// Activity is written to the store at most this often per session.
    #[serde(deserialize_with = "bounded_duration")]
    pub touch_interval: Duration,
    /// How often the sessions with live sockets are re-checked, in case a notification was missed.
    #[serde(deserialize_with = "bounded_duration")]
    pub reconcile_interval: Duration,
}

/// Several nodes as one chat (`store.backend = "redis"`): how nodes watch each other and
/// answer each other's operator requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// A node writes its heartbeat this often.
    #[serde(deserialize_with = "bounded_duration")]
    pub heartbeat_interval: Duration,
    /// A node without a heartbeat for this long is dead: its users leave presence.
    #[serde(deserialize_with = "bounded_duration")]
    pub node_timeout: Duration,
    /// How long an operator request waits for the other nodes before naming them missing.
    #[serde(deserialize_with = "bounded_duration")]
    pub request_timeout: Duration,
    /// The subscription is probed this often; three probes unanswered and it is reconnected.
    #[serde(deserialize_with = "bounded_duration")]
    pub probe_interval: Duration,
}

/// Who may read `GET /metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// A listener of its own (`127.0.0.1:9100`; port 0 = any free port) that serves only
    /// `/metrics`, to anyone who can reach it; the main port then no longer serves it. Empty:
    /// the main port serves it to requests from this host that no proxy passed on.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub listen: Option<std::net::SocketAddr>,
}

/// `Option<T>` read from a string, where an empty string means `None`.
fn empty_is_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match Option::<String>::deserialize(deserializer)?.filter(|s| !s.trim().is_empty()) {
        None => Ok(None),
        Some(text) => text.trim().parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter; `RUST_LOG` wins when set.
    pub filter: String,
}

closed_set! {
    /// How log lines are written.
    LogFormat {
        /// For people.
        Text = "text",
        /// One JSON object per line, for machines.
        Json = "json",
    }
}

/// One account of the built-in user directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    /// Argon2 PHC string, as printed by `authchat hash-password`.
    pub password_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Where the layers come from; [`LoadOptions::from_process`] reads the real environment.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// `AUTHCHAT_ENV`: the name of the `config/<env>.toml` layer, if any.
    pub env_name: Option<String>,
    /// Folder holding `<env>.toml`.
    pub config_dir: PathBuf,
    /// An extra file given with `--config`.
    pub extra_file: Option<PathBuf>,
    /// `AUTHCHAT__…` variables; `None` reads the process environment.
    pub env_vars: Option<HashMap<String, String>>,
    /// TOML text layered last (tests use this).
    pub overrides: Vec<String>,
}

impl LoadOptions {
    pub fn from_process(extra_file: Option<PathBuf>) -> Self {
        Self {
            env_name: std::env::var("AUTHCHAT_ENV").ok().filter(|e| !e.is_empty()),
            config_dir: std::env::var_os("AUTHCHAT_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config")),
            extra_file,
            env_vars: None,
            overrides: Vec::new(),
        }
    }
}

impl Settings {
    /// Reads every layer and validates the result.
    pub fn load(options: &LoadOptions) -> Result<Self, ConfigError> {
        use config::{Config, Environment, File, FileFormat};

        let mut builder = Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(env) = &options.env_name {
            let path = options.config_dir.join(format!("{env}.toml"));
            if !path.is_file() {
                return Err(ConfigError::Load(format!("AUTHCHAT_ENV={env} but {} does not exist", path.display())));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        if let Some(path) = &options.extra_file {
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml));
        }
        for text in &options.overrides {
            builder = builder.add_source(File::from_str(text, FileFormat::Toml));
        }
        let env = Environment::with_prefix("AUTHCHAT")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("server.allowed_origins")
            .with_list_parse_key("server.trusted_proxies")
            .with_list_parse_key("redis.cluster_nodes")
            .try_parsing(true)
            .source(options.env_vars.clone());
        let settings: Settings = builder
            .add_source(env)
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| ConfigError::Load(dotted_array_paths(&e.to_string())))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks that need no files; key files are checked when the key set is built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let secret_len = self.auth.secret.expose_secret().len();
        let signs_with_secret = self.auth.signing_kid == self.auth.secret_kid;
        let verify_only = self.auth.is_verify_only() || self.auth.mode == AuthMode::Session;
        if !self.dev_mode && secret_len < MIN_HS_SECRET_BYTES && ((signs_with_secret && !verify_only) || secret_len > 0)
        {
            return Err(ConfigError::invalid(
                "auth.secret",
                format!(
                    "must be at least {MIN_HS_SECRET_BYTES} bytes outside dev mode (it has {secret_len}); \
                     set AUTHCHAT__AUTH__SECRET, e.g. to the output of `openssl rand -base64 48`"
                ),
            ));
        }
        if self.auth.access_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid("auth.access_ttl", "must be at least 1s"));
        }
        if self.auth.ticket_ttl < Duration::from_secs(1) || self.auth.refresh_ttl < self.auth.access_ttl {
            return Err(ConfigError::invalid(
                "auth.ticket_ttl",
                "ticket_ttl must be at least 1s and refresh_ttl at least access_ttl",
            ));
        }
        if self.auth.max_token_lifetime < self.auth.access_ttl {
            return Err(ConfigError::invalid(
                "auth.max_token_lifetime",
                "must be at least auth.access_ttl, or the tokens minted here would be refused",
            ));
        }
        if self.server.request_timeout < Duration::from_millis(100) {
            return Err(ConfigError::invalid("server.request_timeout", "must be at least 100ms"));
        }
        self.auth.login_throttle.validate()?;
        self.auth.validate_jwks(self.auth.mode, self.dev_mode)?;
        if self.auth.max_token_bytes < 256 {
            return Err(ConfigError::invalid("auth.max_token_bytes", "must be at least 256"));
        }
        if self.ws.heartbeat_interval.is_zero() || self.ws.client_timeout <= self.ws.heartbeat_interval {
            return Err(ConfigError::invalid(
                "ws.client_timeout",
                "must be longer than ws.heartbeat_interval (which must be above 0)",
            ));
        }
        if self.ws.max_message_size < 1024 {
            return Err(ConfigError::invalid("ws.max_message_size", "must be at least 1024 bytes"));
        }
        if !(self.ws.rate_limit.per_second > 0.0 && self.ws.rate_limit.burst >= 1.0) {
            return Err(ConfigError::invalid("ws.rate_limit", "per_second must be above 0 and burst at least 1"));
        }
        if !(self.ws.rate_limit.user_per_second > 0.0 && self.ws.rate_limit.user_burst >= 1.0) {
            return Err(ConfigError::invalid(
                "ws.rate_limit",
                "user_per_second must be above 0 and user_burst at least 1",
            ));
        }
        if !(self.ws.handshake_limit.per_second > 0.0 && self.ws.handshake_limit.burst >= 1.0) {
            return Err(ConfigError::invalid("ws.handshake_limit", "per_second must be above 0 and burst at least 1"));
        }
        if self.ws.max_outbound_bytes < self.ws.max_message_size.max(4096) {
            return Err(ConfigError::invalid(
                "ws.max_outbound_bytes",
                "must be at least ws.max_message_size (a frame must fit)",
            ));
        }
        if self.ws.close_timeout.is_zero() {
            return Err(ConfigError::invalid("ws.close_timeout", "must be above 0"));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::invalid("server.max_connections", "must be above 0"));
        }
        if self.chat.max_rooms_created_per_user == 0 || self.chat.room_creations_per_minute == 0 {
            return Err(ConfigError::invalid(
                "chat.max_rooms_created_per_user",
                "chat.max_rooms_created_per_user and chat.room_creations_per_minute must be above 0",
            ));
        }
        if self.chat.history_size == 0 || self.chat.max_text_chars == 0 {
            return Err(ConfigError::invalid("chat", "history_size and max_text_chars must be above 0"));
        }
        self.rooms.validate()?;
        for (i, origin) in self.server.allowed_origins.iter().enumerate() {
            if !is_plain_origin(origin) {
                return Err(ConfigError::invalid(
                    format!("server.allowed_origins[{i}]"),
                    format!("{origin:?} is not an origin like https://chat.example.com (scheme, host, optional port, no path)"),
                ));
            }
        }
        if self.session.idle_timeout.is_zero() || self.session.absolute_lifetime < self.session.idle_timeout {
            return Err(ConfigError::invalid(
                "session.absolute_lifetime",
                "idle_timeout must be above 0 and absolute_lifetime at least idle_timeout",
            ));
        }
        let cluster = &self.cluster;
        if cluster.heartbeat_interval.is_zero() || cluster.probe_interval.is_zero() || cluster.request_timeout.is_zero()
        {
            return Err(ConfigError::invalid(
                "cluster",
                "heartbeat_interval, probe_interval and request_timeout must be above 0",
            ));
        }
        // Checked: a heartbeat_interval near Duration::MAX must be refused, not overflow.
        if cluster.heartbeat_interval.checked_mul(3).is_none_or(|least| cluster.node_timeout < least) {
            return Err(ConfigError::invalid(
                "cluster.node_timeout",
                "must be at least three heartbeat_intervals, or a slow heartbeat makes a live node look dead",
            ));
        }
        // Hash tags ({...}) keep a room's keys on one cluster shard; braces in the prefix would
        // become the tag of every key and put the whole chat on one shard.
        if self.redis.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "must not hold { or }: they are Redis Cluster hash tags",
            ));
        }
        if self.session.reconcile_interval.is_zero() {
            return Err(ConfigError::invalid("session.reconcile_interval", "must be above 0"));
        }
        // Cookies ride along on cross-site handshakes: in session mode the Origin allowlist is
        // what stops another site from opening a socket as the user.
        if self.auth.mode == AuthMode::Session && !self.dev_mode && self.server.allowed_origins.is_empty() {
            return Err(ConfigError::invalid(
                "server.allowed_origins",
                "must list the origins of your web app in session mode (cookies are sent on cross-site WebSocket handshakes)",
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() && !self.tls.terminated_upstream {
            return Err(ConfigError::invalid(
                if self.tls.cert.is_some() { "tls.key" } else { "tls.cert" },
                "is missing or empty: tls.cert and tls.key go together (or set tls.terminated_upstream = true \
                 when a proxy in front terminates TLS)",
            ));
        }
        if self.tls.redirect_port != 0 && self.tls.files().is_none() {
            return Err(ConfigError::invalid("tls.redirect_port", "redirects to HTTPS need tls.cert and tls.key"));
        }
        // A trailing slash is forgiven: the request's path, which starts with one, is appended.
        let origin = self.tls.redirect_origin.trim_end_matches('/');
        let https_origin = origin.starts_with("https://") && is_plain_origin(origin);
        if !origin.is_empty() && !https_origin {
            return Err(ConfigError::invalid(
                "tls.redirect_origin",
                format!("{origin:?} is not an https origin like https://chat.example.com (optional port, no path)"),
            ));
        }
        if self.tls.redirect_port != 0 && origin.is_empty() && self.server.host.is_unspecified() {
            return Err(ConfigError::invalid(
                "tls.redirect_origin",
                "must name the public https origin (e.g. https://chat.example.com) when the redirect port is on and \
                 server.host listens on every address: the request's Host header is not trusted",
            ));
        }
        if !self.dev_mode {
            self.refuse_unsafe_production()?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            if user.name.is_empty() || !names.insert(user.name.as_str()) {
                return Err(ConfigError::invalid(format!("users[{i}].name"), "must be non-empty and unique"));
            }
            if argon2::PasswordHash::new(&user.password_hash).is_err() {
                return Err(ConfigError::invalid(
                    format!("users[{i}].password_hash"),
                    "is not a PHC hash string; make one with `authchat hash-password`",
                ));
            }
        }
        Ok(())
    }

    /// What production (dev mode off) must not run with, beyond the secret's length.
    fn refuse_unsafe_production(&self) -> Result<(), ConfigError> {
        if self.server.allowed_origins.is_empty() {
            return Err(ConfigError::invalid(
                "server.allowed_origins",
                "must list your web app's origins outside dev mode (it is what stops cross-site WebSocket hijacking); \
                 e.g. AUTHCHAT__SERVER__ALLOWED_ORIGINS=https://chat.example.com",
            ));
        }
        if self.tls.files().is_none() && !self.tls.terminated_upstream {
            return Err(ConfigError::invalid(
                "tls.cert",
                "tokens and cookies must not travel in clear text: set tls.cert and tls.key, \
                 or tls.terminated_upstream = true when a proxy in front terminates TLS",
            ));
        }
        if self.ws.echo {
            return Err(ConfigError::invalid(
                "ws.echo",
                "must be false outside dev mode: the echo route is for conformance runs, not for users",
            ));
        }
        let dev = dev_users();
        for (i, user) in self.users.iter().enumerate() {
            if dev.iter().any(|d| d.password_hash == user.password_hash) {
                return Err(ConfigError::invalid(
                    format!("users[{i}]"),
                    format!(
                        "{:?} is a dev account from config/default.toml (its password is public); \
                             set users = [] or your own accounts",
                        user.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `auth.secret`, when it is long enough to sign with. Only dev mode lets it be shorter
    /// (validation refuses that elsewhere); start-up then draws one random secret for the
    /// process.
    pub fn hs_secret(&self) -> Option<&SecretString> {
        (self.auth.secret.expose_secret().len() >= MIN_HS_SECRET_BYTES).then_some(&self.auth.secret)
    }

    /// The node name used in `welcome` and the admin API: `server.node_id` as is, or else the
    /// host name and `boot_id` (drawn at each start of a server). The host name alone would be
    /// shared by two processes on one host, and a process id by two servers in one process
    /// (tests, load generators) and by every container's first process; a restarted node must
    /// not pass for its predecessor either.
    pub fn node_id(&self, boot_id: &str) -> String {
        if !self.server.node_id.is_empty() {
            return self.server.node_id.clone();
        }
        format!("{}-{boot_id}", host_name())
    }
}

/// This machine's (or container's) name: `$HOSTNAME`, else the kernel's, else `/etc/hostname`.
fn host_name() -> String {
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|h| h.trim().to_owned());
    std::env::var("HOSTNAME")
        .ok()
        .into_iter()
        .chain(read("/proc/sys/kernel/hostname"))
        .chain(read("/etc/hostname"))
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}

/// The accounts of the embedded default, which production must not carry.
fn dev_users() -> Vec<UserEntry> {
    #[derive(Deserialize)]
    struct Users {
        users: Vec<UserEntry>,
    }
    let parsed: Result<Users, _> = config::Config::builder()
        .add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize());
    parsed.map(|u| u.users).unwrap_or_default()
}

/// The config crate prints the key of a field inside an array element as `auth.keys[0]algorithm`;
/// put the dot back, so the message names the key as it is written.
fn dotted_array_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 4);
    let mut previous = None;
    for c in message.chars() {
        if previous == Some(']') && (c.is_ascii_alphanumeric() || c == '_') {
            out.push('.');
        }
        out.push(c);
        previous = Some(c);
    }
    out
}

/// `scheme://host[:port]` with nothing after it: what browsers send in `Origin`.
fn is_plain_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', '?', '#', '@', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(overrides: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load(&LoadOptions {
            env_vars: Some(env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            ..LoadOptions::default()
        })
    }

    #[test]
    fn embedded_default_loads() {
        let settings = load_with(&[], &[]).expect("default config is valid");
        assert!(settings.dev_mode);
        assert_eq!(settings.server.port, 8080);
        assert!(!settings.users.is_empty());
        assert!(!settings.ws.echo, "the echo route is off unless asked for");
    }

    #[test]
    fn a_huge_cluster_heartbeat_is_refused_not_overflowed() {
        // Three such heartbeats overflowed a Duration and panicked (fuzz/fuzz_targets/config.rs).
        let toml = "[cluster]\nheartbeat_interval = \"200000000000y\"\nnode_timeout = \"500000000000y\"";
        let err = load_with(&[toml], &[]).unwrap_err().to_string();
        // Either key may be the one named first; each is refused on its own.
        assert!(err.contains("cluster.") && err.contains("100 years"), "{err}");
    }

    #[test]
    fn no_duration_may_be_long_enough_to_overflow_a_timer() {
        // A heartbeat of 2e11 years loaded, and tokio's first `Instant + period` would panic.
        for (section, key) in [("ws", "heartbeat_interval"), ("session", "idle_timeout"), ("auth", "access_ttl")] {
            let toml = format!("[{section}]\n{key} = \"200000000000y\"");
            let err = load_with(&[&toml], &[]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("100 years"), "{section}.{key}: {err}");
        }
        let toml = "[ws]\nheartbeat_interval = \"98years\"\nclient_timeout = \"99years\"";
        let loaded = load_with(&[toml], &[]);
        assert!(loaded.is_ok(), "long but bounded durations load: {:?}", loaded.err());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = load_with(&["[server]\nprot = 1"], &[]).unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn env_vars_override_nested_keys() {
        let settings = load_with(
            &[],
            &[
                ("AUTHCHAT__SERVER__PORT", "9999"),
                ("AUTHCHAT__SERVER__ALLOWED_ORIGINS", "https://a.example,https://b.example"),
            ],
        )
        .unwrap();
        assert_eq!(settings.server.port, 9999);
        assert_eq!(settings.server.allowed_origins, ["https://a.example", "https://b.example"]);
    }

    #[test]
    fn short_secret_outside_dev_mode_names_the_key() {
        let err = load_with(&["dev_mode = false\n[auth]\nsecret = \"short\""], &[]).unwrap_err();
        assert!(err.to_string().contains("auth.secret"), "{err}");
        let err = load_with(&["dev_mode = false"], &[]).unwrap_err();
        assert!(err.to_string().contains("auth.secret"), "{err}");
    }

    /// The production layer as shipped, with what an operator must add.
    fn production(extra_env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut env = vec![
            ("AUTHCHAT__AUTH__SECRET", "0123456789abcdef0123456789abcdef0123"),
            ("AUTHCHAT__SERVER__ALLOWED_ORIGINS", "https://chat.example.com"),
        ];
        env.extend_from_slice(extra_env);
        Settings::load(&LoadOptions {
            env_name: Some("production".into()),
            config_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/config")),
            env_vars: Some(env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..LoadOptions::default()
        })
    }

    #[test]
    fn the_production_layer_drops_dev_users_and_turns_off_query_tokens() {
        let settings = production(&[]).expect("production config with a secret and origins is valid");
        assert!(!settings.dev_mode);
        assert!(settings.users.is_empty(), "no dev users in production");
        assert!(!settings.auth.query_token);
        assert_eq!(settings.log.format, LogFormat::Json);
        assert!(settings.tls.files().is_some());
    }

    #[test]
    fn production_refuses_unsafe_settings_naming_the_key() {
        let err = |env: &[(&str, &str)]| production(env).unwrap_err().to_string();
        assert!(err(&[("AUTHCHAT__SERVER__ALLOWED_ORIGINS", "")]).contains("server.allowed_origins"));
        assert!(err(&[("AUTHCHAT__AUTH__SECRET", "short")]).contains("auth.secret"));
        let no_tls = Settings::load(&LoadOptions {
            env_vars: Some(Default::default()),
            overrides: vec!["dev_mode = false\nusers = []\n[auth]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
                 [server]\nallowed_origins = [\"https://a.example\"]"
                .into()],
            ..LoadOptions::default()
        });
        assert!(no_tls.unwrap_err().to_string().contains("tls.cert"));
        let dev_users = Settings::load(&LoadOptions {
            env_vars: Some(Default::default()),
            overrides: vec!["dev_mode = false\n[auth]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
                 [server]\nallowed_origins = [\"https://a.example\"]\n[tls]\nterminated_upstream = true"
                .into()],
            ..LoadOptions::default()
        });
        assert!(dev_users.unwrap_err().to_string().contains("users[0]"));
        assert!(err(&[("AUTHCHAT__WS__ECHO", "true")]).contains("ws.echo"));
    }

    #[test]
    fn behind_a_tls_proxy_the_production_layers_certificate_is_not_used() {
        let settings = production(&[("AUTHCHAT__TLS__TERMINATED_UPSTREAM", "true")]).expect("valid behind a proxy");
        assert!(settings.tls.files().is_none());
        assert_eq!(settings.tls.describe(), "terminated by a proxy in front");
        let settings = production(&[("AUTHCHAT__TLS__CERT", ""), ("AUTHCHAT__TLS__KEY", "")]);
        assert!(settings.unwrap_err().to_string().contains("tls.terminated_upstream"), "empty paths are no TLS");
    }

    #[test]
    fn closed_sets_are_enums_and_an_unknown_value_names_its_key() {
        let key = "[[auth.keys]]\nkid = \"k2\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nalgorithm = ";
        for (layer, name) in [
            (format!("{key}\"HS512\""), "auth.keys[0].algorithm"),
            (format!("{key}\"hs256\""), "auth.keys[0].algorithm"),
            ("[store]\nbackend = \"mysql\"".into(), "store.backend"),
            ("[log]\nformat = \"xml\"".into(), "log.format"),
            ("[auth]\nmode = \"cookie\"".into(), "auth.mode"),
        ] {
            let err = load_with(&[&layer], &[]).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("is not one of"), "{layer}: {err}");
        }
        let err = load_with(&[], &[("AUTHCHAT__STORE__BACKEND", "Redis")]).unwrap_err().to_string();
        assert!(err.contains("store.backend"), "{err}");
        let settings = load_with(&[&format!("{key}\"EdDSA\"\npublic_key = \"k.pem\"")], &[]).unwrap();
        assert_eq!(settings.auth.keys[0].algorithm, KeyAlgorithm::EdDsa);
    }

    #[test]
    fn one_address_must_not_be_able_to_exhaust_a_user_names_allowance() {
        let throttle = |per_ip: u32, ip_window: &str, per_user: u32, user_window: &str| {
            load_with(
                &[&format!(
                    "[auth.login_throttle]\nper_ip = {per_ip}\nip_window = \"{ip_window}\"\n\
                     per_user = {per_user}\nuser_window = \"{user_window}\""
                )],
                &[],
            )
        };
        assert!(throttle(10, "15m", 30, "15m").is_ok());
        assert!(throttle(0, "15m", 30, "15m").is_ok(), "a limit that is off constrains nothing");
        for (per_ip, ip_window, per_user, user_window) in [(10, "15m", 10, "15m"), (10, "15m", 30, "1h")] {
            let err = throttle(per_ip, ip_window, per_user, user_window).unwrap_err().to_string();
            assert!(err.contains("auth.login_throttle.per_user"), "{err}");
        }
    }

    #[test]
    fn trusted_proxies_are_networks_or_addresses_and_a_bad_one_names_its_key() {
        let settings = load_with(&["[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"fd00::/8\"]"], &[])
            .expect("networks and bare addresses");
        let [private, loopback, ula] = settings.server.trusted_proxies[..] else { panic!("three entries") };
        assert!(private.contains("10.200.0.1".parse().unwrap()) && !private.contains("11.0.0.1".parse().unwrap()));
        assert!(private.contains("::ffff:10.0.0.1".parse().unwrap()), "IPv4 in IPv6 form counts as IPv4");
        assert!(loopback.contains("127.0.0.1".parse().unwrap()) && !loopback.contains("127.0.0.2".parse().unwrap()));
        assert!(ula.contains("fd12::1".parse().unwrap()));
        assert!(load_with(&[], &[]).unwrap().server.trusted_proxies.is_empty(), "nothing is trusted by default");

        let from_env = load_with(&[], &[("AUTHCHAT__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.7")]).unwrap();
        assert_eq!(from_env.server.trusted_proxies.len(), 2, "a comma-separated list");
        for (bad, why) in
            [("10.0.0.0/33", "is not an address"), ("proxy.local", "is not an address"), ("10.1.2.3/8", "10.0.0.0/8")]
        {
            let err = load_with(&[&format!("[server]\ntrusted_proxies = [\"127.0.0.1\", \"{bad}\"]")], &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.trusted_proxies[1]") && err.contains(why), "{bad}: {err}");
        }
        let err = load_with(&[], &[("AUTHCHAT__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,nope")]).unwrap_err().to_string();
        assert!(err.contains("server.trusted_proxies[1]"), "{err}");
    }

    #[test]
    fn room_rules_load_and_a_bad_one_names_its_key() {
        let rules = "[[rooms.rules]]\nprefix = \"ops.\"\nroles = [\"ops\"]\n\
                     [[rooms.rules]]\nprefix = \"proj-\"\nclaim = \"rooms\"";
        let settings = load_with(&[rules], &[]).expect("two rules");
        assert_eq!(settings.rooms.rules.len(), 2);
        assert_eq!(settings.rooms.rules[1].claim.as_deref(), Some("rooms"));
        assert!(load_with(&[], &[]).unwrap().rooms.rules.is_empty(), "no rules: every room is public");
        for (rule, key, why) in [
            ("prefix = \"a b\"\nroles = [\"x\"]", "rooms.rules[0].prefix", "never begin"),
            ("prefix = \"ops.\"", "rooms.rules[0].roles", "roles, a claim"),
            ("prefix = \"ops.\"\nclaim = \"roles\"", "rooms.rules[0].claim", "not a list of rooms"),
            ("prefix = \"ops.\"\nclaim = \"\"", "rooms.rules[0].claim", "must name"),
            ("prefix = \"ops.\"\nrole = [\"x\"]", "role", "unknown field"),
        ] {
            let err = load_with(&[&format!("[[rooms.rules]]\n{rule}")], &[]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(why), "{rule}: {err}");
        }
        let twice =
            "[[rooms.rules]]\nprefix = \"a\"\nroles = [\"x\"]\n[[rooms.rules]]\nprefix = \"a\"\nroles = [\"y\"]";
        let err = load_with(&[twice], &[]).unwrap_err().to_string();
        assert!(err.contains("rooms.rules[1].prefix"), "{err}");
    }

    #[test]
    fn keys_over_https_need_tls_one_source_and_sane_bounds() {
        let fetching = "[auth]\njwks_url = \"https://sso.example.com/certs\"\n";
        for toml in [
            fetching.to_owned(),
            "[auth]\njwks_url = \"http://127.0.0.1:8081/certs\"".into(),
            "[auth]\njwks_url = \"http://localhost:8081/certs\"".into(),
            "[auth]\njwks_url = \"http://[::1]:8081/certs\"".into(),
            "[auth]\noidc_discovery = true\nissuer = \"https://sso.example.com/realms/main\"".into(),
            format!("{fetching}jwks_cache_file = \"c.json\"\njwks_ca_file = \"ca.pem\""),
        ] {
            let loaded = load_with(&[&toml], &[]);
            assert!(loaded.is_ok(), "{toml}: {:?}", loaded.err());
        }
        for (toml, key, why) in [
            ("[auth]\njwks_url = \"http://sso.example.com/certs\"".to_owned(), "auth.jwks_url", "plain HTTP"),
            ("[auth]\njwks_url = \"ftp://sso.example.com/certs\"".into(), "auth.jwks_url", "not an https:// URL"),
            ("[auth]\njwks_url = \"https://me:pw@sso.example.com/c\"".into(), "auth.jwks_url", "user name or password"),
            ("[auth]\njwks_url = \"certs.json\"".into(), "auth.jwks_url", "relative URL"),
            (format!("{fetching}oidc_discovery = true"), "auth.jwks_url", "only one of"),
            ("[auth]\njwks_file = \"j.json\"\noidc_discovery = true".into(), "auth.oidc_discovery", "only one of"),
            ("[auth]\noidc_discovery = true\nissuer = \"authchat\"".into(), "auth.issuer", "is not a URL"),
            ("[auth]\noidc_discovery = true\nissuer = \"http://sso.example.com\"".into(), "auth.issuer", "plain HTTP"),
            ("[auth]\noidc_discovery = true\nissuer = \"https://sso.example.com/?x=1\"".into(), "auth.issuer", "query"),
            (format!("{fetching}jwks_min_refresh = \"500ms\""), "auth.jwks_min_refresh", "at least 1s"),
            (
                format!("{fetching}jwks_max_refresh = \"30s\""),
                "auth.jwks_max_refresh",
                "at least auth.jwks_min_refresh",
            ),
            (format!("{fetching}jwks_timeout = \"0s\""), "auth.jwks_timeout", "at least 100ms"),
            ("[auth]\njwks_cache_file = \"c.json\"".into(), "auth.jwks_cache_file", "only used when keys are fetched"),
            ("[auth]\njwks_ca_file = \"ca.pem\"".into(), "auth.jwks_ca_file", "only used when keys are fetched"),
            (format!("{fetching}mode = \"session\""), "auth.jwks_url", "auth.mode = \"jwt\""),
        ] {
            let err = load_with(&[&toml], &[]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(why), "{toml}: {err}");
        }
        let err = production(&[("AUTHCHAT__AUTH__JWKS_URL", "http://127.0.0.1:8081/certs")]).unwrap_err().to_string();
        assert!(
            err.contains("auth.jwks_url") && err.contains("plain HTTP"),
            "not even to loopback outside dev mode: {err}"
        );
        let settings = load_with(&[fetching], &[("AUTHCHAT__AUTH__JWKS_URL", "")]).unwrap();
        assert!(!settings.auth.is_verify_only(), "an empty value unsets it");
    }

    #[test]
    fn urls_are_logged_without_credentials_or_query() {
        let url = url::Url::parse("https://me:pw@sso.example.com/certs?sig=abc#frag").unwrap();
        assert_eq!(redact_url(&url), "https://sso.example.com/certs?…");
        let url = url::Url::parse("https://sso.example.com/certs").unwrap();
        assert_eq!(redact_url(&url), "https://sso.example.com/certs");
    }

    #[test]
    fn origins_must_be_plain() {
        let err = load_with(&["[server]\nallowed_origins = [\"https://x.example/path\"]"], &[]).unwrap_err();
        assert!(err.to_string().contains("server.allowed_origins[0]"), "{err}");
    }
}
