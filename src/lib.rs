//! signet: a signing service for software releases.
//!
//! Module map:
//! - [`key`]: OpenPGP keys (generation, import, the unsealed [`key::SigningKey`]).
//! - [`check`]: signature checks against trusted certificates.
//! - [`vault`]: keys sealed at rest (envelope encryption), unsealed only in memory.
//! - [`sign`]: the signing core (RPM, DEB, detached, APT Release, SHA256SUMS, manifest):
//!   synchronous, readers in and writers out, time injected, no network I/O.
//! - [`cli`] and [`commands`]: the `signet` command line.
//! - [`logging`]: tracing setup.

pub mod check;
pub mod cli;
pub mod commands;
pub mod key;
pub mod logging;
pub mod sign;
pub mod vault;
