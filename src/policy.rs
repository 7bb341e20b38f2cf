//! Who may sign with which key: the `SIGNET_POLICY` file.
//!
//! ```toml
//! [keys.stable]
//! producers = ["ci-stable"]                  # AMQP user_id values (RabbitMQ checks them)
//! sources   = ["incoming/stable/*"]          # BUCKET/KEY patterns artifacts may come from
//! outputs   = ["signed/stable/*"]            # BUCKET/PREFIX patterns outputs may go to
//! formats   = ["rpm", "deb"]                 # what this key may produce
//! # allow_mixed_formats = true               # needed to list "detached" with package formats
//! approvers = ["alice", "bob", "carol"]      # optional: people who must approve each job
//! approvals = 2                              # distinct approvers needed (never the producer)
//! approval_ttl = "72h"                       # an unapproved request expires (default 72h)
//! ```
//!
//! Deny by default: a job is allowed only if its key has a section, its `user_id` is one of
//! that key's producers, every artifact matches a source pattern, the output location
//! matches an output pattern, and every artifact's format is listed. In patterns `*` matches
//! any run of characters (`/` included), `?` one character, and `[...]` a class.
//!
//! A key's `formats` bound what its signatures can be taken for. Every signer refuses data
//! that another format would accept as its signed data (`sign::content`), so an `rpm` key
//! signs only RPM headers, a `deb` key only DEB member sets, an `apt-release` key only
//! Release files, and a `detached` key none of those. A key that lists `detached` beside a
//! package format is refused unless `allow_mixed_formats = true`: with it, those content
//! checks are the only thing between a detached signature and a package signature.
//!
//! A key with `approvals` signs nothing on a producer's say-so alone: a job for it becomes a
//! pending request, and is signed once `approvals` distinct `approvers` (broker users, never
//! the job's producer) have approved exactly its input digests (`worker::approval`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::job::Job;
use crate::sign::Format;
use crate::vault::KeyName;

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("policy {path}: {message}")]
pub struct PolicyError {
    pub path: String,
    pub message: String,
}

/// Why a job was denied (safe to show the producer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    keys: BTreeMap<String, RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    producers: Vec<String>,
    sources: Vec<String>,
    outputs: Vec<String>,
    formats: Vec<Format>,
    /// Lets one key make detached signatures and package signatures (see the module doc).
    #[serde(default)]
    allow_mixed_formats: bool,
    /// Broker users who may approve (or reject) this key's jobs.
    #[serde(default)]
    approvers: Vec<String>,
    /// Distinct approvals a job needs before it is signed (0: none, sign at once).
    #[serde(default)]
    approvals: usize,
    /// How long a request waits for its approvals (humantime, default 72h).
    #[serde(default)]
    approval_ttl: Option<String>,
}

#[derive(Debug)]
struct Rule {
    producers: HashSet<String>,
    sources: GlobSet,
    outputs: GlobSet,
    formats: Vec<Format>,
    approval: Option<ApprovalRule>,
}

/// What a key's jobs need before they are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    /// Who may approve or reject (broker users).
    pub approvers: Vec<String>,
    /// Distinct approvers needed.
    pub approvals: usize,
    /// How long a request waits before it expires.
    pub ttl: std::time::Duration,
}

/// Default `approval_ttl`.
pub const DEFAULT_APPROVAL_TTL: std::time::Duration = std::time::Duration::from_secs(72 * 3600);
/// Longest `approval_ttl` (RabbitMQ's message TTL limit is far above; this bounds the wait).
pub const MAX_APPROVAL_TTL: std::time::Duration = std::time::Duration::from_secs(90 * 24 * 3600);

/// A broker user name as the policy may list it: no wildcards, no separators, so that it
/// can name an object (`approvals/USER.json`) and never reads as a pattern.
fn user_name(u: &str) -> bool {
    !u.is_empty() && u.len() <= 128 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

fn approval_rule(name: &str, r: &RuleFile) -> Result<Option<ApprovalRule>, String> {
    if r.approvals == 0 {
        if !r.approvers.is_empty() || r.approval_ttl.is_some() {
            return Err(format!(
                "keys.{name}: approvers and approval_ttl need approvals = N (how many distinct approvers must approve)"
            ));
        }
        return Ok(None);
    }
    if let Some(a) = r.approvers.iter().find(|a| !user_name(a)) {
        return Err(format!("keys.{name}.approvers: {a:?} is not a broker user name (A-Z a-z 0-9 . _ @ + -)"));
    }
    let distinct: HashSet<&String> = r.approvers.iter().collect();
    if distinct.len() != r.approvers.len() {
        return Err(format!("keys.{name}.approvers: a name is listed twice"));
    }
    if r.approvals > r.approvers.len() {
        return Err(format!(
            "keys.{name}.approvals: {} approvals needed but only {} approvers listed",
            r.approvals,
            r.approvers.len()
        ));
    }
    if let Some(p) = r.producers.iter().find(|p| distinct.contains(p)) {
        return Err(format!(
            "keys.{name}: {p:?} is both a producer and an approver; a producer may never approve its own jobs"
        ));
    }
    let ttl = match &r.approval_ttl {
        None => DEFAULT_APPROVAL_TTL,
        Some(t) => humantime::parse_duration(t).map_err(|e| format!("keys.{name}.approval_ttl: {t:?}: {e}"))?,
    };
    if ttl < std::time::Duration::from_secs(1) || ttl > MAX_APPROVAL_TTL {
        return Err(format!("keys.{name}.approval_ttl: must be between 1s and 90 days"));
    }
    Ok(Some(ApprovalRule { approvers: r.approvers.clone(), approvals: r.approvals, ttl }))
}

/// A loaded policy.
#[derive(Debug)]
pub struct Policy {
    keys: HashMap<KeyName, Rule>,
}

fn globs(patterns: &[String], what: &str, key: &str) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        if !p.contains('/') {
            return Err(format!("keys.{key}.{what}: {p:?} must be BUCKET/PATTERN"));
        }
        b.add(Glob::new(p).map_err(|e| format!("keys.{key}.{what}: {p:?}: {e}"))?);
    }
    b.build().map_err(|e| format!("keys.{key}.{what}: {e}"))
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let fail = |message: String| PolicyError { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        Policy::parse(&text).map_err(fail)
    }

    /// Parses policy text.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for (name, r) in file.keys {
            let key: KeyName = name.parse()?;
            if r.formats.contains(&Format::Auto) {
                return Err(format!("keys.{name}.formats: list what may be produced; \"auto\" is not a format"));
            }
            let package = r.formats.iter().any(|f| matches!(f, Format::Rpm | Format::Deb | Format::AptRelease));
            if r.formats.contains(&Format::Detached) && package && !r.allow_mixed_formats {
                return Err(format!(
                    "keys.{name}.formats: one key for \"detached\" and package formats ({}) lets a producer turn a \
                     detached signature into a package signature if signet's content checks ever miss a case; use \
                     two keys, or set allow_mixed_formats = true to accept that",
                    r.formats.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ")
                ));
            }
            if let Some(p) = r.producers.iter().find(|p| p.is_empty() || p.contains('*')) {
                return Err(format!("keys.{name}.producers: {p:?} is not a user name (no wildcards)"));
            }
            let approval = approval_rule(&name, &r)?;
            let rule = Rule {
                approval,
                producers: r.producers.into_iter().collect(),
                sources: globs(&r.sources, "sources", &name)?,
                outputs: globs(&r.outputs, "outputs", &name)?,
                formats: r.formats,
            };
            keys.insert(key, rule);
        }
        Ok(Policy { keys })
    }

    /// The key names the policy mentions.
    pub fn keys(&self) -> impl Iterator<Item = &KeyName> {
        self.keys.keys()
    }

    fn rule(&self, job: &Job, producer: Option<&str>) -> Result<&Rule, Denied> {
        let producer = producer.filter(|p| !p.is_empty()).ok_or_else(|| {
            Denied("the job message has no user_id property: the producer cannot be identified".into())
        })?;
        let rule = self
            .keys
            .get(&job.key)
            .filter(|r| r.producers.contains(producer))
            .ok_or_else(|| Denied(format!("producer {producer:?} may not sign with key {:?}", job.key.as_str())))?;
        Ok(rule)
    }

    /// What the jobs of `key` need before they are signed (`None`: nothing).
    pub fn approval(&self, key: &KeyName) -> Option<&ApprovalRule> {
        self.keys.get(key).and_then(|r| r.approval.as_ref())
    }

    /// Whether any key needs approvals (the worker then needs an approvals location).
    pub fn needs_approvals(&self) -> bool {
        self.keys.values().any(|r| r.approval.is_some())
    }

    /// Every distinct `approval_ttl` of the policy (the worker arms one timer queue each).
    pub fn approval_ttls(&self) -> Vec<std::time::Duration> {
        let mut v: Vec<_> = self.keys.values().filter_map(|r| r.approval.as_ref().map(|a| a.ttl)).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Checks everything known before the artifacts are fetched: producer, key, sources,
    /// output location, and the formats the job names explicitly.
    pub fn authorize(&self, job: &Job, producer: Option<&str>) -> Result<(), Denied> {
        let rule = self.rule(job, producer)?;
        let key = job.key.as_str();
        for a in &job.artifacts {
            if !rule.sources.is_match(format!("{}/{}", a.bucket, a.key)) {
                return Err(Denied(format!("key {key:?} may not sign artifacts from {}", a.uri())));
            }
        }
        let out = format!("{}/{}", job.output.bucket, job.output.prefix);
        if !rule.outputs.is_match(&out) {
            return Err(Denied(format!("key {key:?} may not write to s3://{out}")));
        }
        for a in &job.artifacts {
            if a.format != Format::Auto {
                self.authorize_format(job, producer, a.format)?;
            }
        }
        Ok(())
    }

    /// Checks one artifact's format (after detection, for `auto`).
    pub fn authorize_format(&self, job: &Job, producer: Option<&str>, format: Format) -> Result<(), Denied> {
        let rule = self.rule(job, producer)?;
        if rule.formats.contains(&format) {
            Ok(())
        } else {
            Err(Denied(format!("key {:?} may not produce {format} signatures", job.key.as_str())))
        }
    }
}

/// The worker's authorization: a policy, or (development only) none.
#[derive(Debug)]
pub enum Authorizer {
    Policy(Policy),
    /// Every producer may use every key: `--insecure-no-policy`.
    AllowAll,
}

impl Authorizer {
    pub fn authorize(&self, job: &Job, producer: Option<&str>) -> Result<(), Denied> {
        match self {
            Authorizer::Policy(p) => p.authorize(job, producer),
            Authorizer::AllowAll => Ok(()),
        }
    }

    pub fn authorize_format(&self, job: &Job, producer: Option<&str>, format: Format) -> Result<(), Denied> {
        match self {
            Authorizer::Policy(p) => p.authorize_format(job, producer, format),
            Authorizer::AllowAll => Ok(()),
        }
    }

    /// Every distinct `approval_ttl` of the policy.
    pub fn approval_ttls(&self) -> Vec<std::time::Duration> {
        match self {
            Authorizer::Policy(p) => p.approval_ttls(),
            Authorizer::AllowAll => Vec::new(),
        }
    }

    /// What the jobs of `key` need before they are signed (never anything without a policy).
    pub fn approval(&self, key: &KeyName) -> Option<&ApprovalRule> {
        match self {
            Authorizer::Policy(p) => p.approval(key),
            Authorizer::AllowAll => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
        [keys.stable]
        producers = ["ci-stable"]
        sources = ["incoming/stable/*"]
        outputs = ["signed/stable/*"]
        formats = ["rpm", "detached"]
        allow_mixed_formats = true

        [keys.testing]
        producers = ["ci-testing"]
        sources = ["incoming/*"]
        outputs = ["signed/testing/*"]
        formats = ["rpm"]
    "#;

    fn job(key: &str, src: &str, out_prefix: &str) -> Job {
        let (bucket, k) = src.split_once('/').unwrap();
        Job::parse(
            serde_json::json!({
                "job_id": "j1", "key": key,
                "artifacts": [{"bucket": bucket, "key": k}],
                "output": {"bucket": "signed", "prefix": out_prefix}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn detached_beside_package_formats_needs_the_opt_in() {
        let rule = |formats: &str, extra: &str| {
            format!(
                "[keys.k]\nproducers = [\"p\"]\nsources = [\"b/*\"]\noutputs = [\"o/*\"]\nformats = {formats}\n{extra}"
            )
        };
        for mixed in [r#"["rpm", "detached"]"#, r#"["detached", "deb"]"#, r#"["apt-release", "detached"]"#] {
            let err = Policy::parse(&rule(mixed, "")).unwrap_err();
            assert!(err.contains("keys.k.formats") && err.contains("allow_mixed_formats"), "{err}");
            assert!(Policy::parse(&rule(mixed, "allow_mixed_formats = true")).is_ok());
        }
        for alone in [r#"["detached"]"#, r#"["rpm", "deb", "apt-release"]"#] {
            assert!(Policy::parse(&rule(alone, "")).is_ok(), "{alone}");
        }
    }

    #[test]
    fn approval_sections_are_checked() {
        let rule = |extra: &str| {
            format!(
                "[keys.release]\nproducers = [\"ci-release\"]\nsources = [\"b/*\"]\noutputs = [\"o/*\"]\n\
                 formats = [\"rpm\"]\n{extra}"
            )
        };
        let p =
            Policy::parse(&rule("approvers = [\"alice\", \"bob\", \"carol\"]\napprovals = 2\napproval_ttl = \"72h\""))
                .unwrap();
        let a = p.approval(&"release".parse().unwrap()).expect("approval rule");
        assert_eq!((a.approvals, a.ttl.as_secs()), (2, 72 * 3600));
        assert!(p.needs_approvals());
        let default_ttl = Policy::parse(&rule("approvers = [\"alice\"]\napprovals = 1")).unwrap();
        assert_eq!(default_ttl.approval(&"release".parse().unwrap()).unwrap().ttl, DEFAULT_APPROVAL_TTL);
        assert!(Policy::parse(&rule("")).unwrap().approval(&"release".parse().unwrap()).is_none());
        for (bad, says) in [
            ("approvers = [\"alice\"]\napprovals = 2", "only 1 approvers"),
            ("approvers = [\"alice\", \"ci-release\"]\napprovals = 1", "both a producer and an approver"),
            ("approvers = [\"alice\"]", "need approvals"),
            ("approval_ttl = \"1h\"", "need approvals"),
            ("approvers = [\"alice\", \"alice\"]\napprovals = 1", "listed twice"),
            ("approvers = [\"al*\"]\napprovals = 1", "not a broker user name"),
            ("approvers = [\"alice\"]\napprovals = 1\napproval_ttl = \"soon\"", "approval_ttl"),
            ("approvers = [\"alice\"]\napprovals = 1\napproval_ttl = \"0s\"", "between 1s"),
            ("approvers = [\"alice\"]\napprovals = 1\napprovers_needed = 1", "unknown field"),
        ] {
            let err = Policy::parse(&rule(bad)).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn allows_only_what_is_listed() {
        let p = Policy::parse(POLICY).unwrap();
        let ok = job("stable", "incoming/stable/a.rpm", "stable/1.0/");
        assert_eq!(p.authorize(&ok, Some("ci-stable")), Ok(()));
        assert!(p.authorize(&ok, Some("ci-testing")).is_err(), "other producer");
        assert!(p.authorize(&ok, None).is_err(), "no user_id");
        assert!(p.authorize(&ok, Some("")).is_err(), "empty user_id");
        assert!(p.authorize(&job("stable", "incoming/testing/a.rpm", "stable/1.0/"), Some("ci-stable")).is_err());
        assert!(p.authorize(&job("stable", "incoming/stable/a.rpm", "testing/"), Some("ci-stable")).is_err());
        assert!(p.authorize(&job("stable", "incoming/stable/a.rpm", ""), Some("ci-stable")).is_err());
        assert!(p.authorize(&job("other", "incoming/stable/a.rpm", "stable/"), Some("ci-stable")).is_err());
        assert_eq!(p.authorize_format(&ok, Some("ci-stable"), Format::Rpm), Ok(()));
        assert!(p.authorize_format(&ok, Some("ci-stable"), Format::Deb).is_err());
    }

    #[test]
    fn rejects_policies_that_would_allow_more_than_they_say() {
        let base = "[keys.k]\nproducers = [\"a\"]\nsources = [\"b/*\"]\noutputs = [\"b/*\"]\n";
        assert!(Policy::parse(&format!("{base}formats = [\"auto\"]")).is_err());
        assert!(Policy::parse(base).is_err(), "formats is required");
        assert!(Policy::parse(&format!("{base}formats = []\nextra = 1")).is_err(), "unknown field");
        assert!(
            Policy::parse(&base.replace("\"a\"", "\"*\"").replace("]\nsources", "]\nformats = []\nsources")).is_err()
        );
        assert!(Policy::parse(&format!("{base}formats = []").replace("b/*\"]\nout", "*\"]\nout")).is_err());
        assert!(Policy::parse(&format!("{base}formats = []")).is_ok());
    }
}
