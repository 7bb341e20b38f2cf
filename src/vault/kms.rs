//! Data keys from AWS KMS: `GenerateDataKey` when a key is sealed, `Decrypt` when it is
//! unsealed. The KMS key never leaves KMS; the data key exists in the clear only in this
//! process's memory, in zeroizing buffers. The encryption context binds each data key to the
//! signing key's name and fingerprint, so a sealed record moved to another name does not
//! unseal (and CloudTrail shows which signing key each Decrypt was for).

use std::sync::Arc;

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroizing;

use super::VaultError;
use super::aws::{AwsEndpoints, AwsRuntime, describe, kms_client, transient};
use super::seal::{FORMAT, KekInfo, KeyWrapper, SealContext, SecretKey32};

/// Wraps data keys with a KMS key.
pub struct KmsWrapper {
    aws: Arc<AwsRuntime>,
    client: Client,
    /// The KMS key new data keys are made under (id, ARN or alias). Unsealing uses the key
    /// each record names.
    key_id: Option<String>,
}

impl std::fmt::Debug for KmsWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsWrapper").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl KmsWrapper {
    /// A KMS client on `aws`'s runtime.
    pub fn new(aws: Arc<AwsRuntime>, endpoints: &AwsEndpoints, key_id: Option<String>) -> Self {
        KmsWrapper { client: kms_client(&aws, endpoints), aws, key_id }
    }

    fn context(ctx: &SealContext) -> [(&'static str, String); 3] {
        [
            ("signet:format", FORMAT.to_owned()),
            ("signet:key", ctx.name.to_owned()),
            ("signet:fingerprint", ctx.fingerprint.to_owned()),
        ]
    }

    /// Sorts a failed KMS call: throttling, KMS-side faults and transport trouble are
    /// transient; anything else (access denied, key disabled or pending deletion, wrong
    /// context) is a refusal that retrying will not change.
    fn error<E>(
        op: &str,
        what: &str,
        kms_key: &str,
        err: &aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
    ) -> VaultError
    where
        E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (status, message) = describe(err);
        if transient(status, &message) {
            VaultError::Unavailable(format!("KMS {op} for key {what} (KMS key {kms_key}): {message}"))
        } else {
            VaultError::KmsDenied { key: what.to_owned(), kms_key: kms_key.to_owned(), op: op.to_owned(), message }
        }
    }
}

impl KeyWrapper for KmsWrapper {
    fn new_data_key(&self, ctx: &SealContext) -> Result<(SecretKey32, KekInfo, Vec<u8>), VaultError> {
        let key_id = self.key_id.as_deref().ok_or_else(|| {
            VaultError::Config("no KMS key to seal new keys with: add ?kms-key-id=ID to SIGNET_VAULT".into())
        })?;
        let mut req = self.client.generate_data_key().key_id(key_id).key_spec(DataKeySpec::Aes256);
        for (k, v) in Self::context(ctx) {
            req = req.encryption_context(k, v);
        }
        let out = self.aws.block_on(req.send()).map_err(|e| Self::error("GenerateDataKey", &ctx.what(), key_id, &e))?;
        let plain = out.plaintext().map(|b| Zeroizing::new(b.as_ref().to_vec())).unwrap_or_default();
        let dek = SecretKey32::from_slice(&plain)
            .ok_or_else(|| VaultError::Corrupt("KMS returned a data key that is not 32 bytes".into()))?;
        let wrapped = out.ciphertext_blob().map(|b| b.as_ref().to_vec()).unwrap_or_default();
        if wrapped.is_empty() {
            return Err(VaultError::Corrupt("KMS returned no wrapped data key".into()));
        }
        // Record the key's ARN, not an alias that may later point elsewhere.
        let arn = out.key_id().unwrap_or(key_id).to_owned();
        Ok((dek, KekInfo::AwsKms { key_id: arn }, wrapped))
    }

    fn unwrap_key(&self, info: &KekInfo, wrapped: &[u8], ctx: &SealContext) -> Result<SecretKey32, VaultError> {
        let what = ctx.what();
        let KekInfo::AwsKms { key_id } = info else {
            return Err(VaultError::Config(format!("key {what} is not sealed with KMS")));
        };
        // Naming the key makes KMS refuse a ciphertext made under any other key.
        let mut req = self.client.decrypt().key_id(key_id).ciphertext_blob(Blob::new(wrapped.to_vec()));
        for (k, v) in Self::context(ctx) {
            req = req.encryption_context(k, v);
        }
        let out = self.aws.block_on(req.send()).map_err(|e| Self::error("Decrypt", &what, key_id, &e))?;
        let plain = out.plaintext().map(|b| Zeroizing::new(b.as_ref().to_vec())).unwrap_or_default();
        SecretKey32::from_slice(&plain)
            .ok_or_else(|| VaultError::Corrupt(format!("key {what}: KMS returned a data key that is not 32 bytes")))
    }
}
