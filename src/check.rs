//! Signature checks against a set of trusted certificates, used both to verify every output
//! in-process before it becomes final and by `signet verify`.

use std::io::{self, Read};

use sequoia_openpgp as openpgp;

use openpgp::packet::Signature;
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationHelper, VerifierBuilder,
};
use openpgp::policy::{HashAlgoSecurity, Policy, StandardPolicy};
use openpgp::{Cert, KeyHandle};

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
}

impl Checker {
    /// A checker that trusts exactly `certs`.
    pub fn new(certs: Vec<Cert>) -> Self {
        Checker { certs, policy: StandardPolicy::new() }
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
                match sig.verify_hash(ka.key(), hash.clone()) {
                    Ok(()) => return Ok(ka.key().fingerprint().to_hex()),
                    Err(e) => last = e.to_string(),
                }
            }
        }
        Err(CheckError::Bad(last))
    }
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
