//! Sealed keys in an S3 bucket: `s3://BUCKET/PREFIX/NAME/FINGERPRINT.json` and
//! `.../NAME/active`. Records are written with `If-None-Match: *`, so none is ever replaced;
//! only the `active` pointer is overwritten (by `keys rotate`).

use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;

use super::aws::{AwsEndpoints, AwsRuntime, describe};
use super::seal::SealedKey;
use super::{KeyName, SealedStore, VaultError};

/// Largest sealed record read back (an RSA-4096 record is about 10 KiB).
const RECORD_LIMIT: usize = 1024 * 1024;

/// Sealed keys under `s3://bucket/prefix`.
pub struct S3SealedStore {
    aws: Arc<AwsRuntime>,
    client: Client,
    bucket: String,
    /// Empty or ending with `/`.
    prefix: String,
}

impl std::fmt::Debug for S3SealedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3SealedStore(s3://{}/{})", self.bucket, self.prefix)
    }
}

impl S3SealedStore {
    /// A store at `s3://bucket/prefix` (the prefix gets a trailing `/` if it lacks one).
    pub fn new(aws: Arc<AwsRuntime>, endpoints: &AwsEndpoints, bucket: &str, prefix: &str) -> Self {
        let mut b = aws_sdk_s3::config::Builder::from(aws.config())
            .region(aws.region())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &endpoints.s3 {
            b = b.endpoint_url(ep).force_path_style(true);
        }
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        S3SealedStore { client: Client::from_conf(b.build()), aws, bucket: bucket.to_owned(), prefix }
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn failed<E>(
        &self,
        key: &str,
        err: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> VaultError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (status, message) = describe(err);
        match status {
            Some(s) if s < 500 && s != 429 => {
                VaultError::Config(format!("vault store {} refused the request: {message}", self.url(key)))
            }
            _ => VaultError::Unavailable(format!("vault store {}: {message}", self.url(key))),
        }
    }

    /// Every key under `prefix` (all pages), or the common prefixes with `delimiter`.
    fn list(&self, prefix: &str, delimiter: bool) -> Result<Vec<String>, VaultError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let mut req = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix);
            if delimiter {
                req = req.delimiter("/");
            }
            if let Some(t) = token.take() {
                req = req.continuation_token(t);
            }
            let page = self.aws.block_on(req.send()).map_err(|e| self.failed(prefix, &e))?;
            if delimiter {
                out.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_owned)));
            } else {
                out.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>, VaultError> {
        let got = self.aws.block_on(async {
            let resp = self.client.get_object().bucket(&self.bucket).key(key).send().await?;
            Ok::<_, aws_sdk_s3::error::SdkError<_, _>>(resp.body.collect().await)
        });
        match got {
            Ok(Ok(body)) => {
                let bytes = body.into_bytes();
                if bytes.len() > RECORD_LIMIT {
                    return Err(VaultError::Corrupt(format!("{} is larger than a sealed key can be", self.url(key))));
                }
                Ok(Some(bytes.to_vec()))
            }
            Ok(Err(e)) => Err(VaultError::Unavailable(format!("vault store {}: {e}", self.url(key)))),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.failed(key, &e)),
        }
    }

    fn put_object(&self, key: &str, body: Vec<u8>, if_absent: bool) -> Result<(), VaultError> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        if if_absent {
            req = req.if_none_match("*");
        }
        match self.aws.block_on(req.send()) {
            Ok(_) => Ok(()),
            Err(e) if describe(&e).0 == Some(412) => Err(VaultError::Exists(self.url(key))),
            Err(e) => Err(self.failed(key, &e)),
        }
    }
}

impl SealedStore for S3SealedStore {
    fn names(&self) -> Result<Vec<KeyName>, VaultError> {
        let mut names: Vec<KeyName> = self
            .list(&self.prefix, true)?
            .iter()
            .filter_map(|p| p.strip_prefix(&self.prefix)?.strip_suffix('/')?.parse().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn records(&self, name: &KeyName) -> Result<Vec<SealedKey>, VaultError> {
        let dir = format!("{}{name}/", self.prefix);
        let mut out = Vec::new();
        for key in self.list(&dir, false)? {
            if !key.ends_with(".json") {
                continue;
            }
            // Listed a moment ago; gone now means a concurrent delete, not a record.
            let Some(bytes) = self.get_object(&key)? else { continue };
            let rec: SealedKey =
                serde_json::from_slice(&bytes).map_err(|e| VaultError::Corrupt(format!("{}: {e}", self.url(&key))))?;
            out.push(rec);
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.fingerprint.cmp(&b.fingerprint)));
        Ok(out)
    }

    fn record(&self, name: &KeyName, fingerprint: &str) -> Result<Option<SealedKey>, VaultError> {
        // One GET instead of listing and reading every key of the name.
        let key = format!("{}{name}/{fingerprint}.json", self.prefix);
        if fingerprint.is_empty() || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        self.get_object(&key)?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| VaultError::Corrupt(format!("{}: {e}", self.url(&key))))
            })
            .transpose()
    }

    fn active(&self, name: &KeyName) -> Result<Option<String>, VaultError> {
        let key = format!("{}{name}/active", self.prefix);
        Ok(self.get_object(&key)?.map(|b| String::from_utf8_lossy(&b).trim().to_owned()))
    }

    fn put(&self, record: &SealedKey) -> Result<(), VaultError> {
        let key = format!("{}{}/{}.json", self.prefix, record.name, record.fingerprint);
        let json = serde_json::to_vec_pretty(record).map_err(|e| VaultError::Corrupt(e.to_string()))?;
        self.put_object(&key, json, true)
    }

    fn set_active(&self, name: &KeyName, fingerprint: &str) -> Result<(), VaultError> {
        let key = format!("{}{name}/active", self.prefix);
        self.put_object(&key, format!("{fingerprint}\n").into_bytes(), false)
    }

    fn revocation(&self, name: &KeyName, fingerprint: &str) -> Result<Option<String>, VaultError> {
        if fingerprint.is_empty() || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let key = format!("{}{name}/{fingerprint}.rev", self.prefix);
        Ok(self.get_object(&key)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn put_revocation(&self, name: &KeyName, fingerprint: &str, armored: &str) -> Result<(), VaultError> {
        let key = format!("{}{name}/{fingerprint}.rev", self.prefix);
        self.put_object(&key, armored.as_bytes().to_vec(), true)
    }
}
