//! Object storage: the [`ObjectStore`] trait and its S3 backend ([`s3::S3Store`]).

pub mod s3;

use std::path::Path;

/// Object store errors, split by what the worker should do about them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object or bucket does not exist: permanent.
    #[error("s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    /// Access denied or another client error: permanent.
    #[error("s3://{bucket}/{key}: {message}")]
    Rejected { bucket: String, key: String, message: String },
    /// The object is larger than the caller accepts: permanent.
    #[error("s3://{bucket}/{key} is {size} bytes or more; the limit is {limit}")]
    TooLarge { bucket: String, key: String, size: u64, limit: u64 },
    /// A conditional write found the object already there.
    #[error("s3://{bucket}/{key} already exists")]
    Exists { bucket: String, key: String },
    /// Unreachable, timed out, 5xx, throttled: worth retrying.
    #[error("object store unavailable for s3://{bucket}/{key}: {message}")]
    Transient { bucket: String, key: String, message: String },
    /// The source of a server-side copy is no longer the object it was pinned to: worth
    /// doing the job again from the fetch, not retrying the same copy.
    #[error("s3://{bucket}/{key} changed while it was copied: {message}")]
    SourceChanged { bucket: String, key: String, message: String },
    /// Local file trouble while streaming.
    #[error("local I/O for s3://{bucket}/{key}: {source}")]
    Local { bucket: String, key: String, source: std::io::Error },
}

impl StoreError {
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }

    /// A fixed word for the kind of error (a metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "not_found",
            StoreError::Rejected { .. } => "rejected",
            StoreError::TooLarge { .. } => "too_large",
            StoreError::Exists { .. } => "exists",
            StoreError::Transient { .. } => "unavailable",
            StoreError::SourceChanged { .. } => "source_changed",
            StoreError::Local { .. } => "local",
        }
    }
}

/// What was downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub sha256: String,
    pub size: u64,
    /// The object's ETag, as the server gave it (with its quotes), when it gave one.
    pub etag: Option<String>,
}

/// An upload that takes the end of the new object from an existing one, by reference:
/// `src[output_from..]` is `source[input_from..]` byte for byte, the source being
/// `source_bucket/source_key` as of `etag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTail {
    pub source_bucket: String,
    pub source_key: String,
    pub etag: String,
    pub input_from: u64,
    pub output_from: u64,
}

/// How an upload that reused a source went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reused {
    /// Bytes sent from the local file.
    pub uploaded: u64,
    /// Bytes the server copied from the source object.
    pub copied: u64,
}

/// An S3-like object store. Objects are streamed to and from local files.
#[allow(async_fn_in_trait)]
pub trait ObjectStore: Send + Sync {
    /// Streams an object into `dest`, hashing it on the way; an object larger than `limit`
    /// bytes fails with [`StoreError::TooLarge`] before (by its length) or while it streams.
    fn get_to_file(
        &self,
        bucket: &str,
        key: &str,
        dest: &Path,
        limit: u64,
    ) -> impl std::future::Future<Output = Result<Fetched, StoreError>> + Send;
    /// Reads a small object fully; `None` if it does not exist.
    fn get_small(
        &self,
        bucket: &str,
        key: &str,
        limit: u64,
    ) -> impl std::future::Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Uploads a local file. With `if_absent`, fails with [`StoreError::Exists`] if the key exists.
    fn put_file(
        &self,
        bucket: &str,
        key: &str,
        src: &Path,
        content_type: &str,
        if_absent: bool,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
    /// Uploads a local file of which only the start is new ([`CopyTail`]): sends the start
    /// and has the server copy the rest from the source, which must still be the object
    /// `etag` names. On any error the partial upload is aborted, or the assembled object
    /// deleted if the error came after it was completed, and the call fails.
    fn put_file_copying_tail(
        &self,
        bucket: &str,
        key: &str,
        src: &Path,
        content_type: &str,
        tail: &CopyTail,
    ) -> impl std::future::Future<Output = Result<Reused, StoreError>> + Send;
    /// Uploads bytes, like [`ObjectStore::put_file`].
    fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        if_absent: bool,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
    /// Every key under `prefix` in `bucket`, in lexicographic order.
    fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl std::future::Future<Output = Result<Vec<String>, StoreError>> + Send;
}
