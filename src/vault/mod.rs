//! The vault: signing keys stored sealed (envelope-encrypted) and unsealed only in memory.
//!
//! A [`Vault`] joins a [`SealedStore`] (where sealed records live: a local directory or an
//! S3 bucket) with a [`seal::KeyWrapper`] (what makes and wraps their data keys: a
//! passphrase-derived key, or AWS KMS). Each key name may hold several keys (rotation); one
//! of them is active and signs, the others stay for verification.
//!
//! `SIGNET_VAULT` URIs:
//! - `dir:PATH` (or a plain path): records under a local directory;
//! - `s3://BUCKET[/PREFIX]`: records in S3;
//! - either followed by `?kms-key-id=ID` (a KMS key id, ARN or `alias/NAME`): new keys are
//!   sealed with KMS data keys instead of the passphrase.
//!
//! Unsealing follows each record: passphrase-sealed records need the passphrase file,
//! KMS-sealed ones a KMS that grants `Decrypt` on the key the record names.

pub mod aws;
pub mod dir;
pub mod kms;
mod remote;
pub mod s3;
pub mod seal;

use std::sync::Arc;

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::hsm::Token;
use crate::key::{self, Algo, KeyError, SigningKey};
use crate::kms::Kms;
use aws::{AwsEndpoints, AwsRuntime};
use kms::KmsWrapper;
use seal::{KekInfo, KeyWrapper, Passphrase, PassphraseWrapper, SealContext, SealedKey, SecretKey32};

/// Vault errors. Messages name the key or path, never secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    #[error("key {0:?} already exists in the vault")]
    Exists(String),
    #[error("the vault passphrase does not unseal key {key} (wrong SIGNET_VAULT_PASSPHRASE_FILE?)")]
    WrongPassphrase { key: String },
    #[error("vault configuration: {0}")]
    Config(String),
    /// KMS refused to make or unwrap a data key: retrying will not help.
    #[error("KMS refused {op} for key {key} (KMS key {kms_key}): {message}")]
    KmsDenied { key: String, kms_key: String, op: String, message: String },
    /// KMS or the vault's store did not answer properly: worth retrying.
    #[error("vault backend unavailable: {0}")]
    Unavailable(String),
    #[error("vault record corrupt: {0}")]
    Corrupt(String),
    #[error("vault I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The key has been revoked (`signet keys revoke`): nothing is signed with it any more.
    #[error("key {key} is revoked ({reason})")]
    Revoked { key: String, reason: String },
    /// The KMS holding the key did not answer, after its own retries: the job is retried
    /// later (not in place again).
    #[error("vault backend unavailable: {0}")]
    SignerUnavailable(String),
    /// The key material is already in the vault under another name: a key has one name,
    /// so that revoking it covers every use of it.
    #[error("this key is already in the vault as {existing}: one key, one name (revoking it must cover every use)")]
    Duplicate { existing: String },
    /// The PKCS#11 token or the KMS holding the key refused (wrong PIN, key missing,
    /// disabled or not usable, access denied): retrying will not help.
    #[error("key {key}: {message}")]
    SignerRefused { key: String, message: String },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A key name: 1–64 of `[A-Za-z0-9._-]`, not starting with a dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyName(String);

impl KeyName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(KeyName(s))
        } else {
            Err(format!("invalid key name {s:?}: use 1-64 of A-Z a-z 0-9 . _ -, not starting with a dot"))
        }
    }
}

impl std::str::FromStr for KeyName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KeyName::try_from(s.to_owned())
    }
}

impl From<KeyName> for String {
    fn from(k: KeyName) -> String {
        k.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where sealed records are kept.
pub trait SealedStore: Send + Sync {
    /// Whether the store has been made at all (a local vault directory is made by the first
    /// key stored in it); one that has not holds no keys.
    fn exists(&self) -> bool {
        true
    }
    /// All key names.
    fn names(&self) -> Result<Vec<KeyName>, VaultError>;
    /// Every sealed record of `name` (empty if none).
    fn records(&self, name: &KeyName) -> Result<Vec<SealedKey>, VaultError>;
    /// The record of key `fingerprint` of `name`, if there is one. Stores override this to
    /// read just that record.
    fn record(&self, name: &KeyName, fingerprint: &str) -> Result<Option<SealedKey>, VaultError> {
        Ok(self.records(name)?.into_iter().find(|r| r.fingerprint == fingerprint))
    }
    /// The fingerprint of the active key of `name`, if any.
    fn active(&self, name: &KeyName) -> Result<Option<String>, VaultError>;
    /// Stores a new record; never overwrites one.
    fn put(&self, record: &SealedKey) -> Result<(), VaultError>;
    /// Makes `fingerprint` the active key of `name`.
    fn set_active(&self, name: &KeyName, fingerprint: &str) -> Result<(), VaultError>;
    /// The armored revocation signature of key `fingerprint` of `name`, if it is revoked.
    fn revocation(&self, name: &KeyName, fingerprint: &str) -> Result<Option<String>, VaultError>;
    /// Stores a revocation; never overwrites one.
    fn put_revocation(&self, name: &KeyName, fingerprint: &str, armored: &str) -> Result<(), VaultError>;
}

/// Why a key is revoked (`signet keys revoke --reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RevocationReason {
    /// A new key replaces it.
    Superseded,
    /// Its secret may be known to someone else.
    Compromised,
    /// It is no longer used.
    Retired,
}

/// What `keys list` shows of a key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub fingerprint: String,
    pub algo: String,
    pub created: String,
    pub active: bool,
    /// Where the secret is: `vault` (sealed here), `pkcs11:TOKEN` or `kms:ARN`.
    pub home: String,
    /// Revoked by `keys revoke`: never signs again.
    pub revoked: bool,
}

/// Sealed keys plus the means to unseal them.
pub struct Vault {
    store: Box<dyn SealedStore>,
    wrapper: Option<Box<dyn KeyWrapper>>,
    /// The PKCS#11 token (`SIGNET_PKCS11_*`), opened on first use.
    token: std::sync::Mutex<Option<Arc<Token>>>,
    /// AWS KMS for keys that sign there, made on first use.
    kms_signer: std::sync::Mutex<Option<Arc<Kms>>>,
    /// The AWS runtime of the store and KMS, if any has been needed yet.
    aws: std::sync::Mutex<Option<Arc<AwsRuntime>>>,
    endpoints: AwsEndpoints,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault").field("unsealer", &self.wrapper.is_some()).finish_non_exhaustive()
    }
}

/// A parsed `SIGNET_VAULT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultLocation {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// Parses a `SIGNET_VAULT` URI into where records live and the KMS key to seal with.
pub fn parse_uri(uri: &str) -> Result<(VaultLocation, Option<String>), VaultError> {
    let bad = |why: &str| {
        VaultError::Config(format!(
            "unsupported SIGNET_VAULT {uri:?}: {why} (use dir:PATH or s3://BUCKET/PREFIX, optionally \
             followed by ?kms-key-id=ID)"
        ))
    };
    let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut kms_key = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("kms-key-id", v)) if !v.is_empty() => kms_key = Some(v.to_owned()),
            _ => return Err(bad(&format!("unknown parameter {pair:?}"))),
        }
    }
    let location = if let Some(rest) = base.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        VaultLocation::S3 { bucket: bucket.to_owned(), prefix: prefix.to_owned() }
    } else if base.contains("://") {
        return Err(bad("unknown scheme"));
    } else {
        let path = base.strip_prefix("dir:").unwrap_or(base);
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        VaultLocation::Dir(PathBuf::from(path))
    };
    Ok((location, kms_key))
}

/// The passphrase and/or KMS, each used for the records it sealed.
struct Wrappers {
    passphrase: Option<PassphraseWrapper>,
    kms: Option<KmsWrapper>,
    seal_with_kms: bool,
}

impl Wrappers {
    fn no_passphrase(what: &str) -> VaultError {
        VaultError::Config(format!("key {what} is sealed with the passphrase: set SIGNET_VAULT_PASSPHRASE_FILE"))
    }
}

impl KeyWrapper for Wrappers {
    fn new_data_key(&self, ctx: &SealContext) -> Result<(SecretKey32, KekInfo, Vec<u8>), VaultError> {
        match (&self.kms, &self.passphrase) {
            (Some(k), _) if self.seal_with_kms => k.new_data_key(ctx),
            (_, Some(p)) => p.new_data_key(ctx),
            _ => Err(VaultError::Config(
                "nothing to seal keys with: set SIGNET_VAULT_PASSPHRASE_FILE, or add ?kms-key-id=ID to SIGNET_VAULT"
                    .into(),
            )),
        }
    }

    fn unwrap_key(&self, info: &KekInfo, wrapped: &[u8], ctx: &SealContext) -> Result<SecretKey32, VaultError> {
        match info {
            KekInfo::Argon2id { .. } => {
                self.passphrase.as_ref().ok_or_else(|| Self::no_passphrase(&ctx.what()))?.unwrap_key(info, wrapped, ctx)
            }
            KekInfo::AwsKms { .. } => self
                .kms
                .as_ref()
                .ok_or_else(|| VaultError::Config(format!("key {} is sealed with KMS: unreachable", ctx.what())))?
                .unwrap_key(info, wrapped, ctx),
            KekInfo::Pkcs11 { .. } | KekInfo::KmsKey { .. } => {
                Err(VaultError::Config(format!("key {} is not sealed here: it is in {}", ctx.what(), info.home())))
            }
        }
    }
}

impl Vault {
    /// Opens the vault named by `uri` (see the module docs), with the passphrase from
    /// `passphrase_file` if given (needed for passphrase-sealed keys, not to list or export).
    pub fn open(
        uri: &str,
        passphrase_file: Option<&std::path::Path>,
        endpoints: &AwsEndpoints,
    ) -> Result<Self, VaultError> {
        let (location, kms_key) = parse_uri(uri)?;
        let passphrase = match passphrase_file {
            Some(p) => Some(PassphraseWrapper::new(Passphrase::from_file(p)?)),
            None => None,
        };
        // One AWS runtime for the store and KMS, made only if either is in S3/KMS. A vault
        // without a KMS key still gets a KMS client when it is in S3, to unseal records an
        // earlier configuration sealed with KMS.
        let needs_aws = kms_key.is_some() || matches!(location, VaultLocation::S3 { .. });
        let aws = if needs_aws { Some(Arc::new(AwsRuntime::new()?)) } else { None };
        let store: Box<dyn SealedStore> = match &location {
            VaultLocation::Dir(path) => Box::new(dir::DirStore::new(path.clone())),
            VaultLocation::S3 { bucket, prefix } => {
                let aws = aws.clone().ok_or_else(|| VaultError::Config("no AWS runtime".into()))?;
                Box::new(s3::S3SealedStore::new(aws, endpoints, bucket, prefix))
            }
        };
        let seal_with_kms = kms_key.is_some();
        let aws_runtime = aws.clone();
        let kms = aws.map(|aws| KmsWrapper::new(aws, endpoints, kms_key));
        let wrapper = Wrappers { passphrase, kms, seal_with_kms };
        let usable = wrapper.passphrase.is_some() || wrapper.kms.is_some();
        Ok(Vault {
            store,
            wrapper: usable.then(|| Box::new(wrapper) as Box<dyn KeyWrapper>),
            token: Default::default(),
            kms_signer: Default::default(),
            aws: std::sync::Mutex::new(aws_runtime),
            endpoints: endpoints.clone(),
        })
    }

    /// A vault over any store and wrapper.
    pub fn new(store: Box<dyn SealedStore>, wrapper: Option<Box<dyn KeyWrapper>>) -> Self {
        Vault {
            store,
            wrapper,
            token: Default::default(),
            kms_signer: Default::default(),
            aws: Default::default(),
            endpoints: AwsEndpoints::default(),
        }
    }

    /// The AWS runtime, started on first use.
    fn aws(&self) -> Result<Arc<AwsRuntime>, VaultError> {
        let mut held = self.aws.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = held.as_ref() {
            return Ok(a.clone());
        }
        let a = Arc::new(AwsRuntime::new()?);
        *held = Some(a.clone());
        Ok(a)
    }

    fn wrapper(&self) -> Result<&dyn KeyWrapper, VaultError> {
        self.wrapper.as_deref().ok_or_else(|| {
            VaultError::Config("no passphrase: set SIGNET_VAULT_PASSPHRASE_FILE (or use a KMS-sealed vault)".into())
        })
    }

    /// Generates a key, seals it and makes it the active key of a new name.
    pub fn generate(&self, name: &KeyName, algo: Algo, uid: &str) -> Result<KeyInfo, VaultError> {
        if !self.store.records(name)?.is_empty() {
            return Err(VaultError::Exists(name.to_string()));
        }
        let cert = key::generate(algo, uid, SystemTime::now())?;
        self.store_new(name, cert, &algo.to_string())
    }

    /// Imports a transferable secret key (armored or binary) under a new name.
    pub fn import(&self, name: &KeyName, bytes: &[u8], passphrase: Option<&[u8]>) -> Result<KeyInfo, VaultError> {
        if !self.store.records(name)?.is_empty() {
            return Err(VaultError::Exists(name.to_string()));
        }
        let cert = key::parse_secret(bytes, passphrase)?;
        self.check_not_held(cert.primary_key().key())?;
        let algo = describe_algo(&cert);
        self.store_new(name, cert, &algo)
    }

    /// Fails with [`VaultError::Duplicate`] if a record of any name holds `key`'s material,
    /// whatever its creation time (which changes the fingerprint, not the key).
    fn check_not_held(
        &self,
        key: &sequoia_openpgp::packet::Key<
            sequoia_openpgp::packet::key::PublicParts,
            sequoia_openpgp::packet::key::PrimaryRole,
        >,
    ) -> Result<(), VaultError> {
        if !self.store.exists() {
            return Ok(());
        }
        for name in self.store.names()? {
            for r in self.store.records(&name)? {
                let held = key::parse_certs(r.public_key.as_bytes())?;
                if held.iter().flat_map(|c| c.keys()).any(|k| k.key().mpis() == key.mpis()) {
                    return Err(VaultError::Duplicate { existing: format!("{name} ({})", r.fingerprint) });
                }
            }
        }
        Ok(())
    }

    fn store_new(&self, name: &KeyName, cert: openpgp_cert::Cert, algo: &str) -> Result<KeyInfo, VaultError> {
        let key = SigningKey::new(cert)?;
        let fpr = key.fingerprint();
        let public = key::armored_public(&key.public())?;
        let secret = key.to_secret_bytes()?;
        let record = SealedKey::seal(self.wrapper()?, name.as_str(), &fpr, algo, public, &secret)?;
        self.store.put(&record)?;
        self.store.set_active(name, &fpr)?;
        Ok(KeyInfo {
            name: name.to_string(),
            fingerprint: fpr,
            algo: algo.into(),
            created: record.created,
            active: true,
            home: "vault".into(),
            revoked: false,
        })
    }

    /// Every key in the vault.
    pub fn list(&self) -> Result<Vec<KeyInfo>, VaultError> {
        let mut out = Vec::new();
        for name in self.store.names()? {
            let active = self.store.active(&name)?;
            for r in self.store.records(&name)? {
                let home = r.kek.home();
                let revoked = self.store.revocation(&name, &r.fingerprint)?.is_some();
                out.push(KeyInfo {
                    name: r.name.clone(),
                    active: active.as_deref() == Some(r.fingerprint.as_str()),
                    fingerprint: r.fingerprint,
                    algo: r.algo,
                    created: r.created,
                    home,
                    revoked,
                });
            }
        }
        Ok(out)
    }

    /// The armored public certificates of every key under `name`, each with its revocation
    /// signature if it is revoked.
    pub fn export(&self, name: &KeyName) -> Result<String, VaultError> {
        let records = self.store.records(name)?;
        if records.is_empty() {
            return Err(VaultError::UnknownKey(name.to_string()));
        }
        let mut out = String::new();
        for r in records {
            match self.store.revocation(name, &r.fingerprint)? {
                None => out.push_str(&r.public_key),
                Some(rev) => {
                    let cert = key::parse_certs(r.public_key.as_bytes())?
                        .into_iter()
                        .next()
                        .ok_or_else(|| VaultError::Corrupt(format!("key {name}: no certificate")))?;
                    let sig = key::parse_certs_or_signature(rev.as_bytes())?;
                    let (cert, _) =
                        cert.insert_packets(sig).map_err(|e| VaultError::Key(KeyError::OpenPgp(e.to_string())))?;
                    out.push_str(&key::armored_public(&cert)?);
                }
            }
        }
        Ok(out)
    }

    /// Revokes key `fpr` of `name` with a revocation signature made by that key (locally or
    /// through its token); returns the signature, armored. Revoking again returns the first.
    pub fn revoke(
        &self,
        name: &KeyName,
        fpr: &str,
        reason: RevocationReason,
        message: &str,
    ) -> Result<String, VaultError> {
        use sequoia_openpgp::cert::CertRevocationBuilder;
        use sequoia_openpgp::types::ReasonForRevocation as R;
        if let Some(rev) = self.store.revocation(name, fpr)? {
            return Ok(rev);
        }
        let mut key = self.unseal_unchecked(name, fpr)?;
        let cert = key.public();
        let code = match reason {
            RevocationReason::Superseded => R::KeySuperseded,
            RevocationReason::Compromised => R::KeyCompromised,
            RevocationReason::Retired => R::KeyRetired,
        };
        let sig = key.sign_with(|signer| {
            CertRevocationBuilder::new().set_reason_for_revocation(code, message.as_bytes())?.build(signer, &cert, None)
        })?;
        let armored = String::from_utf8(key::armor_signature(&sig)?)
            .map_err(|e| VaultError::Key(KeyError::OpenPgp(e.to_string())))?;
        self.store.put_revocation(name, fpr, &armored)?;
        Ok(armored)
    }

    /// Fails with [`VaultError::Revoked`] if key `fpr` of `name` is revoked.
    pub fn check_not_revoked(&self, name: &KeyName, fpr: &str) -> Result<(), VaultError> {
        match self.store.revocation(name, fpr)? {
            None => Ok(()),
            Some(rev) => {
                let reason = key::parse_certs_or_signature(rev.as_bytes())
                    .ok()
                    .and_then(|sigs| {
                        sigs.into_iter().find_map(|p| match p {
                            sequoia_openpgp::Packet::Signature(s) => {
                                s.reason_for_revocation().map(|(c, m)| format!("{c}: {}", String::from_utf8_lossy(m)))
                            }
                            _ => None,
                        })
                    })
                    .unwrap_or_else(|| "no reason given".into());
                Err(VaultError::Revoked { key: format!("{name} ({fpr})"), reason })
            }
        }
    }

    /// Makes a new key under an existing name and makes it the active one. The old keys
    /// stay (for verification and `keys export`); `algo` defaults to the active key's.
    pub fn rotate(&self, name: &KeyName, algo: Option<Algo>) -> Result<KeyInfo, VaultError> {
        let records = self.store.records(name)?;
        let active = self.store.active(name)?;
        let current = records
            .iter()
            .find(|r| Some(r.fingerprint.as_str()) == active.as_deref())
            .or(records.last())
            .ok_or_else(|| VaultError::UnknownKey(name.to_string()))?;
        let algo = match algo {
            Some(a) => a,
            None => match current.algo.as_str() {
                "ed25519" | "eddsa" => Algo::Ed25519,
                "rsa4096" => Algo::Rsa4096,
                other => {
                    return Err(VaultError::Config(format!(
                        "key {name} uses {other}, which signet cannot generate: choose --algo"
                    )));
                }
            },
        };
        let uid = key::parse_certs(current.public_key.as_bytes())?
            .first()
            .and_then(|c| c.userids().next().map(|u| String::from_utf8_lossy(u.userid().value()).into_owned()))
            .unwrap_or_else(|| format!("signet {name} signing key"));
        // A key in a token or KMS is replaced by a new key there, never by a vault key.
        if let Some(info) = self.rotate_remote(name, &current.kek, algo, &uid)? {
            return Ok(info);
        }
        let cert = key::generate(algo, &uid, SystemTime::now())?;
        self.store_new(name, cert, &algo.to_string())
    }

    /// The fingerprint of the active key of `name`.
    pub fn active(&self, name: &KeyName) -> Result<String, VaultError> {
        self.store.active(name)?.ok_or_else(|| VaultError::UnknownKey(name.to_string()))
    }

    /// Unseals the active key of `name`.
    pub fn signing_key(&self, name: &KeyName) -> Result<SigningKey, VaultError> {
        self.unseal(name, &self.active(name)?)
    }

    /// Unseals key `fpr` of `name`, unless it is revoked.
    pub fn unseal(&self, name: &KeyName, fpr: &str) -> Result<SigningKey, VaultError> {
        self.check_not_revoked(name, fpr)?;
        self.unseal_unchecked(name, fpr)
    }

    fn unseal_unchecked(&self, name: &KeyName, fpr: &str) -> Result<SigningKey, VaultError> {
        let record = self
            .store
            .record(name, fpr)?
            .ok_or_else(|| VaultError::Corrupt(format!("key {fpr} of {name} has no record")))?;
        if record.name != name.as_str() {
            return Err(VaultError::Corrupt(format!("record for {name} claims name {:?}", record.name)));
        }
        if record.kek.is_remote() {
            return self.remote_key(&record);
        }
        let secret = record.unseal(self.wrapper()?)?;
        let cert = key::parse_secret(&secret, None)?;
        if cert.fingerprint().to_hex() != record.fingerprint {
            return Err(VaultError::Corrupt(format!("key {name}: sealed key does not match its fingerprint")));
        }
        Ok(SigningKey::new(cert)?)
    }
}

// Keep the sequoia path short in signatures above.
use sequoia_openpgp::cert as openpgp_cert;

fn describe_algo(cert: &openpgp_cert::Cert) -> String {
    let k = cert.primary_key().key();
    match k.mpis().bits() {
        Some(bits) if k.pk_algo().to_string().starts_with("RSA") => format!("rsa{bits}"),
        _ => k.pk_algo().to_string().to_lowercase(),
    }
}
