//! The signing core: synchronous, no network I/O, the time passed in.
//!
//! [`sign_batch`] signs a set of local files into a staging directory: every output, then
//! `SHA256SUMS` and `SHA256SUMS.asc`, then `manifest.json.asc` and `manifest.json`. Each
//! signature is checked with sequoia against the public key before it is written, over the
//! bytes as they were streamed to the output (from memory, without reading the output
//! again); each input is read once. The
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
    /// Signed where the artifact was (`signet sign --in-place`): final at this path, not in
    /// the staging directory; [`commit_to_dir`] syncs it with the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place: Option<PathBuf>,
    /// Where the output is the artifact byte for byte to its end: an RPM whose signature
    /// header was replaced. The worker copies that part in S3 instead of uploading it.
    #[serde(default)]
    pub same_tail: Option<SameTail>,
}

/// `output[output_from..]` is `input[input_from..]`, byte for byte.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SameTail {
    pub input_from: u64,
    pub output_from: u64,
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
    /// Sign RPMs where they are ([`rpm::sign_in_place`], or a synced copy renamed over the
    /// original when the new header does not fit) instead of into the staging directory.
    pub in_place: bool,
    /// Remove every other signature of an RPM instead of keeping them (`--replace`, the
    /// job's `replace_signatures`).
    pub replace_signatures: bool,
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

/// A reader that counts and hashes what passes through.
pub struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    size: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hash: Sha256::new(), size: 0 }
    }

    /// Reads what is left, and returns the hex SHA-256 and size of everything read.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((hex::encode(self.hash.finalize()), self.size))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Buffer size of the files a batch reads and writes: below malloc's mmap threshold (128
/// KiB), so small packages do not each map and unmap their buffers; big reads and writes
/// (a chunk of [`fan_out`]) bypass it.
const IO_BUF: usize = 64 * 1024;

/// Bytes read and hashed at a time by [`fan_out`].
const CHUNK: usize = 1 << 20;
/// Chunks in flight between [`fan_out`]'s reader and its hashing threads; they are reused,
/// so a big file does not map (and fault in, and zero) a fresh megabyte per chunk.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Feeds everything `input` yields to every hasher (and to `out`, if given) and returns them
/// with the byte count. Past the first chunk, each hasher but the first runs on a thread of
/// its own, fed the chunks as they are read, so N hashes of a big file take about the wall
/// time of one on N cores; a small input is hashed in place.
pub fn fan_out<const N: usize>(
    input: &mut dyn Read,
    mut out: Option<&mut dyn Write>,
    hashers: [Sha256; N],
) -> io::Result<([Sha256; N], u64)> {
    use std::sync::Arc;
    use std::sync::mpsc::sync_channel;

    fn fill(input: &mut dyn Read, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        input.take(CHUNK as u64).read_to_end(buf).map(|_| ())
    }
    let mut hashers = hashers;
    // Grown as it fills: a small package's payload costs its size, not a chunk.
    let mut chunk = Vec::new();
    fill(input, &mut chunk)?;
    if chunk.len() < CHUNK || N == 1 {
        let mut n = 0;
        loop {
            hashers.iter_mut().for_each(|h| h.update(&chunk));
            if let Some(o) = out.as_mut() {
                o.write_all(&chunk)?;
            }
            n += chunk.len() as u64;
            if chunk.len() < CHUNK {
                return Ok((hashers, n));
            }
            fill(input, &mut chunk)?;
        }
    }
    let Some((first, rest)) = hashers.split_first_mut() else { unreachable!("N > 1 here") };
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(N - 1);
        let mut helpers = Vec::with_capacity(N - 1);
        for h in rest.iter_mut() {
            let (tx, rx) = sync_channel::<Arc<Vec<u8>>>(CHUNKS_IN_FLIGHT);
            senders.push(tx);
            helpers.push(scope.spawn(move || rx.into_iter().for_each(|c| h.update(&c[..]))));
        }
        // Chunks handed to the helpers, oldest first; the oldest is taken back for the next
        // read once every helper has hashed it.
        let mut in_flight: std::collections::VecDeque<Arc<Vec<u8>>> = std::collections::VecDeque::new();
        let mut n = 0;
        let read = loop {
            let oldest = if in_flight.len() > CHUNKS_IN_FLIGHT { in_flight.pop_front() } else { None };
            let next = match oldest {
                // The helpers are at most CHUNKS_IN_FLIGHT chunks behind (their channels
                // hold no more), so this waits for at most the hashing of one chunk.
                Some(mut oldest) => loop {
                    match Arc::try_unwrap(oldest) {
                        Ok(buf) => break buf,
                        Err(still_shared) => {
                            oldest = still_shared;
                            std::thread::yield_now();
                        }
                    }
                },
                None => Vec::with_capacity(CHUNK),
            };
            let c = Arc::new(std::mem::replace(&mut chunk, next));
            senders.iter().for_each(|tx| drop(tx.send(Arc::clone(&c))));
            first.update(&c[..]);
            if let Some(o) = out.as_mut()
                && let Err(e) = o.write_all(&c)
            {
                break Err(e);
            }
            n += c.len() as u64;
            let last = c.len() < CHUNK;
            in_flight.push_back(c);
            if last {
                break Ok(n);
            }
            if let Err(e) = fill(input, &mut chunk) {
                break Err(e);
            }
        };
        drop(senders);
        for h in helpers {
            h.join().map_err(|_| io::Error::other("a hashing thread panicked"))?;
        }
        read
    })
    .map(|n| (hashers, n))
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
        Ok(HashingWriter::new(BufWriter::with_capacity(IO_BUF, f)))
    }

    /// A new staged file whose digest the caller computes.
    fn create_plain(&self, name: &str) -> Result<BufWriter<File>, SignError> {
        let f = fs::OpenOptions::new().write(true).create_new(true).open(self.dir.join(name))?;
        Ok(BufWriter::with_capacity(IO_BUF, f))
    }

    fn close(w: HashingWriter<BufWriter<File>>) -> Result<(String, u64), SignError> {
        let (buf, sha, size) = w.finish()?;
        buf.into_inner().map_err(|e| e.into_error())?;
        Ok((sha, size))
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

    let threads = ctx.parallel.clamp(1, artifacts.len().max(1));
    // Output names must be unique across the batch, and not clash with the batch files.
    for a in artifacts {
        check_output_name(&a.name)?;
    }
    let formats = detect_all(artifacts, threads)?;
    let mut names: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, (a, format)) in artifacts.iter().zip(&formats).enumerate() {
        let mut produced = vec![a.name.clone()];
        match format {
            Format::Detached => produced.push(format!("{}.asc", a.name)),
            Format::AptRelease => produced.extend(["InRelease".to_owned(), format!("{}.gpg", a.name)]),
            _ => {}
        }
        for n in produced {
            check_output_name(&n)?;
            if let Some(j) = names.get(&n) {
                return Err(SignError::Conflict(format!(
                    "{} and {} both produce {n:?}",
                    artifacts[*j].source, a.source
                )));
            }
            names.insert(n, i);
        }
    }

    // The artifacts are independent: sign them on up to `ctx.parallel` threads, each with
    // its own handle on the key, and keep the batch order in what comes back. The first
    // failure (in batch order) stops the batch; the staging directory is discarded.
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
        let r = sign_one(&stage, key, &checker, i, &artifacts[i], formats[i], ctx);
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

/// The format of each artifact, in batch order: `Format::Auto` ones detected from their
/// first bytes, on up to `threads` threads (one open and read per file, which a big batch
/// would otherwise wait for before its first signature).
fn detect_all(artifacts: &[Artifact], threads: usize) -> Result<Vec<Format>, SignError> {
    let detect = |a: &Artifact| match a.format {
        Format::Auto => detect_file(&a.path),
        f => Ok(f),
    };
    let auto = artifacts.iter().filter(|a| a.format == Format::Auto).count();
    if threads <= 1 || auto < 64 {
        return Ok(artifacts.iter().map(detect).collect::<io::Result<_>>()?);
    }
    let per_thread = artifacts.len().div_ceil(threads);
    let parts: Vec<io::Result<Vec<Format>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = artifacts
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(detect).collect::<io::Result<Vec<Format>>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("a format detection thread panicked"))))
            .collect()
    });
    let mut out = Vec::with_capacity(artifacts.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
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
    ctx: &BatchContext,
) -> Result<Signed, SignError> {
    let (time, in_place, replace) = (ctx.time, ctx.in_place, ctx.replace_signatures);
    let staging = stage.dir;
    let mut outputs = Vec::new();
    if in_place && format != Format::Rpm {
        return Err(SignError::InvalidArtifact {
            artifact: a.source.clone(),
            message: format!("--in-place signs RPMs only, and this is {format}"),
        });
    }
    // The input is read once: its digest (when the caller has none) is taken on the way,
    // by `input` here, or by rpm::sign itself for an RPM.
    let open = || -> io::Result<_> { Ok(HashingReader::new(BufReader::with_capacity(IO_BUF, File::open(&a.path)?))) };
    let mut input = if format == Format::Rpm { None } else { Some(open()?) };
    let mut input_digest = None;
    let mut record = ArtifactRecord {
        source: a.source.clone(),
        format,
        input: FileDigest { name: a.name.clone(), sha256: String::new(), size: 0 },
        outputs: Vec::new(),
        package: None,
        replaced_signatures: Vec::new(),
        kept_signatures: Vec::new(),
        already_signed: false,
    };
    let mut add = |name: &str, (sha256, size): (String, u64), record: &mut ArtifactRecord| {
        record.outputs.push(FileDigest { name: name.to_owned(), sha256: sha256.clone(), size });
        let in_place = in_place.then(|| a.path.clone());
        outputs.push(Output { name: name.to_owned(), sha256, size, format, artifact: i, in_place, same_tail: None });
    };
    let with_name = |e: SignError| match e {
        SignError::Invalid(message) => SignError::InvalidArtifact { artifact: a.source.clone(), message },
        other => other,
    };
    match format {
        Format::Rpm => {
            // rpm::sign hashes the package as read and as written itself, on threads of its
            // own for a big payload: read it plainly.
            let signed = if in_place {
                rpm_in_place(key, checker, a, replace, time)
            } else {
                let mut plain = BufReader::with_capacity(IO_BUF, File::open(&a.path)?);
                let mut w = stage.create_plain(&a.name)?;
                let options = rpm::Options { replace, hash_input: a.digest.is_none() };
                rpm::sign_with(&mut plain, &mut w, key, checker, options, time)
                    .and_then(|s| w.into_inner().map_err(|e| e.into_error().into()).map(|_| s))
            }
            .map_err(self_check_or(&a.name, with_name))?;
            record.package = Some(signed.nevra);
            record.replaced_signatures = signed.replaced;
            record.kept_signatures = signed.kept;
            record.already_signed = signed.unchanged;
            add(&a.name, signed.output, &mut record);
            if let Some(o) = outputs.last_mut() {
                o.same_tail = Some(SameTail { input_from: signed.head_before, output_from: signed.head_after });
            }
            input_digest = signed.input;
        }
        Format::Deb => {
            let mut w = stage.create(&a.name)?;
            let signed = deb::sign(opened(&mut input)?, &mut w, key, checker, time)
                .map_err(self_check_or(&a.name, with_name))?;
            let digest = Stage::close(w)?;
            record.replaced_signatures = signed.replaced;
            add(&a.name, digest, &mut record);
        }
        Format::Detached => {
            let asc_name = format!("{}.asc", a.name);
            let mut copy = stage.create(&a.name)?;
            let mut asc = stage.create(&asc_name)?;
            detached::sign(opened(&mut input)?, &mut copy, &mut asc, key, checker, time)
                .map_err(self_check_or(&a.name, with_name))?;
            let (d1, d2) = (Stage::close(copy)?, Stage::close(asc)?);
            add(&a.name, d1, &mut record);
            add(&asc_name, d2, &mut record);
        }
        Format::AptRelease => {
            let text = release::read(opened(&mut input)?).map_err(with_name)?;
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
    (record.input.sha256, record.input.size) = match (&a.digest, input_digest, input) {
        (Some(d), _, _) => d.clone(),
        (None, Some(d), _) => d,
        (None, None, Some(input)) => input.finish()?,
        (None, None, None) => {
            return Err(SignError::Io(io::Error::other("rpm::sign did not hash an input it was asked to")));
        }
    };
    Ok(Signed { record, outputs })
}

/// The input a non-RPM arm of [`sign_one`] reads (opened for every format but RPM, which
/// reads its own): an error, not a panic, if that ever stops holding.
fn opened<T>(input: &mut Option<T>) -> Result<&mut T, SignError> {
    input.as_mut().ok_or_else(|| SignError::Io(io::Error::other("the input was not opened")))
}

/// Signs the RPM at `a.path` where it is ([`rpm::sign_in_place`]). When the new signature
/// header does not fit the old one's bytes, a signed copy is written beside it, synced, and
/// renamed over the original with its permissions, so the package is never half-written.
fn rpm_in_place(
    key: &mut SigningKey,
    checker: &Checker,
    a: &Artifact,
    replace: bool,
    time: SystemTime,
) -> Result<rpm::RpmSigned, SignError> {
    let file = fs::OpenOptions::new().read(true).write(true).open(&a.path)?;
    if let Some(signed) = rpm::sign_in_place(&file, key, checker, replace, time)? {
        return Ok(signed);
    }
    // Through a symlink, the file it points to is replaced, not the link.
    let target = fs::canonicalize(&a.path)?;
    let dir = target.parent().unwrap_or(Path::new("/"));
    let tmp = tempfile::Builder::new().prefix(".signet-").tempfile_in(dir)?;
    (&file).seek(io::SeekFrom::Start(0))?;
    let mut w = BufWriter::with_capacity(IO_BUF, tmp.as_file());
    let mut signed = rpm::sign(&mut BufReader::with_capacity(IO_BUF, &file), &mut w, key, checker, replace, time)?;
    w.into_inner().map_err(|e| e.into_error())?;
    tmp.as_file().set_permissions(file.metadata()?.permissions())?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    signed.in_place = false;
    Ok(signed)
}

fn normalize(text: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(text).replace("\r\n", "\n").trim_end_matches('\n').as_bytes().to_vec()
}

fn self_check(name: &str) -> impl Fn(SignError) -> SignError + '_ {
    move |e| SignError::BadSignature(format!("self-check of {name} failed, output discarded: {e}"))
}

/// A format's own self-check failure ([`SignError::BadSignature`]) named as one; any other
/// error through `other`.
fn self_check_or<'a>(
    name: &'a str,
    other: impl Fn(SignError) -> SignError + 'a,
) -> impl Fn(SignError) -> SignError + 'a {
    move |e| match e {
        e @ SignError::BadSignature(_) => self_check(name)(e),
        e => other(e),
    }
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
    detached::sign(&mut &data[..], &mut w, &mut asc, key, checker, time).map_err(self_check(name))?;
    let digest = Stage::close(w)?;
    let asc_digest = Stage::close(asc)?;
    Ok((digest, asc_digest))
}

/// Makes a staged batch final in `out_dir` (same file system): one `syncfs` makes every
/// staged file durable (and one per other file system that holds packages signed in
/// place), then each is renamed into place in commit order (manifest last) and the
/// directory is synced. One sync for the batch gives the guarantee an fsync per file gave
/// (no final name, and no `SHA256SUMS`, ever points at data that is not on disk), at the
/// cost of one flush.
pub fn commit_to_dir(staging: &Path, batch: &Batch, out_dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let in_place_paths = batch.outputs.iter().filter_map(|o| o.in_place.as_deref());
    if syncfs_reports_errors() {
        let staging_dir = File::open(staging)?;
        let mut devices = vec![staging_dir.metadata()?.dev()];
        sync_file_system(&staging_dir)?;
        for path in in_place_paths {
            let f = File::open(path)?;
            let dev = f.metadata()?.dev();
            if !devices.contains(&dev) {
                devices.push(dev);
                sync_file_system(&f)?;
            }
        }
    } else {
        // Before Linux 5.8, syncfs did not report writeback errors: one fsync per file.
        for name in batch.files_in_commit_order() {
            if batch.outputs.iter().all(|o| o.name != name || o.in_place.is_none()) {
                File::open(staging.join(&name))?.sync_all()?;
            }
        }
        for path in in_place_paths {
            File::open(path)?.sync_all()?;
        }
    }
    let in_place: Vec<&str> = batch.outputs.iter().filter(|o| o.in_place.is_some()).map(|o| o.name.as_str()).collect();
    for name in batch.files_in_commit_order() {
        if !in_place.contains(&name.as_str()) {
            fs::rename(staging.join(&name), out_dir.join(&name))?;
        }
    }
    File::open(out_dir)?.sync_all()
}

/// Whether this kernel's `syncfs(2)` reports writeback errors (Linux 5.8 and later).
fn syncfs_reports_errors() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        // SAFETY: uname fills the struct it is given, which lives on this stack frame.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } != 0 {
            return false;
        }
        // SAFETY: uname NUL-terminates `release`.
        let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy();
        let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
        matches!((parts.next(), parts.next()), (Some(major), Some(minor)) if (major, minor) >= (5, 8))
    })
}

/// Flushes every dirty page of the file system `f` is on (`syncfs(2)`), and its journal.
fn sync_file_system(f: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Reads and rewinds: a helper for verifiers that take `Read + Seek`.
pub fn rewind<R: Seek>(r: &mut R) -> io::Result<()> {
    r.seek(io::SeekFrom::Start(0)).map(|_| ())
}
