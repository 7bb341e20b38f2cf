//! OpenPGP keys: generation, import, the unsealed signing key, and signature checks.
//!
//! Everything here is pure computation with sequoia-openpgp: no files, no network. Keys are
//! v4 (RFC 4880) because rpm 4.x, gpg 2.2 and debsig-verify reject v6 keys and signatures.

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::{KeyPair, mpi};
use openpgp::packet::key::{Key4, PrimaryRole, PublicParts, SecretParts, UnspecifiedRole};
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

/// The hashes signet's own signers (remote, CRT) accept from sequoia.
pub(crate) const SIGNER_HASHES: &[HashAlgorithm] = &[HashAlgorithm::SHA256, HashAlgorithm::SHA512];

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
    /// The token or KMS holding the key refused to sign (key disabled, deleted, access
    /// denied): retrying will not help.
    #[error("the key's signer refused: {0}")]
    RemoteRefused(String),
    /// The token or KMS did not answer (throttled, faulting, unreachable) even after retries.
    #[error("the key's signer is unavailable: {0}")]
    RemoteUnavailable(String),
    #[error("OpenPGP error: {0}")]
    OpenPgp(String),
}

/// sequoia's error as ours; a remote signer's failure, wherever sequoia passed it on, keeps
/// its kind.
pub(crate) fn pgp_err(e: anyhow::Error) -> KeyError {
    match e.chain().find_map(|c| c.downcast_ref::<RemoteError>()) {
        Some(RemoteError::Refused(m)) => KeyError::RemoteRefused(m.clone()),
        Some(RemoteError::Unavailable(m)) => KeyError::RemoteUnavailable(m.clone()),
        None => KeyError::OpenPgp(e.to_string()),
    }
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
    let (public, _) = key.clone().take_secret();
    let binding = self_signature(&public, &mut signer, uid, now)?;
    Cert::from_packets(vec![Packet::from(key), Packet::from(UserID::from(uid)), Packet::from(binding)].into_iter())
        .map_err(pgp_err)
}

/// A certificate for a public key whose secret lives elsewhere (a token, a KMS), with its
/// self-signature made by `signer` there. `created` must be the key's stored creation time:
/// it is part of the fingerprint.
pub fn certify(
    public: Key<PublicParts, PrimaryRole>,
    uid: &str,
    signer: Arc<dyn RemoteSigner>,
    created: SystemTime,
) -> Result<Cert, KeyError> {
    let mut remote = Remote { public: public.clone().role_into_unspecified(), signer };
    let binding = self_signature(&public, &mut remote, uid, created)?;
    Cert::from_packets(vec![Packet::from(public), Packet::from(UserID::from(uid)), Packet::from(binding)].into_iter())
        .map_err(pgp_err)
}

/// The positive certification of `uid` by `key`, with the flags and preferences of every
/// signet key (see [`generate`]).
fn self_signature(
    key: &Key<PublicParts, PrimaryRole>,
    signer: &mut dyn openpgp::crypto::Signer,
    uid: &str,
    now: SystemTime,
) -> Result<Signature, KeyError> {
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
        .sign_userid_binding(signer, Some(key), &uid)
        .map_err(pgp_err)?;
    Ok(binding)
}

/// The signer seam: a key whose secret is not in this process signs a digest wherever it
/// lives (a PKCS#11 token, a KMS). Every format signs through it the same way.
pub trait RemoteSigner: Send + Sync + fmt::Debug {
    /// Signs `digest`, the `hash` of the data to sign, and returns the signature's values
    /// (RSA: `s`; EdDSA: `r`, `s`).
    fn sign_digest(&self, hash: HashAlgorithm, digest: &[u8]) -> Result<mpi::Signature, RemoteError>;
}

/// How a [`RemoteSigner`] failed: a refusal (permanent) or an outage (may pass).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unavailable(String),
}

/// The OpenPGP values of a raw signature from a token or KMS: RSA's `s`, or Ed25519's
/// 64 bytes `R || S`.
pub fn signature_values(rsa: bool, raw: &[u8]) -> Result<mpi::Signature, RemoteError> {
    if rsa {
        return Ok(mpi::Signature::RSA { s: mpi::MPI::new(raw) });
    }
    if raw.len() != 64 {
        return Err(RemoteError::Refused(format!("a {}-byte EdDSA signature (want 64)", raw.len())));
    }
    Ok(mpi::Signature::EdDSA { r: mpi::MPI::new(&raw[..32]), s: mpi::MPI::new(&raw[32..]) })
}

/// A public key as a token or KMS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicMaterial {
    /// RSA modulus and exponent, big-endian.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519([u8; 32]),
}

impl PublicMaterial {
    /// Reads a DER SubjectPublicKeyInfo (what KMS `GetPublicKey` returns): RSA or Ed25519.
    pub fn from_spki(der: &[u8]) -> Result<Self, String> {
        use spki::der::{Decode, Reader, SliceReader, asn1::UintRef};
        let info = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| format!("not a public key: {e}"))?;
        let bits = info.subject_public_key.as_bytes().ok_or("a public key that is not whole bytes")?;
        match info.algorithm.oid.to_string().as_str() {
            // rsaEncryption: RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            "1.2.840.113549.1.1.1" => {
                let mut r = SliceReader::new(bits).map_err(|e| e.to_string())?;
                let (n, e) = r
                    .sequence(|r| {
                        Ok((UintRef::decode(r)?.as_bytes().to_vec(), UintRef::decode(r)?.as_bytes().to_vec()))
                    })
                    .map_err(|e| format!("bad RSA public key: {e}"))?;
                Ok(PublicMaterial::Rsa { n, e })
            }
            // id-Ed25519 (RFC 8410): the 32-byte point itself.
            "1.3.101.112" => {
                Ok(PublicMaterial::Ed25519(bits.try_into().map_err(|_| "an Ed25519 key of the wrong size")?))
            }
            "1.2.840.10045.2.1" => {
                Err("an ECDSA key: rpm 4.18 cannot import ECDSA OpenPGP keys (use RSA or Ed25519)".into())
            }
            other => Err(format!("public key algorithm {other} cannot make OpenPGP signatures here")),
        }
    }

    /// The OpenPGP v4 primary key made at `created`, and signet's name for its algorithm.
    pub fn to_key(&self, created: SystemTime) -> Result<(Key<PublicParts, PrimaryRole>, String), KeyError> {
        Ok(match self {
            PublicMaterial::Rsa { n, e } => {
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < 3072 {
                    return Err(KeyError::Unsupported(format!("RSA-{bits} is too small (need 3072 or more)")));
                }
                (Key4::import_public_rsa(e, n, created).map_err(pgp_err)?.into(), format!("rsa{bits}"))
            }
            PublicMaterial::Ed25519(q) => {
                (Key4::import_public_ed25519(q, created).map_err(pgp_err)?.into(), "ed25519".into())
            }
        })
    }
}

/// sequoia's signer over a [`RemoteSigner`].
#[derive(Clone)]
struct Remote {
    public: Key<PublicParts, UnspecifiedRole>,
    signer: Arc<dyn RemoteSigner>,
}

impl openpgp::crypto::Signer for Remote {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        &self.public
    }

    fn acceptable_hashes(&self) -> &[HashAlgorithm] {
        SIGNER_HASHES
    }

    fn sign(&mut self, hash_algo: HashAlgorithm, digest: &[u8]) -> openpgp::Result<mpi::Signature> {
        Ok(self.signer.sign_digest(hash_algo, digest)?)
    }
}

/// Where the signing half of a [`SigningKey`] is.
#[derive(Clone)]
enum Backend {
    /// Unsealed into this process.
    Local(KeyPair),
    /// An RSA key unsealed into this process, signing with the CRT (see [`crate::ossl_signer`]).
    Crt(crate::ossl_signer::CrtSigner),
    /// An Ed25519 key unsealed into this process, held as an OpenSSL key.
    Ed25519(crate::ossl_signer::Ed25519Signer),
    /// In a token or a KMS.
    Remote(Remote),
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
    signer: Backend,
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
        let signer = match crate::ossl_signer::CrtSigner::new(ka.key()) {
            Some(Ok(crt)) => Backend::Crt(crt),
            Some(Err(e)) => {
                // Still correct, only slower: sequoia's own RSA signer.
                tracing::warn!(fingerprint = %signer_fpr, "RSA key without the CRT signer: {e}");
                Backend::Local(ka.key().clone().into_keypair().map_err(pgp_err)?)
            }
            None => match crate::ossl_signer::Ed25519Signer::new(ka.key()) {
                Some(Ok(ed)) => Backend::Ed25519(ed),
                Some(Err(e)) => {
                    tracing::warn!(fingerprint = %signer_fpr, "Ed25519 key without the OpenSSL signer: {e}");
                    Backend::Local(ka.key().clone().into_keypair().map_err(pgp_err)?)
                }
                None => Backend::Local(ka.key().clone().into_keypair().map_err(pgp_err)?),
            },
        };
        Ok(SigningKey { cert, signer, signer_fpr })
    }

    /// A key whose primary key signs through `signer` (its secret is in a token or KMS);
    /// `cert` is its public certificate.
    pub fn remote(cert: Cert, signer: Arc<dyn RemoteSigner>) -> Result<Self, KeyError> {
        let key = cert.primary_key().key().clone().role_into_unspecified();
        if key.version() != 4 || !algo_ok(key.pk_algo(), key.mpis().bits()) {
            return Err(KeyError::NoSigningKey { fingerprint: cert.fingerprint().to_hex() });
        }
        let signer_fpr = key.fingerprint();
        Ok(SigningKey { cert, signer: Backend::Remote(Remote { public: key, signer }), signer_fpr })
    }

    /// Whether the secret is in this process (sealed in the vault) rather than a token or KMS.
    pub fn is_local(&self) -> bool {
        matches!(self.signer, Backend::Local(_) | Backend::Crt(_) | Backend::Ed25519(_))
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
        let builder =
            SignatureBuilder::new(SignatureType::Binary).set_signature_creation_time(time).map_err(pgp_err)?;
        match &mut self.signer {
            Backend::Local(k) => builder.sign_hash(k, hash),
            Backend::Crt(c) => builder.sign_hash(c, hash),
            Backend::Ed25519(e) => builder.sign_hash(e, hash),
            Backend::Remote(r) => builder.sign_hash(r, hash),
        }
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
    pub(crate) fn keypair(&self) -> Box<dyn openpgp::crypto::Signer + Send + Sync> {
        match &self.signer {
            Backend::Local(k) => Box::new(k.clone()),
            Backend::Crt(c) => Box::new(c.clone()),
            Backend::Ed25519(e) => Box::new(e.clone()),
            Backend::Remote(r) => Box::new(r.clone()),
        }
    }

    /// Makes a signature of `builder`'s kind (a revocation) with this key.
    pub fn sign_with(
        &mut self,
        f: impl FnOnce(&mut dyn openpgp::crypto::Signer) -> openpgp::Result<Signature>,
    ) -> Result<Signature, KeyError> {
        match &mut self.signer {
            Backend::Local(k) => f(k),
            Backend::Crt(c) => f(c),
            Backend::Ed25519(e) => f(e),
            Backend::Remote(r) => f(r),
        }
        .map_err(pgp_err)
    }

    /// The whole key, secrets included, serialized for sealing. Zeroized when dropped.
    pub fn to_secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if !self.is_local() {
            return Err(KeyError::Unsupported("the secret of this key is in a token or KMS".into()));
        }
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

/// Reads the packets of an armored or binary signature (a revocation) for a certificate.
pub fn parse_certs_or_signature(bytes: &[u8]) -> Result<Vec<Packet>, KeyError> {
    let pile = openpgp::PacketPile::from_bytes(bytes).map_err(pgp_err)?;
    let sigs: Vec<Packet> = pile.into_children().filter(|p| matches!(p, Packet::Signature(_))).collect();
    if sigs.is_empty() {
        return Err(KeyError::OpenPgp("no signature found".into()));
    }
    Ok(sigs)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ed25519_spki_gives_the_point_and_an_ecdsa_one_is_refused_naming_rpm() {
        // `openssl pkey -pubout -outform DER` of an Ed25519 and a P-256 key.
        let ed =
            hex::decode("302a300506032b6570032100d0f93d8e0f840db0d1815d86b705d8a16fc14b51bb5a5f8a7df0b9afff129d10")
                .unwrap();
        let PublicMaterial::Ed25519(q) = PublicMaterial::from_spki(&ed).unwrap() else { panic!("not Ed25519") };
        assert_eq!(&q[..], &ed[12..]);
        let (key, algo) = PublicMaterial::Ed25519(q).to_key(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!((key.pk_algo(), algo.as_str()), (PublicKeyAlgorithm::EdDSA, "ed25519"));

        let ec = hex::decode(
            "3059301306072a8648ce3d020106082a8648ce3d03010703420004d84a9ccdd127762c661b8313b916676b545aef7c3488\
             f71816ea2e27a93660a42e16c10659edc699c323ca956dcd7db746a6c56275c9881e4cc27d544b8afc90",
        )
        .unwrap();
        let err = PublicMaterial::from_spki(&ec).unwrap_err();
        assert!(err.contains("ECDSA") && err.contains("rpm"), "{err}");
        assert!(PublicMaterial::from_spki(&ed[..20]).is_err(), "a truncated key parsed");
    }

    /// A remote signer that holds an Ed25519 key and answers as KMS and tokens do: 64 raw
    /// bytes `R || S`, or a refusal.
    struct RawEd25519 {
        pair: std::sync::Mutex<KeyPair>,
        refuse: bool,
    }

    impl fmt::Debug for RawEd25519 {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("RawEd25519")
        }
    }

    impl RemoteSigner for RawEd25519 {
        fn sign_digest(&self, hash: HashAlgorithm, digest: &[u8]) -> Result<mpi::Signature, RemoteError> {
            if self.refuse {
                return Err(RemoteError::Refused("the key is disabled".into()));
            }
            use openpgp::crypto::Signer;
            let sig =
                self.pair.lock().unwrap().sign(hash, digest).map_err(|e| RemoteError::Unavailable(e.to_string()))?;
            let mpi::Signature::EdDSA { r, s } = sig else { panic!("not EdDSA") };
            let mut raw = vec![0u8; 64];
            raw[32 - r.value().len()..32].copy_from_slice(r.value());
            raw[64 - s.value().len()..].copy_from_slice(s.value());
            signature_values(false, &raw)
        }
    }

    #[test]
    fn a_remote_ed25519_key_certifies_and_signs_and_a_refusal_keeps_its_kind() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let secret = generate(Algo::Ed25519, "remote <r@example.org>", now).unwrap();
        let key = secret.primary_key().key().clone().parts_into_secret().unwrap();
        let pair = key.clone().into_keypair().unwrap();
        let public = secret.primary_key().key().clone().parts_into_public();
        let signer = Arc::new(RawEd25519 { pair: std::sync::Mutex::new(pair), refuse: false });
        let cert = certify(public.clone(), "remote <r@example.org>", signer.clone(), now).unwrap();
        assert_eq!(cert.fingerprint(), secret.fingerprint(), "the creation time changed the fingerprint");
        let mut k = SigningKey::remote(cert.clone(), signer).unwrap();
        assert!(!k.is_local());
        let sig = k.sign_reader(&mut &b"payload"[..], now).unwrap();
        let checker = crate::check::Checker::new(vec![cert.clone()]);
        checker.detached(&armor_signature(&sig).unwrap(), &b"payload"[..]).expect("the remote signature verifies");
        assert!(checker.detached(&armor_signature(&sig).unwrap(), &b"other"[..]).is_err());

        let pair = key.into_keypair().unwrap();
        let refusing = Arc::new(RawEd25519 { pair: std::sync::Mutex::new(pair), refuse: true });
        let mut k = SigningKey::remote(cert, refusing).unwrap();
        let err = k.sign_reader(&mut &b"payload"[..], now).unwrap_err();
        assert!(matches!(err, KeyError::RemoteRefused(ref m) if m.contains("disabled")), "{err:?}");
    }
}
