//! The publish gate (`signet verify --require-signed`): every package and every signed
//! metadata file of a repository tree, checked against the certificates that repository
//! allows, before it is published (to Pulp, aptly, a bucket).
//!
//! What is checked, by name, anywhere under the root:
//! - `*.rpm`: the OpenPGP header signature, the header and payload digests;
//! - `*.deb`: the `debsigs` origin signature (`_gpgorigin`);
//! - `InRelease`: its cleartext signature; `Release`: `Release.gpg` (unless `InRelease`
//!   is beside it);
//! - `repomd.xml`: `repomd.xml.asc`;
//! - `SHA256SUMS`: `SHA256SUMS.asc`, and every file it lists must match;
//! - any other `X` with an `X.asc` (or `X.gpg`) beside it: that detached signature.
//!
//! Each is OK, unsigned, signed only by keys the repository does not allow, or bad (the
//! signature does not verify, the file is corrupt). Other files are not signed things and
//! are counted as skipped. A tree with nothing to check is refused: an empty set never
//! passes.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use sequoia_openpgp::Cert;

use crate::check::{self, CheckError, Checker};
use crate::sign::{self, SHA256SUMS, SignError, checksums};

/// What the gate says of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by an allowed key, and the signature verifies.
    Ok(String),
    /// No signature at all.
    Unsigned(String),
    /// Signed, but by no key the repository allows.
    NotAllowed(String),
    /// A signature by an allowed key that does not verify, or a corrupt file.
    Bad(String),
}

impl Verdict {
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Ok(_))
    }

    /// The word printed before the file name.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Ok(_) => "OK",
            Verdict::Unsigned(_) => "UNSIGNED",
            Verdict::NotAllowed(_) => "NOT-ALLOWED",
            Verdict::Bad(_) => "BAD",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Verdict::Ok(s) | Verdict::Unsigned(s) | Verdict::NotAllowed(s) | Verdict::Bad(s) => s,
        }
    }
}

/// One checked file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Relative to the root.
    pub path: PathBuf,
    pub verdict: Verdict,
}

/// The whole tree's result.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Files that are not signed things (and not signatures of one).
    pub skipped: usize,
}

impl Report {
    /// Passed: something was checked, and everything checked is OK.
    pub fn passed(&self) -> bool {
        !self.findings.is_empty() && self.findings.iter().all(|f| f.verdict.passed())
    }
}

/// Text as a cleartext signature carries it: CRLF as LF, no trailing newlines.
fn normalize(text: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(text).replace("\r\n", "\n").trim_end_matches('\n').as_bytes().to_vec()
}

/// The allowed certificates and every handle their keys are known by.
pub struct Gate {
    checker: Checker,
    handles: BTreeSet<String>,
}

impl Gate {
    pub fn new(certs: Vec<Cert>) -> Self {
        let mut handles = BTreeSet::new();
        for c in &certs {
            for k in c.keys() {
                handles.insert(k.key().fingerprint().to_hex());
                handles.insert(k.key().keyid().to_hex());
            }
        }
        Gate { checker: Checker::new(certs), handles }
    }

    /// Whether any of `issuers` is a key of an allowed certificate.
    fn allows_any(&self, issuers: &[String]) -> bool {
        issuers.iter().any(|i| self.handles.contains(&i.to_ascii_uppercase()))
    }

    /// Why a signature that did not verify failed: none, someone else's, or bad.
    fn classify(&self, issuers: Result<Vec<String>, String>, error: String, what: &str) -> Verdict {
        match issuers {
            Err(corrupt) => Verdict::Bad(corrupt),
            Ok(i) if i.is_empty() => Verdict::Unsigned(format!("{what} has no signature")),
            Ok(i) if !self.allows_any(&i) => Verdict::NotAllowed(format!(
                "signed by {}, which this repository does not allow",
                i.iter().map(|s| s.to_ascii_uppercase()).collect::<Vec<_>>().join(", ")
            )),
            Ok(_) => Verdict::Bad(format!("signature does not verify: {error}")),
        }
    }

    fn rpm(&self, path: &Path) -> Verdict {
        let open = || File::open(path).map(BufReader::new);
        let result = open().map_err(SignError::from).and_then(|mut f| sign::rpm::verify(&mut f, &self.checker, true));
        match result {
            Ok(r) => Verdict::Ok(format!("RPM {} header signature by {}, digests OK", r.nevra, r.signer)),
            Err(SignError::BadSignature(e)) => {
                let issuers = open()
                    .map_err(|e| e.to_string())
                    .and_then(|mut f| sign::rpm::signature_issuers(&mut f).map_err(|e| e.to_string()));
                self.classify(issuers, e, "the RPM")
            }
            Err(e) => Verdict::Bad(format!("not a valid RPM: {e}")),
        }
    }

    fn deb(&self, path: &Path) -> Verdict {
        let open = || File::open(path).map(BufReader::new);
        let result = open().map_err(SignError::from).and_then(|mut f| sign::deb::verify(&mut f, &self.checker));
        match result {
            Ok(fpr) => Verdict::Ok(format!("DEB _gpgorigin signature by {fpr}")),
            Err(SignError::BadSignature(e)) => {
                let issuers = open()
                    .map_err(|e| e.to_string())
                    .and_then(|mut f| sign::deb::signature_issuers(&mut f).map_err(|e| e.to_string()));
                self.classify(issuers, e, "the DEB")
            }
            Err(e) => Verdict::Bad(format!("not a valid DEB: {e}")),
        }
    }

    fn cleartext(&self, path: &Path) -> Verdict {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) => return Verdict::Bad(format!("cannot read it: {e}")),
        };
        match self.checker.cleartext(&bytes) {
            Ok((fpr, _)) => Verdict::Ok(format!("cleartext signature by {fpr}")),
            Err(CheckError::Missing) => Verdict::Unsigned("not a cleartext-signed message".into()),
            Err(e) => self.classify(Ok(check::signature_issuers(&bytes)), e.to_string(), "it"),
        }
    }

    fn detached(&self, data: &Path, sig: &Path) -> Verdict {
        let (sig_bytes, file) = match (fs::read(sig), File::open(data)) {
            (Ok(s), Ok(f)) => (s, f),
            (Err(e), _) | (_, Err(e)) => return Verdict::Bad(format!("cannot read it or its signature: {e}")),
        };
        let name = sig.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match self.checker.detached(&sig_bytes, BufReader::new(file)) {
            Ok(fpr) => Verdict::Ok(format!("detached signature {name} by {fpr}")),
            Err(e) => self.classify(Ok(check::signature_issuers(&sig_bytes)), e.to_string(), &name),
        }
    }

    fn sha256sums(&self, path: &Path, asc: &Path) -> Verdict {
        let v = self.detached(path, asc);
        if !v.passed() {
            return v;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let list = match fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| checksums::parse(&t).map_err(|e| e.to_string()))
        {
            Ok(l) => l,
            Err(e) => return Verdict::Bad(format!("not a SHA256SUMS file: {e}")),
        };
        for e in &list {
            match sign::digest_file(&dir.join(&e.name)) {
                Ok((sha, _)) if sha == e.sha256 => {}
                Ok(_) => return Verdict::Bad(format!("listed file {} does not match its SHA-256", e.name)),
                Err(err) => return Verdict::Bad(format!("listed file {}: {err}", e.name)),
            }
        }
        Verdict::Ok(format!("{}; {} listed file(s) match", v.detail(), list.len()))
    }

    /// A `Release` with no `Release.gpg`: it must be the text `InRelease` signs (apt reads
    /// `InRelease` first, but a tool that reads `Release` must not get other bytes).
    fn release_beside_inrelease(&self, release: &Path, inrelease: &Path) -> Verdict {
        let (Ok(text), Ok(signed)) = (fs::read(release), fs::read(inrelease)) else {
            return Verdict::Bad("cannot read it or InRelease".into());
        };
        match self.checker.cleartext(&signed) {
            Ok((fpr, inner)) if normalize(&inner) == normalize(&text) => {
                Verdict::Ok(format!("the text InRelease signs (cleartext signature by {fpr})"))
            }
            Ok(_) => Verdict::Bad("differs from the text InRelease signs, and has no Release.gpg".into()),
            Err(_) => Verdict::Unsigned("no Release.gpg, and InRelease does not verify".into()),
        }
    }

    /// Checks every signed thing under `root`.
    pub fn check_tree(&self, root: &Path) -> std::io::Result<Report> {
        let mut report = Report::default();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let mut entries: Vec<_> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
            entries.sort_by_key(|e| e.file_name());
            let names: BTreeSet<String> =
                entries.iter().filter_map(|e| e.file_name().to_str().map(str::to_owned)).collect();
            for e in entries {
                let path = e.path();
                let kind = e.file_type()?;
                if kind.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                    // It could be anything, a package included: never pass what cannot be named.
                    let verdict = Verdict::Bad("a file name that is not UTF-8: the gate cannot tell what it is".into());
                    report.findings.push(Finding { path: rel, verdict });
                    continue;
                };
                if !kind.is_file() {
                    let what = if kind.is_symlink() { "a symbolic link" } else { "not a regular file" };
                    let verdict = Verdict::Bad(format!("{what}: the gate checks regular files only"));
                    report.findings.push(Finding { path: rel, verdict });
                    continue;
                }
                let has = |suffix: &str| names.contains(&format!("{name}{suffix}"));
                let beside = |suffix: &str| dir.join(format!("{name}{suffix}"));
                let verdict = if name.ends_with(".rpm") {
                    Some(self.rpm(&path))
                } else if name.ends_with(".deb") {
                    Some(self.deb(&path))
                } else if name == "InRelease" {
                    Some(self.cleartext(&path))
                } else if name == "Release" {
                    if names.contains("InRelease") && !has(".gpg") {
                        Some(self.release_beside_inrelease(&path, &dir.join("InRelease")))
                    } else if has(".gpg") {
                        Some(self.detached(&path, &beside(".gpg")))
                    } else {
                        Some(Verdict::Unsigned("no InRelease or Release.gpg beside it".into()))
                    }
                } else if name == "repomd.xml" {
                    Some(if has(".asc") {
                        self.detached(&path, &beside(".asc"))
                    } else {
                        Verdict::Unsigned("no repomd.xml.asc beside it".into())
                    })
                } else if name == SHA256SUMS {
                    Some(if has(".asc") {
                        self.sha256sums(&path, &beside(".asc"))
                    } else {
                        Verdict::Unsigned("no SHA256SUMS.asc beside it".into())
                    })
                } else if let Some(stem) = name.strip_suffix(".asc").or_else(|| name.strip_suffix(".gpg")) {
                    // A signature: checked with the file it signs (above or below).
                    if !names.contains(stem) {
                        report.skipped += 1;
                    }
                    None
                } else if has(".asc") {
                    Some(self.detached(&path, &beside(".asc")))
                } else if has(".gpg") {
                    Some(self.detached(&path, &beside(".gpg")))
                } else {
                    report.skipped += 1;
                    None
                };
                if let Some(verdict) = verdict {
                    report.findings.push(Finding { path: rel, verdict });
                }
            }
        }
        report.findings.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(report)
    }
}
