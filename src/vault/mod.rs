//! The vault: signing keys stored sealed (envelope-encrypted) and unsealed only in memory.
//!
//! A [`Vault`] joins a [`SealedStore`] (where sealed records live: a local directory) with a
//! [`seal::KeyWrapper`] (what wraps their data keys: a passphrase-derived key). Each key name
//! may hold several keys (rotation); one of them is active and signs.

pub mod dir;
pub mod seal;

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::key::{self, Algo, KeyError, SigningKey};
use seal::{KeyWrapper, Passphrase, PassphraseWrapper, SealedKey};

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
    #[error("vault record corrupt: {0}")]
    Corrupt(String),
    #[error("vault I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
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
    /// All key names.
    fn names(&self) -> Result<Vec<KeyName>, VaultError>;
    /// Every sealed record of `name` (empty if none).
    fn records(&self, name: &KeyName) -> Result<Vec<SealedKey>, VaultError>;
    /// The fingerprint of the active key of `name`, if any.
    fn active(&self, name: &KeyName) -> Result<Option<String>, VaultError>;
    /// Stores a new record; never overwrites one.
    fn put(&self, record: &SealedKey) -> Result<(), VaultError>;
    /// Makes `fingerprint` the active key of `name`.
    fn set_active(&self, name: &KeyName, fingerprint: &str) -> Result<(), VaultError>;
}

/// What `keys list` shows of a key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub fingerprint: String,
    pub algo: String,
    pub created: String,
    pub active: bool,
}

/// Sealed keys plus the means to unseal them.
pub struct Vault {
    store: Box<dyn SealedStore>,
    wrapper: Option<Box<dyn KeyWrapper>>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault").field("unsealer", &self.wrapper.is_some()).finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault named by `uri` (`dir:PATH` or a plain path), with the passphrase from
    /// `passphrase_file` if given (needed to create or unseal keys, not to list or export).
    pub fn open(uri: &str, passphrase_file: Option<&std::path::Path>) -> Result<Self, VaultError> {
        let path = uri.strip_prefix("dir:").unwrap_or(uri);
        if path.is_empty() || uri.contains("://") {
            return Err(VaultError::Config(format!(
                "unsupported SIGNET_VAULT {uri:?}: use dir:PATH or a directory path"
            )));
        }
        let wrapper = match passphrase_file {
            Some(p) => Some(Box::new(PassphraseWrapper::new(Passphrase::from_file(p)?)) as Box<dyn KeyWrapper>),
            None => None,
        };
        Ok(Vault { store: Box::new(dir::DirStore::new(PathBuf::from(path))), wrapper })
    }

    /// A vault over any store and wrapper.
    pub fn new(store: Box<dyn SealedStore>, wrapper: Option<Box<dyn KeyWrapper>>) -> Self {
        Vault { store, wrapper }
    }

    fn wrapper(&self) -> Result<&dyn KeyWrapper, VaultError> {
        self.wrapper
            .as_deref()
            .ok_or_else(|| VaultError::Config("no passphrase: set SIGNET_VAULT_PASSPHRASE_FILE".into()))
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
        let algo = describe_algo(&cert);
        self.store_new(name, cert, &algo)
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
        })
    }

    /// Every key in the vault.
    pub fn list(&self) -> Result<Vec<KeyInfo>, VaultError> {
        let mut out = Vec::new();
        for name in self.store.names()? {
            let active = self.store.active(&name)?;
            for r in self.store.records(&name)? {
                out.push(KeyInfo {
                    name: r.name.clone(),
                    active: active.as_deref() == Some(r.fingerprint.as_str()),
                    fingerprint: r.fingerprint,
                    algo: r.algo,
                    created: r.created,
                });
            }
        }
        Ok(out)
    }

    /// The armored public certificates of every key under `name`.
    pub fn export(&self, name: &KeyName) -> Result<String, VaultError> {
        let records = self.store.records(name)?;
        if records.is_empty() {
            return Err(VaultError::UnknownKey(name.to_string()));
        }
        Ok(records.into_iter().map(|r| r.public_key).collect::<Vec<_>>().join(""))
    }

    /// Unseals the active key of `name`.
    pub fn signing_key(&self, name: &KeyName) -> Result<SigningKey, VaultError> {
        let fpr = self.store.active(name)?.ok_or_else(|| VaultError::UnknownKey(name.to_string()))?;
        let record = self
            .store
            .records(name)?
            .into_iter()
            .find(|r| r.fingerprint == fpr)
            .ok_or_else(|| VaultError::Corrupt(format!("active key {fpr} of {name} has no record")))?;
        if record.name != name.as_str() {
            return Err(VaultError::Corrupt(format!("record for {name} claims name {:?}", record.name)));
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
