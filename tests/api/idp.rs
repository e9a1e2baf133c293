//! An identity provider for verify-only mode over HTTPS: a real actix-web server with rustls,
//! its certificate issued by a CA made here (the server under test trusts it through
//! `auth.jwks_ca_file`), serving an OpenID discovery document and a JWKS. The test switches the
//! keys, the `Cache-Control` header, the issuer the discovery document names and the provider's
//! health, and reads how many requests each document got.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use jsonwebtoken::Algorithm;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

use crate::jwks::{issued_token, jwk_set};

/// How the JWKS route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// 200 and the key set.
    Up,
    /// 503, as a provider in trouble does.
    Down,
    /// 200 and an HTML page: a proxy's error page, a misrouted request.
    Garbage,
    /// 200 and a key set with only an encryption key in it: valid JSON, no key that verifies.
    NoSigningKey,
}

/// What the routes read and count.
struct State {
    issuer: String,
    /// The issuer the discovery document names (the real one unless a test changes it).
    named_issuer: Mutex<String>,
    keys: Mutex<Vec<(String, Algorithm)>>,
    /// Published next to the signing keys, as Keycloak does: `use: enc`, never for tokens.
    encryption_key: Value,
    cache_control: Mutex<Option<String>>,
    health: Mutex<Health>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

pub struct Idp {
    /// `https://127.0.0.1:<port>/realms/test`.
    pub issuer: String,
    /// The CA that issued the server's certificate, in PEM.
    pub ca_file: PathBuf,
    state: Arc<State>,
    handle: ServerHandle,
}

impl Idp {
    /// Starts a provider on a free port publishing `keys` (kid, algorithm), with no
    /// `Cache-Control` header.
    pub async fn start(name: &str, keys: &[(&str, Algorithm)]) -> Self {
        let dir = std::env::temp_dir().join(format!("authchat-idp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, chain, key) = certificates();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let issuer = format!("https://127.0.0.1:{port}/realms/test");
        let mut encryption_key = serde_json::to_value(&jwk_set(&[("enc-1", Algorithm::RS256)]).keys[0]).unwrap();
        encryption_key["use"] = "enc".into();
        encryption_key["alg"] = "RSA-OAEP".into();
        let state = Arc::new(State {
            issuer: issuer.clone(),
            named_issuer: Mutex::new(issuer.clone()),
            keys: Mutex::new(owned(keys)),
            encryption_key,
            cache_control: Mutex::new(None),
            health: Mutex::new(Health::Up),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
        });

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/realms/test/.well-known/openid-configuration", web::get().to(discovery))
                .route("/realms/test/protocol/openid-connect/certs", web::get().to(jwks))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen_rustls_0_23(listener, tls)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { issuer, ca_file, state, handle }
    }

    /// Where the key set is.
    pub fn jwks_url(&self) -> String {
        format!("{}/protocol/openid-connect/certs", self.issuer)
    }

    /// The `[auth]` settings of a server taking its keys from here by `auth.jwks_url`, trusting
    /// this provider's CA, with `extra` lines (e.g. the refresh bounds).
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[auth]\nissuer = \"{}\"\njwks_url = \"{}\"\njwks_ca_file = \"{}\"\n{extra}",
            self.issuer,
            self.jwks_url(),
            self.ca_file.display()
        )
    }

    /// The same, finding the key set by OpenID discovery.
    pub fn discovery_config(&self, extra: &str) -> String {
        format!(
            "[auth]\nissuer = \"{}\"\noidc_discovery = true\njwks_ca_file = \"{}\"\n{extra}",
            self.issuer,
            self.ca_file.display()
        )
    }

    /// A token this provider issued, signed with the fixture key of `alg` under `kid`.
    pub fn token(&self, kid: &str, alg: Algorithm, user: &str) -> String {
        issued_token(&self.issuer, kid, alg, user)
    }

    pub fn publish(&self, keys: &[(&str, Algorithm)]) {
        *self.state.keys.lock().unwrap() = owned(keys);
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    pub fn set_health(&self, health: Health) {
        *self.state.health.lock().unwrap() = health;
    }

    /// Makes the discovery document name another issuer.
    pub fn name_issuer(&self, issuer: &str) {
        *self.state.named_issuer.lock().unwrap() = issuer.to_owned();
    }

    /// Requests for the key set so far.
    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Requests for the discovery document so far.
    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    /// Stops the server: connections to its port are refused from now on.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn owned(keys: &[(&str, Algorithm)]) -> Vec<(String, Algorithm)> {
    keys.iter().map(|(kid, alg)| ((*kid).to_owned(), *alg)).collect()
}

/// A CA (its PEM), and a certificate for 127.0.0.1 and localhost it issued (the chain and
/// its key).
fn certificates() -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "authchat test identity provider CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, "idp.test");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    (ca.pem(), vec![leaf.der().clone(), ca.der().clone()], key)
}

async fn discovery(state: web::Data<State>) -> HttpResponse {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let issuer = state.named_issuer.lock().unwrap().clone();
    HttpResponse::Ok().json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{}/protocol/openid-connect/auth", state.issuer),
        "token_endpoint": format!("{}/protocol/openid-connect/token", state.issuer),
        "jwks_uri": format!("{}/protocol/openid-connect/certs", state.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "ES384", "EdDSA"],
    }))
}

async fn jwks(state: web::Data<State>) -> HttpResponse {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let health = *state.health.lock().unwrap();
    let mut keys: Vec<Value> = match health {
        Health::Down => return HttpResponse::ServiceUnavailable().body("the provider is down"),
        Health::Garbage => return HttpResponse::Ok().content_type("text/html").body("<html>Bad gateway</html>"),
        Health::NoSigningKey => Vec::new(),
        Health::Up => {
            let published = state.keys.lock().unwrap().clone();
            let published: Vec<(&str, Algorithm)> = published.iter().map(|(kid, alg)| (kid.as_str(), *alg)).collect();
            jwk_set(&published).keys.iter().map(|jwk| serde_json::to_value(jwk).unwrap()).collect()
        }
    };
    keys.insert(0, state.encryption_key.clone());
    let mut response = HttpResponse::Ok();
    if let Some(value) = state.cache_control.lock().unwrap().clone() {
        response.insert_header(("Cache-Control", value));
    }
    response.json(json!({ "keys": keys }))
}
