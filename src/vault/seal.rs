//! Envelope encryption of secret keys: a random data key (DEK) encrypts the key with
//! XChaCha20-Poly1305, and a key-encryption key (KEK) wraps the DEK. The KEK comes from a
//! passphrase through Argon2id here, or the DEK comes from AWS KMS (`kms.rs`); both are a
//! [`KeyWrapper`].

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::VaultError;

/// Format tag of a sealed key record; part of the authenticated data.
pub const FORMAT: &str = "signet-sealed-key/1";

/// A 256-bit symmetric key that is zeroized on drop and never printed.
pub struct SecretKey32(Zeroizing<[u8; 32]>);

impl SecretKey32 {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *k);
        SecretKey32(k)
    }

    /// Takes ownership of key bytes (which must be 32 long).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(SecretKey32(Zeroizing::new(arr)))
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey32([redacted])")
    }
}

/// A passphrase, zeroized on drop and never printed.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase; it must not be empty.
    pub fn new(s: String) -> Result<Self, VaultError> {
        let s = Zeroizing::new(s);
        let trimmed = s.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(VaultError::Config("the vault passphrase is empty".into()));
        }
        Ok(Passphrase(Zeroizing::new(trimmed.to_owned())))
    }

    /// Reads a passphrase from a file (one trailing newline is ignored).
    pub fn from_file(path: &std::path::Path) -> Result<Self, VaultError> {
        let s = std::fs::read_to_string(path).map_err(|e| {
            VaultError::Config(format!("cannot read the vault passphrase file {}: {e}", path.display()))
        })?;
        Self::new(s)
    }

    fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([redacted])")
    }
}

/// How a DEK was wrapped: enough to unwrap it again, nothing secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KekInfo {
    /// KEK = Argon2id(passphrase, salt) with these costs.
    Argon2id { salt: String, m_kib: u32, t: u32, p: u32 },
    /// DEK wrapped by a KMS key (the wrapped blob is the KMS ciphertext).
    AwsKms { key_id: String },
    /// No secret here at all: the private key is in a PKCS#11 token (`wrapped_dek` and
    /// `ciphertext` are empty), found by its `CKA_ID`.
    Pkcs11 { token: String, label: String, id: String },
    /// No secret here either: the private key is an asymmetric AWS KMS key (its ARN) that
    /// signs through KMS `Sign`.
    KmsKey { key_id: String },
}

impl KekInfo {
    /// Where the secret of a key sealed this way is: `vault`, `pkcs11:TOKEN` or `kms:ARN`.
    pub fn home(&self) -> String {
        match self {
            KekInfo::Argon2id { .. } | KekInfo::AwsKms { .. } => "vault".into(),
            KekInfo::Pkcs11 { token, .. } => format!("pkcs11:{token}"),
            KekInfo::KmsKey { key_id } => format!("kms:{key_id}"),
        }
    }

    /// Whether the secret is elsewhere (a token, KMS): the record holds no ciphertext.
    pub fn is_remote(&self) -> bool {
        matches!(self, KekInfo::Pkcs11 { .. } | KekInfo::KmsKey { .. })
    }
}

/// What a data key is bound to: the key's name and fingerprint. The passphrase wrapper
/// binds them as AEAD associated data, KMS as the encryption context.
#[derive(Debug, Clone, Copy)]
pub struct SealContext<'a> {
    pub name: &'a str,
    pub fingerprint: &'a str,
}

impl SealContext<'_> {
    /// The associated data of every AEAD operation for this key.
    pub fn aad(&self) -> Vec<u8> {
        format!("{FORMAT}\0{}\0{}", self.name, self.fingerprint).into_bytes()
    }

    /// How errors name the key: `NAME (FINGERPRINT)`.
    pub fn what(&self) -> String {
        format!("{} ({})", self.name, self.fingerprint)
    }
}

/// Makes and unwraps data keys.
pub trait KeyWrapper: Send + Sync {
    /// A fresh data key, and how it is wrapped, bound to `ctx`.
    fn new_data_key(&self, ctx: &SealContext) -> Result<(SecretKey32, KekInfo, Vec<u8>), VaultError>;
    /// Unwraps a data key made by [`KeyWrapper::new_data_key`].
    fn unwrap_key(&self, info: &KekInfo, wrapped: &[u8], ctx: &SealContext) -> Result<SecretKey32, VaultError>;
}

/// Argon2id costs: RFC 9106's second recommended option (64 MiB, 3 passes, 1 lane).
const M_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;
const P_COST: u32 = 1;

/// The passphrase-based key wrapper.
pub struct PassphraseWrapper {
    passphrase: Passphrase,
}

impl PassphraseWrapper {
    /// A wrapper that derives KEKs from `passphrase`.
    pub fn new(passphrase: Passphrase) -> Self {
        PassphraseWrapper { passphrase }
    }

    fn kek(&self, salt: &[u8], m_kib: u32, t: u32, p: u32) -> Result<SecretKey32, VaultError> {
        let params = argon2::Params::new(m_kib, t, p, Some(32))
            .map_err(|e| VaultError::Corrupt(format!("bad Argon2 parameters: {e}")))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(self.passphrase.expose(), salt, &mut *out)
            .map_err(|e| VaultError::Corrupt(format!("key derivation failed: {e}")))?;
        Ok(SecretKey32(out))
    }
}

impl KeyWrapper for PassphraseWrapper {
    fn new_data_key(&self, ctx: &SealContext) -> Result<(SecretKey32, KekInfo, Vec<u8>), VaultError> {
        let dek = SecretKey32::random();
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let kek = self.kek(&salt, M_KIB, T_COST, P_COST)?;
        let wrapped = aead_seal(&kek, dek.expose(), &ctx.aad())?;
        Ok((dek, KekInfo::Argon2id { salt: hex::encode(salt), m_kib: M_KIB, t: T_COST, p: P_COST }, wrapped))
    }

    fn unwrap_key(&self, info: &KekInfo, wrapped: &[u8], ctx: &SealContext) -> Result<SecretKey32, VaultError> {
        let what = ctx.what();
        let KekInfo::Argon2id { salt, m_kib, t, p } = info else {
            return Err(VaultError::Config(format!("key {what} is not sealed with a passphrase")));
        };
        // Refuse absurd costs from a tampered record instead of allocating them.
        if *m_kib > 4 * 1024 * 1024 || *t > 64 || *p > 16 {
            return Err(VaultError::Corrupt(format!("key {what}: Argon2 costs out of range")));
        }
        let salt = hex::decode(salt).map_err(|_| VaultError::Corrupt(format!("key {what}: bad salt")))?;
        let kek = self.kek(&salt, *m_kib, *t, *p)?;
        let dek =
            aead_open(&kek, wrapped, &ctx.aad()).map_err(|_| VaultError::WrongPassphrase { key: what.clone() })?;
        SecretKey32::from_slice(&dek)
            .ok_or_else(|| VaultError::Corrupt(format!("key {what}: data key has the wrong size")))
    }
}

/// Encrypts `plain` under `key`; output is nonce || ciphertext+tag.
pub fn aead_seal(key: &SecretKey32, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, VaultError> {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| VaultError::Corrupt("encryption failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts what [`aead_seal`] made; fails if anything (data, aad, key) was changed. The
/// failure carries no detail on purpose: an AEAD failure must not say why.
#[allow(clippy::result_unit_err)]
pub fn aead_open(key: &SecretKey32, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
    if sealed.len() < 24 + 16 {
        return Err(());
    }
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let (nonce, ct) = sealed.split_at(24);
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad }).map(Zeroizing::new).map_err(|_| ())
}

/// A sealed key as stored: the public certificate in the clear, the secret key encrypted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedKey {
    pub format: String,
    pub name: String,
    pub fingerprint: String,
    pub algo: String,
    pub created: String,
    pub public_key: String,
    pub kek: KekInfo,
    pub wrapped_dek: String,
    pub ciphertext: String,
}

impl SealedKey {
    /// Seals `secret` (a serialized transferable secret key) for key `name`.
    pub fn seal(
        wrapper: &dyn KeyWrapper,
        name: &str,
        fingerprint: &str,
        algo: &str,
        public_key: String,
        secret: &[u8],
    ) -> Result<Self, VaultError> {
        let ctx = SealContext { name, fingerprint };
        let (dek, kek, wrapped) = wrapper.new_data_key(&ctx)?;
        let ciphertext = aead_seal(&dek, secret, &ctx.aad())?;
        Ok(SealedKey {
            format: FORMAT.into(),
            name: name.into(),
            fingerprint: fingerprint.into(),
            algo: algo.into(),
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            public_key,
            kek,
            wrapped_dek: hex::encode(wrapped),
            ciphertext: hex::encode(ciphertext),
        })
    }

    /// Unseals the secret key bytes.
    pub fn unseal(&self, wrapper: &dyn KeyWrapper) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let ctx = SealContext { name: &self.name, fingerprint: &self.fingerprint };
        let what = ctx.what();
        if self.kek.is_remote() {
            return Err(VaultError::Config(format!("key {what} is in {}: nothing to unseal", self.kek.home())));
        }
        if self.format != FORMAT {
            return Err(VaultError::Corrupt(format!("key {what}: unknown format {:?}", self.format)));
        }
        let wrapped =
            hex::decode(&self.wrapped_dek).map_err(|_| VaultError::Corrupt(format!("key {what}: bad wrapped key")))?;
        let ct =
            hex::decode(&self.ciphertext).map_err(|_| VaultError::Corrupt(format!("key {what}: bad ciphertext")))?;
        let dek = wrapper.unwrap_key(&self.kek, &wrapped, &ctx)?;
        aead_open(&dek, &ct, &ctx.aad())
            .map_err(|_| VaultError::Corrupt(format!("key {what}: sealed key fails authentication")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fast(SecretKey32);
    impl KeyWrapper for Fast {
        fn new_data_key(&self, ctx: &SealContext) -> Result<(SecretKey32, KekInfo, Vec<u8>), VaultError> {
            let dek = SecretKey32::random();
            let wrapped = aead_seal(&self.0, dek.expose(), &ctx.aad())?;
            Ok((dek, KekInfo::AwsKms { key_id: "test".into() }, wrapped))
        }
        fn unwrap_key(&self, _: &KekInfo, w: &[u8], ctx: &SealContext) -> Result<SecretKey32, VaultError> {
            let d = aead_open(&self.0, w, &ctx.aad()).map_err(|_| VaultError::WrongPassphrase { key: ctx.what() })?;
            Ok(SecretKey32::from_slice(&d).unwrap())
        }
    }

    #[test]
    fn sealed_record_is_bound_to_its_name_and_fingerprint() {
        let w = Fast(SecretKey32::random());
        let mut s = SealedKey::seal(&w, "release", "AA", "ed25519", String::new(), b"secret").unwrap();
        assert_eq!(&**s.unseal(&w).unwrap(), b"secret");
        assert!(!s.ciphertext.contains(&hex::encode(b"secret")));
        s.name = "other".into();
        assert!(s.unseal(&w).is_err(), "a record renamed to another key must not unseal");
    }

    #[test]
    fn wrong_passphrase_is_reported_as_such() {
        let good = PassphraseWrapper::new(Passphrase::new("correct horse".into()).unwrap());
        let bad = PassphraseWrapper::new(Passphrase::new("wrong".into()).unwrap());
        let s = SealedKey::seal(&good, "k", "F", "ed25519", String::new(), b"x").unwrap();
        assert!(matches!(s.unseal(&bad), Err(VaultError::WrongPassphrase { .. })));
        assert_eq!(&**s.unseal(&good).unwrap(), b"x");
    }

    #[test]
    fn secrets_do_not_print() {
        let p = Passphrase::new("hunter2".into()).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
