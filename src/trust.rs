//! The consumer trust kit (`signet keys export --format`): a key name's certificates in the
//! forms verifiers take as they are.
//! - `keyring`: a binary OpenPGP keyring (apt's `signed-by`, debsig-verify, `gpgv`);
//! - `debsig`: the `policies/KEYID/NAME.pol` and `keyrings/KEYID/debsig.gpg` tree that
//!   `debsig-verify --policies-dir … --keyrings-dir …` uses (or, copied, `/etc/debsig/policies`
//!   and `/usr/share/debsig/keyrings`);
//! - `dnf`: a `.repo` snippet with `gpgcheck=1` and `repo_gpgcheck=1`, and the armored key
//!   it points to.
//!
//! Every certificate of the name is included (the active key and the ones it replaced), so
//! packages signed before and after a rotation verify during the rollover.

use std::fs;
use std::path::{Path, PathBuf};

use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::Serialize;

use crate::approval::grouped_fingerprint;

/// The certificates as one binary keyring.
pub fn keyring(certs: &[Cert]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for c in certs {
        c.serialize(&mut out)?;
    }
    Ok(out)
}

/// The long key IDs (16 uppercase hex digits) that signatures of `cert` can name as issuer:
/// its signing-capable keys, and its primary key.
pub fn signing_key_ids(cert: &Cert) -> Vec<String> {
    let policy = StandardPolicy::new();
    let mut ids = vec![cert.primary_key().key().keyid().to_hex()];
    if let Ok(valid) = cert.with_policy(&policy, None) {
        ids.extend(valid.keys().for_signing().map(|k| k.key().keyid().to_hex()));
    }
    ids.sort();
    ids.dedup();
    ids
}

fn uid(cert: &Cert) -> String {
    cert.userids().next().map(|u| String::from_utf8_lossy(u.userid().value()).into_owned()).unwrap_or_default()
}

/// XML text with the five special characters escaped.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// Writes the debsig-verify kit for `name` under `dir`; returns the files written.
pub fn debsig(name: &str, certs: &[Cert], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for cert in certs {
        let ring = keyring(std::slice::from_ref(cert))?;
        for id in signing_key_ids(cert) {
            let policies = dir.join("policies").join(&id);
            let keyrings = dir.join("keyrings").join(&id);
            fs::create_dir_all(&policies)?;
            fs::create_dir_all(&keyrings)?;
            let pol = policies.join(format!("{name}.pol"));
            let text = format!(
                r#"<?xml version="1.0"?>
<!DOCTYPE Policy SYSTEM "https://www.debian.org/debsig/1.0/policy.dtd">
<!-- signet key {name}: {fpr} -->
<Policy xmlns="https://www.debian.org/debsig/1.0/">
  <Origin Name="{name}" id="{id}" Description="{desc}"/>
  <Selection>
    <Required Type="origin" File="debsig.gpg" id="{id}"/>
  </Selection>
  <Verification MinOptional="0">
    <Required Type="origin" File="debsig.gpg" id="{id}"/>
  </Verification>
</Policy>
"#,
                name = xml(name),
                fpr = grouped_fingerprint(&cert.fingerprint().to_hex()),
                desc = xml(&uid(cert)),
            );
            fs::write(&pol, text)?;
            let ring_path = keyrings.join("debsig.gpg");
            fs::write(&ring_path, &ring)?;
            written.push(pol);
            written.push(ring_path);
        }
    }
    Ok(written)
}

/// Writes `NAME.repo` and `RPM-GPG-KEY-NAME` under `dir`; returns the files written.
/// `gpgkey_url` defaults to the key installed as `/etc/pki/rpm-gpg/RPM-GPG-KEY-NAME`.
pub fn dnf(
    name: &str,
    certs: &[Cert],
    armored: &str,
    dir: &Path,
    baseurl: &str,
    gpgkey_url: Option<&str>,
) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
        "{name:?} cannot be a dnf repository id"
    );
    anyhow::ensure!(!baseurl.contains(['\n', '\r']), "--baseurl must be one line");
    fs::create_dir_all(dir)?;
    let key_file = format!("RPM-GPG-KEY-{name}");
    let key_path = dir.join(&key_file);
    fs::write(&key_path, armored)?;
    let gpgkey = gpgkey_url.map(str::to_owned).unwrap_or_else(|| format!("file:///etc/pki/rpm-gpg/{key_file}"));
    anyhow::ensure!(!gpgkey.contains(['\n', '\r']), "--gpgkey-url must be one line");
    let fprs: String = certs
        .iter()
        .map(|c| format!("# signet key {name}: {}\n", grouped_fingerprint(&c.fingerprint().to_hex())))
        .collect();
    let repo = format!(
        "# Written by `signet keys export {name} --format dnf`: packages and repository\n\
         # metadata must be signed by one of these keys.\n{fprs}[{name}]\nname={name}\nbaseurl={baseurl}\n\
         enabled=1\ngpgcheck=1\nrepo_gpgcheck=1\ngpgkey={gpgkey}\n"
    );
    let repo_path = dir.join(format!("{name}.repo"));
    fs::write(&repo_path, repo)?;
    Ok(vec![repo_path, key_path])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debsig_kit_names_every_signing_key_id() {
        let cert =
            crate::key::generate(crate::key::Algo::Ed25519, "t <t@example.org>", std::time::SystemTime::now()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = debsig("release", std::slice::from_ref(&cert), dir.path()).unwrap();
        let ids = signing_key_ids(&cert);
        assert!(!ids.is_empty());
        for id in &ids {
            assert_eq!(id.len(), 16);
            let pol = fs::read_to_string(dir.path().join("policies").join(id).join("release.pol")).unwrap();
            assert!(pol.contains(&format!("id=\"{id}\"")), "{pol}");
            let ring = fs::read(dir.path().join("keyrings").join(id).join("debsig.gpg")).unwrap();
            assert_eq!(crate::key::parse_certs(&ring).unwrap()[0].fingerprint(), cert.fingerprint());
        }
        assert_eq!(files.len(), 2 * ids.len());
    }
}
