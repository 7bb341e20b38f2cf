//! RPM header signatures, added the way `rpmsign --addsign` does: an OpenPGP v4 signature
//! over the main header goes into the signature header (RSA tag 268, EdDSA tag 267); the
//! header and payload bytes and their digests are kept as they are.
//!
//! Only the lead and the two headers are held in memory; the payload is streamed through,
//! its digest checked on the way, so a 1 GiB package costs the memory of its header. When
//! the new signature header fits the old one's bytes, [`sign_in_place`] rewrites only those.

use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::SystemTime;

use rpm::{Header, HeaderEntry, IndexData, IndexSignatureTag, PackageMetadata};
use sha2::{Digest, Sha256};

use super::SignError;
use super::rpmhdr::{self, HeaderError};
use crate::check::{self, Checker};
use crate::key::{self, SigningKey};

const LEAD_SIZE: usize = 96;
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];

const SIGTAG_DSA: u32 = 267;
const SIGTAG_RSA: u32 = 268;
const SIGTAG_SHA256: u32 = 273;
const SIGTAG_PGP: u32 = 1002;
const SIGTAG_GPG: u32 = 1005;
const SIGTAG_RESERVEDSPACE: u32 = 1008;
const SIGTAG_OPENPGP: u32 = 278;
const SIGTAG_SIZE: u32 = 1000;
const SIGTAG_LONGSIZE: u32 = 270;
const TAG_PAYLOADDIGEST: u32 = 5092;
const TAG_PAYLOADDIGESTALGO: u32 = 5093;
const PGPHASHALGO_SHA256: u32 = 8;

/// Tags that hold OpenPGP signatures; all are replaced when signet signs, so the package
/// verifies with the new key alone (as rpmsign replaces its own).
const SIG_TAGS: [u32; 5] = [SIGTAG_DSA, SIGTAG_RSA, SIGTAG_PGP, SIGTAG_GPG, SIGTAG_OPENPGP];

/// The raw metadata of an RPM as it was read: byte-exact, so the header we sign is the one
/// we write.
pub struct RawRpm {
    lead: Vec<u8>,
    /// The signature header with its padding, as read.
    sig: Vec<u8>,
    /// Its length.
    sig_len: usize,
    header: Vec<u8>,
    meta: PackageMetadata,
}

fn invalid(msg: impl Into<String>) -> SignError {
    SignError::Invalid(msg.into())
}

fn read_exact_or(input: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), SignError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid(format!("truncated RPM: file ends inside the {what}")),
        _ => SignError::Io(e),
    })
}

/// Reads one header structure with every index entry bounds-checked ([`rpmhdr`]).
fn read_header(
    input: &mut dyn Read,
    what: &'static str,
    limit: usize,
    types: &[(u32, u32)],
) -> Result<Vec<u8>, SignError> {
    let checked = rpmhdr::read(input, what, limit).and_then(|buf| rpmhdr::check_types(&buf, what, types).map(|()| buf));
    checked.map_err(|e| match e {
        HeaderError::Truncated(w) => invalid(format!("truncated RPM: file ends inside the {w}")),
        HeaderError::Magic(w) => invalid(format!("not an RPM: bad {w} magic")),
        HeaderError::Io { message, .. } => SignError::Io(io::Error::other(message)),
        other => invalid(format!("corrupt RPM: {other}")),
    })
}

impl RawRpm {
    /// Reads lead, signature header and main header, leaving `input` at the payload.
    pub fn read(input: &mut dyn Read) -> Result<Self, SignError> {
        let mut lead = vec![0u8; LEAD_SIZE];
        read_exact_or(input, &mut lead, "lead")?;
        if lead[..4] != LEAD_MAGIC {
            return Err(invalid("not an RPM: bad lead magic"));
        }
        let sig = read_header(input, "signature header", rpmhdr::MAX_SIGNATURE_HEADER, rpmhdr::SIGNATURE_TYPES)?;
        let pad = (8 - sig.len() % 8) % 8;
        let mut padding = vec![0u8; pad];
        read_exact_or(input, &mut padding, "signature header")?;
        let header = read_header(input, "header", rpmhdr::MAX_HEADER, rpmhdr::HEADER_TYPES)?;

        let mut all = Vec::with_capacity(lead.len() + sig.len() + pad + header.len());
        all.extend_from_slice(&lead);
        all.extend_from_slice(&sig);
        all.extend_from_slice(&padding);
        all.extend_from_slice(&header);
        // The rpm crate indexes its store with offsets from the file; a hostile file must
        // not be able to take the worker down, so a panic in the parser is an invalid input.
        let parsed = catch_unwind(AssertUnwindSafe(|| PackageMetadata::parse(&mut io::Cursor::new(&all))));
        let meta = match parsed {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(invalid(format!("corrupt RPM header: {e}"))),
            Err(_) => return Err(invalid("corrupt RPM header: parser rejected it")),
        };
        let sig_len = sig.len() + pad;
        let mut sig = sig;
        sig.extend_from_slice(&padding);
        Ok(RawRpm { lead, sig, sig_len, header, meta })
    }

    /// `name-version-release.arch`, for messages and the manifest.
    pub fn nevra(&self) -> String {
        self.meta.get_nevra().map(|n| n.nvra().to_string()).unwrap_or_else(|_| "unknown".into())
    }

    fn sig_entries(&self) -> Result<Vec<(u32, IndexData)>, SignError> {
        self.meta.signature.get_all_entries().map_err(|e| invalid(format!("corrupt RPM signature header: {e}")))
    }

    /// The header digest must match, or the package was damaged before it reached us.
    fn check_header_digest(&self) -> Result<(), SignError> {
        if let Ok(IndexData::StringTag(want)) = self.meta.signature.entry(SIGTAG_SHA256) {
            let got = hex::encode(Sha256::digest(&self.header));
            if !want.eq_ignore_ascii_case(&got) {
                return Err(invalid("corrupt RPM: header SHA-256 digest mismatch"));
            }
        }
        Ok(())
    }

    /// The existing OpenPGP signatures as raw packets.
    fn signatures(&self) -> Result<Vec<Vec<u8>>, SignError> {
        let mut out = Vec::new();
        for (tag, data) in self.sig_entries()? {
            match (tag, data) {
                (SIGTAG_OPENPGP, IndexData::StringArray(v)) => {
                    for s in v {
                        out.push(base64_decode(&s).ok_or_else(|| invalid("corrupt RPM: bad OpenPGP signature tag"))?);
                    }
                }
                (t, IndexData::Bin(b)) if SIG_TAGS.contains(&t) => out.push(b),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Expected payload digest (SHA-256 hex) and header+payload size, when the package has them.
    fn payload_expectations(&self) -> (Option<String>, Option<u64>) {
        let algo = match self.meta.header.entry(TAG_PAYLOADDIGESTALGO) {
            Ok(IndexData::Int32(v)) => v.first().copied(),
            _ => None,
        };
        let digest = match (algo, self.meta.header.entry(TAG_PAYLOADDIGEST)) {
            (Some(PGPHASHALGO_SHA256), Ok(IndexData::StringArray(v))) => v.into_iter().next(),
            _ => None,
        };
        let size = match self.meta.signature.entry(SIGTAG_LONGSIZE) {
            Ok(IndexData::Int64(v)) => v.first().copied(),
            _ => match self.meta.signature.entry(SIGTAG_SIZE) {
                Ok(IndexData::Int32(v)) => v.first().map(|s| *s as u64),
                _ => None,
            },
        };
        (digest, size)
    }

    /// Checks the payload's SHA-256 (hex) and length against what the headers promise.
    fn check_payload(&self, sha256: &str, n: u64) -> Result<(), SignError> {
        let (digest, size) = self.payload_expectations();
        if let Some(want) = digest
            && !want.eq_ignore_ascii_case(sha256)
        {
            return Err(invalid("corrupt or truncated RPM: payload digest mismatch"));
        }
        if let Some(want) = size
            && want != self.header.len() as u64 + n
        {
            return Err(invalid(format!(
                "corrupt or truncated RPM: header+payload is {} bytes, the signature header says {want}",
                self.header.len() as u64 + n
            )));
        }
        Ok(())
    }

    /// The bytes before the payload, as read.
    fn head(&self) -> [&[u8]; 3] {
        [&self.lead, &self.sig, &self.header]
    }
}

/// Streams the payload from `input` (to `out`, if given) and checks its digest and length,
/// hashing on the way the whole file as it was (`before`: lead, signature header and
/// header as read) and as it will be (`after`). The three hashes run on threads of their own
/// when the payload is bigger than a chunk, so a big package costs about one SHA-256 pass.
/// Returns the SHA-256 (hex) and size of the file before and after.
fn stream_payload(
    raw: &RawRpm,
    input: &mut dyn Read,
    out: Option<&mut dyn Write>,
    after: &[u8],
) -> Result<(Digest2, Digest2), SignError> {
    let mut before_hash = Sha256::new();
    raw.head().iter().for_each(|b| before_hash.update(b));
    let mut after_hash = Sha256::new();
    after_hash.update(after);
    after_hash.update(&raw.header);
    let head_before = raw.head().iter().map(|b| b.len() as u64).sum::<u64>();
    let head_after = (after.len() + raw.header.len()) as u64;
    let ([payload, before_hash, after_hash], n) =
        super::fan_out(input, out, [Sha256::new(), before_hash, after_hash]).map_err(SignError::Io)?;
    raw.check_payload(&hex::encode(payload.finalize()), n)?;
    Ok(((hex::encode(before_hash.finalize()), head_before + n), (hex::encode(after_hash.finalize()), head_after + n)))
}

/// A file's SHA-256 (hex) and size.
pub type Digest2 = (String, u64);

/// What signing an RPM did.
#[derive(Debug, Clone)]
pub struct RpmSigned {
    /// `name-version-release.arch`.
    pub nevra: String,
    /// Issuers (fingerprints or key ids) of the signatures that were replaced.
    pub replaced: Vec<String>,
    /// SHA-256 (hex) and size of the package as read and as written.
    pub input: Digest2,
    pub output: Digest2,
    /// Whether the package was rewritten where it was ([`sign_in_place`]).
    pub in_place: bool,
    /// Length of the lead and signature header before and after: from there on, the signed
    /// package is the original byte for byte (header and payload).
    pub head_before: u64,
    pub head_after: u64,
}

/// Reads the RPM up to its payload and makes the new lead and signature header: signed,
/// then parsed again from memory and checked with `checker` over the header.
fn prepare(
    input: &mut dyn Read,
    key: &mut SigningKey,
    checker: &Checker,
    time: SystemTime,
) -> Result<(RawRpm, Vec<u8>, Vec<String>), SignError> {
    let raw = RawRpm::read(input)?;
    raw.check_header_digest()?;
    let mut replaced = Vec::new();
    for bytes in raw.signatures()? {
        match check::parse_signature(&bytes) {
            Ok(sig) => replaced.extend(key::issuers(&sig)),
            Err(_) => replaced.push("unparseable".into()),
        }
    }
    replaced.sort();
    replaced.dedup();

    let mut hash = SigningKey::hasher()?;
    hash.update(&raw.header);
    let sig = key.sign_hash(hash, time)?;
    let tag = match sig.pk_algo() {
        sequoia_openpgp::types::PublicKeyAlgorithm::EdDSA => SIGTAG_DSA,
        _ => SIGTAG_RSA,
    };
    let sig_bytes = key::binary_signature(&sig)?;
    let lead_and_sig = rebuild(&raw, tag, sig_bytes)?;
    verify(&mut (&lead_and_sig[..]).chain(&raw.header[..]), checker, false)?;
    Ok((raw, lead_and_sig, replaced))
}

/// Adds a header signature to the RPM read from `input`, writing the signed package to `out`.
/// The new lead and signature header are parsed again from memory and their signature checked
/// with `checker` over the header before anything is written; the payload's digest is checked
/// as it streams through.
pub fn sign(
    input: &mut dyn Read,
    out: &mut dyn Write,
    key: &mut SigningKey,
    checker: &Checker,
    time: SystemTime,
) -> Result<RpmSigned, SignError> {
    let (raw, lead_and_sig, replaced) = prepare(input, key, checker, time)?;
    out.write_all(&lead_and_sig)?;
    out.write_all(&raw.header)?;
    let (input, output) = stream_payload(&raw, input, Some(out), &lead_and_sig)?;
    let (head_before, head_after) = ((LEAD_SIZE + raw.sig_len) as u64, lead_and_sig.len() as u64);
    Ok(RpmSigned { nevra: raw.nevra(), replaced, input, output, in_place: false, head_before, head_after })
}

/// Signs the RPM in `file` where it is, as `rpmsign --addsign` does, when the new signature
/// header takes exactly the bytes the old one did (rpm's reserved space makes room for
/// that): the payload is read once and its digest checked, then only the lead and the
/// signature header are written over; the caller syncs the file. Returns `Ok(None)`,
/// with the file untouched, when the new header does not fit; nothing is written unless
/// every check passed.
pub fn sign_in_place(
    file: &std::fs::File,
    key: &mut SigningKey,
    checker: &Checker,
    time: SystemTime,
) -> Result<Option<RpmSigned>, SignError> {
    use std::os::unix::fs::FileExt;
    // 64 KiB: below malloc's mmap threshold, so a batch of small packages does not map and
    // unmap a buffer for each.
    let mut input = io::BufReader::with_capacity(64 * 1024, file);
    let (raw, lead_and_sig, replaced) = prepare(&mut input, key, checker, time)?;
    if lead_and_sig.len() != LEAD_SIZE + raw.sig_len {
        return Ok(None);
    }
    let (input_digest, output) = stream_payload(&raw, &mut input, None, &lead_and_sig)?;
    file.write_all_at(&lead_and_sig, 0)?;
    let head = lead_and_sig.len() as u64;
    Ok(Some(RpmSigned {
        nevra: raw.nevra(),
        replaced,
        input: input_digest,
        output,
        in_place: true,
        head_before: head,
        head_after: head,
    }))
}

/// Serializes lead + a signature header with our signature in place of any old ones. Keeps
/// the signature header's size when the package has reserved space, as rpmsign does.
fn rebuild(raw: &RawRpm, tag: u32, sig: Vec<u8>) -> Result<Vec<u8>, SignError> {
    let base: Vec<(u32, IndexData)> =
        raw.sig_entries()?.into_iter().filter(|(t, _)| !SIG_TAGS.contains(t) && *t != rpm::HEADER_SIGNATURES).collect();
    let reserved = base.iter().find_map(|(t, d)| match (t, d) {
        (&SIGTAG_RESERVEDSPACE, IndexData::Bin(b)) => Some(b.len()),
        _ => None,
    });
    let has_sha256 = base.iter().any(|(t, _)| *t == SIGTAG_SHA256);
    let mut extra = vec![(tag, IndexData::Bin(sig))];
    if !has_sha256 {
        extra.push((SIGTAG_SHA256, IndexData::StringTag(hex::encode(Sha256::digest(&raw.header)))));
    }
    let mut out = serialize(raw, &base, &extra, reserved)?;
    let target = LEAD_SIZE + raw.sig_len;
    if let Some(res) = reserved
        && out.len() > target
        && out.len() - target <= res
    {
        let same_size = serialize(raw, &base, &extra, Some(res - (out.len() - target)))?;
        if same_size.len() == target {
            out = same_size;
        }
    }
    Ok(out)
}

impl RawRpm {
    fn header_len_reserialized(&self) -> Result<usize, SignError> {
        self.meta.header_bytes().map(|b| b.len()).map_err(|e| invalid(format!("cannot re-serialize RPM header: {e}")))
    }
}

fn serialize(
    raw: &RawRpm,
    base: &[(u32, IndexData)],
    extra: &[(u32, IndexData)],
    reserved: Option<usize>,
) -> Result<Vec<u8>, SignError> {
    let entries = base
        .iter()
        .map(|(t, d)| match (*t, reserved) {
            (SIGTAG_RESERVEDSPACE, Some(n)) => HeaderEntry::new(*t, IndexData::Bin(vec![0; n])),
            _ => HeaderEntry::new(*t, d.clone()),
        })
        .chain(extra.iter().map(|(t, d)| HeaderEntry::new(*t, d.clone())));
    let signature = Header::<IndexSignatureTag>::from_entries(entries, IndexSignatureTag::HEADER_SIGNATURES);
    let meta = PackageMetadata { lead: raw.meta.lead.clone(), signature, header: raw.meta.header.clone() };
    let mut buf = Vec::new();
    meta.write(&mut buf).map_err(|e| invalid(format!("cannot write RPM signature header: {e}")))?;
    let header_len = raw.header_len_reserialized()?;
    buf.truncate(buf.len() - header_len);
    // Keep the lead byte-exact.
    buf[..LEAD_SIZE].copy_from_slice(&raw.lead);
    Ok(buf)
}

/// What checking a signed RPM found.
#[derive(Debug, Clone)]
pub struct RpmChecked {
    pub nevra: String,
    pub signer: String,
}

/// Checks an RPM's header signature(s) against `checker`, its header digest and, when
/// `payload` is set, its payload digest and size.
/// The issuers (fingerprints, or key ids) of the OpenPGP header signatures of an RPM,
/// without checking them: empty if it is not signed.
pub fn signature_issuers(input: &mut dyn Read) -> Result<Vec<String>, SignError> {
    let raw = RawRpm::read(input)?;
    let mut out = Vec::new();
    for bytes in raw.signatures()? {
        let sig = check::parse_signature(&bytes).map_err(|e| SignError::BadSignature(e.to_string()))?;
        out.extend(crate::key::issuers(&sig));
    }
    Ok(out)
}

pub fn verify(input: &mut dyn Read, checker: &Checker, payload: bool) -> Result<RpmChecked, SignError> {
    let raw = RawRpm::read(input)?;
    raw.check_header_digest()?;
    let sigs = raw.signatures()?;
    if sigs.is_empty() {
        return Err(SignError::BadSignature("RPM is not signed".into()));
    }
    let mut signer = None;
    let mut errors = Vec::new();
    for bytes in sigs {
        let sig = check::parse_signature(&bytes).map_err(|e| SignError::BadSignature(e.to_string()))?;
        let mut hash = check::hasher_for(&sig).map_err(|e| SignError::BadSignature(e.to_string()))?;
        hash.update(&raw.header);
        match checker.packet(&sig, &hash) {
            Ok(fpr) => signer = Some(fpr),
            Err(e) => errors.push(e.to_string()),
        }
    }
    // Like rpm, every signature present must verify.
    if !errors.is_empty() {
        return Err(SignError::BadSignature(errors.join("; ")));
    }
    if payload {
        let ([digest], n) = super::fan_out(input, None, [Sha256::new()])?;
        raw.check_payload(&hex::encode(digest.finalize()), n)?;
    }
    Ok(RpmChecked { nevra: raw.nevra(), signer: signer.unwrap_or_default() })
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}
