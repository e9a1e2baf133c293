//! The `authchat` command line: `serve` (the default), `token`, `hash-password`, `check-config`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::jwt::TokenService;
use crate::auth::password::hash_password;
use crate::config::{LoadOptions, Settings};
use crate::ids::UserId;
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
    /// Load and validate the configuration (keys included), then exit.
    CheckConfig,
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
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(settings).await?;
                let reload = app.reload_handle();
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
            if settings.auth.signing_kid == settings.auth.secret_kid && settings.auth.secret.expose_secret().is_empty()
            {
                anyhow::bail!(
                    "auth.secret is empty: in dev mode the server generates a random secret per process, so a token \
                     minted here would not verify. Set AUTHCHAT__AUTH__SECRET (32+ bytes) for both, or use POST /api/login"
                );
            }
            let tokens = TokenService::from_settings(&settings.auth, &settings.auth.secret)?;
            let minted = tokens.mint(&UserId::new(user), &roles, ttl, None)?;
            println!("{}", minted.token.expose_secret());
            Ok(())
        }
        Command::HashPassword => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("password: ");
                std::io::stderr().flush()?;
            }
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "the password is empty");
            let hash =
                hash_password(&SecretString::from(password)).map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
            println!("{hash}");
            Ok(())
        }
        Command::CheckConfig => {
            let settings = load()?;
            let secret = settings.hs_secret().cloned().unwrap_or_else(|| crate::ids::random_id(48).into());
            TokenService::from_settings(&settings.auth, &secret)?;
            if let Some((cert, key)) = settings.tls.files() {
                crate::tls::CertStore::load(cert, key)?;
            }
            println!("configuration is valid (dev_mode = {})", settings.dev_mode);
            Ok(())
        }
    }
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
