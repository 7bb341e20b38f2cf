//! Command-line declarations (clap). Logic lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::key::Algo;
use crate::sign::Format;
use crate::vault::KeyName;

/// signet: sign RPMs, DEBs, APT and RPM repository metadata and release files.
#[derive(Debug, Parser)]
#[command(name = "signet", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the sealed keys are. Secrets come from files or the environment, never arguments.
#[derive(Debug, Args, Clone)]
pub struct VaultArgs {
    /// The vault: `dir:PATH` (or a directory path).
    #[arg(long, env = "SIGNET_VAULT", default_value = "dir:./vault")]
    pub vault: String,
    /// File holding the vault passphrase (needed to create or use keys).
    #[arg(long, env = "SIGNET_VAULT_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage signing keys in the vault.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign local files into a directory (no broker, no object store).
    Sign(SignArgs),
    /// Check signatures signet produced.
    Verify(VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key and seal it in the vault.
    Generate {
        name: KeyName,
        #[arg(long, value_enum, default_value_t = Algo::Ed25519)]
        algo: Algo,
        /// User ID, e.g. "Example Release Signing <release@example.org>".
        #[arg(long)]
        uid: Option<String>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// List the keys in the vault.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Print the armored public key(s) of NAME.
    Export {
        name: KeyName,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Import an armored or binary secret key (e.g. from `gpg --export-secret-keys`).
    /// A passphrase-protected key is unlocked with SIGNET_IMPORT_PASSPHRASE_FILE.
    Import {
        name: KeyName,
        file: PathBuf,
        #[arg(long, env = "SIGNET_IMPORT_PASSPHRASE_FILE")]
        import_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Name of the key in the vault.
    #[arg(long)]
    pub key: KeyName,
    /// Directory for the signed outputs, SHA256SUMS and manifest.json.
    #[arg(long)]
    pub out: PathBuf,
    /// How to sign every FILE.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Job id recorded in the manifest (default: a random one).
    #[arg(long)]
    pub job_id: Option<String>,
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Files to sign.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Public key(s) to trust (armored or binary).
    #[arg(long, required = true)]
    pub cert: Vec<PathBuf>,
    /// Files to check: RPMs, DEBs, X (with X.asc), X.asc, InRelease, Release (with
    /// Release.gpg), SHA256SUMS (with SHA256SUMS.asc; every listed file is checked too).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}
