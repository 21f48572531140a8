//! edgegw end-to-end tests. One test binary (so every test can run in parallel);
//! each test starts its own gateway / backend processes on free ports.
//!
//! Run: `cargo build --release --bins && cargo test --release -p e2e`
//! (twice in CI: with `EDGEGW_IO_DRIVER=uring` and `EDGEGW_IO_DRIVER=epoll`).

// Test code: helpers outside #[test] functions fail their test by panicking, with the message.
#![allow(clippy::expect_used)]

mod admin_api;
mod cli;
mod errors;
mod hardening;
mod hardening_admin;
mod hot_apply;
mod http1;
mod http2;
mod http2_attacks;
mod interop_nginx;
mod metrics;
mod pooling;
mod restart;
mod resumption;
mod seed;
mod trust;
mod upstream_faults;
