//! What an operator watches: Prometheus metrics and the health endpoints.
//!
//! The worker records through the `metrics` facade; without `SIGNET_METRICS_ADDR` no recorder
//! is installed and every call here is a no-op. Every label value is a fixed word (an
//! outcome, an error code, a format, a stage): nothing per job (no job id, no object key) can
//! become a label, so the number of series stays bounded.

mod http;

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use http::{Health, serve};

/// Buckets of `signet_job_duration_seconds`: 10 ms to 30 min.
const DURATION_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0];

/// Installs the Prometheus recorder (once per process) and describes every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("signet_job_duration_seconds".into()), DURATION_BUCKETS)?
        .install_recorder()?;
    describe_counter!("signet_jobs_total", "Jobs settled, by outcome (and error code for failures).");
    describe_counter!(
        "signet_jobs_requeued_total",
        "Deliveries handed back to the broker without an event (a busy duplicate, an event that could not be published)."
    );
    describe_histogram!("signet_job_duration_seconds", metrics::Unit::Seconds, "Time from delivery to settlement.");
    describe_gauge!("signet_jobs_in_flight", "Jobs this worker is handling now.");
    describe_counter!("signet_signatures_total", "Artifacts signed, by format.");
    describe_counter!(
        "signet_output_bytes_total",
        "Bytes of packages assembled in S3: uploaded by the worker, or copied by the server from the input."
    );
    describe_counter!("signet_retries_total", "Retries of a failed call or a whole job, by stage.");
    describe_counter!("signet_audit_appends_total", "Records appended to this worker's audit chain.");
    describe_counter!("signet_amqp_reconnects_total", "Broker sessions opened after the first.");
    describe_counter!(
        "signet_s3_requests_total",
        "S3 requests sent (all purposes), by operation and result (ok, or the kind of error)."
    );
    describe_counter!(
        "signet_audit_requests_total",
        "S3 requests of the audit log (a part of signet_s3_requests_total), by operation and result."
    );
    describe_gauge!("signet_build_info", "Always 1; the label carries the version.");
    gauge!("signet_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!("signet_jobs_in_flight").set(0.0);
    counter!("signet_audit_appends_total").absolute(0);
    counter!("signet_amqp_reconnects_total").absolute(0);
    // Histogram buckets are folded in by upkeep; do it now and then, not only when scraped.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// A job settled: `code` is the error code of a failure.
pub fn job_settled(code: Option<&'static str>, took: Duration) {
    let outcome = if code.is_some() { "failed" } else { "succeeded" };
    match code {
        Some(code) => counter!("signet_jobs_total", "outcome" => outcome, "code" => code).increment(1),
        None => counter!("signet_jobs_total", "outcome" => outcome).increment(1),
    }
    histogram!("signet_job_duration_seconds", "outcome" => outcome).record(took.as_secs_f64());
}

/// A job became (or stayed) a pending approval request.
pub fn job_pending(took: Duration) {
    counter!("signet_jobs_total", "outcome" => "pending").increment(1);
    histogram!("signet_job_duration_seconds", "outcome" => "pending").record(took.as_secs_f64());
}

/// An approval message was handled: `decision` approve, reject, expire (or unknown when
/// it did not parse); `result` counted, rejected, expired or refused.
pub fn approval(decision: &'static str, result: &'static str) {
    counter!("signet_approval_messages_total", "decision" => decision, "result" => result).increment(1);
}

/// A delivery was handed back to the broker without an event.
pub fn job_requeued() {
    counter!("signet_jobs_requeued_total").increment(1);
}

/// Counts a job in flight until dropped.
pub struct InFlightGauge(());

impl InFlightGauge {
    pub fn enter() -> Self {
        gauge!("signet_jobs_in_flight").increment(1.0);
        InFlightGauge(())
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        gauge!("signet_jobs_in_flight").decrement(1.0);
    }
}

/// An artifact was signed in `format`.
pub fn signature(format: &'static str) {
    counter!("signet_signatures_total", "format" => format).increment(1);
}

/// A call of `stage` (fetch, output, manifest, audit, vault, publish) or a whole job (`job`)
/// is being retried.
pub fn retry(stage: &'static str) {
    counter!("signet_retries_total", "stage" => stage).increment(1);
}

/// A record was appended to the audit log.
pub fn audit_appended() {
    counter!("signet_audit_appends_total").increment(1);
}

/// A broker session was opened after an earlier one ended (or failed to open).
pub fn amqp_reconnect() {
    counter!("signet_amqp_reconnects_total").increment(1);
}

/// An S3 request was answered (`error`: the kind of error, `None` for success).
pub fn s3_request(operation: &'static str, error: Option<&'static str>) {
    counter!("signet_s3_requests_total", "operation" => operation, "result" => error.unwrap_or("ok")).increment(1);
}

/// A signed package was assembled in S3: `uploaded` bytes sent, `copied` bytes copied by
/// the server from the input object.
pub fn copied_tail(uploaded: u64, copied: u64) {
    counter!("signet_output_bytes_total", "how" => "uploaded").increment(uploaded);
    counter!("signet_output_bytes_total", "how" => "copied_in_s3").increment(copied);
}

/// An S3 request of the audit log was answered.
pub fn audit_request(operation: &'static str, error: Option<&'static str>) {
    counter!("signet_audit_requests_total", "operation" => operation, "result" => error.unwrap_or("ok")).increment(1);
}
