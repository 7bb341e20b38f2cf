//! `signet audit verify`: check the audit log's hash chain.

use std::process::ExitCode;

use crate::audit::{self, AuditLog};
use crate::cli::AuditCommand;
use crate::store::s3::S3Store;

pub(super) fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { audit: uri, s3_endpoint } = cmd;
    let log = AuditLog::new(&uri).map_err(anyhow::Error::msg)?;
    let (_, prefix) = audit::parse_location(&uri).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let objects = rt.block_on(async {
        let store = S3Store::from_env(s3_endpoint.as_deref()).await;
        log.read_all(&store).await
    })?;
    match audit::verify_chain(&prefix, &objects) {
        Ok(s) => {
            println!(
                "audit log {}: {} records, chain intact; head sha256 {}",
                log.location(),
                s.records,
                s.head_sha256
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("audit log {}: chain broken: {e}", log.location());
            Ok(ExitCode::FAILURE)
        }
    }
}
