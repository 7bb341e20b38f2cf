//! `manifest.json`: what one signing run consumed and produced. Written (and signed) last,
//! so its presence marks a complete output set.

use serde::{Deserialize, Serialize};

/// A file with its digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileDigest {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// One input artifact and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArtifactRecord {
    /// Where it came from (`s3://bucket/key` or a local path).
    pub source: String,
    pub format: super::Format,
    pub input: FileDigest,
    pub outputs: Vec<FileDigest>,
    /// RPM `name-version-release.arch`, when it is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub package: Option<String>,
    /// Issuers of signatures that signing replaced (RPM header, DEB `_gpgorigin`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub replaced_signatures: Vec<String>,
    /// Issuers of the other signatures an RPM still carries beside signet's.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub kept_signatures: Vec<String>,
    /// The RPM already carried a good signature by this key and was left as it was.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub already_signed: bool,
}

/// The key that signed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    pub name: String,
    pub fingerprint: String,
    /// The (sub)key that made the signatures, when not the primary.
    pub signer_fingerprint: String,
}

/// The signer software.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignerRecord {
    pub name: String,
    pub version: String,
}

/// The manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub manifest_version: u32,
    pub job_id: String,
    pub key: KeyRecord,
    pub signer: SignerRecord,
    /// Signing time (RFC 3339), the creation time of every signature.
    pub signed_at: String,
    pub artifacts: Vec<ArtifactRecord>,
    pub sha256sums: FileDigest,
    /// The approvers whose approvals of these inputs' digests this signing run was made on
    /// (keys with `approvals` in the policy); absent otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub approvals: Vec<String>,
}
