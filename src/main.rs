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
    /// Measure throughput on your own hardware and images.
    #[command(subcommand)]
    Bench(Bench),
    /// Federation diagnostics.
    #[command(subcommand)]
    Federation(Federation),
}

#[derive(Subcommand)]
enum Federation {
    /// Show how SERVER_NAME is reached (overrides, well-known, SRV, port 8448) and fetch
    /// its signing keys over that route, as mxcd would.
    Check { server_name: String },
}

#[derive(Subcommand)]
enum Bench {
    /// Thumbnail every image in DIR with the production pipeline (no HTTP, no storage).
    Thumbnails {
        dir: PathBuf,
        /// Images processed at once.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Memory budget in MiB for images being processed, as `thumbnails.memory_mib`
        /// (default: that setting; 0 = 64 per worker).
        #[arg(long)]
        memory_mib: Option<u32>,
        /// `recommended`, or a list like `96x96:crop,320x240:scale`.
        #[arg(long, default_value = "recommended")]
        sizes: String,
        /// Process every image this many times.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    mxcd::telemetry::tune_allocator();
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
        Command::Bench(Bench::Thumbnails {
            dir,
            workers,
            memory_mib,
            sizes,
            repeat,
            json,
        }) => {
            let memory_mib = memory_mib.unwrap_or(config.settings.thumbnails.memory_mib);
            bench(&config, &dir, (workers, memory_mib), &sizes, repeat, json).await
        }
        Command::Federation(Federation::Check { server_name }) => {
            check_federation(&config, &server_name).await
        }
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

async fn bench(
    config: &Config,
    dir: &std::path::Path,
    (workers, memory_mib): (usize, u32),
    sizes: &str,
    repeat: usize,
    json: bool,
) -> Result<(), String> {
    let specs = if sizes == "recommended" {
        config.thumbnail_sizes.clone()
    } else {
        sizes
            .split(',')
            .map(|s| s.trim().parse().map_err(|e| format!("--sizes: {s:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?
    };
    let files = mxcd::bench::images_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if files.is_empty() {
        return Err(format!("no files in {}", dir.display()));
    }
    let limits = mxcd::thumbnail::Limits {
        max_pixels: config.settings.thumbnails.max_pixels,
        max_animation_pixels: config.settings.thumbnails.max_animation_pixels,
    };
    // Drawn on stderr only when it is a terminal (indicatif hides it otherwise).
    let progress = indicatif::ProgressBar::new((files.len() * repeat.max(1)) as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images, {elapsed} (eta {eta})",
        )
        .expect("a valid progress template"),
    );
    let options = mxcd::bench::Options {
        specs,
        workers,
        memory_mib,
        repeat,
        limits,
        job_timeout: std::time::Duration::from_secs(config.settings.thumbnails.job_timeout_secs),
    };
    let report = mxcd::bench::run(&files, &options, &|| progress.inc(1)).await;
    progress.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

async fn check_federation(config: &Config, server_name: &str) -> Result<(), String> {
    use mxcd::federation::{FederationClient, KeyRing, discovery};
    let server = mxcd::domain::ServerName::parse(server_name).map_err(|e| e.to_string())?;
    let federation = &config.settings.federation;
    let timeout = std::time::Duration::from_secs(federation.request_timeout_secs);
    match federation.overrides.get(server.as_str()) {
        Some(url) => println!("override: {url} (discovery skipped)"),
        None => {
            let blocklist = mxcd::federation::Blocklist::parse(&federation.ip_blocklist)?;
            let lookups = discovery::NetLookups::new(timeout, blocklist);
            let endpoint = discovery::resolve(server.as_str(), &lookups)
                .await
                .ok_or("not a resolvable server name")?;
            println!(
                "connect: {}:{} (TLS name {}, Host: {})",
                endpoint
                    .connect_host
                    .as_deref()
                    .unwrap_or(&endpoint.tls_name),
                endpoint.port,
                endpoint.tls_name,
                endpoint.host_header
            );
        }
    }
    let client = FederationClient::new(config.server_name.clone(), None, federation);
    let keys = KeyRing::new(client, timeout)
        .fetch_now(&server)
        .await
        .map_err(|e| format!("keys: {e}"))?;
    for (id, key) in keys {
        println!("key: {id} {key}");
    }
    Ok(())
}
