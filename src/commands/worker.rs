//! `signet worker`: run the worker until SIGTERM/SIGINT.

use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::open_vault;
use crate::approval::Requests;
use crate::audit::AuditLog;
use crate::cli::WorkerArgs;
use crate::observe;
use crate::policy::{Authorizer, Policy};
use crate::queue::{self, Topology};
use crate::store::s3::S3Store;
use crate::worker::{Worker, WorkerConfig};

pub(super) fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let approvals = args.approvals.as_deref().map(Requests::new).transpose().map_err(anyhow::Error::msg)?;
    let authorizer = match (&args.policy, args.insecure_no_policy) {
        (Some(path), _) => {
            let policy = Policy::load(path)?;
            let keys: Vec<_> = policy.keys().map(|k| k.to_string()).collect();
            if policy.needs_approvals() && approvals.is_none() {
                anyhow::bail!(
                    "policy {}: a key needs approvals, so the worker needs a place for pending requests: set \
                     SIGNET_APPROVALS (--approvals) to s3://BUCKET/PREFIX",
                    path.display()
                );
            }
            info!(policy = %path.display(), ?keys, "policy loaded");
            Authorizer::Policy(policy)
        }
        (None, true) => {
            for _ in 0..3 {
                error!(
                    "INSECURE: running with --insecure-no-policy: ANY producer may sign ANYTHING with ANY key. \
                     Development only; give a policy with SIGNET_POLICY"
                );
            }
            Authorizer::AllowAll
        }
        (None, false) => anyhow::bail!("no policy: set SIGNET_POLICY (or, for development only, --insecure-no-policy)"),
    };
    let vault = open_vault(&args.vault)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let topology = Topology::new(&args.broker.namespace);
    // The broker's own delivery limit is a backstop that must stay above the worker's, or the
    // broker would dead-letter a job before the worker could report its failure.
    let max_deliveries = args.max_deliveries.clamp(1, topology.delivery_limit - 1);
    if max_deliveries != args.max_deliveries {
        tracing::warn!(requested = args.max_deliveries, used = max_deliveries, "SIGNET_MAX_DELIVERIES out of range");
    }
    let source = format!("signet/worker/{host}/{}", std::process::id());
    let audit = AuditLog::new(&args.audit, &source).map_err(anyhow::Error::msg)?;
    let mut reserved = Vec::new();
    let (b, p) = crate::audit::parse_location(&args.audit).map_err(anyhow::Error::msg)?;
    reserved.push((b, p, "the audit log"));
    if let Some(a) = &args.approvals {
        let (b, p) = crate::audit::parse_location(a).map_err(anyhow::Error::msg)?;
        reserved.push((b, p, "the approvals location"));
    }
    if let Ok((crate::vault::VaultLocation::S3 { bucket, prefix }, _)) = crate::vault::parse_uri(&args.vault.vault) {
        reserved.push((bucket, prefix, "the vault"));
    }
    let cfg = WorkerConfig {
        amqp_url: queue::amqp_url_from_env().map_err(anyhow::Error::msg)?,
        topology,
        concurrency: args.concurrency.max(1),
        max_deliveries,
        retry_horizon: args.retry_horizon,
        max_artifact_bytes: args.max_artifact_bytes,
        copy_tail_bytes: args.copy_tail_bytes,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        work_dir: args.work_dir.unwrap_or_else(|| std::env::temp_dir().join("signet-work")),
        source,
        retry: WorkerConfig::default_retry(),
        key_cache_ttl: Duration::from_secs(args.key_cache_seconds),
        sign_threads: args.sign_threads,
        exit_when_idle: args.exit_when_idle.map(Duration::from_secs),
        max_jobs: args.max_jobs,
        approvals,
        reserved,
    };
    info!(audit = %audit.location(), chain = audit.chain(), key_cache_seconds = args.key_cache_seconds, "audit log");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let store = S3Store::from_env(args.vault.endpoints.s3_endpoint.as_deref()).await;
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
            }
            signals.cancel();
        });
        let worker = Worker::new(cfg, store, vault, authorizer, audit);
        let stop_http = CancellationToken::new();
        if let Some(addr) = args.metrics_addr {
            let metrics = observe::install()?;
            observe::serve(addr, metrics, worker.health(), stop_http.clone())
                .await
                .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
        }
        let r = worker.run(shutdown).await;
        stop_http.cancel();
        r
    })?;
    Ok(ExitCode::SUCCESS)
}
