//! The `authchat` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    authchat::cli::run()
}
