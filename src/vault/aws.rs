//! The AWS side of the vault (S3 for sealed records, KMS for data keys).
//!
//! The vault's API is synchronous (the CLI calls it directly; the worker calls it on the
//! blocking pool), so its AWS clients run on a small runtime of their own. Blocking on it is
//! fine from any thread that is not itself driving async tasks.

use std::future::Future;
use std::time::Duration;

use super::VaultError;

/// Where the vault's AWS clients connect.
#[derive(Debug, Clone, Default)]
pub struct AwsEndpoints {
    /// S3-compatible endpoint (unset: AWS S3).
    pub s3: Option<String>,
    /// KMS endpoint (unset: AWS KMS).
    pub kms: Option<String>,
}

/// A private runtime for the vault's AWS calls, plus the shared SDK configuration.
pub struct AwsRuntime {
    rt: Option<tokio::runtime::Runtime>,
    shared: aws_config::SdkConfig,
}

impl std::fmt::Debug for AwsRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsRuntime")
    }
}

impl AwsRuntime {
    /// Starts the runtime and loads the standard AWS configuration (environment, profile,
    /// instance role), with bounded timeouts so that a hung endpoint fails a job instead of
    /// stalling it.
    pub fn new() -> Result<Self, VaultError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("signet-vault-aws")
            .enable_all()
            .build()
            .map_err(|e| VaultError::Config(format!("cannot start the vault's AWS runtime: {e}")))?;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(20))
            .operation_timeout(Duration::from_secs(60))
            .build();
        let shared = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .timeout_config(timeouts)
                // One logged retry policy: the worker's (see worker::failure), not the SDK's silent one.
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .load(),
        );
        Ok(AwsRuntime { rt: Some(rt), shared })
    }

    /// The shared SDK configuration.
    pub fn config(&self) -> &aws_config::SdkConfig {
        &self.shared
    }

    /// The region to use: the configured one, else us-east-1.
    pub fn region(&self) -> aws_config::Region {
        self.shared.region().cloned().unwrap_or_else(|| aws_config::Region::new("us-east-1"))
    }

    /// Runs `f` to completion on the vault runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime is only taken on drop"),
        }
    }
}

impl Drop for AwsRuntime {
    fn drop(&mut self) {
        // The vault may be dropped inside the worker's runtime, where a blocking shutdown
        // would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A KMS client on `aws`'s runtime and configuration, at `endpoints.kms` if set (for the
/// vault's data keys and for KMS signing keys alike).
pub(crate) fn kms_client(aws: &AwsRuntime, endpoints: &AwsEndpoints) -> aws_sdk_kms::Client {
    let mut b = aws_sdk_kms::config::Builder::from(aws.config()).region(aws.region());
    if let Some(ep) = &endpoints.kms {
        b = b.endpoint_url(ep);
    }
    aws_sdk_kms::Client::from_conf(b.build())
}

/// Whether a failed AWS call may succeed if made again: throttling (KMS answers it with a
/// 400 and a `Throttling…` code), KMS-side faults, 429, 5xx and transport trouble (no status).
pub(crate) fn transient(status: Option<u16>, message: &str) -> bool {
    let throttled = message.starts_with("Throttling") || message.starts_with("KMSInternal");
    !matches!(status, Some(s) if s < 500 && s != 429 && !throttled)
}

/// An SDK error as one line: the service's code and message, or the transport error chain.
/// Also returns the HTTP status of a service error. (S3 and KMS share the response type.)
pub(crate) fn describe<E>(
    err: &aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
) -> (Option<u16>, String)
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_kms::error::SdkError;
    match err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("error");
            let message = se.err().message().unwrap_or("");
            (Some(se.raw().status().as_u16()), format!("{code}: {message}"))
        }
        other => {
            let mut s = other.to_string();
            let mut cur = std::error::Error::source(other);
            while let Some(c) = cur {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cur = c.source();
            }
            (None, s)
        }
    }
}
