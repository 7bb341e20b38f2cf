//! The S3 backend (aws-sdk-s3). Works with AWS and S3-compatible servers: path-style
//! addressing and checksums only when required, when an endpoint is given.

use std::path::Path;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{CopyTail, Fetched, ObjectStore, Reused, StoreError};

/// An S3 client.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
}

impl S3Store {
    /// Builds a client from the standard AWS environment, pointed at `endpoint` if given
    /// (an S3-compatible server such as moto, MinIO or LocalStack).
    pub async fn from_env(endpoint: Option<&str>) -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // One retry policy, the worker's (backon, logged, bounded); the SDK's own
            // silent retries would stack on top of it.
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled());
        if let Some(ep) = endpoint {
            b = b.endpoint_url(ep).force_path_style(true);
        }
        if shared.region().is_none() {
            b = b.region(aws_sdk_s3::config::Region::new("us-east-1"));
        }
        S3Store { client: Client::from_conf(b.build()) }
    }

    /// The underlying client (tests and tools use it to create buckets).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Sorts an SDK error into permanent and transient.
fn classify<E>(err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>, bucket: &str, key: &str) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (bucket, key) = (bucket.to_owned(), key.to_owned());
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_owned();
            let message = se.err().message().map(str::to_owned).unwrap_or_else(|| code.clone());
            match (status, code.as_str()) {
                (404, _) | (_, "NoSuchKey" | "NoSuchBucket" | "NotFound") => StoreError::NotFound { bucket, key },
                (412, _) | (_, "PreconditionFailed") => StoreError::Exists { bucket, key },
                // AWS answers a conditional write that races another one with 409: try again.
                (409, "ConditionalRequestConflict") => {
                    StoreError::Transient { bucket, key, message: format!("HTTP 409 {message}") }
                }
                (408 | 429, _) | (500..=599, _) | (_, "SlowDown" | "RequestTimeout" | "InternalError") => {
                    StoreError::Transient { bucket, key, message: format!("HTTP {status} {message}") }
                }
                _ => StoreError::Rejected { bucket, key, message: format!("HTTP {status} {code}: {message}") },
            }
        }
        // Dispatch failures, timeouts, broken responses: the server may be back soon.
        _ => StoreError::Transient { bucket, key, message: error_chain(&err) },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Counts one request (the SDK's retries are off, so one call is one request).
fn counted<T>(operation: &'static str, r: Result<T, StoreError>) -> Result<T, StoreError> {
    crate::observe::s3_request(operation, r.as_ref().err().map(StoreError::kind));
    r
}

impl ObjectStore for S3Store {
    async fn get_to_file(&self, bucket: &str, key: &str, dest: &Path, limit: u64) -> Result<Fetched, StoreError> {
        let out = counted(
            "get",
            self.client.get_object().bucket(bucket).key(key).send().await.map_err(|e| classify(e, bucket, key)),
        )?;
        let too_large = |size: u64| StoreError::TooLarge { bucket: bucket.into(), key: key.into(), size, limit };
        if let Some(len) = out.content_length().and_then(|l| u64::try_from(l).ok())
            && len > limit
        {
            return Err(too_large(len));
        }
        let local = |source| StoreError::Local { bucket: bucket.into(), key: key.into(), source };
        let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
        let etag = out.e_tag().map(str::to_owned);
        let mut body = out.body;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        loop {
            let chunk = body.try_next().await.map_err(|e| StoreError::Transient {
                bucket: bucket.into(),
                key: key.into(),
                message: format!("download interrupted: {}", error_chain(&e)),
            })?;
            let Some(chunk) = chunk else { break };
            hash.update(&chunk);
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(size));
            }
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        Ok(Fetched { sha256: hex::encode(hash.finalize()), size, etag })
    }

    async fn get_small(&self, bucket: &str, key: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let sent = self.client.get_object().bucket(bucket).key(key).send().await;
        let out = match counted("get", sent.map_err(|e| classify(e, bucket, key))) {
            Ok(o) => o,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(other) => return Err(other),
        };
        if let Some(len) = out.content_length().and_then(|l| u64::try_from(l).ok())
            && len > limit
        {
            return Err(StoreError::TooLarge { bucket: bucket.into(), key: key.into(), size: len, limit });
        }
        let bytes = out.body.collect().await.map_err(|e| StoreError::Transient {
            bucket: bucket.into(),
            key: key.into(),
            message: format!("download interrupted: {}", error_chain(&e)),
        })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        src: &Path,
        content_type: &str,
        if_absent: bool,
    ) -> Result<(), StoreError> {
        let body = ByteStream::from_path(src).await.map_err(|e| StoreError::Local {
            bucket: bucket.into(),
            key: key.into(),
            source: std::io::Error::other(e),
        })?;
        self.put(bucket, key, body, content_type, if_absent).await
    }

    async fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        if_absent: bool,
    ) -> Result<(), StoreError> {
        self.put(bucket, key, ByteStream::from(bytes), content_type, if_absent).await
    }

    async fn put_file_copying_tail(
        &self,
        bucket: &str,
        key: &str,
        src: &Path,
        content_type: &str,
        tail: &CopyTail,
    ) -> Result<Reused, StoreError> {
        let create = self.client.create_multipart_upload().bucket(bucket).key(key).content_type(content_type);
        let created = counted("create_multipart", create.send().await.map_err(|e| classify(e, bucket, key)))?;
        let Some(upload_id) = created.upload_id().map(str::to_owned) else {
            return Err(StoreError::Rejected {
                bucket: bucket.into(),
                key: key.into(),
                message: "CreateMultipartUpload answered without an upload id".into(),
            });
        };
        let result = self.copy_tail_parts(bucket, key, src, &upload_id, tail).await;
        if result.is_err() {
            // Best effort: an upload left behind stores nothing visible, and a bucket
            // lifecycle rule (AbortIncompleteMultipartUpload) reclaims it.
            let abort = self.client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id);
            if let Err(e) =
                counted("abort_multipart", abort.send().await.map(|_| ()).map_err(|e| classify(e, bucket, key)))
            {
                tracing::warn!(error = %e, upload_id, "could not abort a multipart upload");
            }
        }
        result
    }

    /// Every key under `prefix` in `bucket`, in S3's (lexicographic) order.
    async fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_objects_v2().bucket(bucket).prefix(prefix);
            if let Some(t) = token.take() {
                req = req.continuation_token(t);
            }
            let page = counted("list", req.send().await.map_err(|e| classify(e, bucket, prefix)))?;
            out.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }
}

/// The first part of an upload that copies a tail: the new start plus at least this much
/// of what follows it (S3 wants every part but the last to be 5 MiB or more).
const FIRST_PART_EXTRA: u64 = 5 * 1024 * 1024;
/// The largest range copied by one UploadPartCopy (S3's limit is 5 GiB).
const COPY_PART: u64 = 1024 * 1024 * 1024;

/// `key` as the path of an `x-amz-copy-source` header: percent-encoded, slashes kept.
fn copy_source(bucket: &str, key: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    format!("{bucket}/{}", utf8_percent_encode(key, KEEP))
}

impl S3Store {
    /// The parts of [`ObjectStore::put_file_copying_tail`]: the start from `src`, the rest
    /// as ranged copies of the source pinned to its ETag, then the completion, then a check
    /// that the source is still that object (servers that ignore the copy condition, such as
    /// moto and s3s-fs, would otherwise let a source swapped mid-copy through).
    async fn copy_tail_parts(
        &self,
        bucket: &str,
        key: &str,
        src: &Path,
        upload_id: &str,
        tail: &CopyTail,
    ) -> Result<Reused, StoreError> {
        use aws_sdk_s3::primitives::Length;
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let local = |source| StoreError::Local { bucket: bucket.into(), key: key.into(), source };
        let src_len = tokio::fs::metadata(src).await.map_err(local)?.len();
        let first = (tail.output_from + FIRST_PART_EXTRA).min(src_len);
        let body = ByteStream::read_from()
            .path(src)
            .offset(0)
            .length(Length::Exact(first))
            .build()
            .await
            .map_err(|e| local(std::io::Error::other(e)))?;
        let part = self.client.upload_part().bucket(bucket).key(key).upload_id(upload_id).part_number(1).body(body);
        let sent = counted("upload_part", part.send().await.map_err(|e| classify(e, bucket, key)))?;
        let mut parts =
            vec![CompletedPart::builder().part_number(1).set_e_tag(sent.e_tag().map(str::to_owned)).build()];
        // output[first..] is source[from..], up to the source's end.
        let from = tail.input_from + (first - tail.output_from);
        let end = tail.input_from + (src_len - tail.output_from);
        let source_changed = |message: String| StoreError::SourceChanged {
            bucket: tail.source_bucket.clone(),
            key: tail.source_key.clone(),
            message,
        };
        let mut at = from;
        while at < end {
            let to = (at + COPY_PART).min(end);
            let number = i32::try_from(parts.len() + 1).map_err(|e| local(std::io::Error::other(e)))?;
            let copy = self
                .client
                .upload_part_copy()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(copy_source(&tail.source_bucket, &tail.source_key))
                .copy_source_range(format!("bytes={at}-{}", to - 1))
                .copy_source_if_match(&tail.etag);
            // Errors name the source: a missing or forbidden source is the input's problem.
            let sent = copy.send().await.map_err(|e| classify(e, &tail.source_bucket, &tail.source_key));
            let copied = match counted("upload_part_copy", sent) {
                Ok(c) => c,
                // 412 here is the copy condition: the source is no longer that object.
                Err(StoreError::Exists { .. }) => return Err(source_changed(format!("it is no longer {}", tail.etag))),
                Err(e) => return Err(e),
            };
            let etag = copied.copy_part_result().and_then(|r| r.e_tag()).map(str::to_owned);
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(etag).build());
            at = to;
        }
        let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        let complete =
            self.client.complete_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).multipart_upload(done);
        counted("complete_multipart", complete.send().await.map(|_| ()).map_err(|e| classify(e, bucket, key)))?;
        // The object is complete under its final name: if a check fails now, delete it, so a
        // package assembled from a swapped input is never left where a consumer finds it
        // (manifest.json, the commit point, is not written either way).
        let checked = async {
            let head = self.client.head_object().bucket(&tail.source_bucket).key(&tail.source_key);
            let now =
                counted("head", head.send().await.map_err(|e| classify(e, &tail.source_bucket, &tail.source_key)))?;
            if now.e_tag() != Some(tail.etag.as_str()) {
                return Err(source_changed(format!("its ETag is now {:?}, not {}", now.e_tag(), tail.etag)));
            }
            let size = self.client.head_object().bucket(bucket).key(key).send().await;
            let size = counted("head", size.map_err(|e| classify(e, bucket, key)))?.content_length();
            if size != i64::try_from(src_len).ok() {
                return Err(StoreError::Rejected {
                    bucket: bucket.into(),
                    key: key.into(),
                    message: format!("the assembled object is {size:?} bytes, not {src_len}"),
                });
            }
            Ok(())
        }
        .await;
        if let Err(e) = checked {
            let delete = self.client.delete_object().bucket(bucket).key(key).send().await;
            if let Err(d) = counted("delete", delete.map(|_| ()).map_err(|e| classify(e, bucket, key))) {
                tracing::warn!(error = %d, "could not delete an assembled object that failed its check");
            }
            return Err(e);
        }
        Ok(Reused { uploaded: first, copied: end - from })
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        content_type: &str,
        if_absent: bool,
    ) -> Result<(), StoreError> {
        let mut req = self.client.put_object().bucket(bucket).key(key).body(body).content_type(content_type);
        if if_absent {
            req = req.if_none_match("*");
        }
        counted("put", req.send().await.map(|_| ()).map_err(|e| classify(e, bucket, key)))
    }
}
