//! Keys that never leave AWS KMS: asymmetric `SIGN_VERIFY` keys that sign through KMS `Sign`.
//!
//! signet holds only the key's ARN and its public key (from `GetPublicKey`). RSA keys sign
//! with `RSASSA_PKCS1_V1_5_SHA_256` over the digest OpenPGP computed (`MessageType=DIGEST`,
//! so KMS does not hash it again); Ed25519 keys (`ECC_NIST_EDWARDS25519`, where the KMS has
//! them) sign the digest as a raw message with `ED25519_SHA_512`, which is what OpenPGP's
//! legacy EdDSA signs. ECDSA keys are refused: rpm 4.18 cannot import ECDSA certificates.
//!
//! Throttling, KMS-side faults and transport trouble are retried in place with backoff
//! (the vault's SDK clients do not retry on their own); access denied, a disabled or
//! deleted key, or a key of the wrong kind is a refusal that retrying does not change.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, MessageType, SigningAlgorithmSpec};
use backon::Retryable;

use crate::key::{Algo, PublicMaterial};
use crate::vault::aws::{AwsEndpoints, AwsRuntime, describe, kms_client, transient};

/// Why a KMS key cannot be used. Messages name the key, never anything secret.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// KMS refused (access denied, key disabled or pending deletion, not found), or the
    /// key is of a kind signet cannot use: retrying will not help.
    #[error("AWS KMS refused {op} on {key}: {message}")]
    Refused { op: &'static str, key: String, message: String },
    /// KMS did not answer properly (throttled, 5xx, unreachable), even after retries.
    #[error("AWS KMS {op} on {key} failed: {message}")]
    Unavailable { op: &'static str, key: String, message: String },
}

/// What DescribeKey says of a signing key.
#[derive(Debug, Clone)]
pub struct KeyDescription {
    /// The key's ARN (what records store: an alias may later point elsewhere).
    pub arn: String,
    /// `rsa4096`, `rsa3072` or `ed25519`.
    pub algo: String,
    /// When KMS made the key, to the second (part of the OpenPGP fingerprint).
    pub created: SystemTime,
}

/// A KMS client for signing keys, on the vault's AWS runtime.
pub struct Kms {
    aws: Arc<AwsRuntime>,
    client: Client,
    /// How long throttling and faults are retried in place before a call gives up.
    retry_for: Duration,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kms")
    }
}

impl Kms {
    /// A client on `aws`'s runtime, at `endpoints.kms` if set.
    pub fn new(aws: Arc<AwsRuntime>, endpoints: &AwsEndpoints) -> Self {
        Kms { client: kms_client(&aws, endpoints), aws, retry_for: Duration::from_secs(30) }
    }

    /// Runs `call` (one KMS operation), retrying transient failures with backoff for up to
    /// `retry_for`; sorts the final error.
    fn call<T, E, Fut>(&self, op: &'static str, key: &str, call: impl FnMut() -> Fut) -> Result<T, KmsError>
    where
        Fut: Future<Output = Result<T, aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>>>,
        E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_total_delay(Some(self.retry_for))
            .without_max_times()
            .with_jitter();
        let retried = call
            .retry(backoff)
            .when(|e| {
                let (status, message) = describe(e);
                transient(status, &message)
            })
            .notify(|e, after| {
                let (_, message) = describe(e);
                tracing::warn!(op, kms_key = key, retry_in = ?after, "KMS call failed, retrying: {message}");
            });
        // One deadline for the call with all its retries (an attempt may itself take up to
        // the SDK's 20 s attempt timeout).
        let Ok(result) = self.aws.block_on(async { tokio::time::timeout(self.retry_for, retried).await }) else {
            return Err(KmsError::Unavailable {
                op,
                key: key.to_owned(),
                message: format!("no answer within {} s, retries included", self.retry_for.as_secs()),
            });
        };
        result.map_err(|e| {
            let (status, message) = describe(&e);
            if transient(status, &message) {
                KmsError::Unavailable { op, key: key.to_owned(), message }
            } else {
                KmsError::Refused { op, key: key.to_owned(), message }
            }
        })
    }

    /// Makes an asymmetric signing key (`RSA_4096` or `ECC_NIST_EDWARDS25519`); returns its ARN.
    pub fn create(&self, algo: Algo, description: &str) -> Result<String, KmsError> {
        let spec = match algo {
            Algo::Rsa4096 => KeySpec::Rsa4096,
            Algo::Ed25519 => KeySpec::EccNistEdwards25519,
        };
        let out = self.call("CreateKey", &format!("a new {algo} key"), || {
            self.client
                .create_key()
                .key_usage(KeyUsageType::SignVerify)
                .key_spec(spec.clone())
                .description(description)
                .send()
        })?;
        out.key_metadata().and_then(|m| m.arn()).map(str::to_owned).ok_or_else(|| KmsError::Unavailable {
            op: "CreateKey",
            key: format!("a new {algo} key"),
            message: "no key ARN in the answer".into(),
        })
    }

    /// Describes `key_id` (id, ARN or alias) and checks that signet can sign with it: an
    /// enabled `SIGN_VERIFY` key of a kind every verifier accepts.
    pub fn describe(&self, key_id: &str) -> Result<KeyDescription, KmsError> {
        let out = self.call("DescribeKey", key_id, || self.client.describe_key().key_id(key_id).send())?;
        let refused = |message: String| KmsError::Refused { op: "DescribeKey", key: key_id.to_owned(), message };
        let m = out.key_metadata().ok_or_else(|| refused("no key metadata in the answer".into()))?;
        if m.key_usage() != Some(&KeyUsageType::SignVerify) {
            return Err(refused(format!("the key's usage is {:?}, not SIGN_VERIFY", m.key_usage())));
        }
        if m.key_state() != Some(&KeyState::Enabled) {
            return Err(refused(format!("the key is {:?}, not Enabled", m.key_state())));
        }
        let algo = match m.key_spec() {
            Some(KeySpec::Rsa4096) => "rsa4096",
            Some(KeySpec::Rsa3072) => "rsa3072",
            Some(KeySpec::EccNistEdwards25519) => "ed25519",
            Some(s @ (KeySpec::EccNistP256 | KeySpec::EccNistP384 | KeySpec::EccNistP521 | KeySpec::EccSecgP256K1)) => {
                return Err(refused(format!(
                    "{s} is an ECDSA key, and rpm 4.18 cannot import ECDSA OpenPGP keys: use RSA_4096 or \
                     ECC_NIST_EDWARDS25519"
                )));
            }
            other => return Err(refused(format!("key spec {other:?} cannot make OpenPGP signatures here"))),
        };
        let arn = m.arn().unwrap_or(key_id).to_owned();
        let created =
            m.creation_date().map(|d| d.secs()).filter(|s| *s > 0).ok_or_else(|| {
                refused("the key has no creation date (needed for a stable OpenPGP fingerprint)".into())
            })?;
        Ok(KeyDescription {
            arn,
            algo: algo.to_owned(),
            created: SystemTime::UNIX_EPOCH + Duration::from_secs(created as u64),
        })
    }

    /// The public key of `key_id`, from `GetPublicKey`.
    pub fn public_key(&self, key_id: &str) -> Result<PublicMaterial, KmsError> {
        let out = self.call("GetPublicKey", key_id, || self.client.get_public_key().key_id(key_id).send())?;
        let der = out.public_key().map(|b| b.as_ref().to_vec()).unwrap_or_default();
        PublicMaterial::from_spki(&der).map_err(|message| KmsError::Refused {
            op: "GetPublicKey",
            key: key_id.to_owned(),
            message,
        })
    }

    /// Signs `digest`, the `hash` ("SHA256" or "SHA512") of the data, with `key_id`.
    /// Returns the raw signature: the RSA value `s`, or Ed25519's 64 bytes `R || S`.
    pub fn sign(&self, key_id: &str, ed25519: bool, hash: &str, digest: &[u8]) -> Result<Vec<u8>, KmsError> {
        let (algorithm, message_type) = match (ed25519, hash) {
            (true, _) => (SigningAlgorithmSpec::Ed25519Sha512, MessageType::Raw),
            (false, "SHA256") => (SigningAlgorithmSpec::RsassaPkcs1V15Sha256, MessageType::Digest),
            (false, "SHA512") => (SigningAlgorithmSpec::RsassaPkcs1V15Sha512, MessageType::Digest),
            (false, other) => {
                return Err(KmsError::Refused {
                    op: "Sign",
                    key: key_id.to_owned(),
                    message: format!("hash {other} is not offered for RSA"),
                });
            }
        };
        let out = self.call("Sign", key_id, || {
            self.client
                .sign()
                .key_id(key_id)
                .message(Blob::new(digest.to_vec()))
                .message_type(message_type.clone())
                .signing_algorithm(algorithm.clone())
                .send()
        })?;
        Ok(out.signature().map(|b| b.as_ref().to_vec()).unwrap_or_default())
    }
}
