//! `signet keys`: generate, rotate, list, export, import.

use std::process::ExitCode;

use anyhow::Context;
use zeroize::Zeroizing;

use super::open_vault;
use crate::cli::KeysCommand;

pub(super) fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { name, algo, uid, vault } => {
            let uid = uid.unwrap_or_else(|| format!("signet {name} signing key"));
            let info = open_vault(&vault)?.generate(&name, algo, &uid)?;
            println!("{} {} {}", info.name, info.fingerprint, info.algo);
        }
        KeysCommand::List { json, vault } => {
            for k in open_vault(&vault)?.list()? {
                if json {
                    println!("{}", serde_json::to_string(&k)?);
                } else {
                    let state = if k.active { "active" } else { "retired" };
                    println!("{:<20} {} {:<8} {:<7} {}", k.name, k.fingerprint, k.algo, state, k.created);
                }
            }
        }
        KeysCommand::Rotate { name, algo, vault } => {
            let info = open_vault(&vault)?.rotate(&name, algo)?;
            println!("{} {} {} active", info.name, info.fingerprint, info.algo);
        }
        KeysCommand::Export { name, vault } => {
            print!("{}", open_vault(&vault)?.export(&name)?);
        }
        KeysCommand::Import { name, file, import_passphrase_file, vault } => {
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
