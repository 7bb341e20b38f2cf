//! OpenPGP keys: generation, import, the unsealed signing key, and signature checks.
//!
//! Everything here is pure computation with sequoia-openpgp: no files, no network. Keys are
//! v4 (RFC 4880) because rpm 4.x, gpg 2.2 and debsig-verify reject v6 keys and signatures.

use std::fmt;
use std::io::{self, Read};
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::KeyPair;
use openpgp::packet::key::{Key4, PrimaryRole, SecretParts};
use openpgp::packet::prelude::*;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{Curve, Features, HashAlgorithm, KeyFlags, PublicKeyAlgorithm, SignatureType, SymmetricAlgorithm};
use openpgp::{Cert, Fingerprint, Packet};
use zeroize::Zeroizing;

/// The hash every signature signet makes uses (debsig-verify and apt reject SHA-1).
pub const HASH: HashAlgorithm = HashAlgorithm::SHA256;

/// Errors from key handling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("not an OpenPGP secret key: {0}")]
    NotASecretKey(String),
    #[error("key {fingerprint} has no usable signing key (need a v4 RSA >= 3072 or Ed25519 key that can sign)")]
    NoSigningKey { fingerprint: String },
    #[error("key {fingerprint} is protected by a passphrase; give it with SIGNET_IMPORT_PASSPHRASE_FILE")]
    Locked { fingerprint: String },
    #[error("the import passphrase does not unlock key {fingerprint}")]
    WrongImportPassphrase { fingerprint: String },
    #[error("unsupported key: {0}")]
    Unsupported(String),
    #[error("OpenPGP error: {0}")]
    OpenPgp(String),
}

fn pgp_err(e: anyhow::Error) -> KeyError {
    KeyError::OpenPgp(e.to_string())
}

/// The algorithms `signet keys generate` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// RSA with a 4096-bit modulus: the widest compatibility.
    Rsa4096,
    /// Ed25519 (EdDSA, v4 "legacy" encoding that rpm 4.x and gpg 2.2 understand).
    Ed25519,
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algo::Rsa4096 => "rsa4096",
            Algo::Ed25519 => "ed25519",
        })
    }
}

/// Generates a v4 certificate whose primary key certifies and signs.
///
/// Built by hand rather than with `CertBuilder`: the builder marks the Primary User ID
/// subpacket critical, which rpm 4.18's `rpmkeys --import` rejects, and debsig-verify 0.28
/// only accepts signatures made by the primary key, so there is no signing subkey.
pub fn generate(algo: Algo, uid: &str, now: SystemTime) -> Result<Cert, KeyError> {
    let key: Key4<SecretParts, PrimaryRole> = match algo {
        Algo::Rsa4096 => Key4::generate_rsa(4096),
        Algo::Ed25519 => Key4::generate_ecc(true, Curve::Ed25519),
    }
    .map_err(pgp_err)?;
    let mut key: Key<SecretParts, PrimaryRole> = key.into();
    key.set_creation_time(now).map_err(pgp_err)?;
    let mut signer = key.clone().into_keypair().map_err(pgp_err)?;

    let uid = UserID::from(uid);
    let binding = SignatureBuilder::new(SignatureType::PositiveCertification)
        .set_signature_creation_time(now)
        .and_then(|b| b.set_key_flags(KeyFlags::empty().set_certification().set_signing()))
        .and_then(|b| b.set_preferred_hash_algorithms(vec![HashAlgorithm::SHA256, HashAlgorithm::SHA512]))
        .and_then(|b| {
            b.set_preferred_symmetric_algorithms(vec![SymmetricAlgorithm::AES256, SymmetricAlgorithm::AES128])
        })
        .and_then(|b| b.set_features(Features::empty().set_seipdv1()))
        .map_err(pgp_err)?
        .set_hash_algo(HASH)
        .sign_userid_binding(&mut signer, Some(key.parts_as_public()), &uid)
        .map_err(pgp_err)?;

    Cert::from_packets(vec![Packet::from(key), Packet::from(uid), Packet::from(binding)].into_iter()).map_err(pgp_err)
}

/// Parses an armored or binary transferable secret key, unlocking it if `passphrase` is given.
pub fn parse_secret(bytes: &[u8], passphrase: Option<&[u8]>) -> Result<Cert, KeyError> {
    let cert = Cert::from_bytes(bytes).map_err(|e| KeyError::NotASecretKey(e.to_string()))?;
    if !cert.is_tsk() {
        return Err(KeyError::NotASecretKey(format!("{} holds no secret key material", cert.fingerprint())));
    }
    let fingerprint = cert.fingerprint().to_hex();
    let mut packets: Vec<Packet> = Vec::new();
    for ka in cert.keys().secret() {
        let key = ka.key().clone();
        if key.has_unencrypted_secret() {
            continue;
        }
        let Some(pass) = passphrase else {
            return Err(KeyError::Locked { fingerprint });
        };
        let unlocked = key
            .decrypt_secret(&openpgp::crypto::Password::from(pass))
            .map_err(|_| KeyError::WrongImportPassphrase { fingerprint: fingerprint.clone() })?;
        packets.push(if ka.primary() {
            Packet::from(unlocked.role_into_primary())
        } else {
            Packet::from(unlocked.role_into_subordinate())
        });
    }
    let cert = if packets.is_empty() { cert } else { cert.insert_packets(packets).map_err(pgp_err)?.0 };
    let key = SigningKey::new(cert.clone())?;
    drop(key);
    Ok(cert)
}

/// An unsealed signing key. Its secret material lives only in memory (sequoia keeps it in
/// `Protected` buffers that are encrypted at rest in memory and zeroized on drop).
#[derive(Clone)]
pub struct SigningKey {
    cert: Cert,
    signer: KeyPair,
    signer_fpr: Fingerprint,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.cert.fingerprint().to_hex())
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// Picks the signing key of `cert`: the primary key if it may sign (debsig-verify needs
    /// that), else the newest valid signing subkey.
    pub fn new(cert: Cert) -> Result<Self, KeyError> {
        let policy = StandardPolicy::new();
        let fingerprint = cert.fingerprint().to_hex();
        let no_key = || KeyError::NoSigningKey { fingerprint: fingerprint.clone() };
        let vc = cert.with_policy(&policy, None).map_err(|_| no_key())?;
        let mut candidates: Vec<_> = vc
            .keys()
            .secret()
            .alive()
            .revoked(false)
            .for_signing()
            .filter(|ka| ka.key().version() == 4 && algo_ok(ka.key().pk_algo(), ka.key().mpis().bits()))
            .collect();
        candidates.sort_by_key(|ka| (ka.primary(), ka.key().creation_time()));
        let ka = candidates.pop().ok_or_else(no_key)?;
        if !ka.key().has_unencrypted_secret() {
            return Err(KeyError::Locked { fingerprint });
        }
        let signer_fpr = ka.key().fingerprint();
        let signer = ka.key().clone().into_keypair().map_err(pgp_err)?;
        Ok(SigningKey { cert, signer, signer_fpr })
    }

    /// Fingerprint of the certificate (primary key), 40 upper-case hex digits.
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// Fingerprint of the key that actually makes signatures.
    pub fn signer_fingerprint(&self) -> String {
        self.signer_fpr.to_hex()
    }

    /// The public certificate.
    pub fn public(&self) -> Cert {
        self.cert.clone().strip_secret_key_material()
    }

    /// Starts a hash for a v4 signature, to be fed and then passed to [`Self::sign_hash`].
    pub fn hasher() -> Result<openpgp::crypto::hash::Context, KeyError> {
        Ok(HASH.context().map_err(pgp_err)?.for_signature(4))
    }

    /// Signs a prepared hash as a binary-document signature made at `time`.
    pub fn sign_hash(&mut self, hash: openpgp::crypto::hash::Context, time: SystemTime) -> Result<Signature, KeyError> {
        SignatureBuilder::new(SignatureType::Binary)
            .set_signature_creation_time(time)
            .map_err(pgp_err)?
            .sign_hash(&mut self.signer, hash)
            .map_err(pgp_err)
    }

    /// Signs everything `data` yields (streamed) as a binary-document signature.
    pub fn sign_reader(&mut self, data: &mut dyn Read, time: SystemTime) -> Result<Signature, KeyError> {
        let mut hash = Self::hasher()?;
        io::copy(data, &mut hash).map_err(|e| KeyError::OpenPgp(e.to_string()))?;
        self.sign_hash(hash, time)
    }

    /// A copy of the low-level signer, for sequoia's streaming writers (which take
    /// ownership). The copy's secret is zeroized when it is dropped.
    pub(crate) fn keypair(&self) -> KeyPair {
        self.signer.clone()
    }

    /// The whole key, secrets included, serialized for sealing. Zeroized when dropped.
    pub fn to_secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let mut out = Zeroizing::new(Vec::new());
        self.cert.as_tsk().serialize(&mut *out).map_err(pgp_err)?;
        Ok(out)
    }
}

fn algo_ok(algo: PublicKeyAlgorithm, bits: Option<usize>) -> bool {
    #[allow(deprecated)]
    match algo {
        PublicKeyAlgorithm::RSAEncryptSign | PublicKeyAlgorithm::RSASign => bits.unwrap_or(0) >= 3072,
        PublicKeyAlgorithm::EdDSA => true,
        _ => false,
    }
}

/// ASCII-armored public certificate.
pub fn armored_public(cert: &Cert) -> Result<String, KeyError> {
    let bytes = cert.armored().to_vec().map_err(pgp_err)?;
    String::from_utf8(bytes).map_err(|e| KeyError::OpenPgp(e.to_string()))
}

/// Reads one or more public certificates (armored or binary keyring).
pub fn parse_certs(bytes: &[u8]) -> Result<Vec<Cert>, KeyError> {
    let certs: Vec<Cert> = openpgp::cert::CertParser::from_bytes(bytes)
        .map_err(pgp_err)?
        .collect::<openpgp::Result<Vec<_>>>()
        .map_err(pgp_err)?;
    if certs.is_empty() {
        return Err(KeyError::OpenPgp("no OpenPGP certificate found".into()));
    }
    Ok(certs.into_iter().map(|c| c.strip_secret_key_material()).collect())
}

/// Serializes a signature as an ASCII-armored detached signature.
pub fn armor_signature(sig: &Signature) -> Result<Vec<u8>, KeyError> {
    let pkt = Packet::from(sig.clone());
    let mut w = openpgp::armor::Writer::new(Vec::new(), openpgp::armor::Kind::Signature)
        .map_err(|e| KeyError::OpenPgp(e.to_string()))?;
    pkt.serialize(&mut w).map_err(pgp_err)?;
    w.finalize().map_err(|e| KeyError::OpenPgp(e.to_string()))
}

/// Serializes a signature as one binary packet.
pub fn binary_signature(sig: &Signature) -> Result<Vec<u8>, KeyError> {
    Packet::from(sig.clone()).to_vec().map_err(pgp_err)
}

/// Issuer fingerprints (or key ids, when no fingerprint subpacket) named by a signature.
pub fn issuers(sig: &Signature) -> Vec<String> {
    let fprs: Vec<String> = sig.issuer_fingerprints().map(|f| f.to_hex()).collect();
    if fprs.is_empty() { sig.issuers().map(|k| k.to_hex()).collect() } else { fprs }
}
