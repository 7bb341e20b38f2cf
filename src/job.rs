//! The job message (contract v1): serde types that cannot hold an invalid value.
//! Parsing is the validation; a job that parses is well-formed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sign::{self, Format};
use crate::vault::KeyName;

/// Most artifacts one job may carry.
pub const MAX_ARTIFACTS: usize = 1000;
/// Largest job message (a job of MAX_ARTIFACTS artifacts with long keys fits in ~1.2 MiB).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Why a message is not a job.
#[derive(Debug, thiserror::Error)]
#[error("invalid job: {0}")]
pub struct JobError(pub String);

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The value as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s)?;
                Ok($name(s))
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// 1–128 of `[A-Za-z0-9._-]`: the idempotency key.
    JobId,
    |s| {
        if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            Ok(())
        } else {
            Err(format!("job_id {s:?} must be 1-128 of A-Z a-z 0-9 . _ -"))
        }
    }
);

string_newtype!(
    /// An S3 bucket name (3–63 of `[a-z0-9.-]`, starting and ending with a letter or digit).
    BucketName,
    |s| {
        let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if (3..=63).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && edge(s.bytes().next())
            && edge(s.bytes().last())
        {
            Ok(())
        } else {
            Err(format!("bucket {s:?} is not a valid bucket name"))
        }
    }
);

fn clean_path(s: &str, what: &str) -> Result<(), String> {
    if s.len() > 1024 || s.starts_with('/') || s.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!(
            "{what} {s:?} must be at most 1024 characters, relative, without control characters or backslashes"
        ));
    }
    if s.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(format!("{what} {s:?} must not contain . or .. segments"));
    }
    Ok(())
}

string_newtype!(
    /// An object key whose base name can name an output file.
    ObjectKey,
    |s| {
        clean_path(s, "key")?;
        let base = s.rsplit('/').next().unwrap_or_default();
        sign::check_output_name(base).map_err(|_| format!("key {s:?} must end in a usable file name"))
    }
);

string_newtype!(
    /// An output prefix: empty, or ending with `/`.
    Prefix,
    |s| {
        clean_path(s, "prefix")?;
        if s.is_empty() || s.ends_with('/') { Ok(()) } else { Err(format!("prefix {s:?} must be empty or end with '/'")) }
    }
);

string_newtype!(
    /// A lowercase hex SHA-256.
    Sha256Hex,
    |s| {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(())
        } else {
            Err(format!("sha256 {s:?} must be 64 lowercase hex digits"))
        }
    }
);

/// One object to sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    pub bucket: BucketName,
    pub key: ObjectKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Hex>,
    #[serde(default)]
    pub format: Format,
}

impl ArtifactSpec {
    /// The output base name.
    pub fn name(&self) -> &str {
        self.key.as_str().rsplit('/').next().unwrap_or_default()
    }

    /// `s3://bucket/key`.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// Where outputs go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub bucket: BucketName,
    #[serde(default = "empty_prefix")]
    pub prefix: Prefix,
}

fn empty_prefix() -> Prefix {
    Prefix(String::new())
}

impl OutputSpec {
    /// The object key of output file `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }
}

/// A sign job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub job_id: JobId,
    pub key: KeyName,
    pub artifacts: Vec<ArtifactSpec>,
    pub output: OutputSpec,
    /// Remove every other signature of an RPM instead of keeping it beside signet's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_signatures: bool,
}

impl Job {
    /// Parses and validates a job message body.
    pub fn parse(body: &[u8]) -> Result<Job, JobError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(JobError(format!("message is {} bytes; the limit is {MAX_MESSAGE_BYTES}", body.len())));
        }
        let job: Job = serde_json::from_slice(body).map_err(|e| JobError(e.to_string()))?;
        if job.artifacts.is_empty() {
            return Err(JobError("artifacts must not be empty".into()));
        }
        if job.artifacts.len() > MAX_ARTIFACTS {
            return Err(JobError(format!("at most {MAX_ARTIFACTS} artifacts per job")));
        }
        Ok(job)
    }

    /// Best effort: the job id of a message that did not parse, for its failure event.
    pub fn salvage_id(body: &[u8], message_id: Option<&str>) -> Option<JobId> {
        let from_body = (body.len() <= MAX_MESSAGE_BYTES)
            .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
            .flatten()
            .and_then(|v| v.get("job_id").and_then(|j| j.as_str()).and_then(|s| s.parse().ok()));
        from_body.or_else(|| message_id.and_then(|m| m.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(v: serde_json::Value) -> Result<Job, JobError> {
        Job::parse(v.to_string().as_bytes())
    }

    #[test]
    fn parses_the_design_example() {
        let j = job(serde_json::json!({
            "job_id": "build-4711", "key": "release",
            "artifacts": [{"bucket": "incoming", "key": "builds/4711/hello-1.0-1.noarch.rpm", "format": "auto"}],
            "output": {"bucket": "signed", "prefix": "releases/4711/"}
        }))
        .unwrap();
        assert_eq!(j.artifacts[0].name(), "hello-1.0-1.noarch.rpm");
        assert_eq!(j.output.key("SHA256SUMS"), "releases/4711/SHA256SUMS");
        assert!(!j.replace_signatures, "other signatures are kept unless the job says so");
        // Written only when set, so jobs without it read (and serialize) as before.
        assert!(!serde_json::to_string(&j).unwrap().contains("replace_signatures"));
        let j = job(serde_json::json!({
            "job_id": "j", "key": "release", "replace_signatures": true,
            "artifacts": [{"bucket": "incoming", "key": "a.rpm"}],
            "output": {"bucket": "signed", "prefix": ""}
        }))
        .unwrap();
        assert!(j.replace_signatures);
        assert!(
            job(serde_json::json!({
                "job_id": "j", "key": "release", "replace_signatures": "yes",
                "artifacts": [{"bucket": "incoming", "key": "a.rpm"}],
                "output": {"bucket": "signed", "prefix": ""}
            }))
            .is_err()
        );
    }

    #[test]
    fn rejects_what_cannot_be_signed_safely() {
        let base = serde_json::json!({
            "job_id": "j", "key": "k",
            "artifacts": [{"bucket": "incoming", "key": "a.rpm"}],
            "output": {"bucket": "signed", "prefix": "p/"}
        });
        let bad = |path: &[&str], v: serde_json::Value| {
            let mut j = base.clone();
            let mut cur = &mut j;
            for p in &path[..path.len() - 1] {
                cur = if let Ok(i) = p.parse::<usize>() { &mut cur[i] } else { &mut cur[*p] };
            }
            cur[path[path.len() - 1]] = v;
            assert!(job(j.clone()).is_err(), "accepted {j}");
        };
        bad(&["job_id"], "a/b".into());
        bad(&["job_id"], "".into());
        bad(&["key"], "../etc".into());
        bad(&["artifacts"], serde_json::json!([]));
        bad(&["artifacts", "0", "bucket"], "Not_A_Bucket".into());
        bad(&["artifacts", "0", "key"], "dir/".into());
        bad(&["artifacts", "0", "key"], "a/../../b.rpm".into());
        bad(&["artifacts", "0", "key"], "SHA256SUMS".into());
        bad(&["artifacts", "0", "sha256"], "ABC".into());
        bad(&["artifacts", "0", "format"], "zip".into());
        bad(&["artifacts", "0", "color"], "red".into());
        bad(&["output", "prefix"], "no-slash".into());
        bad(&["output", "prefix"], "/abs/".into());
        assert!(job(base).is_ok());
        assert!(Job::parse(b"not json").is_err());
    }
}
