//! DEB origin signatures, as `debsigs --sign=origin` makes them: a `_gpgorigin` ar member
//! holding a binary OpenPGP signature (SHA-256) over the contents of `debian-binary`,
//! `control.tar.*` and `data.tar.*`, concatenated. Members are streamed, never buffered.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::SystemTime;

use super::SignError;
use crate::check::{self, Checker};
use crate::key::{self, SigningKey};

const ORIGIN: &[u8] = b"_gpgorigin";
/// A signature member larger than this is not a signature.
const MAX_SIG: u64 = 64 * 1024;

fn invalid(msg: impl Into<String>) -> SignError {
    SignError::Invalid(msg.into())
}

/// The role of a member in a binary package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    DebianBinary,
    Control,
    Data,
    /// `_`-prefixed members (signatures and future extensions), not signed.
    Extra,
}

fn tar_member(name: &str, stem: &str) -> bool {
    name.strip_prefix(stem).is_some_and(|rest| matches!(rest, "" | ".gz" | ".xz" | ".zst" | ".bz2" | ".lzma"))
}

/// Checks member order as deb(5) specifies and says what each member is.
struct Order {
    seen: Vec<Role>,
}

impl Order {
    fn new() -> Self {
        Order { seen: Vec::new() }
    }

    fn next(&mut self, raw_name: &[u8]) -> Result<Role, SignError> {
        let name = std::str::from_utf8(raw_name)
            .map_err(|_| invalid("corrupt DEB: member name is not text"))?
            .trim_end_matches('/');
        let have = |r| self.seen.contains(&r);
        let role = if self.seen.is_empty() {
            if name != "debian-binary" {
                return Err(invalid(format!("not a DEB: first member is {name:?}, expected \"debian-binary\"")));
            }
            Role::DebianBinary
        } else if name.starts_with('_') {
            Role::Extra
        } else if tar_member(name, "control.tar") {
            if have(Role::Control) || have(Role::Data) {
                return Err(invalid(format!("corrupt DEB: member {name:?} out of order")));
            }
            Role::Control
        } else if tar_member(name, "data.tar") {
            if !have(Role::Control) {
                return Err(invalid("corrupt DEB: data.tar comes before control.tar (members out of order)"));
            }
            if have(Role::Data) {
                return Err(invalid("corrupt DEB: two data.tar members"));
            }
            Role::Data
        } else if have(Role::Data) {
            Role::Extra
        } else {
            return Err(invalid(format!("corrupt DEB: unexpected member {name:?} before data.tar")));
        };
        self.seen.push(role);
        Ok(role)
    }

    fn finish(&self) -> Result<(), SignError> {
        if !self.seen.contains(&Role::Control) {
            return Err(invalid("corrupt DEB: control.tar member missing"));
        }
        if !self.seen.contains(&Role::Data) {
            return Err(invalid("corrupt DEB: data.tar member missing"));
        }
        Ok(())
    }
}

fn ar_err(e: io::Error) -> SignError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            invalid(format!("corrupt DEB archive: {e}"))
        }
        _ => SignError::Io(e),
    }
}

/// Feeds what it reads into a signature hash.
struct HashingReader<'a, R> {
    inner: R,
    hash: &'a mut sequoia_openpgp::crypto::hash::Context,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// What signing a DEB did.
#[derive(Debug, Clone)]
pub struct DebSigned {
    /// Issuers of a `_gpgorigin` signature that was replaced.
    pub replaced: Vec<String>,
}

/// Signs the DEB read from `input`, writing it with a new `_gpgorigin` member to `out`.
pub fn sign(
    input: &mut dyn Read,
    out: &mut dyn Write,
    key: &mut SigningKey,
    time: SystemTime,
) -> Result<DebSigned, SignError> {
    let mut archive = ar::Archive::new(input);
    let mut builder = ar::Builder::new(out);
    let mut hash = SigningKey::hasher()?;
    let mut order = Order::new();
    let mut replaced = Vec::new();
    while let Some(entry) = archive.next_entry() {
        let mut entry = entry.map_err(ar_err)?;
        let header = entry.header().clone();
        let role = order.next(header.identifier())?;
        if header.identifier() == ORIGIN {
            let mut old = Vec::new();
            (&mut entry).take(MAX_SIG).read_to_end(&mut old).map_err(ar_err)?;
            if let Ok(sig) = check::parse_signature(&old) {
                replaced.extend(key::issuers(&sig));
            }
            continue;
        }
        if role == Role::Extra {
            builder.append(&header, &mut entry).map_err(ar_err)?;
        } else {
            let reader = HashingReader { inner: &mut entry, hash: &mut hash };
            builder.append(&header, reader).map_err(ar_err)?;
        }
    }
    order.finish()?;
    let sig = key.sign_hash(hash, time)?;
    let bytes = key::binary_signature(&sig)?;
    let mut header = ar::Header::new(ORIGIN.to_vec(), bytes.len() as u64);
    header.set_mode(0o100644);
    header.set_mtime(time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    builder.append(&header, bytes.as_slice()).map_err(ar_err)?;
    builder.into_inner()?.flush()?;
    Ok(DebSigned { replaced })
}

/// Checks the `_gpgorigin` signature of a DEB; returns the signer's fingerprint.
pub fn verify<R: Read + Seek>(input: &mut R, checker: &Checker) -> Result<String, SignError> {
    let start = input.stream_position()?;
    // Pass 1: member order, and the signature (it comes last).
    let mut sig_bytes = None;
    {
        let mut archive = ar::Archive::new(&mut *input);
        let mut order = Order::new();
        while let Some(entry) = archive.next_entry() {
            let mut entry = entry.map_err(ar_err)?;
            order.next(entry.header().identifier())?;
            if entry.header().identifier() == ORIGIN {
                if entry.header().size() > MAX_SIG {
                    return Err(invalid("corrupt DEB: _gpgorigin member too large"));
                }
                let mut b = Vec::new();
                entry.read_to_end(&mut b).map_err(ar_err)?;
                sig_bytes = Some(b);
            }
        }
        order.finish()?;
    }
    let sig_bytes = sig_bytes.ok_or_else(|| SignError::BadSignature("DEB has no _gpgorigin signature".into()))?;
    let sig = check::parse_signature(&sig_bytes).map_err(|e| SignError::BadSignature(e.to_string()))?;
    // Pass 2: hash the signed members.
    input.seek(SeekFrom::Start(start))?;
    let mut hash = check::hasher_for(&sig).map_err(|e| SignError::BadSignature(e.to_string()))?;
    let mut archive = ar::Archive::new(&mut *input);
    let mut order = Order::new();
    while let Some(entry) = archive.next_entry() {
        let mut entry = entry.map_err(ar_err)?;
        if order.next(entry.header().identifier())? != Role::Extra {
            io::copy(&mut HashingReader { inner: &mut entry, hash: &mut hash }, &mut io::sink()).map_err(ar_err)?;
        }
    }
    checker.packet(&sig, &hash).map_err(|e| SignError::BadSignature(e.to_string()))
}
