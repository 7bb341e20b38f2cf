//! `signet audit verify`: check every chain of the audit log and the index that lists them.

use std::process::ExitCode;

use crate::audit::{self, AuditLog, ChainEnd};
use crate::cli::AuditCommand;
use crate::store::s3::S3Store;

pub(super) fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { audit: uri, s3_endpoint } = cmd;
    let log = AuditLog::new(&uri, "signet audit verify").map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let objects = rt.block_on(async {
        let store = S3Store::from_env(s3_endpoint.as_deref()).await;
        log.read_all(&store).await
    })?;
    match audit::verify_log(log.prefix(), &objects) {
        Ok(s) => {
            let chains = s.chains.len() + usize::from(s.legacy.records > 0);
            println!(
                "audit log {}: {} records in {chains} chain{}, all intact; index head sha256 {}",
                log.location(),
                s.records(),
                if chains == 1 { "" } else { "s" },
                s.index.head_sha256
            );
            if s.legacy.records > 0 {
                println!("  format-1 chain: {} records, head sha256 {}", s.legacy.records, s.legacy.head_sha256);
            }
            for c in &s.chains {
                let end = match c.end {
                    ChainEnd::Closed => "closed",
                    ChainEnd::Open => "open",
                };
                println!(
                    "  chain {}: {} records, {end}, head sha256 {} ({})",
                    c.name, c.summary.records, c.summary.head_sha256, c.worker
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("audit log {}: chain broken: {e}", log.location());
            Ok(ExitCode::FAILURE)
        }
    }
}
