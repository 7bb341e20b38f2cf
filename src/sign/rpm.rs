//! RPM header signatures, added the way each rpm's own `rpmsign --addsign` adds them, and
//! every other signature kept (`--replace` drops them). The header and payload bytes and
//! their digests are kept as they are.
//!
//! - A v4-format package (no `RPMFORMAT` 6 in its header): the OpenPGP v4 signature over the
//!   main header goes into the legacy slot of its algorithm (RSA: `RSAHEADER`, 268; EdDSA:
//!   `DSAHEADER`, 267), replacing only that slot's previous occupant (never a second entry
//!   with the same tag, rpm #3878), where rpm 4 reads it; and it is appended to the
//!   `OPENPGP` array (278, base64 strings) where rpm 6 reads it.
//! - A v6-format package: it is appended to `OPENPGP` only, as rpm 6's `rpmsign` does.
//! - rpm 6 ignores the legacy tags once `OPENPGP` has entries (`lib/rpmvs.cc`: "Don't bother
//!   with v3/v4 sigs when v6 sigs exist"), so a package whose header signatures sit only in
//!   legacy tags gets them copied into the new `OPENPGP` array first.
//! - A package that already carries a good signature by the signing key is left as it is.
//!
//! Only the lead and the two headers are held in memory; the payload is streamed through,
//! its digest checked on the way, so a 1 GiB package costs the memory of its header. When
//! the new signature header fits the old one's bytes, [`sign_in_place`] rewrites only those.

use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::SystemTime;

use rpm::{Header, HeaderEntry, IndexData, IndexSignatureTag, IndexTag, PackageMetadata};
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
const SIGTAG_PGP5: u32 = 1006;
/// Reserved space of a v6-format package (`RPMSIGTAG_RESERVED`, rpm 6).
const SIGTAG_RESERVED: u32 = 999;
const TAG_RPMFORMAT: u32 = 5114;
/// Most signatures signet reads in one package (RHEL's carry three).
const MAX_SIGNATURES: usize = 64;
const SIGTAG_SIZE: u32 = 1000;
const SIGTAG_LONGSIZE: u32 = 270;
const TAG_PAYLOADDIGEST: u32 = 5092;
const TAG_PAYLOADDIGESTALGO: u32 = 5093;
const PGPHASHALGO_SHA256: u32 = 8;

/// Tags that hold OpenPGP signatures: the ones `--replace` removes (rpm's `deleteSigs`).
const SIG_TAGS: [u32; 6] = [SIGTAG_DSA, SIGTAG_RSA, SIGTAG_PGP, SIGTAG_GPG, SIGTAG_PGP5, SIGTAG_OPENPGP];
/// Tags that hold a signature over the header alone (the others sign header and payload).
const HEADER_SIG_TAGS: [u32; 3] = [SIGTAG_DSA, SIGTAG_RSA, SIGTAG_OPENPGP];

/// One signature an RPM carries, as stored.
#[derive(Debug, Clone)]
struct Carried {
    /// Its tag: a legacy one, or `OPENPGP` for an entry of that array.
    tag: u32,
    bytes: Vec<u8>,
}

/// The name rpm gives a signature tag, for reports.
fn tag_name(tag: u32) -> &'static str {
    match tag {
        SIGTAG_DSA => "DSAHEADER",
        SIGTAG_RSA => "RSAHEADER",
        SIGTAG_OPENPGP => "OPENPGP",
        SIGTAG_PGP => "PGP",
        SIGTAG_GPG => "GPG",
        _ => "signature",
    }
}

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

/// The lead and the signature header with its padding, read from `input`; the length of
/// the latter.
fn read_lead_and_signature(input: &mut dyn Read) -> Result<(Vec<u8>, Vec<u8>, usize), SignError> {
    let mut lead = vec![0u8; LEAD_SIZE];
    read_exact_or(input, &mut lead, "lead")?;
    if lead[..4] != LEAD_MAGIC {
        return Err(invalid("not an RPM: bad lead magic"));
    }
    let mut sig = read_header(input, "signature header", rpmhdr::MAX_SIGNATURE_HEADER, rpmhdr::SIGNATURE_TYPES)?;
    let pad = (8 - sig.len() % 8) % 8;
    let unpadded = sig.len();
    sig.resize(unpadded + pad, 0);
    read_exact_or(input, &mut sig[unpadded..], "signature header")?;
    let sig_len = sig.len();
    Ok((lead, sig, sig_len))
}

/// `parts`, concatenated, parsed by the rpm crate. It indexes its store with offsets from
/// the file; a hostile file must not be able to take the worker down, so a panic in the
/// parser is an invalid input.
fn parse_metadata(parts: &[&[u8]]) -> Result<PackageMetadata, SignError> {
    let all = parts.concat();
    match catch_unwind(AssertUnwindSafe(|| PackageMetadata::parse(&mut io::Cursor::new(&all)))) {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(invalid(format!("corrupt RPM header: {e}"))),
        Err(_) => Err(invalid("corrupt RPM header: parser rejected it")),
    }
}

/// A main header without entries, and its bytes: what stands in for the real one where
/// only the signature header is parsed or written. The bytes do not depend on the package;
/// they are serialized once (the rpm crate serializes a header only as part of a package's
/// metadata, so `lead` is any package's).
fn empty_main_header(lead: &rpm::Lead) -> Result<(Header<IndexTag>, &'static [u8]), SignError> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let header = || Header::<IndexTag>::from_entries(Vec::new(), IndexTag::RPMTAG_HEADERIMMUTABLE);
    if BYTES.get().is_none() {
        let meta = PackageMetadata { lead: lead.clone(), signature: Header::new_empty(), header: header() };
        let bytes = meta.header_bytes().map_err(|e| invalid(format!("cannot write an empty RPM header: {e}")))?;
        // Another thread may have set the same bytes first; either is fine.
        let _ = BYTES.set(bytes);
    }
    let bytes = BYTES.get().map(Vec::as_slice).unwrap_or_default();
    Ok((header(), bytes))
}

impl RawRpm {
    /// Reads lead, signature header and main header, leaving `input` at the payload.
    pub fn read(input: &mut dyn Read) -> Result<Self, SignError> {
        let (lead, sig, sig_len) = read_lead_and_signature(input)?;
        let header = read_header(input, "header", rpmhdr::MAX_HEADER, rpmhdr::HEADER_TYPES)?;
        let meta = parse_metadata(&[&lead, &sig, &header])?;
        Ok(RawRpm { lead, sig, sig_len, header, meta })
    }

    /// A new lead and signature header (`head`, as [`rebuild`] made it), parsed from memory.
    /// Only the signature header is parsed: the main header is this package's, as read and
    /// already parsed, so the view holds none (its `header` is empty, its `meta` has an empty
    /// one) and answers only for the signature header: check it with
    /// [`RawRpm::check_header_digest_of`] and [`RawRpm::reports_over`] and this header.
    fn with_head(&self, head: &[u8]) -> Result<RawRpm, SignError> {
        let mut input = head;
        let (lead, sig, sig_len) = read_lead_and_signature(&mut input)?;
        if !input.is_empty() {
            return Err(invalid("the new signature header is followed by stray bytes"));
        }
        let meta = parse_metadata(&[&lead, &sig, empty_main_header(&self.meta.lead)?.1])?;
        Ok(RawRpm { lead, sig, sig_len, header: Vec::new(), meta })
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
        self.check_header_digest_of(&self.header)
    }

    /// [`RawRpm::check_header_digest`] against the main header `header`.
    fn check_header_digest_of(&self, header: &[u8]) -> Result<(), SignError> {
        if let Ok(IndexData::StringTag(want)) = self.meta.signature.entry(SIGTAG_SHA256) {
            let got = hex::encode(Sha256::digest(header));
            if !want.eq_ignore_ascii_case(&got) {
                return Err(invalid("corrupt RPM: header SHA-256 digest mismatch"));
            }
        }
        Ok(())
    }

    /// Every OpenPGP signature the signature header carries, in tag order, each `OPENPGP`
    /// entry on its own.
    /// An `OPENPGP` entry that is not base64 is kept as its text, which reads as an
    /// unparseable packet (reported bad; `--replace` drops it). At most [`MAX_SIGNATURES`]:
    /// each signature that names the key costs a hash of the whole header.
    fn carried(&self) -> Result<Vec<Carried>, SignError> {
        let mut out = Vec::new();
        for (tag, data) in self.sig_entries()? {
            match (tag, data) {
                (SIGTAG_OPENPGP, IndexData::StringArray(v)) => {
                    for s in v {
                        let bytes = base64_decode(&s).unwrap_or_else(|| s.into_bytes());
                        out.push(Carried { tag, bytes });
                    }
                }
                (t, IndexData::Bin(bytes)) if SIG_TAGS.contains(&t) => out.push(Carried { tag: t, bytes }),
                _ => {}
            }
            if out.len() > MAX_SIGNATURES {
                return Err(invalid(format!("the RPM carries more than {MAX_SIGNATURES} signatures")));
            }
        }
        Ok(out)
    }

    /// The package format: 6 for a v6-format package (`RPMFORMAT` in its header), else 4.
    fn rpm_format(&self) -> u32 {
        match self.meta.header.entry(TAG_RPMFORMAT) {
            Ok(IndexData::Int32(v)) => v.first().copied().unwrap_or(4),
            _ => 4,
        }
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
/// Without `hash_input` (the caller has the input's digest already), `before` is not
/// computed: two hashes instead of three.
fn stream_payload(
    raw: &RawRpm,
    input: &mut dyn Read,
    out: Option<&mut dyn Write>,
    after: &[u8],
    hash_input: bool,
) -> Result<(Option<Digest2>, Digest2), SignError> {
    let mut after_hash = Sha256::new();
    after_hash.update(after);
    after_hash.update(&raw.header);
    let head_before = raw.head().iter().map(|b| b.len() as u64).sum::<u64>();
    let head_after = (after.len() + raw.header.len()) as u64;
    let (payload, before, after_hash, n) = if hash_input {
        let mut before_hash = Sha256::new();
        raw.head().iter().for_each(|b| before_hash.update(b));
        let ([payload, before_hash, after_hash], n) =
            super::fan_out(input, out, [Sha256::new(), before_hash, after_hash]).map_err(SignError::Io)?;
        (payload, Some(before_hash), after_hash, n)
    } else {
        let ([payload, after_hash], n) =
            super::fan_out(input, out, [Sha256::new(), after_hash]).map_err(SignError::Io)?;
        (payload, None, after_hash, n)
    };
    raw.check_payload(&hex::encode(payload.finalize()), n)?;
    let before = before.map(|h| (hex::encode(h.finalize()), head_before + n));
    Ok((before, (hex::encode(after_hash.finalize()), head_after + n)))
}

/// A file's SHA-256 (hex) and size.
pub type Digest2 = (String, u64);

/// What signing an RPM did.
#[derive(Debug, Clone)]
pub struct RpmSigned {
    /// `name-version-release.arch`.
    pub nevra: String,
    /// Issuers (fingerprints or key ids) of the signatures that were removed: the previous
    /// occupant of the legacy slot signet took, or every other signature with `replace`.
    pub replaced: Vec<String>,
    /// Issuers of the signatures the package still carries beside signet's.
    pub kept: Vec<String>,
    /// The package already carried a good signature by the signing key and was left as it was.
    pub unchanged: bool,
    /// SHA-256 (hex) and size of the package as read (unless the caller had it:
    /// [`Options::hash_input`]) and as written.
    pub input: Option<Digest2>,
    pub output: Digest2,
    /// Whether the package was rewritten where it was ([`sign_in_place`]).
    pub in_place: bool,
    /// Length of the lead and signature header before and after: from there on, the signed
    /// package is the original byte for byte (header and payload).
    pub head_before: u64,
    pub head_after: u64,
}

/// The new lead and signature header of a package, and what became of its signatures.
struct Prepared {
    raw: RawRpm,
    head: Vec<u8>,
    replaced: Vec<String>,
    kept: Vec<String>,
    unchanged: bool,
}

/// The issuers of stored signature packets, sorted, without repeats.
fn issuers_of<'a>(sigs: impl Iterator<Item = &'a Carried>) -> Vec<String> {
    let mut out: Vec<String> = sigs
        .flat_map(|c| match check::parse_signature(&c.bytes) {
            Ok(sig) => key::issuers(&sig),
            Err(_) => vec!["unparseable".into()],
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads the RPM up to its payload and makes the new lead and signature header (see the
/// module comment for where signet's signature goes and what stays), then parses it again
/// from memory and checks with `checker` that signet's signature is good in every place it
/// was put and that no signature by the signing key is bad.
fn prepare(
    input: &mut dyn Read,
    key: &mut SigningKey,
    checker: &Checker,
    replace: bool,
    time: SystemTime,
) -> Result<Prepared, SignError> {
    let raw = RawRpm::read(input)?;
    raw.check_header_digest()?;
    let carried = raw.carried()?;
    let v6 = raw.rpm_format() >= 6;

    if !replace {
        let before = raw.reports(checker)?;
        // A bad signature would be kept, and rpm fails a package on one.
        if let Some(bad) = before.iter().find(|r| matches!(r.status, SigStatus::Bad(_))) {
            return Err(invalid(format!(
                "the RPM carries a bad signature ({bad}); signing with --replace (replace_signatures) drops it"
            )));
        }
        // Already signed by this key, good where every reader of the package looks:
        // nothing to add.
        if readers(&before, v6).iter().all(|(_, tags)| good_in(&before, tags).is_some()) {
            let mut head = raw.lead.clone();
            head.extend_from_slice(&raw.sig);
            let ours: Vec<&SigReport> = before.iter().filter(|r| r.status == SigStatus::Ok).collect();
            let others = carried.iter().filter(|c| !ours.iter().any(|r| r.packet == c.bytes));
            let kept = issuers_of(others);
            return Ok(Prepared { raw, head, replaced: Vec::new(), kept, unchanged: true });
        }
    }

    let mut hash = SigningKey::hasher()?;
    hash.update(&raw.header);
    let sig = key.sign_hash(hash, time)?;
    let slot = match sig.pk_algo() {
        sequoia_openpgp::types::PublicKeyAlgorithm::EdDSA => SIGTAG_DSA,
        _ => SIGTAG_RSA,
    };
    let sig_bytes = key::binary_signature(&sig)?;

    // What goes where: the tags to drop, the legacy slot to fill, the OPENPGP array.
    let (remove, legacy, replaced): (Vec<u32>, Option<u32>, Vec<&Carried>) = if replace {
        (SIG_TAGS.to_vec(), (!v6).then_some(slot), carried.iter().collect())
    } else if v6 {
        (vec![SIGTAG_OPENPGP], None, Vec::new())
    } else {
        (vec![slot, SIGTAG_OPENPGP], Some(slot), carried.iter().filter(|c| c.tag == slot).collect())
    };
    let stays = |c: &&Carried| !remove.contains(&c.tag) || (c.tag == SIGTAG_OPENPGP && !replace);
    let kept: Vec<&Carried> = carried.iter().filter(stays).collect();
    let mut openpgp: Vec<Vec<u8>> = Vec::new();
    if !replace {
        let existing: Vec<&Carried> = carried.iter().filter(|c| c.tag == SIGTAG_OPENPGP).collect();
        // Starting the array: the header signatures that stay in legacy tags go in first,
        // or rpm 6 would no longer see them.
        let first: Vec<&Carried> = if existing.is_empty() {
            kept.iter().copied().filter(|c| c.tag == SIGTAG_DSA || c.tag == SIGTAG_RSA).collect()
        } else {
            existing
        };
        for c in first {
            if !openpgp.contains(&c.bytes) {
                openpgp.push(c.bytes.clone());
            }
        }
    }
    openpgp.push(sig_bytes.clone());

    let mut extra = Vec::new();
    if let Some(tag) = legacy {
        extra.push((tag, IndexData::Bin(sig_bytes.clone())));
    }
    extra.push((SIGTAG_OPENPGP, IndexData::StringArray(openpgp.iter().map(|b| base64_encode(b)).collect())));
    let head = rebuild(&raw, &remove, extra)?;

    // The self-check, from memory: signet's signature is good wherever it was put.
    let checked = verify_head(&head, &raw, checker)?;
    let good_in = |tag: u32| {
        checked.iter().any(|r| r.status == SigStatus::Ok && r.packet == sig_bytes && r.places.contains(&tag))
    };
    if !good_in(SIGTAG_OPENPGP) || legacy.is_some_and(|t| !good_in(t)) {
        return Err(SignError::BadSignature("the new signature is not good in every tag it was written to".into()));
    }
    if let Some(bad) = checked.iter().find(|r| matches!(r.status, SigStatus::Bad(_))) {
        return Err(SignError::BadSignature(format!(
            "{} signature by {}: {:?}",
            bad.place_names(),
            bad.issuer,
            bad.status
        )));
    }
    // Replaced: what the package no longer carries anywhere (a previous occupant of the slot
    // that is in OPENPGP too stays there, for rpm 6 readers).
    let replaced = replaced.into_iter().filter(|c| !openpgp.contains(&c.bytes));
    Ok(Prepared { raw, head, replaced: issuers_of(replaced), kept: issuers_of(kept.into_iter()), unchanged: false })
}

/// How an RPM is signed.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Drop every other signature (`--replace`, the job's `replace_signatures`).
    pub replace: bool,
    /// Hash the package as read ([`RpmSigned::input`]); off when the caller hashed it
    /// already (the worker, while fetching it), which saves one SHA-256 pass.
    pub hash_input: bool,
}

/// Adds a header signature to the RPM read from `input`, writing the signed package to `out`
/// (see [`prepare`]); `replace` drops every other signature. The payload's digest is checked
/// as it streams through.
pub fn sign(
    input: &mut dyn Read,
    out: &mut dyn Write,
    key: &mut SigningKey,
    checker: &Checker,
    replace: bool,
    time: SystemTime,
) -> Result<RpmSigned, SignError> {
    sign_with(input, out, key, checker, Options { replace, hash_input: true }, time)
}

/// [`sign`], with every option.
pub fn sign_with(
    input: &mut dyn Read,
    out: &mut dyn Write,
    key: &mut SigningKey,
    checker: &Checker,
    options: Options,
    time: SystemTime,
) -> Result<RpmSigned, SignError> {
    let p = prepare(input, key, checker, options.replace, time)?;
    out.write_all(&p.head)?;
    out.write_all(&p.raw.header)?;
    let (input, output) = stream_payload(&p.raw, input, Some(out), &p.head, options.hash_input)?;
    let (head_before, head_after) = ((LEAD_SIZE + p.raw.sig_len) as u64, p.head.len() as u64);
    Ok(RpmSigned {
        nevra: p.raw.nevra(),
        replaced: p.replaced,
        kept: p.kept,
        unchanged: p.unchanged,
        input,
        output,
        in_place: false,
        head_before,
        head_after,
    })
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
    replace: bool,
    time: SystemTime,
) -> Result<Option<RpmSigned>, SignError> {
    use std::os::unix::fs::FileExt;
    // 64 KiB: below malloc's mmap threshold, so a batch of small packages does not map and
    // unmap a buffer for each.
    let mut input = io::BufReader::with_capacity(64 * 1024, file);
    let p = prepare(&mut input, key, checker, replace, time)?;
    if p.head.len() != LEAD_SIZE + p.raw.sig_len {
        return Ok(None);
    }
    let (input_digest, output) = stream_payload(&p.raw, &mut input, None, &p.head, true)?;
    if !p.unchanged {
        file.write_all_at(&p.head, 0)?;
    }
    let head = p.head.len() as u64;
    Ok(Some(RpmSigned {
        nevra: p.raw.nevra(),
        replaced: p.replaced,
        kept: p.kept,
        unchanged: p.unchanged,
        input: input_digest,
        output,
        in_place: true,
        head_before: head,
        head_after: head,
    }))
}

/// Serializes lead + a signature header without the `remove` tags and with `extra`. Keeps
/// the signature header's size when the package has reserved space (`RESERVEDSPACE` in v4
/// packages, `RESERVED` in v6 ones), growing or shrinking it as rpmsign does.
fn rebuild(raw: &RawRpm, remove: &[u32], mut extra: Vec<(u32, IndexData)>) -> Result<Vec<u8>, SignError> {
    let base: Vec<(u32, IndexData)> =
        raw.sig_entries()?.into_iter().filter(|(t, _)| !remove.contains(t) && *t != rpm::HEADER_SIGNATURES).collect();
    let reserved = base.iter().find_map(|(t, d)| match (t, d) {
        (&(SIGTAG_RESERVEDSPACE | SIGTAG_RESERVED), IndexData::Bin(b)) => Some(b.len()),
        _ => None,
    });
    if !base.iter().any(|(t, _)| *t == SIGTAG_SHA256) {
        extra.push((SIGTAG_SHA256, IndexData::StringTag(hex::encode(Sha256::digest(&raw.header)))));
    }
    let mut out = serialize(raw, &base, &extra, reserved)?;
    let target = LEAD_SIZE + raw.sig_len;
    // rpm cannot store an empty entry: the reserved space stays at least one byte.
    if let Some(res) = reserved
        && out.len() != target
        && let Some(res) = (res + target).checked_sub(out.len()).filter(|r| *r >= 1)
    {
        let same_size = serialize(raw, &base, &extra, Some(res))?;
        if same_size.len() == target {
            out = same_size;
        }
    }
    Ok(out)
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
            (SIGTAG_RESERVEDSPACE | SIGTAG_RESERVED, Some(n)) => HeaderEntry::new(*t, IndexData::Bin(vec![0; n])),
            _ => HeaderEntry::new(*t, d.clone()),
        })
        .chain(extra.iter().map(|(t, d)| HeaderEntry::new(*t, d.clone())));
    let signature = Header::<IndexSignatureTag>::from_entries(entries, IndexSignatureTag::HEADER_SIGNATURES);
    // The rpm crate writes a signature header only as part of a whole package's metadata:
    // give it an empty main header (the real one is written as read, never re-serialized)
    // and cut that off again.
    let (empty, empty_bytes) = empty_main_header(&raw.meta.lead)?;
    let meta = PackageMetadata { lead: raw.meta.lead.clone(), signature, header: empty };
    let mut buf = Vec::with_capacity(LEAD_SIZE + raw.sig_len + 64 + empty_bytes.len());
    meta.write(&mut buf).map_err(|e| invalid(format!("cannot write RPM signature header: {e}")))?;
    if !buf.ends_with(empty_bytes) {
        return Err(invalid("cannot write RPM signature header: the empty main header did not come out as expected"));
    }
    buf.truncate(buf.len() - empty_bytes.len());
    // Keep the lead byte-exact.
    buf[..LEAD_SIZE].copy_from_slice(&raw.lead);
    Ok(buf)
}

/// What checking a signed RPM found.
#[derive(Debug, Clone)]
pub struct RpmChecked {
    pub nevra: String,
    /// The fingerprint of the allowed key of the first good signature.
    pub signer: String,
    /// Every signature the package carries.
    pub signatures: Vec<SigReport>,
}

/// What one signature of an RPM is worth to a checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigStatus {
    /// Made by an allowed key, and good over the header.
    Ok,
    /// Claims an allowed key but does not verify, or cannot be read at all.
    Bad(String),
    /// Made by a key the checker does not have: neither good nor bad to it.
    UnknownKey,
    /// A v3 header+payload signature (`PGP`, `GPG`), which signet does not check.
    Unchecked,
}

/// One signature of an RPM, with every tag it is stored in.
#[derive(Debug, Clone)]
pub struct SigReport {
    /// The packet as stored.
    pub packet: Vec<u8>,
    /// The tags it is stored in (a legacy tag and/or `OPENPGP`).
    pub places: Vec<u32>,
    /// Its issuers (fingerprints, or key ids), comma-separated, or `unparseable`.
    pub issuer: String,
    /// `RSA/SHA256`, `EdDSA/SHA512`, ...
    pub algorithm: String,
    pub status: SigStatus,
    /// The allowed key it verified with, when [`SigStatus::Ok`].
    pub signer: Option<String>,
}

impl SigReport {
    /// `OPENPGP`, `RSAHEADER+OPENPGP`, ...
    pub fn place_names(&self) -> String {
        self.places.iter().map(|t| tag_name(*t)).collect::<Vec<_>>().join("+")
    }
}

impl std::fmt::Display for SigReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match &self.status {
            SigStatus::Ok => "OK".to_owned(),
            SigStatus::Bad(why) => format!("BAD ({why})"),
            SigStatus::UnknownKey => "unknown key".to_owned(),
            SigStatus::Unchecked => "not checked (header+payload signature)".to_owned(),
        };
        write!(f, "{} {} signature, key {}: {status}", self.place_names(), self.algorithm, self.issuer)
    }
}

fn algorithm(sig: &sequoia_openpgp::packet::Signature) -> String {
    use sequoia_openpgp::types::PublicKeyAlgorithm as P;
    let pk = match sig.pk_algo() {
        #[allow(deprecated)]
        P::RSAEncryptSign | P::RSASign => "RSA".to_owned(),
        P::EdDSA => "EdDSA".to_owned(),
        P::Ed25519 => "Ed25519".to_owned(),
        P::Ed448 => "Ed448".to_owned(),
        P::ECDSA => "ECDSA".to_owned(),
        #[allow(deprecated)]
        P::DSA => "DSA".to_owned(),
        other => other.to_string(),
    };
    format!("{pk}/{}", sig.hash_algo())
}

/// Checks one stored signature packet over `header` (the main header's bytes).
fn check_one(bytes: &[u8], header: &[u8], checker: &Checker) -> SigReport {
    let mut report = SigReport {
        packet: bytes.to_vec(),
        places: Vec::new(),
        issuer: "unparseable".into(),
        algorithm: "unknown".into(),
        status: SigStatus::UnknownKey,
        signer: None,
    };
    let sig = match check::parse_signature(bytes) {
        Ok(sig) => sig,
        Err(e) => {
            report.status = SigStatus::Bad(format!("unparseable: {e}"));
            return report;
        }
    };
    report.issuer = key::issuers(&sig).join(",");
    report.algorithm = algorithm(&sig);
    if !checker.knows(&sig) {
        return report;
    }
    let hash = check::hasher_for(&sig).map(|mut h| {
        h.update(header);
        h
    });
    report.status =
        match hash.map_err(|e| e.to_string()).and_then(|h| checker.packet(&sig, &h).map_err(|e| e.to_string())) {
            Ok(fpr) => {
                report.signer = Some(fpr);
                SigStatus::Ok
            }
            Err(e) => SigStatus::Bad(e),
        };
    report
}

impl RawRpm {
    /// Every signature the package carries, each packet once with all the tags it is in.
    fn reports(&self, checker: &Checker) -> Result<Vec<SigReport>, SignError> {
        self.reports_over(&self.header, checker)
    }

    /// [`RawRpm::reports`], the header signatures checked over the main header `header`.
    fn reports_over(&self, header: &[u8], checker: &Checker) -> Result<Vec<SigReport>, SignError> {
        // Each distinct packet once, with every tag it is in; then judged as a header
        // signature if any of those is a header-signature tag, whatever their order.
        let mut packets: Vec<(Vec<u8>, Vec<u32>)> = Vec::new();
        for c in self.carried()? {
            match packets.iter_mut().find(|(p, _)| *p == c.bytes) {
                Some((_, places)) => places.push(c.tag),
                None => packets.push((c.bytes, vec![c.tag])),
            }
        }
        Ok(packets
            .into_iter()
            .map(|(packet, places)| {
                let mut r = if places.iter().any(|t| HEADER_SIG_TAGS.contains(t)) {
                    check_one(&packet, header, checker)
                } else {
                    let mut r = check_one(&packet, &[], &Checker::new(Vec::new()));
                    if !matches!(r.status, SigStatus::Bad(_)) {
                        r.status = SigStatus::Unchecked;
                    }
                    r
                };
                r.places = places;
                r
            })
            .collect())
    }
}

/// Where each rpm looks for a package's signatures: rpm 6 reads `OPENPGP` when it has
/// entries and the legacy header tags otherwise; rpm 4 reads the legacy header tags, and
/// only v4-format packages are for it.
fn readers(reports: &[SigReport], v6: bool) -> Vec<(&'static str, &'static [u32])> {
    const LEGACY: &[u32] = &[SIGTAG_DSA, SIGTAG_RSA];
    let has_openpgp = reports.iter().any(|r| r.places.contains(&SIGTAG_OPENPGP));
    let mut out: Vec<(&'static str, &'static [u32])> =
        vec![("rpm 6", if has_openpgp { &[SIGTAG_OPENPGP] } else { LEGACY })];
    if !v6 {
        out.push(("rpm 4", LEGACY));
    }
    out
}

/// The first good signature (by an allowed key) stored in one of `tags`.
fn good_in<'a>(reports: &'a [SigReport], tags: &[u32]) -> Option<&'a SigReport> {
    reports.iter().find(|r| r.status == SigStatus::Ok && r.places.iter().any(|t| tags.contains(t)))
}

/// The signatures of a new lead and signature header over `raw`'s main header, parsed from
/// memory.
fn verify_head(head: &[u8], raw: &RawRpm, checker: &Checker) -> Result<Vec<SigReport>, SignError> {
    let view = raw.with_head(head)?;
    view.check_header_digest_of(&raw.header)?;
    view.reports_over(&raw.header, checker)
}

/// The issuers (fingerprints, or key ids) of the OpenPGP header signatures of an RPM,
/// without checking them: empty if it is not signed.
pub fn signature_issuers(input: &mut dyn Read) -> Result<Vec<String>, SignError> {
    let raw = RawRpm::read(input)?;
    let mut out = Vec::new();
    for c in raw.carried()? {
        let sig = check::parse_signature(&c.bytes).map_err(|e| SignError::BadSignature(e.to_string()))?;
        out.extend(crate::key::issuers(&sig));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Checks an RPM's signatures against `checker`, its header digest and, when `payload` is
/// set, its payload digest and size. It passes when at least one signature is by an allowed
/// key and good and none is bad; signatures by other keys are reported, not held against it.
pub fn verify(input: &mut dyn Read, checker: &Checker, payload: bool) -> Result<RpmChecked, SignError> {
    let raw = RawRpm::read(input)?;
    raw.check_header_digest()?;
    let signatures = raw.reports(checker)?;
    if signatures.is_empty() {
        return Err(SignError::BadSignature("RPM is not signed".into()));
    }
    let bad: Vec<String> =
        signatures.iter().filter(|r| matches!(r.status, SigStatus::Bad(_))).map(ToString::to_string).collect();
    if !bad.is_empty() {
        return Err(SignError::BadSignature(bad.join("; ")));
    }
    let mut signer = None;
    for (reader, tags) in readers(&signatures, raw.rpm_format() >= 6) {
        match good_in(&signatures, tags) {
            Some(r) => signer = signer.or(r.signer.clone()),
            None => {
                let names: Vec<&str> = tags.iter().map(|t| tag_name(*t)).collect();
                return Err(SignError::BadSignature(format!(
                    "no good signature by an allowed key where {reader} reads them ({}): {}",
                    names.join(", "),
                    signatures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                )));
            }
        }
    }
    let signer = signer.unwrap_or_default();
    if payload {
        let ([digest], n) = super::fan_out(input, None, [Sha256::new()])?;
        raw.check_payload(&hex::encode(digest.finalize()), n)?;
    }
    Ok(RpmChecked { nevra: raw.nevra(), signer, signatures })
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}
