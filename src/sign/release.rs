//! APT repository metadata: `Release` kept as it is, plus `InRelease` (the same text,
//! cleartext-signed) and `Release.gpg` (armored detached signature), as apt expects.

use std::io::{Read, Write};
use std::time::SystemTime;

use sequoia_openpgp::serialize::stream::{Message, Signer};

use super::SignError;
use crate::key::{self, HASH, SigningKey};

/// Release files are small; anything larger is not one.
const MAX_RELEASE: u64 = 64 * 1024 * 1024;

/// Reads a `Release` file and checks it looks like one (deb822 text with hash lists).
pub fn read(input: &mut dyn Read) -> Result<Vec<u8>, SignError> {
    let mut text = Vec::new();
    input.take(MAX_RELEASE + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_RELEASE {
        return Err(SignError::Invalid("Release file larger than 64 MiB".into()));
    }
    let s = std::str::from_utf8(&text).map_err(|_| SignError::Invalid("Release file is not UTF-8 text".into()))?;
    if s.starts_with("-----BEGIN PGP") {
        return Err(SignError::Invalid("Release file is already signed (give the unsigned Release)".into()));
    }
    if !s.lines().any(|l| l.starts_with("SHA256:")) {
        return Err(SignError::Invalid("not an APT Release file: no SHA256 field (apt requires SHA256 lists)".into()));
    }
    if super::content::classify(&text) != Some(super::content::SignedData::AptRelease) {
        return Err(SignError::Invalid(
            "refusing to sign: the Release file holds NUL bytes or starts like a DEB's signed members (\"2.\"), \
             so its signature could also be a DEB origin signature"
                .into(),
        ));
    }
    if !s.ends_with('\n') {
        return Err(SignError::Invalid("Release file does not end with a newline".into()));
    }
    Ok(text)
}

/// Writes `InRelease` (cleartext-signed `text`) and `Release.gpg` (detached, armored).
pub fn sign(
    text: &[u8],
    inrelease: &mut dyn Write,
    release_gpg: &mut dyn Write,
    key: &mut SigningKey,
    time: SystemTime,
) -> Result<(), SignError> {
    let sig = key.sign_reader(&mut &text[..], time)?;
    release_gpg.write_all(&key::armor_signature(&sig)?)?;

    // `pgp_err` keeps a token's or KMS's refusal or outage what it is.
    let pgp = |e: anyhow::Error| SignError::Key(key::pgp_err(e));
    let mut out = Vec::new();
    {
        let message = Message::new(&mut out);
        let mut signer = Signer::new(message, key.keypair())
            .map_err(pgp)?
            .cleartext()
            .hash_algo(HASH)
            .map_err(pgp)?
            .creation_time(time)
            .build()
            .map_err(pgp)?;
        signer.write_all(text)?;
        signer.finalize().map_err(pgp)?;
    }
    inrelease.write_all(&out)?;
    Ok(())
}
