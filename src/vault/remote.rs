//! Keys whose secret is not in the vault: in a PKCS#11 token or in AWS KMS.
//!
//! Their records hold the certificate and where the key is (`KekInfo::Pkcs11`,
//! `KekInfo::KmsKey`), with empty ciphertext. The certificate is built from the public key
//! the token or KMS reports and self-signed through it, with a creation time that is stored
//! so that the fingerprint never changes. Each unseal checks that the key there is still the
//! certificate's key (a swapped token object or KMS alias is refused), then signs through a
//! [`key::RemoteSigner`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::seal::{self, KekInfo, SealedKey};
use super::{KeyInfo, KeyName, Vault, VaultError};
use crate::hsm::{self, Token};
use crate::key::{self, Algo, KeyError, PublicMaterial, RemoteError, SigningKey};
use crate::kms::{Kms, KmsError};

impl Vault {
    /// The token named by the environment, opened once (a failure is not kept: the next
    /// call tries again).
    fn token(&self) -> Result<Arc<Token>, VaultError> {
        let mut held = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = held.as_ref() {
            return Ok(t.clone());
        }
        let t = Token::from_env().map_err(|e| token_error("the PKCS#11 token", e))?;
        *held = Some(t.clone());
        Ok(t)
    }

    /// The KMS client for signing keys (at `SIGNET_KMS_ENDPOINT` if set), made once.
    fn kms(&self) -> Result<Arc<Kms>, VaultError> {
        let mut held = self.kms_signer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = held.as_ref() {
            return Ok(k.clone());
        }
        let aws = self.aws()?;
        let k = Arc::new(Kms::new(aws, &self.endpoints));
        *held = Some(k.clone());
        Ok(k)
    }

    /// Makes a non-extractable key pair in the PKCS#11 token and certifies it through the
    /// token; the record holds only the certificate and where the key is.
    pub fn generate_in_token(&self, name: &KeyName, algo: Algo, uid: &str) -> Result<KeyInfo, VaultError> {
        self.check_new(name)?;
        self.new_token_key(name, algo, uid)
    }

    fn new_token_key(&self, name: &KeyName, algo: Algo, uid: &str) -> Result<KeyInfo, VaultError> {
        let token = self.token()?;
        let tk = token.generate(&new_label(name), algo).map_err(|e| token_error(name.as_str(), e))?;
        self.adopt_token(name, uid, &token, tk)
    }

    /// Adopts the existing key pair labelled `label` in the PKCS#11 token under a new name.
    pub fn import_from_token(&self, name: &KeyName, label: &str, uid: &str) -> Result<KeyInfo, VaultError> {
        self.check_new(name)?;
        let token = self.token()?;
        let tk = token.find(label).map_err(|e| token_error(name.as_str(), e))?;
        self.adopt_token(name, uid, &token, tk)
    }

    /// Makes an asymmetric signing key in AWS KMS and certifies it through KMS.
    pub fn generate_in_kms(&self, name: &KeyName, algo: Algo, uid: &str) -> Result<KeyInfo, VaultError> {
        self.check_new(name)?;
        self.new_kms_key(name, algo, uid)
    }

    fn new_kms_key(&self, name: &KeyName, algo: Algo, uid: &str) -> Result<KeyInfo, VaultError> {
        let kms = self.kms()?;
        let arn = kms.create(algo, &format!("signet signing key {name}")).map_err(|e| kms_error(name.as_str(), e))?;
        // The key exists in KMS from here on: say which, should certifying it fail.
        self.adopt_kms(name, uid, &kms, &arn).map_err(|e| match e {
            VaultError::Unavailable(m) => VaultError::Unavailable(format!(
                "{m} (KMS key {arn} was created: adopt it with `keys import {name} --kms {arn}` or schedule its deletion)"
            )),
            other => other,
        })
    }

    /// Adopts the existing KMS key `key_id` (id, ARN or alias) under a new name.
    pub fn import_from_kms(&self, name: &KeyName, key_id: &str, uid: &str) -> Result<KeyInfo, VaultError> {
        self.check_new(name)?;
        let kms = self.kms()?;
        self.adopt_kms(name, uid, &kms, key_id)
    }

    fn check_new(&self, name: &KeyName) -> Result<(), VaultError> {
        if self.store.records(name)?.is_empty() { Ok(()) } else { Err(VaultError::Exists(name.to_string())) }
    }

    /// A new key for `name` where its current key lives (`keys rotate` of a token or KMS
    /// key); `None` if the current key is sealed here.
    pub(super) fn rotate_remote(
        &self,
        name: &KeyName,
        current: &KekInfo,
        algo: Algo,
        uid: &str,
    ) -> Result<Option<KeyInfo>, VaultError> {
        match current {
            KekInfo::Pkcs11 { .. } => self.new_token_key(name, algo, uid).map(Some),
            KekInfo::KmsKey { .. } => self.new_kms_key(name, algo, uid).map(Some),
            _ => Ok(None),
        }
    }

    fn adopt_token(
        &self,
        name: &KeyName,
        uid: &str,
        token: &Arc<Token>,
        tk: hsm::TokenKey,
    ) -> Result<KeyInfo, VaultError> {
        // The creation time is part of the fingerprint: stored to the second, never "now" again.
        let created = whole_seconds(SystemTime::now());
        let public = token.public_key(&tk).map_err(|e| token_error(name.as_str(), e))?;
        let rsa = matches!(public, PublicMaterial::Rsa { .. });
        let signer = Arc::new(TokenSigner { token: token.clone(), key: tk.clone(), rsa });
        let kek = KekInfo::Pkcs11 { token: tk.token.clone(), label: tk.label.clone(), id: tk.id.clone() };
        self.adopt(name, uid, &public, signer, created, kek)
    }

    fn adopt_kms(&self, name: &KeyName, uid: &str, kms: &Arc<Kms>, key_id: &str) -> Result<KeyInfo, VaultError> {
        let desc = kms.describe(key_id).map_err(|e| kms_error(name.as_str(), e))?;
        let public = kms.public_key(&desc.arn).map_err(|e| kms_error(name.as_str(), e))?;
        let ed25519 = matches!(public, PublicMaterial::Ed25519(_));
        let signer = Arc::new(KmsSigner { kms: kms.clone(), arn: desc.arn.clone(), ed25519 });
        self.adopt(name, uid, &public, signer, desc.created, KekInfo::KmsKey { key_id: desc.arn })
    }

    /// Certifies `public` through `signer` and stores the record as the active key of `name`.
    fn adopt(
        &self,
        name: &KeyName,
        uid: &str,
        public: &PublicMaterial,
        signer: Arc<dyn key::RemoteSigner>,
        created: SystemTime,
        kek: KekInfo,
    ) -> Result<KeyInfo, VaultError> {
        let (key, algo) = public.to_key(created)?;
        self.check_not_held(&key)?;
        let cert = key::certify(key, uid, signer, created).map_err(remote_key_error(name.as_str()))?;
        let fpr = cert.fingerprint().to_hex();
        let record = SealedKey {
            format: seal::FORMAT.into(),
            name: name.to_string(),
            fingerprint: fpr.clone(),
            algo: algo.clone(),
            created: humantime::format_rfc3339_seconds(created).to_string(),
            public_key: key::armored_public(&cert)?,
            kek,
            wrapped_dek: String::new(),
            ciphertext: String::new(),
        };
        self.store.put(&record)?;
        self.store.set_active(name, &fpr)?;
        Ok(KeyInfo {
            name: name.to_string(),
            fingerprint: fpr,
            algo,
            created: record.created.clone(),
            active: true,
            home: record.kek.home(),
            revoked: false,
        })
    }

    /// The signing key of a token or KMS record: its certificate, signing there.
    pub(super) fn remote_key(&self, record: &SealedKey) -> Result<SigningKey, VaultError> {
        let what = format!("{} ({})", record.name, record.fingerprint);
        let cert = key::parse_certs(record.public_key.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| VaultError::Corrupt(format!("key {what}: no certificate")))?;
        if cert.fingerprint().to_hex() != record.fingerprint {
            return Err(VaultError::Corrupt(format!("key {what}: certificate does not match its fingerprint")));
        }
        let created = cert.primary_key().key().creation_time();
        let (public, signer): (PublicMaterial, Arc<dyn key::RemoteSigner>) = match &record.kek {
            KekInfo::Pkcs11 { token: label, label: key_label, id } => {
                let token = self.token()?;
                if token.label() != label {
                    return Err(VaultError::SignerRefused {
                        key: what,
                        message: format!("it is in token {label:?}, but SIGNET_PKCS11_TOKEN opens {:?}", token.label()),
                    });
                }
                let tk = hsm::TokenKey { token: label.clone(), label: key_label.clone(), id: id.clone() };
                let public = token.public_key(&tk).map_err(|e| token_error(&what, e))?;
                let rsa = matches!(public, PublicMaterial::Rsa { .. });
                (public, Arc::new(TokenSigner { token, key: tk, rsa }))
            }
            KekInfo::KmsKey { key_id } => {
                let kms = self.kms()?;
                // Enabled, still a signing key of a usable kind.
                kms.describe(key_id).map_err(|e| kms_error(&what, e))?;
                let public = kms.public_key(key_id).map_err(|e| kms_error(&what, e))?;
                let ed25519 = matches!(public, PublicMaterial::Ed25519(_));
                (public, Arc::new(KmsSigner { kms, arn: key_id.clone(), ed25519 }))
            }
            _ => return Err(VaultError::Corrupt(format!("key {what}: not a token or KMS record"))),
        };
        // A key of another kind there now (a token object replaced by a small RSA key) is a
        // refusal like any other swap, not an outage.
        let (there, _) = public
            .to_key(created)
            .map_err(|e| VaultError::SignerRefused { key: what.clone(), message: e.to_string() })?;
        if there.mpis() != cert.primary_key().key().mpis() {
            return Err(VaultError::SignerRefused {
                key: what,
                message: format!("{} holds another key than the certificate", record.kek.home()),
            });
        }
        Ok(SigningKey::remote(cert, signer)?)
    }
}

/// A fresh token label for a key of `name`.
fn new_label(name: &KeyName) -> String {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    format!("signet-{name}-{}", stamp.replace([':', '-'], ""))
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

pub(super) fn token_error(key: &str, e: hsm::TokenError) -> VaultError {
    match e {
        hsm::TokenError::Refused(m) => VaultError::SignerRefused { key: key.to_owned(), message: m },
        hsm::TokenError::Config(m) => VaultError::Config(m),
        hsm::TokenError::Failed(m) => VaultError::Unavailable(m),
    }
}

fn kms_error(key: &str, e: KmsError) -> VaultError {
    match e {
        KmsError::Refused { .. } => VaultError::SignerRefused { key: key.to_owned(), message: e.to_string() },
        // Already retried (within its deadline) by the KMS client: not again in place.
        KmsError::Unavailable { .. } => VaultError::SignerUnavailable(format!("key {key}: {e}")),
    }
}

/// A failed self-signature: a refusal or outage of the signer keeps its kind.
fn remote_key_error(key: &str) -> impl Fn(KeyError) -> VaultError + '_ {
    move |e| match e {
        KeyError::RemoteRefused(m) => VaultError::SignerRefused { key: key.to_owned(), message: m },
        KeyError::RemoteUnavailable(m) => VaultError::Unavailable(format!("key {key}: {m}")),
        other => VaultError::Key(other),
    }
}

/// Signs through a token key.
#[derive(Debug)]
struct TokenSigner {
    token: Arc<Token>,
    key: hsm::TokenKey,
    rsa: bool,
}

impl key::RemoteSigner for TokenSigner {
    fn sign_digest(
        &self,
        hash: sequoia_openpgp::types::HashAlgorithm,
        digest: &[u8],
    ) -> Result<sequoia_openpgp::crypto::mpi::Signature, RemoteError> {
        let raw = self.token.sign(&self.key, self.rsa, &hash.to_string(), digest).map_err(|e| match e {
            hsm::TokenError::Refused(_) | hsm::TokenError::Config(_) => RemoteError::Refused(e.to_string()),
            hsm::TokenError::Failed(_) => RemoteError::Unavailable(e.to_string()),
        })?;
        key::signature_values(self.rsa, &raw)
    }
}

/// Signs through a KMS key.
#[derive(Debug)]
struct KmsSigner {
    kms: Arc<Kms>,
    arn: String,
    ed25519: bool,
}

impl key::RemoteSigner for KmsSigner {
    fn sign_digest(
        &self,
        hash: sequoia_openpgp::types::HashAlgorithm,
        digest: &[u8],
    ) -> Result<sequoia_openpgp::crypto::mpi::Signature, RemoteError> {
        let raw = self.kms.sign(&self.arn, self.ed25519, &hash.to_string(), digest).map_err(|e| match e {
            KmsError::Refused { .. } => RemoteError::Refused(e.to_string()),
            KmsError::Unavailable { .. } => RemoteError::Unavailable(e.to_string()),
        })?;
        key::signature_values(!self.ed25519, &raw)
    }
}
