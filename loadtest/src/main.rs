//! `loadtest`: edgegw's load generator and the mTLS test backend it is measured against.

use clap::{Parser, Subcommand};
use loadtest::{backend, certificates, churn, compare, fleet, run, scale, serve, slowloris, soak};

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "edgegw load tests and mTLS test backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An HTTPS backend that requires client certificates and reports what it saw.
    Backend(backend::BackendArgs),
    /// Send load to one target for a fixed time and report latency, rate and errors.
    Run(Box<run::RunArgs>),
    /// Run the same scenarios against edgegw, NGINX and HAProxy and print the ratios.
    Compare(Box<compare::CompareArgs>),
    /// Start one server under test as `compare` does and keep it up for third-party clients.
    Serve(serve::ServeArgs),
    /// Fleet mode on a real etcd: time from a write on one node to the first request on
    /// another that uses it, with many certificates in the store.
    Fleet(fleet::FleetArgs),
    /// Hardening: a bounded soak (modest keep-alive load while the bound client certificate
    /// is re-uploaded every second), edgegw's RSS and open descriptors sampled as a series.
    Soak(soak::SoakArgs),
    /// Hardening: many TLS connections opened and closed; edgegw's open descriptors before,
    /// right after and after an idle wait.
    Churn(churn::ChurnArgs),
    /// Hardening: thousands of silent and slow connections under short listener timeouts,
    /// and a good client's latency beside them and on the idle gateway.
    Slowloris(slowloris::SlowlorisArgs),
    /// Admin load: upload N distinct client certificates (made in-process) to a running
    /// edgegw, as fast as it answers or at a rate; upload latency p50/p99 and failures.
    Certificates(Box<certificates::CertificatesArgs>),
    /// Scale: edgegw with 10 000 certificates, 1 000 backends and 1 000 APIs created through
    /// the admin API; write latency as the store grows, snapshot rebuild time, GET
    /// /certificates time, RSS, and the data plane's request CPU before and after.
    Scale(scale::ScaleArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOADTEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Backend(args) => backend::run(args),
        Command::Run(args) => run::run_command(*args),
        Command::Compare(args) => compare::run(*args),
        Command::Serve(args) => serve::run(args),
        Command::Fleet(args) => fleet::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Churn(args) => churn::run(args),
        Command::Slowloris(args) => slowloris::run(args),
        Command::Certificates(args) => certificates::run(*args),
        Command::Scale(args) => scale::run(args),
    };
    if let Err(e) = result {
        eprintln!("loadtest: {e}");
        std::process::exit(1);
    }
}
