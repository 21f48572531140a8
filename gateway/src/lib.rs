//! edgegw: an edge API gateway that calls its backends over mutual TLS.
//!
//! Control plane (`admin`, `store`, `model`, `snapshot`) and data plane (`dataplane`,
//! `upstream`, `tls`) meet only at the immutable snapshot; see docs/ARCHITECTURE.md.

pub mod admin;
pub mod buffer;
pub mod config;
pub mod dataplane;
pub mod diagnostics;
pub mod files;
pub mod metrics;
pub mod model;
pub mod runtime;
pub mod secret;
pub mod snapshot;
pub mod steering;
pub mod store;
pub mod tls;
pub mod upstream;
