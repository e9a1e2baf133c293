//! The command line: one subcommand per scenario, each with where the server runs
//! ([`ServerArgs`]), the load generator's settings ([`ClientArgs`]) and its own options; and
//! `compare`, which runs several scenarios on every target in turn.
//!
//! Exit codes: 0 when every run did what it should (every socket closed with 4001, every
//! message delivered once, …), 1 when one did not, 2 when a run could not be set up.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::ClientArgs;
use crate::scenario::fanout::NodeArgs;
use crate::scenario::{churn, connect, expiry, fanout, hold, ops, slow};
use crate::target::{Kind, Server, ServerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "authchat-bench",
    version,
    about = "authchat's load tool: what a connection and a message cost, on authchat and side by side on peer servers",
    after_help = "Method, machine and figures: docs/benchmarks.md. scripts/bench.sh builds everything and runs `compare`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Handshakes per second, for each carrier of the credential.
    Connect {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        options: connect::Options,
    },
    /// Server memory per idle authenticated socket (RSS from /proc).
    Hold {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        options: hold::Options,
    },
    /// One room's messages to every member, on one server or over several authchat nodes
    /// sharing Redis (--spawn 1,3).
    Fanout {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        nodes: NodeArgs,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        options: fanout::Options,
    },
    /// Operator closes through one authchat node of sockets held by others.
    Ops {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        nodes: NodeArgs,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        options: ops::Options,
    },
    /// Sockets closed with 4001 at their token's exp: all in one second, or spread.
    Expiry {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        options: expiry::Options,
    },
    /// Connects and disconnects per second.
    Churn {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        options: churn::Options,
    },
    /// A fan-out in which some members do not read.
    Slow {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        options: slow::Options,
    },
    /// authchat and the peers side by side: handshakes, fan-out, idle memory and same-second
    /// expiry, each target in turn, round after round; prints the medians as one table.
    Compare {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        options: crate::compare::Options,
    },
}

/// Runs the command; prints what went wrong, if anything.
pub fn run(cli: Cli) -> ExitCode {
    // The servers started here inherit the limit, so raise it first.
    if let Err(e) = crate::sys::raise_open_files() {
        eprintln!("authchat-bench: {e:#}");
    }
    match dispatch(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("authchat-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Starts the server `args` name, runs `f` on it and stops it, whatever `f` did.
fn on_server<T>(
    args: &ServerArgs,
    what: &str,
    f: impl FnOnce(&Server, &str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (server, secret, _dir) = crate::target::from_args(args, what)?;
    println!(
        "{what}: {} server at ws://{}{}",
        server.kind.name(),
        server.addr,
        if server.in_process() { " (in this process)" } else { "" }
    );
    let outcome = f(&server, &secret);
    server.stop();
    outcome
}

fn dispatch(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Connect { server, client, options } => on_server(&server, "connect", |s, secret| {
            let reports = connect::run(s, secret, &server.kid, &client, &options)?;
            Ok(reports.iter().all(|r| r.failed.is_empty()))
        }),
        Command::Hold { server, client, options } => on_server(&server, "hold", |s, secret| {
            let report = hold::run(s, secret, &server.kid, &client, &options)?;
            println!("{report}");
            Ok(report.failed.is_empty())
        }),
        Command::Fanout { server, nodes, client, options } => fanout::main(&server, &nodes, &client, &options),
        Command::Ops { server, nodes, client, options } => {
            let run = |addrs: &[std::net::SocketAddr], secret: &str| {
                let report = ops::run(addrs, secret, &server.kid, &client, &options)?;
                println!("{report}");
                Ok(true)
            };
            if !nodes.nodes.is_empty() {
                let secret = nodes.given_secret(&server)?;
                let addrs = nodes
                    .nodes
                    .iter()
                    .map(|u| crate::target::loopback_address(u))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                run(&addrs, &secret)
            } else if !nodes.spawn.is_empty() {
                let mut all = true;
                for backend in &nodes.backend {
                    for &n in &nodes.spawn {
                        println!("=== {n} node{}, {} ===", if n == 1 { "" } else { "s" }, backend.name());
                        let secret = server.secret.clone().unwrap_or_else(crate::target::random_secret);
                        all &= fanout::on_fleet(n, *backend, &secret, server.workers, &server.programs, |addrs| {
                            run(addrs, &secret)
                        })?;
                    }
                }
                Ok(all)
            } else {
                if server.target != Kind::Authchat {
                    anyhow::bail!("ops needs authchat's admin API");
                }
                on_server(&server, "ops", |s, secret| run(&[s.addr], secret))
            }
        }
        Command::Expiry { server, client, options } => on_server(&server, "expiry", |s, secret| {
            let report = expiry::run(s, secret, &server.kid, &client, &options)?;
            println!("{report}");
            Ok(report.ok())
        }),
        Command::Churn { server, client, options } => on_server(&server, "churn", |s, secret| {
            let report = churn::run(s, secret, &server.kid, &client, &options)?;
            println!("{report}");
            Ok(report.failed.is_empty())
        }),
        Command::Slow { server, client, options } => on_server(&server, "slow", |s, secret| {
            let report = slow::run(s, secret, &server.kid, &client, &options)?;
            println!("{report}");
            Ok(report.failed.is_empty() && report.delivered == report.expected)
        }),
        Command::Compare { client, options } => crate::compare::run(&client, &options),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
