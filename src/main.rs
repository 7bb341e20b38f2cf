//! The `signet` binary: parse arguments, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
