//! Tracing setup: human-readable by default, JSON lines with `SIGNET_LOG_FORMAT=json`;
//! filter with `RUST_LOG` (default `info`). Logs go to stderr. Libraries that could log
//! secrets at debug/trace level are capped at `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Libraries whose debug/trace output can carry secrets: the AMQP handshake (credentials),
/// HTTP bodies (KMS data keys), TLS. They are capped at `info` whatever `RUST_LOG` says.
const CAPPED: &[&str] = &[
    "lapin",
    "amq_protocol",
    "amq_protocol_types",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_sdk_kms",
    "aws_sdk_s3",
    "aws_sdk_sts",
    "aws_sdk_sso",
    "aws_config",
];

/// Installs the global subscriber (once; later calls do nothing).
pub fn init() {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for target in CAPPED {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if std::env::var("SIGNET_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
}
