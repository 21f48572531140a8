//! `edgegw`: the command line (contract §1). Thin on purpose: parse arguments, set up
//! logging, load the configuration and hand over to `gateway::runtime::run`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gateway::config::{Config, StoreKind};
use tracing_subscriber::EnvFilter;

/// edgegw: an edge API gateway that calls its backends over mutual TLS.
#[derive(Parser)]
#[command(name = "edgegw", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground (logs to stderr; filter from EDGEGW_LOG, default
    /// "info"). Without --config it runs on the built-in defaults.
    Run {
        /// Configuration file (TOML).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file: print every error with its key; exit 1 if there is any.
    Check {
        /// Configuration file (TOML).
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Work on the configuration store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy every resource from one store to the other (ids, thumbprints and sealed keys
    /// kept). The target must hold no resources; the gateway must not run on the embedded
    /// store while it is copied.
    Migrate {
        #[arg(long, value_enum)]
        from: StoreArg,
        #[arg(long, value_enum)]
        to: StoreArg,
        /// Configuration file (TOML): the data dir, the etcd endpoints and prefix, the
        /// master key.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreArg {
    Embedded,
    Etcd,
}

impl From<StoreArg> for StoreKind {
    fn from(a: StoreArg) -> Self {
        match a {
            StoreArg::Embedded => StoreKind::Embedded,
            StoreArg::Etcd => StoreKind::Etcd,
        }
    }
}

/// Loads a configuration file, printing its errors.
fn load(path: &std::path::Path) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => Some(config),
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("edgegw: {error}");
            }
            None
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("configuration OK: {}", config.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for error in &errors.0 {
                    eprintln!("{error}");
                }
                ExitCode::FAILURE
            }
        },
        Command::Store {
            command: StoreCommand::Migrate { from, to, config },
        } => {
            let Some(loaded) = load(&config) else {
                return ExitCode::FAILURE;
            };
            match gateway::runtime::migrate(&loaded, from.into(), to.into()) {
                Ok(m) => {
                    println!(
                        "migrated {} certificates, {} backends, {} APIs",
                        m.certificates, m.backends, m.apis
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("edgegw: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config: path } => {
            let config = match &path {
                Some(path) => match Config::load(path) {
                    Ok(config) => {
                        tracing::info!(path = %path.display(), "loaded configuration");
                        config
                    }
                    Err(errors) => {
                        for error in &errors.0 {
                            eprintln!("edgegw: {error}");
                        }
                        return ExitCode::FAILURE;
                    }
                },
                None => {
                    tracing::info!("no --config given: running on the built-in defaults");
                    Config::embedded_defaults()
                }
            };
            match gateway::runtime::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("edgegw: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// fmt subscriber on stderr, filter from `EDGEGW_LOG` (default `info`).
fn init_logging() {
    let filter = match std::env::var("EDGEGW_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("edgegw: ignoring invalid EDGEGW_LOG {spec:?}: {e}; using \"info\"");
            EnvFilter::new("info")
        }),
        _ => EnvFilter::new("info"),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
}
