//! `authchat-bench`: see the library's documentation and docs/benchmarks.md.

use clap::Parser;

fn main() -> std::process::ExitCode {
    authchat_bench::cli::run(authchat_bench::cli::Cli::parse())
}
