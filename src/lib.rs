//! signet: a signing service for software releases.
//!
//! Module map:
//! - [`key`]: OpenPGP keys (generation, import, the unsealed [`key::SigningKey`]).
//! - [`check`]: signature checks against trusted certificates.
//! - [`vault`]: keys sealed at rest (envelope encryption, passphrase or AWS KMS), in a
//!   directory or S3, unsealed only in memory; rotation.
//! - [`policy`]: which producer may sign with which key, from where, to where.
//! - [`approval`]: release approvals: pending requests in S3 and the messages deciding them.
//! - [`audit`]: the hash-chained audit trail of signatures and denials, a chain per worker.
//! - [`hsm`]: keys that never leave a PKCS#11 token (cryptoki), signing through the key seam.
//! - [`harden`]: no core dumps of a process holding keys.
//! - [`sign`]: the signing core (RPM, DEB, detached, APT Release, SHA256SUMS, manifest):
//!   synchronous, readers in and writers out, time injected, no network I/O.
//! - [`gate`]: the publish gate, every signed file of a repository tree against allowed keys.
//! - [`job`] and [`event`]: the message contract (sign jobs in, CloudEvents out).
//! - [`queue`]: RabbitMQ topology, recovering connections, confirmed publishing.
//! - [`store`]: object storage (S3) behind the [`store::ObjectStore`] trait.
//! - [`trust`]: the consumer trust kit (keyring, debsig-verify policy tree, dnf `.repo`).
//! - [`worker`]: consume → authorize → lock → fetch → sign → audit → write → publish → settle,
//!   a file per stage.
//! - [`observe`]: Prometheus metrics and the `/metrics`, `/livez`, `/readyz` endpoints.
//! - [`cli`] and [`commands`]: the `signet` command line.
//! - [`logging`]: tracing setup.

pub mod approval;
pub mod audit;
pub mod check;
pub mod cli;
pub mod commands;
pub mod event;
pub mod gate;
pub mod harden;
pub mod hsm;
pub mod job;
pub mod key;
pub mod kms;
pub mod logging;
pub mod observe;
pub mod ossl_signer;
pub mod policy;
pub mod queue;
pub mod sign;
pub mod store;
pub mod trust;
pub mod vault;
pub mod worker;
