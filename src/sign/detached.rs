//! Detached signatures: the file copied unchanged plus `NAME.asc`, an armored binary-document
//! signature over it (also how RPM repositories sign `repomd.xml` → `repomd.xml.asc`).

use std::io::{self, Read, Write};
use std::time::SystemTime;

use sequoia_openpgp::Packet;
use sequoia_openpgp::parse::Parse;

use super::SignError;
use super::content::Guard;
use crate::check::Checker;
use crate::key::{self, SigningKey};

/// Copies `input` to `copy` while hashing it, then writes the armored signature to `asc`,
/// once `checker` has checked it (as armored, parsed back) over the bytes that were copied.
pub fn sign(
    input: &mut dyn Read,
    copy: &mut dyn Write,
    asc: &mut dyn Write,
    key: &mut SigningKey,
    checker: &Checker,
    time: SystemTime,
) -> Result<(), SignError> {
    let mut hash = SigningKey::hasher()?;
    let mut guard = Guard::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hash.update(&buf[..n]);
        guard.update(&buf[..n]);
        copy.write_all(&buf[..n])?;
    }
    if let Some(kind) = guard.finish() {
        return Err(SignError::Invalid(format!(
            "refusing a detached signature: the content is {}; sign it with its own format",
            kind.describe()
        )));
    }
    let sig = key.sign_hash(hash.clone(), time)?;
    let armored = key::armor_signature(&sig)?;
    let stored = Packet::from_bytes(&armored[..]).map_err(|e| SignError::BadSignature(e.to_string()));
    let Packet::Signature(stored) = stored? else {
        return Err(SignError::BadSignature("the armored signature does not read back as one".into()));
    };
    checker.packet(&stored, &hash).map_err(|e| SignError::BadSignature(e.to_string()))?;
    asc.write_all(&armored)?;
    Ok(())
}
