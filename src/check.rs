//! Signature checks against a set of trusted certificates, used both to verify every output
//! in-process before it becomes final and by `signet verify`.
//!
//! Raw signature packets ([`Checker::packet`]: RPM headers, DEB members) by a trusted
//! Ed25519 key are checked with ed25519-dalek, not with sequoia's OpenSSL backend: OpenSSL
//! 3.0's Ed25519 verification took about 2.5 times what a signature takes, and it was most
//! of the cost of each package of a batch. Sequoia still parses the packet, applies the
//! policy and computes the digest the signature covers (the data, then the packet's own
//! trailer); ed25519-dalek checks the 64-byte signature over that digest as RFC 8032 and
//! OpenSSL do (cofactorless, S must be canonical). The checks sequoia makes around its
//! backend call are made here too: a v4 signature of a v4 key, made no earlier than the key.
//! An output signed through OpenSSL (`ossl_signer`) is so checked by an independent
//! implementation. Every other algorithm, and detached and cleartext signatures, go
//! through sequoia as before.

use std::io::{self, Read};

use sequoia_openpgp as openpgp;

use openpgp::crypto::mpi;
use openpgp::packet::Signature;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationHelper, VerifierBuilder,
};
use openpgp::policy::{HashAlgoSecurity, Policy, StandardPolicy};
use openpgp::{Cert, Fingerprint, KeyHandle};

/// Why a signature did not check out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    #[error("no valid signature by a trusted key ({0})")]
    Bad(String),
    #[error("no signature found")]
    Missing,
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// Trusted certificates plus the policy they are checked under.
pub struct Checker {
    certs: Vec<Cert>,
    policy: StandardPolicy<'static>,
    /// The trusted v4 EdDSA Ed25519 keys, decoded once for ed25519-dalek.
    ed25519: Vec<(Fingerprint, ed25519_dalek::VerifyingKey)>,
}

impl Checker {
    /// A checker that trusts exactly `certs`.
    pub fn new(certs: Vec<Cert>) -> Self {
        let ed25519 = certs
            .iter()
            .flat_map(|c| c.keys())
            .filter_map(|ka| Some((ka.key().fingerprint(), dalek_key(ka.key())?)))
            .collect();
        Checker { certs, policy: StandardPolicy::new(), ed25519 }
    }

    /// Checks a detached signature (armored or binary) over everything `data` yields.
    /// Returns the fingerprint of the key that made the good signature.
    pub fn detached(&self, sig: &[u8], data: impl Read + Send + Sync) -> Result<String, CheckError> {
        let mut helper = Helper::new(&self.certs);
        let result = DetachedVerifierBuilder::from_bytes(sig)
            .and_then(|b| b.with_policy(&self.policy, None, &mut helper))
            .and_then(|mut v| v.verify_reader(data));
        helper.finish(result)
    }

    /// Checks a cleartext-signed message (an `InRelease`) and returns the signer's
    /// fingerprint and the signed text.
    pub fn cleartext(&self, msg: &[u8]) -> Result<(String, Vec<u8>), CheckError> {
        if !msg.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----") {
            return Err(CheckError::Missing);
        }
        let mut helper = Helper::new(&self.certs);
        let mut text = Vec::new();
        let result = VerifierBuilder::from_bytes(msg)
            .and_then(|b| b.with_policy(&self.policy, None, &mut helper))
            .and_then(|mut v| {
                io::copy(&mut v, &mut text)?;
                Ok(())
            });
        let fpr = helper.finish(result)?;
        Ok((fpr, text))
    }

    /// Whether one of the trusted keys is an issuer `sig` names.
    pub fn knows(&self, sig: &Signature) -> bool {
        let handles = sig.get_issuers();
        self.certs.iter().flat_map(|c| c.keys()).any(|ka| {
            let kh = KeyHandle::from(ka.key().fingerprint());
            handles.iter().any(|h| h.aliases(&kh))
        })
    }

    /// Checks one raw signature packet over data already fed into `hash` (made by
    /// [`hasher_for`]): an RPM header, the members of a DEB.
    pub fn packet(&self, sig: &Signature, hash: &openpgp::crypto::hash::Context) -> Result<String, CheckError> {
        self.policy
            .signature(sig, HashAlgoSecurity::CollisionResistance)
            .map_err(|e| CheckError::Bad(e.to_string()))?;
        let handles = sig.get_issuers();
        let mut last = String::from("no trusted key matches the issuer");
        for cert in &self.certs {
            for ka in cert.keys() {
                let kh = KeyHandle::from(ka.key().fingerprint());
                if !handles.iter().any(|h| h.aliases(&kh)) {
                    continue;
                }
                match self.verify_hash(sig, ka.key(), hash) {
                    Ok(()) => return Ok(ka.key().fingerprint().to_hex()),
                    Err(e) => last = e.to_string(),
                }
            }
        }
        Err(CheckError::Bad(last))
    }
}

impl Checker {
    /// `sig` over the data in `hash`, by `key`: with ed25519-dalek for a trusted Ed25519
    /// key (see the module comment), else with sequoia.
    fn verify_hash(
        &self,
        sig: &Signature,
        key: &openpgp::packet::Key<PublicParts, UnspecifiedRole>,
        hash: &openpgp::crypto::hash::Context,
    ) -> openpgp::Result<()> {
        let fpr = key.fingerprint();
        if let Some((_, vk)) = self.ed25519.iter().find(|(f, _)| *f == fpr)
            && let Some(result) = dalek_verify(sig, key, vk, hash)
        {
            return result;
        }
        sig.verify_hash(key, hash.clone())
    }

    /// [`Checker::packet`] through sequoia alone: what the ed25519-dalek path is tested
    /// against.
    #[cfg(test)]
    fn packet_with_sequoia(
        &self,
        sig: &Signature,
        hash: &openpgp::crypto::hash::Context,
    ) -> Result<String, CheckError> {
        let plain = Checker { certs: self.certs.clone(), policy: StandardPolicy::new(), ed25519: Vec::new() };
        plain.packet(sig, hash)
    }
}

/// The ed25519-dalek key of a v4 EdDSA Ed25519 key (`q` is 0x40 and the 32-byte point).
fn dalek_key(key: &openpgp::packet::Key<PublicParts, UnspecifiedRole>) -> Option<ed25519_dalek::VerifyingKey> {
    let mpi::PublicKey::EdDSA { curve: openpgp::types::Curve::Ed25519, q } = key.mpis() else { return None };
    if key.version() != 4 {
        return None;
    }
    let point: &[u8; 32] = q.value().strip_prefix(&[0x40])?.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(point).ok()
}

/// Checks a v4 EdDSA signature as sequoia's `Signature::verify_hash` would, with `vk`
/// doing the arithmetic; `None` for a signature this path does not take.
fn dalek_verify(
    sig: &Signature,
    key: &openpgp::packet::Key<PublicParts, UnspecifiedRole>,
    vk: &ed25519_dalek::VerifyingKey,
    hash: &openpgp::crypto::hash::Context,
) -> Option<openpgp::Result<()>> {
    use ed25519_dalek::Verifier;
    let mpi::Signature::EdDSA { r, s } = sig.mpis() else { return None };
    if sig.version() != 4 || key.version() != 4 {
        return None;
    }
    let bad = |m: String| -> anyhow::Error { openpgp::Error::BadSignature(m).into() };
    Some((|| {
        match sig.signature_creation_time() {
            Some(t) if t >= key.creation_time() => {}
            Some(t) => return Err(bad(format!("Signature (created {t:?}) predates key ({:?})", key.creation_time()))),
            None => return Err(bad("Signature has no creation time subpacket".into())),
        }
        // The digest sequoia verifies: the data, then the signature's own trailer.
        let mut h = hash.clone();
        openpgp::crypto::hash::Hash::hash(sig, &mut h)?;
        let digest = h.into_digest()?;
        // OpenPGP stores R and S as MPIs, which drop leading zero bytes.
        let mut raw = [0u8; 64];
        raw[..32].copy_from_slice(&r.value_padded(32).map_err(|_| bad("EdDSA R longer than 32 bytes".into()))?);
        raw[32..].copy_from_slice(&s.value_padded(32).map_err(|_| bad("EdDSA S longer than 32 bytes".into()))?);
        vk.verify(&digest, &ed25519_dalek::Signature::from_bytes(&raw))
            .map_err(|_| bad("EdDSA signature did not verify".into()))
    })())
}

/// A hash context ready to be fed the data `sig` claims to sign.
pub fn hasher_for(sig: &Signature) -> Result<openpgp::crypto::hash::Context, CheckError> {
    Ok(sig.hash_algo().context().map_err(|e| CheckError::Malformed(e.to_string()))?.for_signature(sig.version()))
}

struct Helper<'a> {
    certs: &'a [Cert],
    good: Option<String>,
    errors: Vec<String>,
}

impl<'a> Helper<'a> {
    fn new(certs: &'a [Cert]) -> Self {
        Helper { certs, good: None, errors: Vec::new() }
    }

    fn finish(&self, result: openpgp::Result<()>) -> Result<String, CheckError> {
        match (&self.good, result) {
            (Some(fpr), Ok(())) => Ok(fpr.clone()),
            (_, Err(e)) if self.errors.is_empty() => {
                let msg = e.to_string();
                if msg.contains("Malformed") || msg.contains("armor") || msg.contains("Unexpected EOF") {
                    Err(CheckError::Malformed(msg))
                } else {
                    Err(CheckError::Bad(msg))
                }
            }
            _ if self.errors.is_empty() => Err(CheckError::Missing),
            _ => Err(CheckError::Bad(self.errors.join("; "))),
        }
    }
}

impl VerificationHelper for &mut Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.certs.to_vec())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure {
            if let MessageLayer::SignatureGroup { results } = layer {
                for r in results {
                    match r {
                        Ok(good) => self.good = Some(good.ka.key().fingerprint().to_hex()),
                        Err(e) => self.errors.push(e.to_string()),
                    }
                }
            }
        }
        if self.good.is_some() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "no good signature{}",
                if self.errors.is_empty() { String::new() } else { format!(": {}", self.errors.join("; ")) }
            ))
        }
    }
}

/// Parses one binary signature packet, as stored in an RPM signature header or a DEB.
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, CheckError> {
    match openpgp::Packet::from_bytes(bytes) {
        Ok(openpgp::Packet::Signature(sig)) => Ok(sig),
        Ok(other) => Err(CheckError::Malformed(format!("expected a signature packet, found {}", other.tag()))),
        Err(e) => Err(CheckError::Malformed(e.to_string())),
    }
}

/// The issuers (fingerprints, or key ids) of the signatures in a detached signature or a
/// cleartext-signed message, without checking them: empty if there are none or it does not
/// parse.
pub fn signature_issuers(bytes: &[u8]) -> Vec<String> {
    use openpgp::parse::{PacketParser, PacketParserResult};
    // A cleartext-signed message: its signature block is an armored detached signature.
    const BLOCK: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
    let sig = if bytes.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----") {
        match bytes.windows(BLOCK.len()).position(|w| w == BLOCK) {
            Some(at) => &bytes[at..],
            None => return Vec::new(),
        }
    } else {
        bytes
    };
    let mut out = Vec::new();
    let Ok(mut ppr) = PacketParser::from_bytes(sig) else { return out };
    while let PacketParserResult::Some(pp) = ppr {
        let Ok((packet, next)) = pp.next() else { break };
        if let openpgp::Packet::Signature(s) = packet {
            out.extend(crate::key::issuers(&s));
        }
        ppr = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpgp::packet::signature::SignatureBuilder;
    use openpgp::types::SignatureType;
    use std::time::{Duration, SystemTime};

    fn ed25519_cert() -> Cert {
        crate::key::generate(
            crate::key::Algo::Ed25519,
            "check <c@example.org>",
            SystemTime::now() - Duration::from_secs(60),
        )
        .unwrap()
    }

    fn sign(cert: &Cert, data: &[u8], time: SystemTime) -> Signature {
        let key = cert.primary_key().key().clone().parts_into_secret().unwrap().role_into_unspecified();
        let mut signer = key.into_keypair().unwrap();
        let mut hash = openpgp::types::HashAlgorithm::SHA256.context().unwrap().for_signature(4);
        hash.update(data);
        SignatureBuilder::new(SignatureType::Binary)
            .set_signature_creation_time(time)
            .unwrap()
            .sign_hash(&mut signer, hash)
            .unwrap()
    }

    /// Both paths over `data`: the verdict of the ed25519-dalek one, which must be sequoia's.
    fn judge(checker: &Checker, sig: &Signature, data: &[u8]) -> Result<String, String> {
        let mut hash = hasher_for(sig).unwrap();
        hash.update(data);
        let fast = checker.packet(sig, &hash).map_err(|e| e.to_string());
        let slow = checker.packet_with_sequoia(sig, &hash).map_err(|e| e.to_string());
        assert_eq!(fast.is_ok(), slow.is_ok(), "ed25519-dalek says {fast:?}, sequoia {slow:?}");
        fast
    }

    #[test]
    fn ed25519_packets_are_judged_as_sequoia_judges_them() {
        let cert = ed25519_cert();
        let checker = Checker::new(vec![cert.clone()]);
        assert_eq!(checker.ed25519.len(), 1, "the Ed25519 key was not decoded for the fast path");
        let fpr = cert.fingerprint().to_hex();
        let now = SystemTime::now();
        let data = b"the header of a package".to_vec();

        let good = sign(&cert, &data, now);
        assert_eq!(judge(&checker, &good, &data), Ok(fpr.clone()));

        let mut other = data.clone();
        other[0] ^= 1;
        let e = judge(&checker, &good, &other).unwrap_err();
        assert!(e.contains("EdDSA signature did not verify"), "not the ed25519-dalek path: {e}");

        // A flipped bit in S (the last bytes of the packet).
        let mut bytes = crate::key::binary_signature(&good).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let flipped = parse_signature(&bytes).unwrap();
        assert!(judge(&checker, &flipped, &data).is_err());

        let early = sign(&cert, &data, cert.primary_key().key().creation_time() - Duration::from_secs(3600));
        let e = judge(&checker, &early, &data).unwrap_err();
        assert!(e.contains("predates key"), "{e}");

        let stranger = sign(&ed25519_cert(), &data, now);
        assert!(judge(&checker, &stranger, &data).unwrap_err().contains("no trusted key"));
    }

    #[test]
    fn ed25519_signatures_with_short_r_or_s_are_padded_back() {
        // MPIs drop leading zero bytes: R or S is shorter than 32 bytes in about one
        // signature in 128. Look for both kinds.
        let cert = ed25519_cert();
        let checker = Checker::new(vec![cert.clone()]);
        let (mut short_r, mut short_s) = (false, false);
        for i in 0..20_000u32 {
            let data = i.to_be_bytes();
            let sig = sign(&cert, &data, SystemTime::now());
            let mpi::Signature::EdDSA { r, s } = sig.mpis() else { panic!("not EdDSA") };
            let (r_short, s_short) = (r.value().len() < 32, s.value().len() < 32);
            if (r_short && !short_r) || (s_short && !short_s) {
                assert!(judge(&checker, &sig, &data).is_ok(), "a signature with a short R or S failed");
                short_r |= r_short;
                short_s |= s_short;
            }
            if short_r && short_s {
                return;
            }
        }
        panic!("no signature with a short R and one with a short S in 20000");
    }
}
