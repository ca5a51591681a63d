use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mxcd::config::Config;
use mxcd::startup::{Application, open_repo};

/// mxcd: a standalone Matrix media repository.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (built-in defaults when omitted; MXCD__SECTION__KEY overrides).
    #[arg(long, short, global = true, env = "MXCD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    mxcd::telemetry::init();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mxcd: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => open_repo(&config)
            .await
            .map(|_| tracing::info!("migrations applied"))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mxcd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let app = Application::build(config)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(addr = %app.local_addr(), "mxcd listening");
    app.run_until_stopped().await.map_err(|e| e.to_string())
}
