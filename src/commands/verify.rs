//! `signet verify`: check what signet (or rpmsign, debsigs, gpg) produced.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::check::Checker;
use crate::cli::VerifyArgs;
use crate::key;
use crate::sign::{self, Format, SHA256SUMS, checksums};

pub(super) fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut certs = Vec::new();
    for p in &args.cert {
        let bytes = fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        certs.extend(key::parse_certs(&bytes).with_context(|| format!("{}", p.display()))?);
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
            Ok(format!("RPM {} header signature by {}, digests OK", r.nevra, r.signer))
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
