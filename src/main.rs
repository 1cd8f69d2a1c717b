//! privatize: parse the command line, set up crypto and logging, run one
//! room, and print the error chain once.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Result;
use privatize::cli::{Cli, Command, LogArgs, LogFormat};
use tracing_subscriber::EnvFilter;

// musl's allocator serialises threads; the static image's binary needs a faster one.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    init_logging(&cli.log);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(cli: Cli) -> Result<()> {
    // Two rustls providers may be compiled in; pick one before any TLS client exists.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Command::SyncImage(args) => privatize::sync_image::run(args).await,
        Command::Generate(args) => privatize::generate::run(&args),
        Command::Serve(args) => privatize::serve::run(*args).await,
        Command::RefreshSecrets(args) => privatize::refresh_secrets::run(args).await,
        Command::GenCerts(args) => privatize::gen_certs::run(args).await,
        Command::Install(args) => privatize::install::install(args).await,
        Command::Uninstall(args) => privatize::install::uninstall(args).await,
    }
}

fn init_logging(args: &LogArgs) {
    // Checked when parsed: the lossy parse drops nothing here.
    let filter = EnvFilter::builder().parse_lossy(args.log_level.directives());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .with_target(false);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.compact().init(),
    }
}

/// Colour only on a terminal (never into files and `kubectl logs`), and not when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
