//! What each `signet` subcommand does.

mod approve;
mod audit;
mod events;
mod keys;
mod sign;
mod submit;
mod verify;
mod worker;

use std::process::ExitCode;

use crate::cli::{Cli, Command, VaultArgs};
use crate::vault::Vault;
use crate::vault::aws::AwsEndpoints;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keys(cmd) => keys::run(cmd),
        Command::Sign(args) => sign::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Worker(args) => worker::run(args),
        Command::Submit(args) => submit::run(args),
        Command::Events(args) => events::run(args),
        Command::Pending(args) => approve::pending(args),
        Command::Approve(args) => approve::approve(args),
        Command::Reject(args) => approve::reject(args),
        Command::Audit(cmd) => audit::run(cmd),
    }
}

/// Opens the vault the arguments name.
pub(crate) fn open_vault(args: &VaultArgs) -> anyhow::Result<Vault> {
    let endpoints = AwsEndpoints { s3: args.endpoints.s3_endpoint.clone(), kms: args.endpoints.kms_endpoint.clone() };
    Ok(Vault::open(&args.vault, args.passphrase_file.as_deref(), &endpoints)?)
}
