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
    /// The vault: `dir:PATH` (or a directory path) or `s3://BUCKET/PREFIX`, optionally
    /// followed by `?kms-key-id=ID` to seal new keys with AWS KMS data keys.
    #[arg(long, env = "SIGNET_VAULT", default_value = "dir:./vault")]
    pub vault: String,
    /// File holding the vault passphrase (needed for passphrase-sealed keys).
    #[arg(long, env = "SIGNET_VAULT_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub endpoints: EndpointArgs,
}

/// AWS endpoints (unset: AWS itself). Credentials and region come from the standard AWS
/// environment (variables, profile, instance role).
#[derive(Debug, Args, Clone)]
pub struct EndpointArgs {
    /// S3-compatible endpoint for artifacts, outputs, the vault and the audit log.
    #[arg(long, env = "SIGNET_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// KMS endpoint.
    #[arg(long, env = "SIGNET_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
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
    /// Run a worker: consume sign jobs from RabbitMQ, sign artifacts from S3.
    Worker(WorkerArgs),
    /// Publish a sign job (for CI producers), optionally waiting for its completion event.
    Submit(SubmitArgs),
    /// Print completion events as JSON lines.
    Events(EventsArgs),
    /// List the jobs that wait for approvals.
    Pending(PendingArgs),
    /// Approve a pending job: show exactly what will be signed, confirm, and publish an
    /// approval of those digests (as the broker user in SIGNET_AMQP_URL).
    Approve(ApproveArgs),
    /// Reject a pending job: it fails with `approval_rejected` and nothing is signed.
    Reject(RejectArgs),
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the audit log; print the first break (exit 1) or its head.
    Verify {
        /// The audit log: s3://BUCKET/PREFIX.
        #[arg(long, env = "SIGNET_AUDIT")]
        audit: String,
        /// S3-compatible endpoint (unset: AWS).
        #[arg(long, env = "SIGNET_S3_ENDPOINT")]
        s3_endpoint: Option<String>,
    },
}

/// Broker settings. The URL (it holds a password) comes from SIGNET_AMQP_URL or the file
/// named by SIGNET_AMQP_URL_FILE, never from an argument.
#[derive(Debug, Args, Clone)]
pub struct BrokerArgs {
    /// Prefix of every queue and exchange name (`NS.jobs`, `NS.jobs.dead`, `NS.events`).
    #[arg(long, env = "SIGNET_NAMESPACE", default_value = "signet")]
    pub namespace: String,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The policy file (TOML): which producer may sign with which key, from where, to where.
    #[arg(long, env = "SIGNET_POLICY")]
    pub policy: Option<PathBuf>,
    /// DEVELOPMENT ONLY: run without a policy, letting every producer use every key.
    #[arg(long, conflicts_with = "policy")]
    pub insecure_no_policy: bool,
    /// The audit log every signature and denial is appended to: s3://BUCKET/PREFIX.
    #[arg(long, env = "SIGNET_AUDIT")]
    pub audit: String,
    /// Where pending approval requests are kept: s3://BUCKET/PREFIX (required when a key
    /// of the policy sets `approvals`; approvers need read access to it).
    #[arg(long, env = "SIGNET_APPROVALS")]
    pub approvals: Option<String>,
    /// Seconds an unsealed key is reused before it is unsealed again (0: every job). A
    /// rotation takes effect at once regardless; revoking KMS access takes up to this long.
    #[arg(long, env = "SIGNET_KEY_CACHE_SECONDS", default_value_t = 300)]
    pub key_cache_seconds: u64,
    /// Jobs processed at once (the consumer prefetch).
    #[arg(long, env = "SIGNET_CONCURRENCY", default_value_t = 2)]
    pub concurrency: u16,
    /// Artifacts of one job signed at once (0: one per core for a vault key, at least 8
    /// for a token or KMS key, whose signatures wait on a round trip).
    #[arg(long, env = "SIGNET_SIGN_THREADS", default_value_t = 0)]
    pub sign_threads: usize,
    /// Deliveries after which a job that never finished (each delivery cut off by a worker
    /// crash or a lost connection) is failed as `internal` and dead-lettered. Transient
    /// failures do not count: see --retry-horizon.
    #[arg(long, env = "SIGNET_MAX_DELIVERIES", default_value_t = 10)]
    pub max_deliveries: i64,
    /// How long a job that keeps failing transiently (S3, KMS or the vault unavailable, the
    /// work dir full) is retried, backing off up to a minute, before it fails as `internal`.
    /// Keep it below the broker's consumer timeout (RabbitMQ default: 30 min).
    #[arg(long, env = "SIGNET_RETRY_HORIZON", default_value = "15m", value_parser = humantime::parse_duration)]
    pub retry_horizon: std::time::Duration,
    /// Largest artifact the worker fetches (bytes); a larger one fails the job as
    /// `invalid_artifact` before it is downloaded.
    #[arg(long, env = "SIGNET_MAX_ARTIFACT_BYTES", default_value_t = 8 * 1024 * 1024 * 1024)]
    pub max_artifact_bytes: u64,
    /// Signed RPMs at least this big (bytes) are assembled in S3: the new lead, signature
    /// header and first 5 MiB are uploaded, the rest is copied server-side from the input
    /// object pinned to its ETag (UploadPartCopy). 0 uploads every output whole.
    #[arg(long, env = "SIGNET_COPY_TAIL_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub copy_tail_bytes: u64,
    /// Seconds in-flight jobs may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SIGNET_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Where artifacts are staged while being signed (default: the system temp dir).
    #[arg(long, env = "SIGNET_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Serve /metrics (Prometheus), /livez and /readyz on HOST:PORT (off when unset).
    #[arg(long, env = "SIGNET_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Exit 0 (after draining) once no job has been in flight and none has arrived for
    /// SECONDS while consuming: for a worker started per burst of work.
    #[arg(long, env = "SIGNET_EXIT_WHEN_IDLE", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub exit_when_idle: Option<u64>,
    /// Exit 0 after taking N deliveries and settling them; the rest stay in the queue.
    #[arg(long, env = "SIGNET_MAX_JOBS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_jobs: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Key name to sign with.
    #[arg(long)]
    pub key: KeyName,
    #[arg(long)]
    pub output_bucket: String,
    /// Output prefix: empty or ending with '/'.
    #[arg(long, default_value = "")]
    pub output_prefix: String,
    /// Job id (the idempotency key; default: a random UUID).
    #[arg(long)]
    pub job_id: Option<String>,
    /// Format of every artifact.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Expected SHA-256 of each artifact, in the order given (optional).
    #[arg(long)]
    pub sha256: Vec<String>,
    /// Remove every other signature of an RPM (job field `replace_signatures`) instead of
    /// keeping it beside signet's.
    #[arg(long)]
    pub replace_signatures: bool,
    /// Wait for the completion event, print it, and exit 0 on success, 1 on failure, 2 on timeout.
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Artifacts as s3://bucket/key.
    #[arg(required = true)]
    pub artifacts: Vec<String>,
}

/// Where pending approval requests are kept.
#[derive(Debug, Args, Clone)]
pub struct ApprovalsArgs {
    /// The workers' approvals location: s3://BUCKET/PREFIX (read only here).
    #[arg(long, env = "SIGNET_APPROVALS")]
    pub approvals: String,
    /// S3-compatible endpoint (unset: AWS).
    #[arg(long, env = "SIGNET_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct PendingArgs {
    #[command(flatten)]
    pub approvals: ApprovalsArgs,
    /// Print each request as a JSON line (request, approvals so far).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub approvals: ApprovalsArgs,
    /// The job to approve.
    pub job_id: crate::job::JobId,
    /// Approve without asking (the request is still printed).
    #[arg(long)]
    pub yes: bool,
    /// Seconds to wait for a worker's answer (0: do not wait). Exit 0 when the approval is
    /// counted (or the job signed), 1 when it is refused, 2 on timeout.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub approvals: ApprovalsArgs,
    /// The job to reject.
    pub job_id: crate::job::JobId,
    /// Why (the producer sees it in the failed event).
    #[arg(long)]
    pub reason: String,
    /// Seconds to wait for a worker's answer (0: do not wait).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Keep printing new events (otherwise stop once the recent history is printed).
    #[arg(long)]
    pub follow: bool,
    /// Only events of this job.
    #[arg(long)]
    pub job_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key: sealed in the vault, or made in a PKCS#11 token (never leaving it).
    Generate {
        name: KeyName,
        #[arg(long, value_enum, default_value_t = Algo::Ed25519)]
        algo: Algo,
        /// Where the secret key lives: `vault` (sealed here), `pkcs11` (made in the token
        /// SIGNET_PKCS11_MODULE / SIGNET_PKCS11_TOKEN / SIGNET_PKCS11_PIN_FILE name) or `kms`
        /// (an asymmetric AWS KMS key, at SIGNET_KMS_ENDPOINT if set).
        #[arg(long = "in", value_enum, default_value_t = KeyHome::Vault)]
        home: KeyHome,
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
    /// Make a new key under NAME and make it the active one; the old keys stay for
    /// verification and are still exported.
    Rotate {
        name: KeyName,
        /// Algorithm of the new key (default: that of the current active key).
        #[arg(long, value_enum)]
        algo: Option<Algo>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Export the public keys of NAME (every key it has had, so that consumers trust the
    /// old and the new key during a rollover) in the form a verifier takes; the
    /// fingerprints go to stderr, for a person to compare over another channel.
    Export {
        name: KeyName,
        /// asc: armored keys (stdout); keyring: a binary keyring (apt signed-by,
        /// debsig-verify); debsig: a debsig-verify policies/ and keyrings/ tree; dnf: a
        /// .repo snippet (gpgcheck, repo_gpgcheck) and its key file.
        #[arg(long, value_enum, default_value_t = ExportFormat::Asc)]
        format: ExportFormat,
        /// Where to write: a file (asc, keyring; default stdout) or a directory (debsig, dnf).
        #[arg(long)]
        out: Option<PathBuf>,
        /// dnf: the repository's baseurl.
        #[arg(long)]
        baseurl: Option<String>,
        /// dnf: where the installed key will be (default file:///etc/pki/rpm-gpg/RPM-GPG-KEY-NAME).
        #[arg(long)]
        gpgkey_url: Option<String>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Revoke key FPR of NAME: a revocation signature made by that key (or its token), kept
    /// in the vault and included in `keys export`; workers refuse the key from the next job.
    Revoke {
        name: KeyName,
        /// The key's fingerprint (as `keys list --json` prints it).
        fingerprint: String,
        #[arg(long, value_enum)]
        reason: crate::vault::RevocationReason,
        /// A note for whoever imports the revocation.
        #[arg(long, default_value = "")]
        message: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Import an armored or binary secret key (e.g. from `gpg --export-secret-keys`), or
    /// adopt a key pair already in the PKCS#11 token (`--pkcs11 LABEL`) or an asymmetric
    /// AWS KMS key (`--kms KEY_ID`).
    /// A passphrase-protected key is unlocked with SIGNET_IMPORT_PASSPHRASE_FILE.
    Import {
        name: KeyName,
        #[arg(required_unless_present_any = ["pkcs11", "kms"], conflicts_with_all = ["pkcs11", "kms"])]
        file: Option<PathBuf>,
        /// The CKA_LABEL of a key pair in the token (RSA >= 3072 or Ed25519).
        #[arg(long, conflicts_with = "kms")]
        pkcs11: Option<String>,
        /// The id, ARN or alias of a SIGN_VERIFY KMS key (RSA_4096, RSA_3072 or
        /// ECC_NIST_EDWARDS25519; ECDSA keys are refused, rpm cannot import them).
        #[arg(long)]
        kms: Option<String>,
        /// User ID of the certificate made for a token or KMS key.
        #[arg(long)]
        uid: Option<String>,
        #[arg(long, env = "SIGNET_IMPORT_PASSPHRASE_FILE")]
        import_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

/// Where a new key's secret lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyHome {
    Vault,
    Pkcs11,
    Kms,
}

/// What `keys export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Asc,
    Keyring,
    Debsig,
    Dnf,
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
    /// Files signed at once (0: one per core for a vault key, at least 8 for a token or
    /// KMS key).
    #[arg(long, env = "SIGNET_SIGN_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Sign RPMs where they are, as `rpmsign --addsign` does: only the lead and signature
    /// header are rewritten when the new one fits the old one's space (otherwise a signed
    /// copy replaces the file). SHA256SUMS and manifest.json still go to --out. RPMs only.
    #[arg(long)]
    pub in_place: bool,
    /// Remove every other signature of an RPM instead of keeping it beside signet's (the
    /// job field `replace_signatures` in the worker).
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Files to sign.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Public key(s) to trust (armored or binary; repeat for more).
    #[arg(long, required_unless_present = "keyring")]
    pub cert: Vec<PathBuf>,
    /// A keyring of the keys to trust (e.g. from `keys export --format keyring`).
    #[arg(long)]
    pub keyring: Vec<PathBuf>,
    /// The publish gate: each argument is a directory or s3://BUCKET/PREFIX/, and every
    /// RPM, DEB, InRelease, Release, repomd.xml, SHA256SUMS (and X with X.asc) under it
    /// must be signed by one of the trusted keys. Exits 1 naming each file that is
    /// unsigned, signed by a key not allowed, or whose signature does not verify, and when
    /// there is nothing to check.
    #[arg(long)]
    pub require_signed: bool,
    /// S3-compatible endpoint for s3:// arguments (unset: AWS).
    #[arg(long, env = "SIGNET_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Files to check: RPMs, DEBs, X (with X.asc), X.asc, InRelease, Release (with
    /// Release.gpg), SHA256SUMS (with SHA256SUMS.asc; every listed file is checked too).
    /// With --require-signed: directories or s3://BUCKET/PREFIX/.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}
