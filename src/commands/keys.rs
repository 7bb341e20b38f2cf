//! `signet keys`: generate, rotate, list, export, import.

use std::process::ExitCode;

use anyhow::Context;
use zeroize::Zeroizing;

use std::io::{IsTerminal, Write};

use super::open_vault;
use crate::approval::grouped_fingerprint;
use crate::cli::{ExportFormat, KeyHome, KeysCommand};
use crate::{key, trust};

pub(super) fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { name, algo, home, uid, vault } => {
            let uid = uid.unwrap_or_else(|| format!("signet {name} signing key"));
            let vault = open_vault(&vault)?;
            let info = match home {
                KeyHome::Vault => vault.generate(&name, algo, &uid)?,
                KeyHome::Pkcs11 => vault.generate_in_token(&name, algo, &uid)?,
                KeyHome::Kms => vault.generate_in_kms(&name, algo, &uid)?,
            };
            println!("{} {} {} {}", info.name, info.fingerprint, info.algo, info.home);
        }
        KeysCommand::List { json, vault } => {
            for k in open_vault(&vault)?.list()? {
                if json {
                    println!("{}", serde_json::to_string(&k)?);
                } else {
                    let state = state(&k);
                    println!(
                        "{:<20} {}  {:<8} {:<7} {}",
                        k.name,
                        grouped_fingerprint(&k.fingerprint),
                        k.algo,
                        state,
                        k.created
                    );
                }
            }
        }
        KeysCommand::Revoke { name, fingerprint, reason, message, vault } => {
            let fpr = fingerprint.replace(' ', "").to_ascii_uppercase();
            print!("{}", open_vault(&vault)?.revoke(&name, &fpr, reason, &message)?);
            eprintln!("{name}  {}  revoked: workers refuse it from the next job", grouped_fingerprint(&fpr));
        }
        KeysCommand::Rotate { name, algo, vault } => {
            let info = open_vault(&vault)?.rotate(&name, algo)?;
            println!("{} {} {} active", info.name, info.fingerprint, info.algo);
        }
        KeysCommand::Export { name, format, out, baseurl, gpgkey_url, vault } => {
            let vault = open_vault(&vault)?;
            let armored = vault.export(&name)?;
            let certs = key::parse_certs(armored.as_bytes())?;
            for k in vault.list()?.into_iter().filter(|k| k.name == name.as_str()) {
                let state = state(&k);
                eprintln!("{name}  {}  ({state}, {})", grouped_fingerprint(&k.fingerprint), k.algo);
            }
            let write = |bytes: &[u8]| -> anyhow::Result<()> {
                match &out {
                    Some(p) => std::fs::write(p, bytes).with_context(|| format!("cannot write {}", p.display())),
                    None => Ok(std::io::stdout().write_all(bytes)?),
                }
            };
            match format {
                ExportFormat::Asc => write(armored.as_bytes())?,
                ExportFormat::Keyring => {
                    anyhow::ensure!(
                        out.is_some() || !std::io::stdout().is_terminal(),
                        "a binary keyring does not go to a terminal: give --out FILE"
                    );
                    write(&trust::keyring(&certs)?)?
                }
                ExportFormat::Debsig | ExportFormat::Dnf => {
                    let dir = out.as_deref().context("give --out DIR for this format")?;
                    let files = if format == ExportFormat::Debsig {
                        trust::debsig(name.as_str(), &certs, dir)?
                    } else {
                        let baseurl =
                            baseurl.as_deref().context("give --baseurl URL (the repository) for a .repo snippet")?;
                        trust::dnf(name.as_str(), &certs, &armored, dir, baseurl, gpgkey_url.as_deref())?
                    };
                    for f in files {
                        println!("{}", f.display());
                    }
                }
            }
        }
        KeysCommand::Import { name, file: None, pkcs11: Some(label), uid, vault, .. } => {
            let uid = uid.unwrap_or_else(|| format!("signet {name} signing key"));
            let info = open_vault(&vault)?.import_from_token(&name, &label, &uid)?;
            println!("{} {} {} {}", info.name, info.fingerprint, info.algo, info.home);
        }
        KeysCommand::Import { name, file: None, kms: Some(key_id), uid, vault, .. } => {
            let uid = uid.unwrap_or_else(|| format!("signet {name} signing key"));
            let info = open_vault(&vault)?.import_from_kms(&name, &key_id, &uid)?;
            println!("{} {} {} {}", info.name, info.fingerprint, info.algo, info.home);
        }
        KeysCommand::Import { file: None, .. } => anyhow::bail!("give a key FILE, --pkcs11 LABEL or --kms KEY_ID"),
        KeysCommand::Import { name, file: Some(file), import_passphrase_file, vault, .. } => {
            let bytes =
                Zeroizing::new(std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?);
            let pass = match import_passphrase_file {
                Some(p) => {
                    let s = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
                    let mut s = Zeroizing::new(s);
                    while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        s.pop();
                    }
                    Some(s)
                }
                None => None,
            };
            let info = open_vault(&vault)?.import(&name, &bytes, pass.as_deref().map(|v| v.as_slice()))?;
            println!("{} {} {}", info.name, info.fingerprint, info.algo);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `keys list` and exports say of a key: revoked, active or retired.
fn state(k: &crate::vault::KeyInfo) -> &'static str {
    if k.revoked {
        "revoked"
    } else if k.active {
        "active"
    } else {
        "retired"
    }
}
