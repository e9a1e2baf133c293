//! An identity provider's keys over HTTPS: from `auth.jwks_url`, or from the `jwks_uri` of the
//! issuer's OpenID discovery document. Fetched at start-up (or read from the cache file when
//! the provider is unreachable), again when the provider's `Cache-Control` says they are stale,
//! and at once when a token names a `kid` not in the set, never more often than
//! `auth.jwks_min_refresh`. A failed fetch keeps the keys in use. One fetch at a time: whoever
//! needs one while another is under way waits for its result.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec};
use tokio::time::Instant;
use url::Url;

use super::freshness::{lifetime, Schedule};
use super::parse;
use crate::auth::jwt::TokenService;
use crate::config::{check_provider_url, redact_url, AuthSettings, ConfigError};
use crate::metrics::Metrics;

/// Largest answer read from the provider: real key sets are a few kilobytes, and a provider
/// that answers without end must not fill this server's memory.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Redirects followed, each to a URL keys may come from.
const MAX_REDIRECTS: usize = 5;

/// The path OpenID Connect Discovery 1.0 (section 4) appends to the issuer.
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// What asked for a fetch (the `reason` label of `authchat_jwks_fetches_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Start,
    /// The keys in use went stale.
    Schedule,
    /// A token's `kid` is not in the set.
    UnknownKid,
    Sighup,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Schedule => "schedule",
            Self::UnknownKid => "unknown_kid",
            Self::Sighup => "sighup",
        }
    }
}

/// Why a fetch brought no keys. Each names the URL (its query redacted) and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer: DNS, connection, TLS (an unknown CA, a wrong name), a timeout.
    #[error("GET {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("GET {url}: the provider answered {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: the answer is longer than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("GET {url}: not a JWKS document ({why})")]
    NotJwks { url: String, why: String },
    #[error("GET {url}: the key set holds no usable key{}", skipped_note(.skipped))]
    NoUsableKey { url: String, skipped: Vec<String> },
    #[error("GET {url}: not an OpenID discovery document ({why})")]
    NotDiscovery { url: String, why: String },
    #[error(
        "the discovery document {url} names issuer {found:?}, but auth.issuer is {expected:?}: they must be \
         equal exactly (a trailing slash counts), or tokens would be checked against the wrong provider"
    )]
    IssuerMismatch { url: String, found: String, expected: String },
    #[error("the discovery document {url} names a jwks_uri keys may not come from: {why}")]
    BadJwksUri { url: String, why: String },
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", skipped.join("; "))
    }
}

/// Why start-up has no keys.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the identity provider's keys could not be fetched, and verify-only mode cannot start without them: \
         {0}. Check the URL, the network and TLS trust (a private CA goes in auth.jwks_ca_file), or set \
         auth.jwks_cache_file so that a start-up while the provider is down uses the last key set fetched"
    )]
    Unreachable(FetchError),
    #[error(
        "the identity provider's keys could not be fetched ({fetch}), and the cached copy in auth.jwks_cache_file \
         ({path}) cannot be used: {why}"
    )]
    NoCache { fetch: FetchError, path: String, why: String },
}

/// Where the key set is fetched from.
enum Location {
    /// `auth.jwks_url`.
    Fixed(Url),
    /// `auth.oidc_discovery`: the discovery document and the issuer it must name.
    Discovered { document: Url, issuer: String },
}

/// What the single-flight lock guards.
struct State {
    schedule: Schedule,
    /// The `jwks_uri` the discovery document named; forgotten after a failed fetch, so that a
    /// provider that moved its keys is asked where they went.
    jwks_uri: Option<Url>,
    /// The document behind the keys in use: an answer with the same bytes changes nothing
    /// and is neither parsed nor logged again.
    installed: Option<Vec<u8>>,
}

/// The HTTPS key source, with its refresh schedule.
pub struct Remote {
    location: Location,
    client: reqwest::Client,
    /// Dev mode: plain HTTP to a loopback address is allowed (also for discovered URLs and
    /// redirects).
    dev_mode: bool,
    cache_file: Option<PathBuf>,
    /// Held for the whole of a fetch: whoever needs keys meanwhile waits for that fetch
    /// instead of starting another.
    state: tokio::sync::Mutex<State>,
    fetches: IntCounterVec,
    failures: IntCounter,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("source", &self.describe()).finish_non_exhaustive()
    }
}

impl Remote {
    /// The source `auth` describes, with its HTTPS client; nothing is fetched yet. A CA file
    /// that cannot be read is an error naming `auth.jwks_ca_file`.
    pub fn from_settings(auth: &AuthSettings, dev_mode: bool, metrics: &Metrics) -> Result<Self, ConfigError> {
        let location = match &auth.jwks_url {
            Some(url) => Location::Fixed(url.clone()),
            None => {
                let document = Url::parse(&format!("{}{DISCOVERY_PATH}", auth.issuer.trim_end_matches('/')))
                    .map_err(|e| ConfigError::invalid("auth.issuer", format!("no discovery URL can be made: {e}")))?;
                Location::Discovered { document, issuer: auth.issuer.clone() }
            }
        };
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match check_provider_url(attempt.url(), dev_mode) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(format!("redirected to a URL keys may not come from: {why}")),
            }
        });
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(!dev_mode)
            .timeout(auth.jwks_timeout)
            .connect_timeout(auth.jwks_timeout)
            .redirect(redirects)
            .user_agent(concat!("authchat/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &auth.jwks_ca_file {
            for certificate in read_ca_file(path)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder.build().map_err(|e| {
            ConfigError::invalid("auth.jwks_url", format!("the HTTPS client cannot be built: {}", error_chain(&e)))
        })?;
        let state = State {
            schedule: Schedule::new(auth.jwks_min_refresh, auth.jwks_max_refresh, Instant::now()),
            jwks_uri: None,
            installed: None,
        };
        Ok(Self {
            location,
            client,
            dev_mode,
            cache_file: auth.jwks_cache_file.clone(),
            state: tokio::sync::Mutex::new(state),
            fetches: metrics.jwks_fetches.clone(),
            failures: metrics.jwks_refresh_failures.clone(),
        })
    }

    /// Where the keys come from, in words.
    pub fn describe(&self) -> String {
        match &self.location {
            Location::Fixed(url) => format!("auth.jwks_url {}", redact_url(url)),
            Location::Discovered { document, .. } => format!("OpenID discovery at {}", redact_url(document)),
        }
    }

    /// Start-up: the first key set, from the provider, or else from the cache file (logged,
    /// and the provider is asked again `auth.jwks_min_refresh` later).
    pub async fn load_first(&self, tokens: &TokenService) -> Result<(), StartError> {
        let mut state = self.state.lock().await;
        let fetch = match self.fetch(tokens, &mut state, Reason::Start).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let Some(path) = &self.cache_file else { return Err(StartError::Unreachable(fetch)) };
        match install_cached(tokens, path) {
            Ok(body) => {
                tracing::warn!(
                    error = %fetch,
                    cache_file = %path.display(),
                    "the identity provider is unreachable: verifying with the cached key set until it answers"
                );
                state.installed = Some(body);
                Ok(())
            }
            Err(why) => Err(StartError::NoCache { fetch, path: path.display().to_string(), why }),
        }
    }

    /// A token's `kid` is not in the set: fetch now, unless a fetch began less than
    /// `auth.jwks_min_refresh` ago. A fetch under way is waited for, not repeated.
    pub async fn refresh_for_unknown_kid(&self, tokens: &TokenService) {
        let mut state = self.state.lock().await;
        if state.schedule.may_fetch(Instant::now()) {
            tracing::info!("a token names a kid not in the key set: fetching the identity provider's keys");
            let _ = self.fetch(tokens, &mut state, Reason::UnknownKid).await;
        }
    }

    /// Fetches now, whatever the schedule (SIGHUP: an operator asked).
    pub async fn refresh_now(&self, tokens: &TokenService, reason: Reason) -> Result<(), FetchError> {
        let mut state = self.state.lock().await;
        self.fetch(tokens, &mut state, reason).await
    }

    /// Fetches whenever the keys in use go stale; runs for the life of the server.
    pub async fn keep_fresh(tokens: Arc<TokenService>) {
        let Some(super::Provider::Remote(remote)) = tokens.provider() else { return };
        loop {
            let due = remote.state.lock().await.schedule.next_due();
            tokio::time::sleep_until(due).await;
            let mut state = remote.state.lock().await;
            // A fetch for an unknown kid may have moved the schedule while this one slept.
            if state.schedule.is_due(Instant::now()) {
                let _ = remote.fetch(&tokens, &mut state, Reason::Schedule).await;
            }
        }
    }

    /// One fetch, under the lock: the keys, installed when they changed, the schedule moved,
    /// the outcome counted and logged.
    async fn fetch(&self, tokens: &TokenService, state: &mut State, reason: Reason) -> Result<(), FetchError> {
        let started = Instant::now();
        self.fetches.with_label_values(&[reason.as_str()]).inc();
        match self.fetch_keys(tokens, state).await {
            Ok(lifetime) => {
                state.schedule.fetched(started, lifetime);
                tracing::debug!(reason = reason.as_str(), ?lifetime, "JWKS fetched");
                Ok(())
            }
            Err(e) => {
                state.schedule.failed(started);
                state.jwks_uri = None;
                self.failures.inc();
                tracing::error!(
                    error = %e,
                    reason = reason.as_str(),
                    "fetching the identity provider's keys failed; the keys in use stay"
                );
                Err(e)
            }
        }
    }

    /// The key set (the `jwks_uri` found first, with discovery), installed and cached when it
    /// changed; returns how long the provider says it stays fresh.
    async fn fetch_keys(&self, tokens: &TokenService, state: &mut State) -> Result<Option<Duration>, FetchError> {
        let url = match (&self.location, &state.jwks_uri) {
            (Location::Fixed(url), _) => url.clone(),
            (Location::Discovered { .. }, Some(url)) => url.clone(),
            (Location::Discovered { document, issuer }, None) => {
                let url = self.discover(document, issuer).await?;
                state.jwks_uri = Some(url.clone());
                url
            }
        };
        let (body, lifetime) = self.get(&url).await?;
        if state.installed.as_deref() == Some(&body[..]) {
            return Ok(lifetime);
        }
        let shown = redact_url(&url);
        let text = std::str::from_utf8(&body)
            .map_err(|_| FetchError::NotJwks { url: shown.clone(), why: "not UTF-8".into() })?;
        let (keys, skipped) =
            parse(text).map_err(|e| FetchError::NotJwks { url: shown.clone(), why: e.to_string() })?;
        if keys.is_empty() {
            return Err(FetchError::NoUsableKey { url: shown, skipped });
        }
        tokens.install_jwks(&shown, keys, &skipped).map_err(|why| FetchError::NotJwks { url: shown.clone(), why })?;
        if let Some(path) = &self.cache_file {
            if let Err(e) = write_atomically(path, &body) {
                tracing::warn!(cache_file = %path.display(), error = %e, "the key set could not be cached");
            }
        }
        state.installed = Some(body);
        Ok(lifetime)
    }

    /// The `jwks_uri` of the discovery document, which must name `issuer` exactly.
    async fn discover(&self, document: &Url, issuer: &str) -> Result<Url, FetchError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let shown = redact_url(document);
        let (body, _) = self.get(document).await?;
        let found: Discovery = serde_json::from_slice(&body)
            .map_err(|e| FetchError::NotDiscovery { url: shown.clone(), why: e.to_string() })?;
        if found.issuer != issuer {
            let found = found.issuer.chars().take(200).collect();
            return Err(FetchError::IssuerMismatch { url: shown, found, expected: issuer.to_owned() });
        }
        let jwks_uri = Url::parse(&found.jwks_uri)
            .map_err(|e| FetchError::BadJwksUri { url: shown.clone(), why: format!("not a URL: {e}") })?;
        check_provider_url(&jwks_uri, self.dev_mode).map_err(|why| FetchError::BadJwksUri { url: shown, why })?;
        Ok(jwks_uri)
    }

    /// `GET url`: the body of a 2xx answer (at most [`MAX_DOCUMENT_BYTES`]) and its lifetime.
    async fn get(&self, url: &Url) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let shown = || redact_url(url);
        let unreachable =
            |e: reqwest::Error| FetchError::Unreachable { url: shown(), why: error_chain(&e.without_url()) };
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status { url: shown(), status: status.as_u16() });
        }
        if response.content_length().is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64) {
            return Err(FetchError::TooLarge { url: shown() });
        }
        let headers = response.headers();
        let cache_control: Vec<&str> =
            headers.get_all(reqwest::header::CACHE_CONTROL).iter().filter_map(|value| value.to_str().ok()).collect();
        let age = headers.get(reqwest::header::AGE).and_then(|value| value.to_str().ok());
        let lifetime = lifetime(&cache_control, age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge { url: shown() });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, lifetime))
    }
}

/// Installs the key set of the cache file; returns the document.
fn install_cached(tokens: &TokenService, path: &Path) -> Result<Vec<u8>, String> {
    let body = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let text = std::str::from_utf8(&body).map_err(|_| "it is not UTF-8".to_owned())?;
    let (keys, skipped) = parse(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    tokens.install_jwks(&format!("auth.jwks_cache_file {}", path.display()), keys, &skipped)?;
    Ok(body)
}

/// The certificates of `auth.jwks_ca_file`, at least one.
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let invalid = |why: String| ConfigError::invalid("auth.jwks_ca_file", format!("{}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| invalid(format!("not PEM certificates: {}", error_chain(&e))))?;
    if certificates.is_empty() {
        return Err(invalid("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certificates)
}

/// An error and its causes, one after the other: reqwest's own message ("error sending
/// request") says little, its causes say what happened ("invalid peer certificate: UnknownIssuer").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = e.source();
    }
    if text.contains("UnknownIssuer") {
        text.push_str(" (a provider whose certificate comes from a private CA needs that CA in auth.jwks_ca_file)");
    }
    text
}

/// Writes `body` to `path` through a temporary file and a rename, so a reader never sees half
/// a key set.
fn write_atomically(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, body)?;
    std::fs::rename(&temporary, path)
}
