//! The `signet` binary: parse arguments, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything can hold a key or a passphrase.
    if let Err(e) = signet::harden::no_core_dumps() {
        eprintln!("signet: error: cannot disable core dumps: {e}");
        return ExitCode::FAILURE;
    }
    let cli = signet::cli::Cli::parse();
    signet::logging::init();
    match signet::commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("signet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
