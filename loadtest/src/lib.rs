//! `loadtest`: edgegw's load generator, the mTLS test backend it is measured against, and
//! the side-by-side comparison with NGINX and HAProxy (`loadtest compare`).

pub mod admin;
pub mod backend;
pub mod bundles;
pub mod certificates;
pub mod churn;
pub mod client;
pub mod compare;
pub mod engine;
pub mod fleet;
pub mod harness;
pub mod paced;
pub mod pacing;
pub mod procs;
pub mod progress;
pub mod report;
pub mod run;
pub mod scale;
pub mod serve;
pub mod slowloris;
pub mod soak;
pub mod stats;
pub mod thirdparty;
