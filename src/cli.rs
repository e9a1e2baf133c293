//! The `authchat` command line: `serve` (the default), `token`, `hash-password`, `check-config`,
//! `healthcheck`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::jwks::Provider;
use crate::auth::jwt::TokenService;
use crate::auth::password::hash_password;
use crate::config::{AuthMode, LoadOptions, Settings, MIN_HS_SECRET_BYTES};
use crate::ids::UserId;
use crate::metrics::Metrics;
use crate::startup::Application;

#[derive(Parser)]
#[command(name = "authchat", version, about = "A chat server that gets WebSocket authentication right")]
struct Cli {
    /// Extra TOML file layered over config/default.toml and config/$AUTHCHAT_ENV.toml.
    #[arg(long, global = true, env = "AUTHCHAT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Mint an access token with the configured signing key.
    Token {
        #[arg(long)]
        user: String,
        /// A role to put in the token (repeatable), e.g. --role admin.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, e.g. 90s, 15m, 2h (default: auth.access_ttl).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Read a password from standard input and print its Argon2 hash for `users[].password_hash`.
    HashPassword,
    /// Load and validate the configuration (keys included: an identity provider's are fetched
    /// as start-up would), then exit.
    CheckConfig,
    /// Ask the server this configuration describes for /healthz (https when tls.cert and
    /// tls.key are set); exit 0 when it answers 200, else 1 with the reason.
    Healthcheck {
        /// Give up after this long, e.g. 2s, 500ms.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    let load = || Settings::load(&LoadOptions::from_process(cli.config.clone()));
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let settings = load()?;
            crate::telemetry::init(&settings.log);
            let layers = LoadOptions::from_process(cli.config.clone());
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(settings).await?;
                let reload = app.reload_handle().with_config(layers);
                actix_web::rt::spawn(async move {
                    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                        return tracing::warn!("cannot listen for SIGHUP; reloads need a restart");
                    };
                    while hangups.recv().await.is_some() {
                        tracing::info!("SIGHUP received: reloading");
                        reload.reload();
                    }
                });
                app.run_until_stopped(shutdown_signal()).await?;
                tracing::info!("stopped");
                Ok(())
            })
        }
        Command::Token { user, roles, ttl } => {
            let settings = load()?;
            check_can_mint(&settings)?;
            let tokens = TokenService::from_settings(&settings, &settings.auth.secret, &Metrics::new())?;
            let minted = tokens.mint(&UserId::new(user), &roles, ttl, None)?;
            println!("{}", minted.token.expose_secret());
            Ok(())
        }
        Command::HashPassword => {
            let password = read_password()?;
            anyhow::ensure!(!password.expose_secret().is_empty(), "the password is empty");
            let hash = hash_password(&password).map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
            println!("{hash}");
            Ok(())
        }
        Command::Healthcheck { timeout } => {
            let url = crate::healthcheck::check(&load()?, timeout)?;
            println!("healthy: {url} answered 200");
            Ok(())
        }
        Command::CheckConfig => {
            let settings = load()?;
            let secret = settings.hs_secret().cloned().unwrap_or_else(|| crate::ids::random_id(48).into());
            let tokens = TokenService::from_settings(&settings, &secret, &Metrics::new())?;
            if let Some(Provider::Remote(remote)) = tokens.provider() {
                // The first fetch start-up makes: a provider that cannot be reached or trusted,
                // or a discovery document naming another issuer, shows here.
                actix_web::rt::System::new().block_on(remote.load_first(&tokens))?;
            }
            if let Some((cert, key)) = settings.tls.files() {
                crate::tls::CertStore::load(cert, key)?;
            }
            let auth = match settings.auth.mode {
                AuthMode::Session => "session (server-side sessions behind a cookie)".to_owned(),
                AuthMode::Jwt => match tokens.provider() {
                    Some(provider) => format!("jwt, verify-only (keys from {})", provider.describe()),
                    None => format!("jwt (signing key {:?})", settings.auth.signing_kid),
                },
            };
            let layers = std::env::var("AUTHCHAT_ENV").ok().filter(|e| !e.is_empty());
            println!(
                "configuration is valid: environment {}, dev_mode = {}, auth.mode = {auth}, {} user(s) with passwords, \
                 store {}, TLS {}",
                layers.as_deref().unwrap_or("(none: the embedded default)"),
                settings.dev_mode,
                settings.users.len(),
                settings.store.backend,
                settings.tls.describe(),
            );
            Ok(())
        }
    }
}

/// `authchat token` signs with the configured key, which must be one a server can share: not
/// dev mode's per-process random secret, nor a key that is only for verifying.
fn check_can_mint(settings: &Settings) -> anyhow::Result<()> {
    let auth = &settings.auth;
    if auth.mode == AuthMode::Session {
        anyhow::bail!("auth.mode is \"session\": the server uses sessions, not tokens, so there is nothing to mint");
    }
    if auth.is_verify_only() {
        anyhow::bail!(
            "auth.jwks_file, auth.jwks_url or auth.oidc_discovery is set (verify-only mode): tokens come from the \
             identity provider, not from here"
        );
    }
    let secret_len = auth.secret.expose_secret().len();
    if auth.signing_kid == auth.secret_kid && secret_len < MIN_HS_SECRET_BYTES {
        let what = if secret_len == 0 { "is empty".to_owned() } else { format!("has {secret_len} bytes") };
        anyhow::bail!(
            "auth.secret {what}; signing needs at least {MIN_HS_SECRET_BYTES}. Give this command and the server the \
             same secret, e.g. export AUTHCHAT__AUTH__SECRET=\"$(openssl rand -base64 48)\" before both (without it, \
             dev mode makes a random secret per server process, which no token minted here matches)"
        );
    }
    Ok(())
}

/// The password, from the terminal without echo (asked twice), or from a pipe as one line.
fn read_password() -> anyhow::Result<SecretString> {
    if std::io::stdin().is_terminal() {
        let first = SecretString::from(rpassword::prompt_password("password: ")?);
        let again = SecretString::from(rpassword::prompt_password("again: ")?);
        anyhow::ensure!(first.expose_secret() == again.expose_secret(), "the two passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(SecretString::from(line.trim_end_matches(['\r', '\n'])))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
