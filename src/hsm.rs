//! Keys that never leave a PKCS#11 token (an HSM, a YubiHSM, AWS CloudHSM, SoftHSM2 in the
//! tests), through `cryptoki`.
//!
//! The token is named by `SIGNET_PKCS11_MODULE` (the module's `.so`), `SIGNET_PKCS11_TOKEN`
//! (its label) and `SIGNET_PKCS11_PIN_FILE` (the user PIN, in a file: never an argument).
//! Keys are made in the token as non-extractable, sensitive private keys; signet only ever
//! holds object handles and public keys. RSA signs with `CKM_RSA_PKCS` over the PKCS#1
//! DigestInfo of the digest, Ed25519 with `CKM_EDDSA` over the digest (what OpenPGP's
//! legacy EdDSA signs). PKCS#11 sessions are not shareable across threads, so a [`Token`]
//! keeps a pool of logged-in sessions that grows to the number of signatures in flight.

use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::key::{Algo, PublicMaterial};

/// DER of the OID 1.3.101.112 (id-Ed25519, RFC 8410), as `CKA_EC_PARAMS`: what SoftHSM2
/// and most tokens take (PKCS#11 3.0 also allows the printable string `edwards25519`).
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2B, 0x65, 0x70];
/// The DER prefix of a PKCS#1 v1.5 DigestInfo for SHA-256 (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] =
    [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];
/// ... for SHA-512.
const SHA512_DIGEST_INFO: [u8; 19] =
    [0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40];

/// Why the token cannot be used. None of these carries the PIN.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Configuration (no module, no token with that label): the operator's to fix.
    #[error("PKCS#11: {0}")]
    Config(String),
    /// The token refused (wrong PIN, locked PIN, key missing, mechanism refused): permanent.
    #[error("PKCS#11 token refused: {0}")]
    Refused(String),
    /// Anything else the module reports (device removed, out of memory): may pass.
    #[error("PKCS#11 token failed: {0}")]
    Failed(String),
}

fn classify(what: &str, e: CkError) -> TokenError {
    match &e {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::KeyHandleInvalid
            | RvError::KeyFunctionNotPermitted
            | RvError::KeyTypeInconsistent
            | RvError::MechanismInvalid
            | RvError::ObjectHandleInvalid
            | RvError::TokenNotPresent
            | RvError::UserNotLoggedIn => TokenError::Refused(format!("{what}: {rv:?}")),
            _ => TokenError::Failed(format!("{what}: {rv:?}")),
        },
        _ => TokenError::Failed(format!("{what}: {e}")),
    }
}

/// Where a key lives in a token: its `CKA_ID` (hex) and `CKA_LABEL`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenKey {
    /// The token's label.
    pub token: String,
    pub label: String,
    /// `CKA_ID`, hex.
    pub id: String,
}

/// An open token: the module, the slot, the PIN, and a pool of logged-in sessions.
pub struct Token {
    pkcs11: Pkcs11,
    slot: Slot,
    label: String,
    pin: AuthPin,
    pool: Mutex<Vec<Session>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("label", &self.label).field("pin", &"[redacted]").finish()
    }
}

/// A session borrowed from the pool, returned when dropped.
struct Pooled<'a> {
    token: &'a Token,
    session: Option<Session>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // `session` is `Some` from construction until `drop` takes it: never `None` here.
        self.session.as_ref().expect("a pooled session")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.token.pool.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        }
    }
}

impl Token {
    /// Opens the token the environment names.
    pub fn from_env() -> Result<Arc<Token>, TokenError> {
        let var = |n: &str| std::env::var(n).map_err(|_| TokenError::Config(format!("{n} is not set")));
        let module = var("SIGNET_PKCS11_MODULE")?;
        let label = var("SIGNET_PKCS11_TOKEN")?;
        let pin_file = var("SIGNET_PKCS11_PIN_FILE")?;
        let pin = Zeroizing::new(
            std::fs::read_to_string(&pin_file)
                .map_err(|e| TokenError::Config(format!("cannot read SIGNET_PKCS11_PIN_FILE {pin_file}: {e}")))?,
        );
        let pin = pin.trim_end_matches(['\n', '\r']);
        Token::open(&module, &label, AuthPin::from(pin.to_owned())).map(Arc::new)
    }

    /// Opens token `label` of `module` with user PIN `pin`, and checks the PIN.
    pub fn open(module: &str, label: &str, pin: AuthPin) -> Result<Token, TokenError> {
        let pkcs11 = Pkcs11::new(module).map_err(|e| TokenError::Config(format!("cannot load {module}: {e}")))?;
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| classify("C_Initialize", e))?;
        let mut found = None;
        for slot in pkcs11.get_slots_with_token().map_err(|e| classify("C_GetSlotList", e))? {
            let info = pkcs11.get_token_info(slot).map_err(|e| classify("C_GetTokenInfo", e))?;
            if info.label().trim_end() == label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| TokenError::Config(format!("no token labelled {label:?} in {module}")))?;
        let token = Token { pkcs11, slot, label: label.to_owned(), pin, pool: Mutex::new(Vec::new()) };
        drop(token.session()?);
        Ok(token)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn session(&self) -> Result<Pooled<'_>, TokenError> {
        if let Some(s) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(Pooled { token: self, session: Some(s) });
        }
        let s = self.pkcs11.open_rw_session(self.slot).map_err(|e| classify("C_OpenSession", e))?;
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(classify("C_Login", e)),
        }
        Ok(Pooled { token: self, session: Some(s) })
    }

    /// Makes a key pair in the token: the private key sensitive, never extractable, only
    /// for signing; the public key readable. `label` names both.
    pub fn generate(&self, label: &str, algo: Algo) -> Result<TokenKey, TokenError> {
        let s = self.session()?;
        if !s
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec()), Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .map_err(|e| classify("C_FindObjects", e))?
            .is_empty()
        {
            return Err(TokenError::Config(format!("token {:?} already has a key labelled {label:?}", self.label)));
        }
        let id = rand::random::<[u8; 16]>().to_vec();
        let common = |v: &mut Vec<Attribute>| {
            v.push(Attribute::Token(true));
            v.push(Attribute::Label(label.as_bytes().to_vec()));
            v.push(Attribute::Id(id.clone()));
        };
        let mut public = vec![Attribute::Verify(true)];
        let mut private = vec![
            Attribute::Private(true),
            Attribute::Sign(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
        ];
        common(&mut public);
        common(&mut private);
        let mechanism = match algo {
            Algo::Rsa4096 => {
                public.push(Attribute::ModulusBits(4096u64.into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
            Algo::Ed25519 => {
                public.push(Attribute::EcParams(ED25519_PARAMS.to_vec()));
                Mechanism::EccEdwardsKeyPairGen
            }
        };
        s.generate_key_pair(&mechanism, &public, &private).map_err(|e| classify("C_GenerateKeyPair", e))?;
        Ok(TokenKey { token: self.label.clone(), label: label.to_owned(), id: hex::encode(id) })
    }

    /// The key labelled `label` (an existing key pair, for `keys import --pkcs11`).
    pub fn find(&self, label: &str) -> Result<TokenKey, TokenError> {
        let s = self.session()?;
        let handle = self.private_handle(&s, &[Attribute::Label(label.as_bytes().to_vec())])?;
        let attrs = s.get_attributes(handle, &[AttributeType::Id]).map_err(|e| classify("C_GetAttributeValue", e))?;
        let id = attrs
            .into_iter()
            .find_map(|a| if let Attribute::Id(v) = a { Some(v) } else { None })
            .ok_or_else(|| TokenError::Refused(format!("key {label:?} has no CKA_ID")))?;
        Ok(TokenKey { token: self.label.clone(), label: label.to_owned(), id: hex::encode(id) })
    }

    fn private_handle(&self, s: &Session, which: &[Attribute]) -> Result<ObjectHandle, TokenError> {
        let mut t = which.to_vec();
        t.push(Attribute::Class(ObjectClass::PRIVATE_KEY));
        let mut found = s.find_objects(&t).map_err(|e| classify("C_FindObjects", e))?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(TokenError::Refused(format!("no private key {which:?} in token {:?}", self.label))),
            n => Err(TokenError::Refused(format!("{n} private keys match {which:?} in token {:?}", self.label))),
        }
    }

    fn id_of(key: &TokenKey) -> Result<Vec<u8>, TokenError> {
        hex::decode(&key.id).map_err(|_| TokenError::Config(format!("key {:?}: bad CKA_ID {:?}", key.label, key.id)))
    }

    /// The public half of `key`.
    pub fn public_key(&self, key: &TokenKey) -> Result<PublicMaterial, TokenError> {
        let s = self.session()?;
        let t = [Attribute::Id(Self::id_of(key)?), Attribute::Class(ObjectClass::PUBLIC_KEY)];
        let handle = *s
            .find_objects(&t)
            .map_err(|e| classify("C_FindObjects", e))?
            .first()
            .ok_or_else(|| TokenError::Refused(format!("no public key with the id of {:?}", key.label)))?;
        let attrs = s
            .get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::EcPoint,
                ],
            )
            .map_err(|e| classify("C_GetAttributeValue", e))?;
        let (mut kt, mut n, mut e, mut point) = (None, None, None, None);
        for a in attrs {
            match a {
                Attribute::KeyType(t) => kt = Some(t),
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                _ => {}
            }
        }
        match kt {
            Some(KeyType::RSA) => match (n, e) {
                (Some(n), Some(e)) => Ok(PublicMaterial::Rsa { n, e }),
                _ => Err(TokenError::Refused("RSA public key without modulus or exponent".into())),
            },
            Some(KeyType::EC_EDWARDS) => {
                let p = point.ok_or_else(|| TokenError::Refused("EdDSA public key without CKA_EC_POINT".into()))?;
                // A DER OCTET STRING (04 20 ...) or, from some modules, the raw 32 bytes.
                let raw = match p.as_slice() {
                    [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
                    raw if raw.len() == 32 => raw,
                    _ => return Err(TokenError::Refused("CKA_EC_POINT is not an Ed25519 point".into())),
                };
                Ok(PublicMaterial::Ed25519(raw.try_into().map_err(|_| TokenError::Refused("bad point".into()))?))
            }
            other => Err(TokenError::Refused(format!("key type {other:?} cannot sign OpenPGP packages here"))),
        }
    }

    /// Signs `digest` (made with `hash`) with `key`: PKCS#1 v1.5 for RSA, EdDSA for Ed25519.
    pub fn sign(&self, key: &TokenKey, rsa: bool, hash: &str, digest: &[u8]) -> Result<Vec<u8>, TokenError> {
        let s = self.session()?;
        let handle = self.private_handle(&s, &[Attribute::Id(Self::id_of(key)?)])?;
        if rsa {
            let prefix = match hash {
                "SHA256" => &SHA256_DIGEST_INFO,
                "SHA512" => &SHA512_DIGEST_INFO,
                other => return Err(TokenError::Refused(format!("hash {other} is not offered for RSA"))),
            };
            let mut info = prefix.to_vec();
            info.extend_from_slice(digest);
            s.sign(&Mechanism::RsaPkcs, handle, &info).map_err(|e| classify("C_Sign", e))
        } else {
            s.sign(&Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)), handle, digest)
                .map_err(|e| classify("C_Sign", e))
        }
    }

    /// Whether `key`'s private half is sensitive and not extractable (and never was).
    pub fn is_locked_in(&self, key: &TokenKey) -> Result<bool, TokenError> {
        let s = self.session()?;
        let handle = self.private_handle(&s, &[Attribute::Id(Self::id_of(key)?)])?;
        let attrs = s
            .get_attributes(
                handle,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )
            .map_err(|e| classify("C_GetAttributeValue", e))?;
        let mut ok = attrs.len() == 4;
        for a in attrs {
            ok &= match a {
                Attribute::Sensitive(v) | Attribute::AlwaysSensitive(v) => v,
                Attribute::Extractable(v) => !v,
                Attribute::NeverExtractable(v) => v,
                _ => true,
            };
        }
        Ok(ok)
    }
}
