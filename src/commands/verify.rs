//! `signet verify`: check what signet (or rpmsign, debsigs, gpg) produced.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::check::Checker;
use crate::cli::VerifyArgs;
use crate::gate::Gate;
use crate::key;
use crate::sign::{self, Format, SHA256SUMS, checksums};

pub(super) fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut certs = Vec::new();
    for p in args.cert.iter().chain(&args.keyring) {
        let bytes = fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        certs.extend(key::parse_certs(&bytes).with_context(|| format!("{}", p.display()))?);
    }
    anyhow::ensure!(!certs.is_empty(), "no certificate to trust in --cert/--keyring");
    if args.require_signed {
        return gate(certs, &args);
    }
    let checker = Checker::new(certs);
    let mut failed = 0;
    for file in &args.files {
        match check_file(&checker, file) {
            Ok(what) => println!("OK {}: {what}", file.display()),
            Err(e) => {
                failed += 1;
                println!("FAILED {}: {e:#}", file.display());
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The publish gate over directories and S3 prefixes.
fn gate(certs: Vec<sequoia_openpgp::Cert>, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let gate = Gate::new(certs);
    let mut refused = 0;
    let mut checked = 0;
    for target in &args.files {
        let shown = target.display().to_string();
        let (report, base) = if let Some(rest) = shown.strip_prefix("s3://") {
            let tmp = tempfile::tempdir()?;
            download(rest, tmp.path(), args.s3_endpoint.as_deref())?;
            let base = if shown.ends_with('/') { shown.clone() } else { format!("{shown}/") };
            (gate.check_tree(tmp.path())?, base)
        } else {
            anyhow::ensure!(target.is_dir(), "{shown}: not a directory (the gate checks a tree)");
            (gate.check_tree(target)?, format!("{}/", shown.trim_end_matches('/')))
        };
        for f in &report.findings {
            println!("{:<11} {base}{}: {}", f.verdict.label(), f.path.display(), f.verdict.detail());
        }
        let bad = report.findings.iter().filter(|f| !f.verdict.passed()).count();
        if report.findings.is_empty() {
            println!(
                "EMPTY       {base}: no RPM, DEB, InRelease, Release, repomd.xml, SHA256SUMS or signed file to check"
            );
            refused += 1;
        }
        refused += bad;
        checked += report.findings.len();
        eprintln!("{base}: {} checked, {bad} refused, {} other file(s) skipped", report.findings.len(), report.skipped);
    }
    if refused == 0 {
        eprintln!("gate passed: all {checked} signed file(s) are signed by an allowed key");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("gate refused: {refused} problem(s); do not publish");
        Ok(ExitCode::FAILURE)
    }
}

/// Downloads every object under `bucket/prefix` into `dir`, keeping relative paths.
fn download(location: &str, dir: &Path, endpoint: Option<&str>) -> anyhow::Result<()> {
    use crate::store::ObjectStore;
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = crate::store::s3::S3Store::from_env(endpoint).await;
        let keys = store.list_keys(bucket, &prefix).await?;
        for key in keys {
            let rel = &key[prefix.len()..];
            // Object names are not paths: refuse any that would leave the directory.
            anyhow::ensure!(
                !rel.is_empty() && rel.split('/').all(|s| !s.is_empty() && s != "." && s != ".."),
                "s3://{bucket}/{key}: an object name the gate cannot place in a directory"
            );
            let dest = dir.join(rel);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            store.get_to_file(bucket, &key, &dest, 64 * 1024 * 1024 * 1024).await?;
        }
        Ok(())
    })
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn check_file(checker: &Checker, file: &Path) -> anyhow::Result<String> {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let open = || File::open(file).with_context(|| format!("cannot read {}", file.display()));

    // X.asc / X.gpg given directly: check it against X.
    for ext in [".asc", ".gpg"] {
        if let Some(stem) = name.strip_suffix(ext) {
            let data = file.with_file_name(stem);
            if data.is_file() {
                return detached(checker, &data, file);
            }
        }
    }
    if name == SHA256SUMS {
        let how = detached(checker, file, &sibling(file, ".asc"))?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let list = checksums::parse(&fs::read_to_string(file)?)?;
        for e in &list {
            let (sha, _) = sign::digest_file(&dir.join(&e.name)).with_context(|| format!("listed file {}", e.name))?;
            anyhow::ensure!(sha == e.sha256, "listed file {} does not match its SHA-256", e.name);
        }
        return Ok(format!("{how}; {} listed file(s) match", list.len()));
    }
    let head = fs::read(file).map(|b| b.into_iter().take(64).collect::<Vec<u8>>())?;
    if head.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----") {
        let (fpr, _) = checker.cleartext(&fs::read(file)?)?;
        return Ok(format!("cleartext signature by {fpr}"));
    }
    match sign::detect(&head) {
        Format::Rpm => {
            let r = sign::rpm::verify(&mut BufReader::new(open()?), checker, true)?;
            let each: Vec<String> = r.signatures.iter().map(|s| format!("\n    {s}")).collect();
            Ok(format!("RPM {} header signature by {}, digests OK{}", r.nevra, r.signer, each.concat()))
        }
        Format::Deb => {
            let fpr = sign::deb::verify(&mut BufReader::new(open()?), checker)?;
            Ok(format!("DEB _gpgorigin signature by {fpr}"))
        }
        _ => {
            for ext in [".asc", ".gpg"] {
                let sig = sibling(file, ext);
                if sig.is_file() {
                    return detached(checker, file, &sig);
                }
            }
            anyhow::bail!(
                "no signature found (not an RPM, DEB or cleartext message, and no {name}.asc or {name}.gpg beside it)"
            )
        }
    }
}

fn detached(checker: &Checker, data: &Path, sig: &Path) -> anyhow::Result<String> {
    let sig_bytes = fs::read(sig).with_context(|| format!("cannot read signature {}", sig.display()))?;
    let f = File::open(data).with_context(|| format!("cannot read {}", data.display()))?;
    let fpr = checker.detached(&sig_bytes, BufReader::new(f)).with_context(|| format!("{}", sig.display()))?;
    Ok(format!("detached signature {} by {fpr}", sig.display()))
}
