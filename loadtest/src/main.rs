//! `loadtest`: edgegw's load generator and the mTLS test backend it is measured against.

mod backend;

use clap::{Parser, Subcommand};

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
    };
    if let Err(e) = result {
        eprintln!("loadtest: {e}");
        std::process::exit(1);
    }
}
