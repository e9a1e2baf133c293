//! JWT verification and minting, following RFC 8725: only canonical compact serialisations
//! are parsed, the algorithm is pinned per key, `kid` selects a key from a fixed map, `exp` and
//! `sub` are required, and so are `iss` and `aud` when configured; `nbf` is checked, an `iat` in
//! the future is refused, and no token may live longer than `auth.max_token_lifetime`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::jwks::{JwksKey, Provider};
use super::{AuthError, Principal};
use crate::config::{ConfigError, KeyAlgorithm, Settings, MIN_HS_SECRET_BYTES};
use crate::ids::{SessionId, UserId};
use crate::metrics::Metrics;
use crate::time::now_unix_s;

/// The refusal of a token whose `kid` names no key in the set (in verify-only mode with keys
/// over HTTPS, only once the set has been fetched again, or could not be yet).
const UNKNOWN_KID: AuthError = AuthError::InvalidToken("unknown kid");

/// The claims authchat reads and writes. Unknown claims are ignored.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    /// `iat` to the millisecond, in tokens minted here: a login right after a revocation, in
    /// the same second, is not mistaken for one from before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    /// Every other claim, of which the lists of strings are kept (room rules read them).
    #[serde(flatten, default, skip_serializing)]
    other: HashMap<String, serde_json::Value>,
}

/// The claims of `other` whose value is a list of strings.
fn list_claims(other: HashMap<String, serde_json::Value>) -> std::collections::BTreeMap<String, Vec<String>> {
    other
        .into_iter()
        .filter_map(|(name, value)| {
            let serde_json::Value::Array(items) = value else { return None };
            let strings: Option<Vec<String>> =
                items.into_iter().map(|v| if let serde_json::Value::String(s) = v { Some(s) } else { None }).collect();
            strings.map(|s| (name, s))
        })
        .collect()
}

/// The one header field read before jsonwebtoken's `decode`, which then parses and checks the
/// whole header itself. Parsing its `Header` here as well (every registered field and a map of
/// the others) cost a tenth of the token check.
#[derive(Deserialize)]
struct KeyId<'a> {
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
}

/// The JSON of a token's header segment (the token is canonical compact already).
fn header_json(token: &str) -> Option<Vec<u8>> {
    let segment = token.split('.').next()?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment).ok()
}

/// `aud`: one audience (as minted here) or several (RFC 7519 §4.1.3), as identity providers
/// often send (Keycloak's `["authchat", "account"]`). Whether `auth.audience` is among them is
/// jsonwebtoken's check; this only lets both shapes through to it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A key a token may be verified with, and the validation rules pinned to it.
struct VerifyingKey {
    key: DecodingKey,
    validation: Validation,
}

/// The key minted tokens are signed with.
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
}

/// A freshly minted access token.
pub struct MintedToken {
    pub token: SecretString,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Verifies tokens against the configured keys and mints new ones.
pub struct TokenService {
    /// Swapped whole when the identity provider's key set changes; readers never wait.
    keys: ArcSwap<HashMap<String, VerifyingKey>>,
    /// Key used for tokens without a `kid` header (none in JWKS mode: there `kid` is required).
    default_kid: Option<String>,
    /// Verify-only mode: where the identity provider's keys come from; nothing is minted here.
    provider: Option<Provider>,
    leeway: u64,
    signer: Option<SigningKey>,
    issuer: Option<String>,
    audience: Option<String>,
    access_ttl: Duration,
    max_token_bytes: usize,
    /// Longest `exp - iat` accepted (or minted): a token with a far `exp` would outlive every
    /// revocation horizon and hold a socket open for ever.
    max_token_lifetime: Duration,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("kids", &self.keys.load().keys().cloned().collect::<Vec<_>>())
            .field("default_kid", &self.default_kid)
            .field("provider", &self.provider.as_ref().map(Provider::describe))
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// Builds the key set; a key that cannot be read or parsed is an error naming its config key.
    /// `hs_secret` is the effective `auth.secret` (dev mode may have generated it). Keys fetched
    /// over HTTPS are not fetched here: [`super::jwks::remote::Remote::load_first`] does that.
    pub fn from_settings(
        settings: &Settings,
        hs_secret: &SecretString,
        metrics: &Metrics,
    ) -> Result<Self, ConfigError> {
        let auth = &settings.auth;
        let issuer = Some(auth.issuer.clone()).filter(|s| !s.is_empty());
        let audience = Some(auth.audience.clone()).filter(|s| !s.is_empty());
        let leeway = auth.leeway.as_secs();
        let validation_for =
            |algorithm: Algorithm| validation(algorithm, leeway, issuer.as_deref(), audience.as_deref());

        if auth.is_verify_only() {
            if issuer.is_none() || audience.is_none() {
                return Err(ConfigError::invalid(
                    if issuer.is_none() { "auth.issuer" } else { "auth.audience" },
                    "must be set in verify-only mode (auth.jwks_file, auth.jwks_url or auth.oidc_discovery): tokens \
                     from an identity provider are checked for both",
                ));
            }
            let provider = match &auth.jwks_file {
                Some(path) => Provider::File(path.clone()),
                None => Provider::Remote(Box::new(super::jwks::remote::Remote::from_settings(
                    auth,
                    settings.dev_mode,
                    metrics,
                )?)),
            };
            let service = Self {
                keys: ArcSwap::from_pointee(HashMap::new()),
                default_kid: None,
                provider: Some(provider),
                leeway,
                signer: None,
                issuer,
                audience,
                access_ttl: auth.access_ttl,
                max_token_bytes: auth.max_token_bytes,
                max_token_lifetime: auth.max_token_lifetime,
            };
            if matches!(service.provider, Some(Provider::File(_))) {
                service.reload_jwks_file().map_err(|e| ConfigError::invalid("auth.jwks_file", e))?;
            }
            return Ok(service);
        }

        let mut keys = HashMap::new();
        let mut signers: HashMap<String, (Algorithm, EncodingKey)> = HashMap::new();
        let secret = hs_secret.expose_secret().as_bytes();
        if secret.len() >= MIN_HS_SECRET_BYTES {
            let decoding =
                DecodingKey::from_secret(secret).map_err(|e| ConfigError::invalid("auth.secret", e.to_string()))?;
            let encoding =
                EncodingKey::from_secret(secret).map_err(|e| ConfigError::invalid("auth.secret", e.to_string()))?;
            keys.insert(
                auth.secret_kid.clone(),
                VerifyingKey { key: decoding, validation: validation_for(Algorithm::HS256) },
            );
            signers.insert(auth.secret_kid.clone(), (Algorithm::HS256, encoding));
        }
        for (i, entry) in auth.keys.iter().enumerate() {
            let at = |field: &str| format!("auth.keys[{i}].{field}");
            if entry.kid.is_empty() || keys.contains_key(&entry.kid) {
                return Err(ConfigError::invalid(
                    at("kid"),
                    "must be non-empty and unique (also against auth.secret_kid)",
                ));
            }
            let algorithm = jwt_algorithm(entry.algorithm);
            let (decoding, encoding) = if let Some((public_pem, private_pem)) = pem_loaders(entry.algorithm) {
                let path = entry.public_key.as_deref().ok_or_else(|| {
                    ConfigError::invalid(
                        at("public_key"),
                        format!("{} keys need a public_key PEM file", entry.algorithm),
                    )
                })?;
                let pem = read_pem(path, &at("public_key"))?;
                let decoding = public_pem(&pem).map_err(|e| {
                    ConfigError::invalid(
                        at("public_key"),
                        format!("{}: not a {} public key: {e}", path.display(), entry.algorithm),
                    )
                })?;
                let encoding = match &entry.private_key {
                    None => None,
                    Some(path) => {
                        let pem = read_pem(path, &at("private_key"))?;
                        let key = private_pem(&pem).map_err(|e| {
                            ConfigError::invalid(
                                at("private_key"),
                                format!("{}: not a {} private key: {e}", path.display(), entry.algorithm),
                            )
                        })?;
                        Some(key)
                    }
                };
                (decoding, encoding)
            } else {
                let secret = entry.secret.as_ref().map(|s| s.expose_secret().as_bytes()).unwrap_or_default();
                if secret.len() < MIN_HS_SECRET_BYTES {
                    return Err(ConfigError::invalid(
                        at("secret"),
                        format!("HS256 keys need a secret of at least {MIN_HS_SECRET_BYTES} bytes"),
                    ));
                }
                let bad = |e: jsonwebtoken::errors::Error| ConfigError::invalid(at("secret"), e.to_string());
                (DecodingKey::from_secret(secret).map_err(bad)?, Some(EncodingKey::from_secret(secret).map_err(bad)?))
            };
            keys.insert(entry.kid.clone(), VerifyingKey { key: decoding, validation: validation_for(algorithm) });
            if let Some(encoding) = encoding {
                signers.insert(entry.kid.clone(), (algorithm, encoding));
            }
        }
        if keys.is_empty() {
            return Err(ConfigError::invalid(
                "auth.secret",
                "no verification key is configured: set auth.secret or add auth.keys",
            ));
        }
        let signer = match signers.remove(&auth.signing_kid) {
            Some((algorithm, key)) => Some(SigningKey { kid: auth.signing_kid.clone(), algorithm, key }),
            None if auth.signing_kid.is_empty() => None,
            None => {
                return Err(ConfigError::invalid(
                    "auth.signing_kid",
                    format!(
                        "{:?} names no key that can sign (auth.secret_kid or an auth.keys entry with a private_key)",
                        auth.signing_kid
                    ),
                ))
            }
        };
        let default_kid =
            if keys.contains_key(&auth.signing_kid) { auth.signing_kid.clone() } else { auth.secret_kid.clone() };
        Ok(Self {
            keys: ArcSwap::from_pointee(keys),
            default_kid: Some(default_kid),
            provider: None,
            leeway,
            signer,
            issuer,
            audience,
            access_ttl: auth.access_ttl,
            max_token_bytes: auth.max_token_bytes,
            max_token_lifetime: auth.max_token_lifetime,
        })
    }

    /// True when keys come from an identity provider's JWKS and this server mints nothing.
    pub fn is_verify_only(&self) -> bool {
        self.provider.is_some()
    }

    /// Where the identity provider's keys come from, in verify-only mode.
    pub fn provider(&self) -> Option<&Provider> {
        self.provider.as_ref()
    }

    /// The JWKS file, in verify-only mode with a file.
    pub fn jwks_file(&self) -> Option<&Path> {
        match &self.provider {
            Some(Provider::File(path)) => Some(path),
            _ => None,
        }
    }

    /// Re-reads the JWKS file and swaps the key set in one step; on any error the old set stays.
    /// Returns how many keys are now in use.
    pub fn reload_jwks_file(&self) -> Result<usize, String> {
        let path = self.jwks_file().ok_or("no auth.jwks_file is configured")?;
        let (loaded, skipped) = super::jwks::load(path)?;
        self.install_jwks(&path.display().to_string(), loaded, &skipped)
    }

    /// Makes `loaded` the key set, in one step, with the validation rules pinned to each key;
    /// `origin` (a file or a URL) is what the log names. An empty set is refused and the old
    /// one stays. Returns how many keys are now in use.
    pub fn install_jwks(&self, origin: &str, loaded: Vec<JwksKey>, skipped: &[String]) -> Result<usize, String> {
        for why in skipped {
            tracing::warn!(origin, %why, "JWKS key skipped");
        }
        if loaded.is_empty() {
            return Err(format!("{origin} holds no usable key"));
        }
        let keys: HashMap<String, VerifyingKey> = loaded
            .into_iter()
            .map(|k| {
                let validation = validation(k.algorithm, self.leeway, self.issuer.as_deref(), self.audience.as_deref());
                (k.kid, VerifyingKey { key: k.key, validation })
            })
            .collect();
        let count = keys.len();
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        // Key ids are public (they are in every token's header); logged so an operator sees
        // which keys verify, at start-up and after each change.
        tracing::info!(origin, kids = ?kids, "JWKS keys in use");
        self.keys.store(Arc::new(keys));
        Ok(count)
    }

    /// [`Self::verify`], and when the token's `kid` is not in a key set fetched over HTTPS, the
    /// set fetched again first (at most once per `auth.jwks_min_refresh`, however many tokens
    /// ask): a provider rotating its keys signs with a new `kid` before this server has
    /// refreshed on its own. The entry point for authentication.
    pub async fn verify_fresh(&self, token: &str) -> Result<Principal, AuthError> {
        let verdict = self.verify(token);
        match (&verdict, &self.provider) {
            (Err(UNKNOWN_KID), Some(Provider::Remote(remote))) => {
                remote.refresh_for_unknown_kid(self).await;
                self.verify(token)
            }
            _ => verdict,
        }
    }

    /// Lifetime of tokens minted without an explicit TTL.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Checks signature and claims. Revocation is the caller's second step.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::InvalidToken("token is longer than auth.max_token_bytes"));
        }
        if !is_canonical_compact(token) {
            return Err(AuthError::InvalidToken("not three canonical, unpadded base64url segments"));
        }
        let header = header_json(token).ok_or(AuthError::InvalidToken("not a JWT"))?;
        let KeyId { kid } = serde_json::from_slice(&header).map_err(|_| AuthError::InvalidToken("not a JWT"))?;
        let kid = kid.as_deref().or(self.default_kid.as_deref()).ok_or(AuthError::InvalidToken("no kid"))?;
        let keys = self.keys.load();
        let key = keys.get(kid).ok_or(UNKNOWN_KID)?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation).map_err(map_jwt_error)?;
        let claims = data.claims;
        // Leeway forgives clock skew on `nbf` and `iat` only: a socket is closed at `exp`
        // exactly, so a token already past it must not open one.
        let now = now_unix_s();
        if claims.exp <= now {
            return Err(AuthError::TokenExpired);
        }
        // Revocation marks compare `iat`: a token claiming to be issued later than now would
        // pass for one issued after its user's revocation.
        if claims.iat.is_some_and(|iat| iat > now.saturating_add(self.leeway)) {
            return Err(AuthError::InvalidToken("issued in the future (iat)"));
        }
        if claims.exp.saturating_sub(claims.iat.unwrap_or(now)) > self.max_token_lifetime.as_secs() {
            return Err(AuthError::InvalidToken("lives longer than auth.max_token_lifetime"));
        }
        if claims.sub.is_empty() {
            return Err(AuthError::InvalidToken("empty sub"));
        }
        Ok(Principal {
            user: UserId::new(claims.sub),
            roles: claims.roles,
            token_id: claims.jti,
            expires_at: claims.exp,
            issued_at_ms: match (claims.iat, claims.iat_ms) {
                (Some(iat), Some(ms)) if ms / 1000 == iat => ms,
                (Some(iat), _) => iat.saturating_mul(1000),
                (None, _) => 0,
            },
            session_id: claims.sid.map(SessionId::new),
            claims: list_claims(claims.other),
        })
    }

    /// Signs a new access token for `user`, valid for `ttl` (the configured one when `None`),
    /// tied to login session `sid` when given.
    pub fn mint(
        &self,
        user: &UserId,
        roles: &[String],
        ttl: Option<Duration>,
        sid: Option<&str>,
    ) -> Result<MintedToken, MintError> {
        let signer = self.signer.as_ref().ok_or(MintError::NoSigningKey)?;
        let ttl = ttl.unwrap_or(self.access_ttl);
        if ttl > self.max_token_lifetime {
            return Err(MintError::TooLong(self.max_token_lifetime));
        }
        let now_ms = crate::time::now_unix_ms();
        let now = now_ms / 1000;
        let expires_at = now + ttl.as_secs().max(1);
        let claims = Claims {
            sub: user.as_str().to_owned(),
            exp: expires_at,
            iat: Some(now),
            iat_ms: Some(now_ms),
            nbf: Some(now),
            jti: Some(crate::ids::random_id(16)),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
            sid: sid.map(str::to_owned),
            roles: roles.to_vec(),
            other: HashMap::new(),
        };
        let mut header = Header::new(signer.algorithm);
        header.kid = Some(signer.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &signer.key).map_err(|e| MintError::Sign(e.to_string()))?;
        Ok(MintedToken { token: token.into(), expires_at })
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no signing key is configured (auth.signing_kid)")]
    NoSigningKey,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the lifetime asked for is longer than auth.max_token_lifetime ({})", humantime::format_duration(*.0))]
    TooLong(Duration),
}

/// The rules pinned to one key: its algorithm, `exp` and `sub` required, `nbf` checked,
/// `iss`/`aud` required and checked when configured (jsonwebtoken checks a configured claim
/// only when the token has it, unless it is also listed as required).
fn validation(algorithm: Algorithm, leeway: u64, issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut v = Validation::new(algorithm);
    let configured = [issuer.map(|_| "iss"), audience.map(|_| "aud")];
    let required: Vec<&str> = ["exp", "sub"].into_iter().chain(configured.into_iter().flatten()).collect();
    v.set_required_spec_claims(&required);
    v.validate_nbf = true;
    v.leeway = leeway;
    match issuer {
        Some(iss) => v.set_issuer(&[iss]),
        None => v.iss = None,
    }
    match audience {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    v
}

/// RFC 7515 compact serialisation, strictly: three segments, each the one base64url encoding
/// of its bytes (no padding, no `+` or `/`, no set trailing bits). A decoder that forgives any
/// of these lets one token take many spellings, which defeats blocklists and caches keyed by
/// the token text; checking here keeps the guarantee whatever jsonwebtoken decodes with.
fn is_canonical_compact(token: &str) -> bool {
    let mut segments = token.split('.');
    let three = [segments.next(), segments.next(), segments.next()];
    segments.next().is_none() && three.iter().all(|segment| segment.is_some_and(is_canonical_base64url))
}

/// Whether `segment` is the one unpadded base64url encoding of some bytes (RFC 7515 §2): only
/// the URL-safe alphabet, no padding, a length a byte sequence can have, and the bits the last
/// character carries past the last byte all zero. Checked without decoding: the signature
/// check decodes every segment anyway.
fn is_canonical_base64url(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    // One pass without branches: a byte outside the alphabet sets the high bit.
    if bytes.iter().fold(0, |seen, &b| seen | SEXTETS[usize::from(b)]) & NOT_BASE64URL != 0 {
        return false;
    }
    // The bits of the last character past the last whole byte: 4 of them after 2 characters
    // (one byte), 2 after 3 (two bytes); no length leaves 1 character.
    let spare_bits = match bytes.len() % 4 {
        0 => 0,
        2 => 4,
        3 => 2,
        _ => return false,
    };
    bytes.last().is_none_or(|&last| SEXTETS[usize::from(last)] & ((1 << spare_bits) - 1) == 0)
}

/// Marks a byte outside the base64url alphabet in [`SEXTETS`].
const NOT_BASE64URL: u8 = 0x80;

/// The 6-bit value of each base64url character, indexed by byte; [`NOT_BASE64URL`] for every
/// other byte.
const SEXTETS: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut table = [NOT_BASE64URL; 256];
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

fn jwt_algorithm(algorithm: KeyAlgorithm) -> Algorithm {
    match algorithm {
        KeyAlgorithm::Hs256 => Algorithm::HS256,
        KeyAlgorithm::Rs256 => Algorithm::RS256,
        KeyAlgorithm::Es256 => Algorithm::ES256,
        KeyAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

/// PEM readers of the public and the private key of an asymmetric algorithm; `None` for
/// HS256, whose key is a secret.
type PemLoaders =
    (fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>, fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>);

fn pem_loaders(algorithm: KeyAlgorithm) -> Option<PemLoaders> {
    match algorithm {
        KeyAlgorithm::Hs256 => None,
        KeyAlgorithm::Rs256 => Some((DecodingKey::from_rsa_pem, EncodingKey::from_rsa_pem)),
        KeyAlgorithm::Es256 => Some((DecodingKey::from_ec_pem, EncodingKey::from_ec_pem)),
        KeyAlgorithm::EdDsa => Some((DecodingKey::from_ed_pem, EncodingKey::from_ed_pem)),
    }
}

fn read_pem(path: &Path, key: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
}

fn map_jwt_error(error: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::TokenExpired,
        ErrorKind::InvalidSignature => AuthError::InvalidToken("bad signature"),
        ErrorKind::InvalidAlgorithm => AuthError::InvalidToken("algorithm does not match the key"),
        ErrorKind::ImmatureSignature => AuthError::InvalidToken("not valid yet (nbf)"),
        ErrorKind::InvalidIssuer => AuthError::InvalidToken("wrong issuer"),
        ErrorKind::InvalidAudience => AuthError::InvalidToken("wrong audience"),
        ErrorKind::MissingRequiredClaim(claim) => AuthError::InvalidToken(match claim.as_str() {
            "exp" => "the exp claim is missing",
            "sub" => "the sub claim is missing",
            "iss" => "the iss claim is missing (auth.issuer is set)",
            "aud" => "the aud claim is missing (auth.audience is set)",
            _ => "a required claim is missing",
        }),
        _ => AuthError::InvalidToken("malformed token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadOptions, Settings};

    fn service(overrides: &str) -> TokenService {
        let settings = Settings::load(&LoadOptions {
            env_vars: Some(Default::default()),
            overrides: vec![overrides.to_owned()],
            ..Default::default()
        })
        .unwrap();
        TokenService::from_settings(&settings, &settings.auth.secret, &Metrics::new()).unwrap()
    }

    const SECRET: &str = "[auth]\nsecret = \"0123456789abcdef0123456789abcdef\"";

    fn sign(claims: serde_json::Value, alg: Algorithm, kid: Option<&str>, secret: &[u8]) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
    }

    #[test]
    fn minted_tokens_verify() {
        let svc = service(SECRET);
        let minted = svc.mint(&UserId::new("alice"), &["admin".into()], None, Some("fam")).unwrap();
        let p = svc.verify(minted.token.expose_secret()).unwrap();
        assert_eq!(p.user.as_str(), "alice");
        assert!(p.is_admin());
        assert_eq!(p.expires_at, minted.expires_at);
        assert!(p.token_id.is_some());
        assert_eq!(p.session_id.as_ref().map(SessionId::as_str), Some("fam"));
    }

    #[test]
    fn refuses_alg_none_wrong_alg_unknown_kid_and_missing_claims() {
        let svc = service(SECRET);
        let secret = b"0123456789abcdef0123456789abcdef";
        let exp = now_unix_s() + 60;
        let good = serde_json::json!({"sub":"a","exp":exp,"iss":"authchat","aud":"authchat"});
        assert!(svc.verify(&sign(good.clone(), Algorithm::HS256, None, secret)).is_ok());
        // alg confusion: same secret, other HMAC algorithm
        assert_eq!(
            svc.verify(&sign(good.clone(), Algorithm::HS384, None, secret)),
            Err(AuthError::InvalidToken("algorithm does not match the key"))
        );
        // alg=none: header {"alg":"none"} with an empty signature
        let none = format!(
            "eyJhbGciOiJub25lIn0.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(good.to_string())
        );
        assert!(matches!(svc.verify(&none), Err(AuthError::InvalidToken(_))));
        assert_eq!(
            svc.verify(&sign(good.clone(), Algorithm::HS256, Some("nope"), secret)),
            Err(AuthError::InvalidToken("unknown kid"))
        );
        let no_sub = serde_json::json!({"exp":exp,"iss":"authchat","aud":"authchat"});
        assert!(matches!(svc.verify(&sign(no_sub, Algorithm::HS256, None, secret)), Err(AuthError::InvalidToken(_))));
        let wrong_aud = serde_json::json!({"sub":"a","exp":exp,"iss":"authchat","aud":"other"});
        assert_eq!(
            svc.verify(&sign(wrong_aud, Algorithm::HS256, None, secret)),
            Err(AuthError::InvalidToken("wrong audience"))
        );
        // Identity providers send several audiences; one of them must be ours.
        let several = serde_json::json!({"sub":"a","exp":exp,"iss":"authchat","aud":["account","authchat"]});
        assert!(svc.verify(&sign(several, Algorithm::HS256, None, secret)).is_ok());
        let none_ours = serde_json::json!({"sub":"a","exp":exp,"iss":"authchat","aud":["account","other"]});
        assert_eq!(
            svc.verify(&sign(none_ours, Algorithm::HS256, None, secret)),
            Err(AuthError::InvalidToken("wrong audience"))
        );
        let future = serde_json::json!({"sub":"a","exp":exp,"nbf":exp,"iss":"authchat","aud":"authchat"});
        assert_eq!(
            svc.verify(&sign(future, Algorithm::HS256, None, secret)),
            Err(AuthError::InvalidToken("not valid yet (nbf)"))
        );
        let expired = serde_json::json!({"sub":"a","exp":now_unix_s() - 30,"iss":"authchat","aud":"authchat"});
        assert_eq!(svc.verify(&sign(expired, Algorithm::HS256, None, secret)), Err(AuthError::TokenExpired));
        assert!(matches!(
            svc.verify(&sign(good, Algorithm::HS256, None, b"another-secret-another-secret-xx")),
            Err(AuthError::InvalidToken("bad signature"))
        ));
    }

    #[test]
    fn only_canonical_compact_serialisations_pass() {
        let svc = service(SECRET);
        let token = svc.mint(&UserId::new("alice"), &[], None, None).unwrap().token.expose_secret().to_owned();
        assert!(is_canonical_compact(&token));
        let (message, signature) = token.rsplit_once('.').unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).unwrap();
        let standard = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert!(!is_canonical_compact(&format!("{message}.{standard}")), "padded standard base64");
        assert!(!is_canonical_compact(&format!("{token}=")), "padding");
        assert!(!is_canonical_compact(&format!("{message}.+{}", &signature[1..])), "+ of standard base64");
        assert!(!is_canonical_compact(&format!("{message}./{}", &signature[1..])), "/ of standard base64");
        // 32 bytes take 43 characters; the last one has 2 unused bits, which must be zero
        let mut trailing = token.clone();
        let last = trailing.pop().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        trailing.push(alphabet.as_bytes()[alphabet.find(last).unwrap() ^ 1] as char);
        assert!(!is_canonical_compact(&trailing), "trailing bits");
        assert!(!is_canonical_compact(message), "two segments");
        assert!(!is_canonical_compact(&format!("{token}.{signature}")), "four segments");
    }

    #[test]
    fn a_segment_is_canonical_exactly_when_decoding_and_encoding_it_again_gives_it_back() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // Every string of up to 3 characters of the alphabet and its neighbours, and every
        // 4-character one ending in each of them: each length class and every trailing-bits case.
        let chars: Vec<char> =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=. é".chars().collect();
        let mut segments = vec![String::new()];
        for length in 1..=3 {
            let shorter: Vec<String> = segments.iter().filter(|s| s.chars().count() == length - 1).cloned().collect();
            segments.extend(shorter.iter().flat_map(|s| chars.iter().map(move |c| format!("{s}{c}"))));
        }
        segments.extend(chars.iter().map(|c| format!("QUJ{c}")));
        for segment in &segments {
            let decodes_back = URL_SAFE_NO_PAD.decode(segment).is_ok_and(|b| URL_SAFE_NO_PAD.encode(b) == *segment);
            assert_eq!(is_canonical_base64url(segment), decodes_back, "{segment:?}");
        }
    }

    #[test]
    fn lifetime_and_iat_are_bounded_and_minting_respects_the_cap() {
        let svc = service(&format!("{SECRET}\nmax_token_lifetime = \"1h\""));
        let secret = b"0123456789abcdef0123456789abcdef";
        let now = now_unix_s();
        let token = |exp: u64, iat: Option<u64>| {
            let mut claims = serde_json::json!({"sub":"a","exp":exp,"iss":"authchat","aud":"authchat"});
            if let Some(iat) = iat {
                claims["iat"] = iat.into();
            }
            sign(claims, Algorithm::HS256, None, secret)
        };
        assert!(svc.verify(&token(now + 3600, Some(now))).is_ok());
        assert!(svc.verify(&token(now + 3601, Some(now))).is_err());
        assert!(svc.verify(&token(now + 3660, None)).is_err(), "without iat, counted from now");
        assert!(svc.verify(&token(u64::MAX, Some(now))).is_err());
        assert!(svc.verify(&token(now + 60, Some(now + 5))).is_ok(), "within auth.leeway");
        assert_eq!(
            svc.verify(&token(now + 60, Some(now + 60))),
            Err(AuthError::InvalidToken("issued in the future (iat)"))
        );
        let alice = UserId::new("alice");
        assert!(svc.mint(&alice, &[], Some(Duration::from_secs(3600)), None).is_ok());
        assert!(matches!(svc.mint(&alice, &[], Some(Duration::from_secs(3601)), None), Err(MintError::TooLong(_))));
    }

    #[test]
    fn lists_of_strings_among_other_claims_are_kept_for_room_rules() {
        let svc = service(SECRET);
        let claims = serde_json::json!({
            "sub":"a","exp":now_unix_s() + 60,"iss":"authchat","aud":"authchat","roles":["ops"],
            "rooms":["proj-x","team.ops.*"],"groups":[],"mixed":["a",1],"name":"Ann","nested":{"rooms":["x"]}
        });
        let p = svc.verify(&sign(claims, Algorithm::HS256, None, b"0123456789abcdef0123456789abcdef")).unwrap();
        assert_eq!(p.roles, ["ops"]);
        let expected: std::collections::BTreeMap<String, Vec<String>> =
            [("groups".to_owned(), vec![]), ("rooms".to_owned(), vec!["proj-x".to_owned(), "team.ops.*".to_owned()])]
                .into();
        assert_eq!(p.claims, expected, "only top-level lists of strings");
    }

    #[test]
    fn debug_print_shows_no_key_material() {
        let svc = service(SECRET);
        assert!(!format!("{svc:?}").contains("0123456789abcdef"));
    }
}
