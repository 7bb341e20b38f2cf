//! The signing core: synchronous, no network I/O, the time passed in.
//!
//! [`sign_batch`] signs a set of local files into a staging directory: every output, then
//! `SHA256SUMS` and `SHA256SUMS.asc`, then `manifest.json.asc` and `manifest.json`. Each
//! output is checked with sequoia against the public key before the batch is returned. The
//! caller makes the staged files final: [`commit_to_dir`] for a local directory, uploads in
//! the same order for object storage. `manifest.json` goes last and marks a complete set.

pub mod ar;
pub mod checksums;
pub mod content;
pub mod deb;
pub mod detached;
pub mod manifest;
pub mod release;
pub mod rpm;
pub mod rpmhdr;

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::check::Checker;
use crate::key::{KeyError, SigningKey};
use manifest::{ArtifactRecord, FileDigest, KeyRecord, Manifest, SignerRecord};

/// Names of the per-batch files.
pub const SHA256SUMS: &str = "SHA256SUMS";
pub const SHA256SUMS_ASC: &str = "SHA256SUMS.asc";
pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_ASC: &str = "manifest.json.asc";

/// Errors of the signing core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The input is not what it claims to be (corrupt, truncated, hostile): permanent.
    #[error("{0}")]
    Invalid(String),
    /// One artifact of a batch is invalid (as [`SignError::Invalid`]), named by its source.
    #[error("{artifact}: {message}")]
    InvalidArtifact { artifact: String, message: String },
    /// Two inputs would write the same output name: permanent.
    #[error("output conflict: {0}")]
    Conflict(String),
    /// A signature does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// How an artifact is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Decide from the content: RPM magic → rpm, ar with debian-binary → deb, else detached.
    #[default]
    Auto,
    /// RPM header signature.
    Rpm,
    /// DEB `_gpgorigin` member.
    Deb,
    /// The file plus `NAME.asc`.
    Detached,
    /// `Release` plus `InRelease` and `Release.gpg`.
    AptRelease,
}

impl Format {
    /// The format's name, as in jobs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Rpm => "rpm",
            Format::Deb => "deb",
            Format::Detached => "detached",
            Format::AptRelease => "apt-release",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides the format of a file from its first bytes.
pub fn detect(head: &[u8]) -> Format {
    if head.starts_with(&[0xed, 0xab, 0xee, 0xdb]) {
        Format::Rpm
    } else if head.starts_with(b"!<arch>\ndebian-binary") {
        Format::Deb
    } else {
        Format::Detached
    }
}

/// Reads the start of a file and detects its format.
pub fn detect_file(path: &Path) -> io::Result<Format> {
    let mut head = [0u8; 21];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(detect(&head[..n]))
}

/// Checks that `name` can be an output file name.
pub fn check_output_name(name: &str) -> Result<(), SignError> {
    let bad = name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.chars().any(|c| c == '/' || c == '\\' || c.is_control())
        || [SHA256SUMS, SHA256SUMS_ASC, MANIFEST, MANIFEST_ASC].contains(&name);
    if bad {
        return Err(SignError::Invalid(format!("unusable output name {name:?}")));
    }
    Ok(())
}

/// One input to sign: a local file, with the name its output gets.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub path: PathBuf,
    /// Output base name.
    pub name: String,
    /// Where it came from, for the manifest.
    pub source: String,
    pub format: Format,
    /// SHA-256 (hex) and size of the file when the caller already hashed it while fetching
    /// it; otherwise the file is read once more to hash it.
    pub digest: Option<(String, u64)>,
}

/// An output file in the staging directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Output {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// The format of the artifact it came from.
    pub format: Format,
    /// Index of that artifact in the batch.
    pub artifact: usize,
}

/// A signed batch, staged and checked.
#[derive(Debug, Clone)]
pub struct Batch {
    pub outputs: Vec<Output>,
    pub sha256sums: FileDigest,
    pub manifest: Manifest,
    pub manifest_digest: FileDigest,
    /// `SHA256SUMS.asc` and `manifest.json.asc`, as staged.
    pub sha256sums_asc: FileDigest,
    pub manifest_asc: FileDigest,
}

impl Batch {
    /// The digest of every staged file, in commit order (manifest last): what the audit
    /// record lists, without reading any file again.
    pub fn digests_in_commit_order(&self) -> Vec<FileDigest> {
        let mut v: Vec<FileDigest> = self
            .outputs
            .iter()
            .map(|o| FileDigest { name: o.name.clone(), sha256: o.sha256.clone(), size: o.size })
            .collect();
        v.extend([&self.sha256sums, &self.sha256sums_asc, &self.manifest_asc, &self.manifest_digest].map(Clone::clone));
        v
    }

    /// Every staged file, in the order they must become final (manifest last).
    pub fn files_in_commit_order(&self) -> Vec<String> {
        self.digests_in_commit_order().into_iter().map(|d| d.name).collect()
    }
}

/// Who signs what, when.
#[derive(Debug, Clone)]
pub struct BatchContext {
    pub job_id: String,
    pub key_name: String,
    pub time: SystemTime,
    /// The approvers this run signs on the word of (recorded in the manifest).
    pub approvals: Vec<String>,
    /// How many artifacts are signed at once (at least 1): see [`parallelism`].
    pub parallel: usize,
}

/// How many artifacts of a batch to sign at once when the operator has not said: one per
/// core for a key in this process (signing is CPU work), more for a token or KMS key,
/// whose signatures are mostly waiting for a round trip.
pub fn parallelism(key: &SigningKey) -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if key.is_local() { cores } else { cores.max(8) }
}

/// A writer that counts and hashes what passes through.
pub struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hash: Sha256::new(), size: 0 }
    }

    /// Flushes and returns the inner writer, the hex SHA-256 and the size.
    pub fn finish(mut self) -> io::Result<(W, String, u64)> {
        self.inner.flush()?;
        Ok((self.inner, hex::encode(self.hash.finalize()), self.size))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streams a file's SHA-256 and size.
pub fn digest_file(path: &Path) -> io::Result<(String, u64)> {
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut File::open(path)?, &mut w)?;
    let (_, sha, size) = w.finish()?;
    Ok((sha, size))
}

/// Staging directory writer: creates files and records their digests.
struct Stage<'a> {
    dir: &'a Path,
}

impl Stage<'_> {
    fn create(&self, name: &str) -> Result<HashingWriter<BufWriter<File>>, SignError> {
        let path = self.dir.join(name);
        let f = fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok(HashingWriter::new(BufWriter::with_capacity(256 * 1024, f)))
    }

    fn close(w: HashingWriter<BufWriter<File>>) -> Result<(String, u64), SignError> {
        let (buf, sha, size) = w.finish()?;
        buf.into_inner().map_err(|e| e.into_error())?;
        Ok((sha, size))
    }

    fn open(&self, name: &str) -> io::Result<BufReader<File>> {
        Ok(BufReader::with_capacity(256 * 1024, File::open(self.dir.join(name))?))
    }
}

/// Signs `artifacts` with `key` into the empty directory `staging`.
pub fn sign_batch(
    key: &mut SigningKey,
    artifacts: &[Artifact],
    ctx: &BatchContext,
    staging: &Path,
) -> Result<Batch, SignError> {
    let stage = Stage { dir: staging };
    let checker = Checker::new(vec![key.public()]);
    let time = ctx.time;

    // Output names must be unique across the batch, and not clash with the batch files.
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut formats = Vec::with_capacity(artifacts.len());
    for (i, a) in artifacts.iter().enumerate() {
        check_output_name(&a.name)?;
        let format = match a.format {
            Format::Auto => detect_file(&a.path)?,
            f => f,
        };
        formats.push(format);
        let mut produced = vec![a.name.clone()];
        match format {
            Format::Detached => produced.push(format!("{}.asc", a.name)),
            Format::AptRelease => produced.extend(["InRelease".to_owned(), format!("{}.gpg", a.name)]),
            _ => {}
        }
        for n in produced {
            check_output_name(&n)?;
            if let Some((_, j)) = names.iter().find(|(m, _)| *m == n) {
                return Err(SignError::Conflict(format!(
                    "{} and {} both produce {n:?}",
                    artifacts[*j].source, a.source
                )));
            }
            names.push((n, i));
        }
    }

    // The artifacts are independent: sign them on up to `ctx.parallel` threads, each with
    // its own handle on the key, and keep the batch order in what comes back. The first
    // failure (in batch order) stops the batch; the staging directory is discarded.
    let threads = ctx.parallel.clamp(1, artifacts.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<Result<Signed, SignError>>>> = artifacts.iter().map(|_| Mutex::new(None)).collect();
    // `failed` is read before an index is taken: every index handed out is signed, so all
    // those below a failure are, and the error reported is the first in batch order.
    let work = |key: &mut SigningKey| loop {
        if failed.load(Ordering::SeqCst) {
            break;
        }
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= artifacts.len() {
            break;
        }
        let r = sign_one(&stage, key, &checker, i, &artifacts[i], formats[i], time);
        if r.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    };
    if threads == 1 {
        work(key);
    } else {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let mut k = key.clone();
                let work = &work;
                scope.spawn(move || work(&mut k));
            }
        });
    }
    let mut outputs = Vec::new();
    let mut records = Vec::new();
    for slot in slots {
        match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(signed)) => {
                outputs.extend(signed.outputs);
                records.push(signed.record);
            }
            Some(Err(e)) => return Err(e),
            // Never taken: only indices above a failure, which returned above.
            None => continue,
        }
    }
    if records.len() != artifacts.len() {
        return Err(SignError::Io(io::Error::other("the batch stopped before every artifact was signed")));
    }

    // SHA256SUMS over every output, then its signature.
    let entries: Vec<checksums::Entry> =
        outputs.iter().map(|o| checksums::Entry { sha256: o.sha256.clone(), name: o.name.clone() }).collect();
    let sums = checksums::render(&entries);
    let (sums_digest, sums_asc) =
        write_signed(&stage, key, &checker, SHA256SUMS, SHA256SUMS_ASC, sums.as_bytes(), time)?;

    let manifest = Manifest {
        manifest_version: 1,
        job_id: ctx.job_id.clone(),
        key: KeyRecord {
            name: ctx.key_name.clone(),
            fingerprint: key.fingerprint(),
            signer_fingerprint: key.signer_fingerprint(),
        },
        signer: SignerRecord { name: "signet".into(), version: env!("CARGO_PKG_VERSION").into() },
        signed_at: humantime::format_rfc3339_seconds(time).to_string(),
        artifacts: records,
        sha256sums: FileDigest { name: SHA256SUMS.into(), sha256: sums_digest.0, size: sums_digest.1 },
        approvals: ctx.approvals.clone(),
    };
    let mut json = serde_json::to_vec_pretty(&manifest).map_err(|e| SignError::Io(e.into()))?;
    json.push(b'\n');
    let (manifest_digest, manifest_asc) = write_signed(&stage, key, &checker, MANIFEST, MANIFEST_ASC, &json, time)?;
    let digest = |name: &str, (sha256, size): (String, u64)| FileDigest { name: name.into(), sha256, size };
    Ok(Batch {
        outputs,
        sha256sums: manifest.sha256sums.clone(),
        manifest,
        manifest_digest: digest(MANIFEST, manifest_digest),
        sha256sums_asc: digest(SHA256SUMS_ASC, sums_asc),
        manifest_asc: digest(MANIFEST_ASC, manifest_asc),
    })
}

/// One artifact's signed outputs and its manifest record.
struct Signed {
    record: ArtifactRecord,
    outputs: Vec<Output>,
}

/// Signs artifact `i` of a batch into the staging directory and checks what it wrote.
fn sign_one(
    stage: &Stage,
    key: &mut SigningKey,
    checker: &Checker,
    i: usize,
    a: &Artifact,
    format: Format,
    time: SystemTime,
) -> Result<Signed, SignError> {
    let staging = stage.dir;
    let mut outputs = Vec::new();
    let (in_sha, in_size) = match &a.digest {
        Some(d) => d.clone(),
        None => digest_file(&a.path)?,
    };
    let mut input = BufReader::with_capacity(256 * 1024, File::open(&a.path)?);
    let mut record = ArtifactRecord {
        source: a.source.clone(),
        format,
        input: FileDigest { name: a.name.clone(), sha256: in_sha, size: in_size },
        outputs: Vec::new(),
        package: None,
        replaced_signatures: Vec::new(),
    };
    let mut add = |name: &str, (sha256, size): (String, u64), record: &mut ArtifactRecord| {
        record.outputs.push(FileDigest { name: name.to_owned(), sha256: sha256.clone(), size });
        outputs.push(Output { name: name.to_owned(), sha256, size, format, artifact: i });
    };
    let with_name = |e: SignError| match e {
        SignError::Invalid(message) => SignError::InvalidArtifact { artifact: a.source.clone(), message },
        other => other,
    };
    match format {
        Format::Rpm => {
            let mut w = stage.create(&a.name)?;
            let signed = rpm::sign(&mut input, &mut w, key, time).map_err(with_name)?;
            let digest = Stage::close(w)?;
            rpm::verify(&mut stage.open(&a.name)?, checker, false).map_err(self_check(&a.name))?;
            record.package = Some(signed.nevra);
            record.replaced_signatures = signed.replaced;
            add(&a.name, digest, &mut record);
        }
        Format::Deb => {
            let mut w = stage.create(&a.name)?;
            let signed = deb::sign(&mut input, &mut w, key, time).map_err(with_name)?;
            let digest = Stage::close(w)?;
            deb::verify(&mut stage.open(&a.name)?, checker).map_err(self_check(&a.name))?;
            record.replaced_signatures = signed.replaced;
            add(&a.name, digest, &mut record);
        }
        Format::Detached => {
            let asc_name = format!("{}.asc", a.name);
            let mut copy = stage.create(&a.name)?;
            let mut asc = stage.create(&asc_name)?;
            detached::sign(&mut input, &mut copy, &mut asc, key, time).map_err(with_name)?;
            let (d1, d2) = (Stage::close(copy)?, Stage::close(asc)?);
            let sig = fs::read(staging.join(&asc_name))?;
            checker
                .detached(&sig, stage.open(&a.name)?)
                .map_err(|e| self_check(&a.name)(SignError::BadSignature(e.to_string())))?;
            add(&a.name, d1, &mut record);
            add(&asc_name, d2, &mut record);
        }
        Format::AptRelease => {
            let text = release::read(&mut input).map_err(with_name)?;
            let gpg_name = format!("{}.gpg", a.name);
            let mut copy = stage.create(&a.name)?;
            copy.write_all(&text)?;
            let mut inrel = stage.create("InRelease")?;
            let mut gpg = stage.create(&gpg_name)?;
            release::sign(&text, &mut inrel, &mut gpg, key, time)?;
            let (d1, d2, d3) = (Stage::close(copy)?, Stage::close(inrel)?, Stage::close(gpg)?);
            let (_, signed_text) = checker
                .cleartext(&fs::read(staging.join("InRelease"))?)
                .map_err(|e| self_check("InRelease")(SignError::BadSignature(e.to_string())))?;
            if normalize(&signed_text) != normalize(&text) {
                return Err(self_check("InRelease")(SignError::BadSignature(
                    "signed text differs from Release".into(),
                )));
            }
            checker
                .detached(&fs::read(staging.join(&gpg_name))?, &text[..])
                .map_err(|e| self_check(&gpg_name)(SignError::BadSignature(e.to_string())))?;
            add(&a.name, d1, &mut record);
            add("InRelease", d2, &mut record);
            add(&gpg_name, d3, &mut record);
        }
        Format::Auto => unreachable!("format was resolved above"),
    }
    Ok(Signed { record, outputs })
}

fn normalize(text: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(text).replace("\r\n", "\n").trim_end_matches('\n').as_bytes().to_vec()
}

fn self_check(name: &str) -> impl Fn(SignError) -> SignError + '_ {
    move |e| SignError::BadSignature(format!("self-check of {name} failed, output discarded: {e}"))
}

/// A staged file's SHA-256 (hex) and size.
type Digest2 = (String, u64);

/// Writes `data` as `name` plus its armored detached signature `asc_name`, checked; returns
/// the digests of both.
fn write_signed(
    stage: &Stage,
    key: &mut SigningKey,
    checker: &Checker,
    name: &str,
    asc_name: &str,
    data: &[u8],
    time: SystemTime,
) -> Result<(Digest2, Digest2), SignError> {
    let mut w = stage.create(name)?;
    let mut asc = stage.create(asc_name)?;
    detached::sign(&mut &data[..], &mut w, &mut asc, key, time)?;
    let digest = Stage::close(w)?;
    let asc_digest = Stage::close(asc)?;
    let sig = fs::read(stage.dir.join(asc_name))?;
    checker.detached(&sig, data).map_err(|e| self_check(name)(SignError::BadSignature(e.to_string())))?;
    Ok((digest, asc_digest))
}

/// Makes a staged batch final in `out_dir` (same file system): fsync each file, rename it
/// into place in commit order (manifest last), fsync the directory.
pub fn commit_to_dir(staging: &Path, batch: &Batch, out_dir: &Path) -> io::Result<()> {
    for name in batch.files_in_commit_order() {
        let src = staging.join(&name);
        File::open(&src)?.sync_all()?;
        fs::rename(&src, out_dir.join(&name))?;
    }
    File::open(out_dir)?.sync_all()
}

/// Reads and rewinds: a helper for verifiers that take `Read + Seek`.
pub fn rewind<R: Seek>(r: &mut R) -> io::Result<()> {
    r.seek(io::SeekFrom::Start(0)).map(|_| ())
}
