//! DEB origin signatures, as `debsigs --sign=origin` makes them: a `_gpgorigin` ar member
//! holding a binary OpenPGP signature (SHA-256) over the contents of `debian-binary`,
//! `control.tar.*` and `data.tar.*`, concatenated. Members are streamed, never buffered.
//!
//! Archives are read by the strict reader in [`super::ar`]. The signed data must be what a
//! DEB's is and nothing else ([`super::content`]): `debian-binary` holds a `2.x` version
//! line, and the concatenation must not read as an APT `Release`, or the key's `deb`
//! permission would be a way to sign repository metadata.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::SystemTime;

use super::SignError;
use super::ar::{MemberHeader, Reader};
use super::content::Guard;
use crate::check::{self, Checker};
use crate::key::{self, SigningKey};

const ORIGIN: &[u8] = b"_gpgorigin";
/// A signature member larger than this is not a signature.
const MAX_SIG: u64 = 64 * 1024;
/// A DEB has three members and a signature or two; more is not a package.
const MAX_MEMBERS: usize = 64;
/// `debian-binary` is a version line (`2.0\n`); dpkg reads only its start.
const MAX_DEBIAN_BINARY: u64 = 64;

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
    names: Vec<String>,
}

impl Order {
    fn new() -> Self {
        Order { seen: Vec::new(), names: Vec::new() }
    }

    fn next(&mut self, name: &str) -> Result<Role, SignError> {
        if self.names.len() >= MAX_MEMBERS {
            return Err(invalid(format!("corrupt DEB: more than {MAX_MEMBERS} members")));
        }
        if self.names.iter().any(|n| n == name) {
            return Err(invalid(format!("corrupt DEB: member {name:?} appears twice")));
        }
        self.names.push(name.to_owned());
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

/// Feeds what it reads into a signature hash and the signed-data guard.
struct HashingReader<'a, R> {
    inner: R,
    hash: &'a mut sequoia_openpgp::crypto::hash::Context,
    guard: &'a mut Guard,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.guard.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads `debian-binary` (small) and checks it is a format version dpkg accepts.
fn debian_binary(member: &mut dyn Read, header: &MemberHeader) -> Result<Vec<u8>, SignError> {
    if header.size > MAX_DEBIAN_BINARY {
        return Err(invalid(format!("corrupt DEB: debian-binary is {} bytes, not a version line", header.size)));
    }
    let mut v = Vec::new();
    member.read_to_end(&mut v).map_err(ar_err)?;
    let ok = v.starts_with(b"2.") && v.ends_with(b"\n") && v[2..v.len() - 1].iter().all(u8::is_ascii_digit);
    if !ok || v.len() < 4 {
        return Err(invalid(format!(
            "not a DEB: debian-binary holds {:?}, not a 2.x version",
            String::from_utf8_lossy(&v)
        )));
    }
    Ok(v)
}

/// Refuses signed data that apt would read as a Release file.
fn check_signed_data(guard: &Guard) -> Result<(), SignError> {
    if guard.release_like() {
        return Err(invalid(
            "refusing to sign: the DEB's signed members read as an APT Release file (text with hash lists), \
             so its origin signature would also be a valid Release.gpg",
        ));
    }
    Ok(())
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
    checker: &Checker,
    time: SystemTime,
) -> Result<DebSigned, SignError> {
    let mut archive = Reader::new(input).map_err(ar_err)?;
    let mut builder = ar::Builder::new(out);
    let mut hash = SigningKey::hasher()?;
    let mut guard = Guard::new();
    let mut order = Order::new();
    let mut replaced = Vec::new();
    while let Some(header) = archive.next_member().map_err(ar_err)? {
        let role = order.next(&header.name)?;
        if header.name.as_bytes() == ORIGIN {
            if header.size > MAX_SIG {
                return Err(invalid("corrupt DEB: _gpgorigin member too large"));
            }
            let mut old = Vec::new();
            archive.read_to_end(&mut old).map_err(ar_err)?;
            if let Ok(sig) = check::parse_signature(&old) {
                replaced.extend(key::issuers(&sig));
            }
            continue;
        }
        match role {
            Role::Extra => builder.append(&header.to_ar(), &mut archive).map_err(ar_err)?,
            Role::DebianBinary => {
                let v = debian_binary(&mut archive, &header)?;
                hash.update(&v);
                guard.update(&v);
                builder.append(&header.to_ar(), &v[..]).map_err(ar_err)?;
            }
            _ => {
                let reader = HashingReader { inner: &mut archive, hash: &mut hash, guard: &mut guard };
                builder.append(&header.to_ar(), reader).map_err(ar_err)?;
            }
        }
    }
    order.finish()?;
    check_signed_data(&guard)?;
    let sig = key.sign_hash(hash.clone(), time)?;
    let bytes = key::binary_signature(&sig)?;
    // The self-check: the packet as it will be stored, over the members as they were written.
    let stored = check::parse_signature(&bytes).map_err(|e| SignError::BadSignature(e.to_string()))?;
    checker.packet(&stored, &hash).map_err(|e| SignError::BadSignature(e.to_string()))?;
    let mut header = ar::Header::new(ORIGIN.to_vec(), bytes.len() as u64);
    header.set_mode(0o100644);
    header.set_mtime(time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    builder.append(&header, bytes.as_slice()).map_err(ar_err)?;
    builder.into_inner()?.flush()?;
    Ok(DebSigned { replaced })
}

/// The `_gpgorigin` member of a DEB, if it has one (member order checked).
fn origin(input: &mut dyn Read) -> Result<Option<Vec<u8>>, SignError> {
    let mut sig_bytes = None;
    let mut archive = Reader::new(input).map_err(ar_err)?;
    let mut order = Order::new();
    while let Some(header) = archive.next_member().map_err(ar_err)? {
        order.next(&header.name)?;
        if header.name.as_bytes() == ORIGIN {
            if header.size > MAX_SIG {
                return Err(invalid("corrupt DEB: _gpgorigin member too large"));
            }
            let mut b = Vec::new();
            archive.read_to_end(&mut b).map_err(ar_err)?;
            sig_bytes = Some(b);
        }
    }
    order.finish()?;
    Ok(sig_bytes)
}

/// The issuers (fingerprints, or key ids) of a DEB's `_gpgorigin` signature, without
/// checking it: empty if it has none.
pub fn signature_issuers(input: &mut dyn Read) -> Result<Vec<String>, SignError> {
    match origin(input)? {
        None => Ok(Vec::new()),
        Some(b) => {
            let sig = check::parse_signature(&b).map_err(|e| SignError::BadSignature(e.to_string()))?;
            Ok(key::issuers(&sig))
        }
    }
}

/// Checks the `_gpgorigin` signature of a DEB; returns the signer's fingerprint.
pub fn verify<R: Read + Seek>(input: &mut R, checker: &Checker) -> Result<String, SignError> {
    let start = input.stream_position()?;
    // Pass 1: member order, and the signature (it comes last).
    let sig_bytes = origin(&mut *input)?;
    let sig_bytes = sig_bytes.ok_or_else(|| SignError::BadSignature("DEB has no _gpgorigin signature".into()))?;
    let sig = check::parse_signature(&sig_bytes).map_err(|e| SignError::BadSignature(e.to_string()))?;
    // Pass 2: hash the signed members.
    input.seek(SeekFrom::Start(start))?;
    let mut hash = check::hasher_for(&sig).map_err(|e| SignError::BadSignature(e.to_string()))?;
    let mut guard = Guard::new();
    let mut archive = Reader::new(&mut *input).map_err(ar_err)?;
    let mut order = Order::new();
    while let Some(header) = archive.next_member().map_err(ar_err)? {
        if order.next(&header.name)? != Role::Extra {
            let mut r = HashingReader { inner: &mut archive, hash: &mut hash, guard: &mut guard };
            io::copy(&mut r, &mut io::sink()).map_err(ar_err)?;
        }
    }
    checker.packet(&sig, &hash).map_err(|e| SignError::BadSignature(e.to_string()))
}
