//! Signers that keep their OpenSSL key from the moment a vault key is unsealed: RSA with the
//! Chinese Remainder Theorem ([`CrtSigner`]) and Ed25519 ([`Ed25519Signer`]).
//!
//! Ed25519: sequoia-openpgp 2.4 keeps an unsealed secret encrypted in memory and, for every
//! signature, decrypts it (hashing its 4 KiB pre-key) and imports it into a new OpenSSL key;
//! that cost more than the signature itself. [`Ed25519Signer`] builds the OpenSSL key once.
//! Ed25519 is deterministic, so its signatures are sequoia's byte for byte (a unit test).
//!
//! RSA: sequoia-openpgp 2.4's OpenSSL backend builds an RSA key from (e, n, d) alone for every
//! signature (`crypto/backend/openssl/asymmetric.rs`, `sign_backend`), so OpenSSL cannot use
//! the CRT and an RSA-4096 signature costs about four times what it should. [`CrtSigner`]
//! keeps the CRT parameters from the moment the key is unsealed and makes the same PKCS#1
//! v1.5 signature over the DigestInfo. PKCS#1 v1.5 is deterministic, so its signatures are
//! byte for byte those sequoia would make (the unit test checks exactly that).
//!
//! OpenSSL's CRT names the factors the other way round from OpenPGP: OpenSSL's coefficient
//! is `factor2⁻¹ mod factor1`, OpenPGP's `u` is `p⁻¹ mod q`. With OpenSSL's factor1 = OpenPGP
//! `q` and factor2 = `p`, `u` serves as the coefficient as it is; the exponents are
//! `d mod (q - 1)` and `d mod (p - 1)`, computed once with OpenSSL's constant-time bignums
//! in its secure heap. The OpenSSL key is built once, when the key is unsealed, and shared
//! by the threads of a batch (building it cost about as much as a signature); OpenSSL frees
//! it with `BN_clear_free` when the last handle goes. The byte copies it is built from are
//! zeroizing buffers, dropped at once; the process is non-dumpable as before (`harden.rs`).

use std::ffi::{CStr, c_int};
use std::sync::{Arc, OnceLock};

use ossl::pkey::EvpPkey;
use ossl::signature::{OsslSignature, SigAlg, SigOp};
use ossl::{OsslContext, OsslParamBuilder};
use sequoia_openpgp as openpgp;

use openpgp::crypto::mpi;
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use openpgp::types::HashAlgorithm;
use zeroize::Zeroizing;

/// The OpenSSL library context of every CRT signature.
fn context() -> anyhow::Result<&'static OsslContext> {
    static CTX: OnceLock<Option<OsslContext>> = OnceLock::new();
    CTX.get_or_init(|| OsslContext::new_lib_ctx_checked().ok())
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("OpenSSL: cannot make a library context"))
}

/// An OpenSSL key built once, when the key is unsealed, and shared by every thread that
/// signs with it: `EvpPkey` is `Send + Sync` (ossl), and each signature reads it through a
/// fresh `EVP_PKEY_CTX` (`OsslSignature::new`), as openssl-threads(7) allows.
type SharedPkey = EvpPkey;

/// An RSA signing key with its CRT parameters.
#[derive(Clone)]
pub struct CrtSigner {
    public: Key<PublicParts, UnspecifiedRole>,
    pkey: Arc<SharedPkey>,
}

impl std::fmt::Debug for CrtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrtSigner").field("fingerprint", &self.public.fingerprint()).finish_non_exhaustive()
    }
}

impl CrtSigner {
    /// The CRT signer of an unencrypted RSA key, or `None` if `key` is not one. The OpenSSL
    /// key is built here, once; the byte copies of the secret values it is built from are
    /// zeroized before this returns.
    pub fn new(key: &Key<SecretParts, UnspecifiedRole>) -> Option<anyhow::Result<CrtSigner>> {
        let mpi::PublicKey::RSA { e, n } = key.mpis() else { return None };
        let openpgp::packet::key::SecretKeyMaterial::Unencrypted(secret) = key.secret() else { return None };
        let parts = secret.map(|m| match m {
            mpi::SecretKeyMaterial::RSA { d, p, q, u } => {
                Some([d, p, q, u].map(|v| Zeroizing::new(v.value().to_vec())))
            }
            _ => None,
        })?;
        let [d, p, q, u] = parts;
        Some((|| -> anyhow::Result<CrtSigner> {
            // OpenSSL's factor1 is OpenPGP q, factor2 is p (see the module comment).
            let (exponent1, exponent2) = (mod_minus_one(&d, &q)?, mod_minus_one(&d, &p)?);
            let pkey = build_pkey(n.value(), e.value(), [&d, &q, &p, &exponent1, &exponent2, &u])?;
            Ok(CrtSigner { public: key.clone().take_secret().0, pkey: Arc::new(pkey) })
        })())
    }
}

/// The key as OpenSSL's, with every CRT parameter: `secret` is d, factor1, factor2,
/// exponent1, exponent2 and the coefficient.
fn build_pkey(n: &[u8], e: &[u8], secret: [&Zeroizing<Vec<u8>>; 6]) -> anyhow::Result<EvpPkey> {
    let ossl = |e: ossl::Error| anyhow::anyhow!("OpenSSL: {e}");
    let [d, f1, f2, e1, e2, c] = secret;
    let mut params = OsslParamBuilder::with_capacity(8);
    for (name, value) in [
        (c"n", n),
        (c"e", e),
        (c"d", &d[..]),
        (c"rsa-factor1", &f1[..]),
        (c"rsa-factor2", &f2[..]),
        (c"rsa-exponent1", &e1[..]),
        (c"rsa-exponent2", &e2[..]),
        (c"rsa-coefficient1", &c[..]),
    ] {
        params.add_bn(name, value).map_err(ossl)?;
    }
    let params = params.finalize();
    const RSA: &CStr = c"RSA";
    EvpPkey::fromdata(context()?, RSA, ossl::bindings::EVP_PKEY_KEYPAIR as _, &params).map_err(ossl)
}

/// A legacy (v4 EdDSA) Ed25519 signing key, held as an OpenSSL key.
#[derive(Clone)]
pub struct Ed25519Signer {
    public: Key<PublicParts, UnspecifiedRole>,
    pkey: Arc<SharedPkey>,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Signer").field("fingerprint", &self.public.fingerprint()).finish_non_exhaustive()
    }
}

impl Ed25519Signer {
    /// The signer of an unencrypted EdDSA Ed25519 key, or `None` if `key` is not one. The
    /// secret is copied out of sequoia's encrypted memory once, into OpenSSL's key, through
    /// a zeroizing buffer.
    pub fn new(key: &Key<SecretParts, UnspecifiedRole>) -> Option<anyhow::Result<Ed25519Signer>> {
        use ossl::pkey::{EccData, EvpPkeyType, PkeyData};
        let mpi::PublicKey::EdDSA { curve: openpgp::types::Curve::Ed25519, q } = key.mpis() else { return None };
        let openpgp::packet::key::SecretKeyMaterial::Unencrypted(secret) = key.secret() else { return None };
        let scalar = secret.map(|m| match m {
            mpi::SecretKeyMaterial::EdDSA { scalar } => Some(Zeroizing::new(scalar.value_padded(32).to_vec())),
            _ => None,
        })?;
        Some((|| -> anyhow::Result<Ed25519Signer> {
            anyhow::ensure!(scalar.len() == 32, "an Ed25519 secret of {} bytes", scalar.len());
            // q is 0x40 followed by the 32-byte point.
            let point = q.value().strip_prefix(&[0x40]).filter(|p| p.len() == 32);
            let point = point.ok_or_else(|| anyhow::anyhow!("an Ed25519 public key that is not 0x40 || 32 bytes"))?;
            let data = PkeyData::Ecc(EccData {
                pubkey: Some(point.to_vec()),
                prikey: Some(ossl::OsslSecret::from_slice(&scalar)),
            });
            let pkey =
                EvpPkey::import(context()?, EvpPkeyType::Ed25519, data).map_err(|e| anyhow::anyhow!("OpenSSL: {e}"))?;
            Ok(Ed25519Signer { public: key.clone().take_secret().0, pkey: Arc::new(pkey) })
        })())
    }
}

impl openpgp::crypto::Signer for Ed25519Signer {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        &self.public
    }

    fn acceptable_hashes(&self) -> &[HashAlgorithm] {
        crate::key::SIGNER_HASHES
    }

    fn sign(&mut self, _hash_algo: HashAlgorithm, digest: &[u8]) -> openpgp::Result<mpi::Signature> {
        let ossl = |e: ossl::Error| anyhow::anyhow!("OpenSSL: {e}");
        let mut signer =
            OsslSignature::new(context()?, SigOp::Sign, SigAlg::Ed25519, &self.pkey, None).map_err(ossl)?;
        let mut sig = [0u8; 64];
        signer.sign(digest, Some(&mut sig)).map_err(ossl)?;
        Ok(crate::key::signature_values(false, &sig)?)
    }
}

impl openpgp::crypto::Signer for CrtSigner {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        &self.public
    }

    fn acceptable_hashes(&self) -> &[HashAlgorithm] {
        crate::key::SIGNER_HASHES
    }

    fn sign(&mut self, hash_algo: HashAlgorithm, digest: &[u8]) -> openpgp::Result<mpi::Signature> {
        let ossl = |e: ossl::Error| anyhow::anyhow!("OpenSSL: {e}");
        let mut info = hash_algo.oid()?.to_vec();
        info.extend_from_slice(digest);
        let mut signer = OsslSignature::new(context()?, SigOp::Sign, SigAlg::Rsa, &self.pkey, None).map_err(ossl)?;
        let size = signer.sign(&info, None).map_err(ossl)?;
        let mut sig = vec![0u8; size];
        let len = signer.sign(&info, Some(&mut sig)).map_err(ossl)?;
        sig.truncate(len);
        Ok(mpi::Signature::RSA { s: mpi::MPI::new(&sig) })
    }
}

/// `d mod (x - 1)` with OpenSSL's constant-time bignums in its secure heap.
fn mod_minus_one(d: &[u8], x: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    use openssl_sys as ffi;

    /// A secure-heap BIGNUM, cleared and freed on drop.
    struct Bn(*mut ffi::BIGNUM);
    impl Drop for Bn {
        fn drop(&mut self) {
            // SAFETY: the pointer came from BN_secure_new and is freed once, here.
            unsafe { ffi::BN_clear_free(self.0) }
        }
    }
    fn new_bn(from: Option<&[u8]>) -> anyhow::Result<Bn> {
        // SAFETY: BN_secure_new returns an owned BIGNUM or NULL; BN_bin2bn reads exactly
        // `from.len()` bytes into it.
        unsafe {
            let bn = Bn(ffi::BN_secure_new());
            anyhow::ensure!(!bn.0.is_null(), "BN_secure_new failed");
            ffi::BN_set_flags(bn.0, ffi::BN_FLG_CONSTTIME);
            if let Some(v) = from {
                let len = c_int::try_from(v.len())?;
                anyhow::ensure!(!ffi::BN_bin2bn(v.as_ptr(), len, bn.0).is_null(), "BN_bin2bn failed");
            }
            Ok(bn)
        }
    }
    struct Ctx(*mut ffi::BN_CTX);
    impl Drop for Ctx {
        fn drop(&mut self) {
            // SAFETY: the pointer came from BN_CTX_secure_new and is freed once, here.
            unsafe { ffi::BN_CTX_free(self.0) }
        }
    }

    let (d, x, x1, r) = (new_bn(Some(d))?, new_bn(Some(x))?, new_bn(None)?, new_bn(None)?);
    // SAFETY: every pointer is a live BIGNUM (or BN_CTX) owned by the guards above; the
    // output buffer has exactly BN_num_bytes(r) bytes.
    unsafe {
        let ctx = Ctx(ffi::BN_CTX_secure_new());
        anyhow::ensure!(!ctx.0.is_null(), "BN_CTX_secure_new failed");
        anyhow::ensure!(ffi::BN_sub(x1.0, x.0, ffi::BN_value_one()) == 1, "BN_sub failed");
        anyhow::ensure!(ffi::BN_div(std::ptr::null_mut(), r.0, d.0, x1.0, ctx.0) == 1, "BN_div failed");
        let bytes = usize::try_from(ffi::BN_num_bits(r.0) + 7)? / 8;
        let mut out = Zeroizing::new(vec![0u8; bytes]);
        anyhow::ensure!(usize::try_from(ffi::BN_bn2bin(r.0, out.as_mut_ptr()))? == bytes, "BN_bn2bin failed");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::crypto::Signer;

    #[test]
    fn crt_signatures_are_sequoias_byte_for_byte_and_verify() {
        let cert = crate::key::generate(crate::key::Algo::Rsa4096, "crt <c@example.org>", std::time::SystemTime::now())
            .unwrap();
        let key = cert.primary_key().key().clone().parts_into_secret().unwrap().role_into_unspecified();
        let mut crt = CrtSigner::new(&key).expect("an RSA key").unwrap();
        let mut plain = key.clone().into_keypair().unwrap();
        for (hash, digest) in [(HashAlgorithm::SHA256, vec![7u8; 32]), (HashAlgorithm::SHA512, vec![9u8; 64])] {
            let a = crt.sign(hash, &digest).unwrap();
            let b = plain.sign(hash, &digest).unwrap();
            assert_eq!(a, b, "the CRT signature differs from sequoia's");
            key.verify(&a, hash, &digest).expect("it verifies");
            let mut other = digest.clone();
            other[0] ^= 1;
            assert!(key.verify(&a, hash, &other).is_err());
        }
        let ed = crate::key::generate(crate::key::Algo::Ed25519, "e", std::time::SystemTime::now()).unwrap();
        let ed = ed.primary_key().key().clone().parts_into_secret().unwrap().role_into_unspecified();
        assert!(CrtSigner::new(&ed).is_none(), "an Ed25519 key got a CRT signer");
        assert!(Ed25519Signer::new(&key).is_none(), "an RSA key got an Ed25519 signer");
    }

    #[test]
    fn ed25519_signatures_are_sequoias_byte_for_byte_and_verify() {
        // A few keys, and one whose scalar starts with a zero byte (stored as a shorter MPI,
        // which must be padded back to 32 bytes): about one key in 256, so look for one.
        let short = |key: &Key<SecretParts, UnspecifiedRole>| match key.secret() {
            openpgp::packet::key::SecretKeyMaterial::Unencrypted(s) => s.map(|m| match m {
                mpi::SecretKeyMaterial::EdDSA { scalar } => scalar.value().len() < 32,
                _ => false,
            }),
            _ => false,
        };
        let mut keys = Vec::new();
        let mut found_short = false;
        for _ in 0..5000 {
            let cert = crate::key::generate(crate::key::Algo::Ed25519, "ed", std::time::SystemTime::now()).unwrap();
            let key = cert.primary_key().key().clone().parts_into_secret().unwrap().role_into_unspecified();
            if short(&key) && !found_short {
                found_short = true;
                keys.push(key);
            } else if keys.len() < 3 {
                keys.push(key);
            }
            if found_short && keys.len() >= 4 {
                break;
            }
        }
        assert!(found_short, "no key with a short scalar in 5000 tries");
        for key in keys {
            let mut ours = Ed25519Signer::new(&key).expect("an Ed25519 key").unwrap();
            let mut plain = key.clone().into_keypair().unwrap();
            for (hash, digest) in [(HashAlgorithm::SHA256, vec![7u8; 32]), (HashAlgorithm::SHA512, vec![9u8; 64])] {
                let a = ours.sign(hash, &digest).unwrap();
                let b = plain.sign(hash, &digest).unwrap();
                assert_eq!(a, b, "the Ed25519 signature differs from sequoia's");
                key.verify(&a, hash, &digest).expect("it verifies");
                let mut other = digest.clone();
                other[0] ^= 1;
                assert!(key.verify(&a, hash, &other).is_err());
            }
        }
    }
}
