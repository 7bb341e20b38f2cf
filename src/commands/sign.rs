//! `signet sign`: the signing core on local files, committed atomically into `--out`.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;

use super::open_vault;
use crate::cli::SignArgs;
use crate::sign::{self, Artifact, BatchContext};

pub(super) fn run(args: SignArgs) -> anyhow::Result<ExitCode> {
    let mut artifacts = Vec::new();
    for path in &args.files {
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        anyhow::ensure!(meta.is_file(), "{} is not a regular file", path.display());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no usable file name", path.display()))?
            .to_owned();
        artifacts.push(Artifact {
            path: path.clone(),
            name,
            source: path.display().to_string(),
            format: args.format,
            digest: None,
        });
    }
    let vault = open_vault(&args.vault)?;
    let mut key = vault.signing_key(&args.key)?;

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    // Staging inside the output directory: same file system, so the final renames are atomic;
    // on any error it is removed and nothing partial is left under a final name.
    let staging = tempfile::Builder::new()
        .prefix(".signet-staging-")
        .tempdir_in(&args.out)
        .with_context(|| format!("cannot write to {}", args.out.display()))?;
    let ctx = BatchContext {
        job_id: args.job_id.unwrap_or_else(|| format!("local-{}", uuid::Uuid::new_v4())),
        key_name: args.key.to_string(),
        time: SystemTime::now(),
        approvals: Vec::new(),
        parallel: if args.threads == 0 { sign::parallelism(&key) } else { args.threads },
        in_place: args.in_place,
        replace_signatures: args.replace,
    };
    let batch = sign::sign_batch(&mut key, &artifacts, &ctx, staging.path())?;
    sign::commit_to_dir(staging.path(), &batch, &args.out)?;
    for o in &batch.outputs {
        println!("{}  {}", o.sha256, o.name);
    }
    let where_ = if args.in_place { "in place, SHA256SUMS and manifest into" } else { "into" };
    eprintln!(
        "signed {} artifact(s) with {} ({}) {where_} {}",
        artifacts.len(),
        args.key,
        key.fingerprint(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
