use clap::{Parser, Subcommand};
use injector::config::Config;
use injector::webhook::server::{self, ServerArgs};

#[derive(Parser)]
#[command(
    name = "sidecar-injector",
    version,
    about = "Trireme sidecar injector: Istio's istio-sidecar-injector webhook"
)]
struct Cli {
    #[arg(long = "log_as_json", global = true)]
    log_as_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: Box<ServerArgs>,
}

#[derive(Subcommand)]
enum Command {
    /// Print version information.
    Version,
    /// Exit 0 while the health file is fresh (a Kubernetes exec probe).
    Probe {
        #[arg(long = "probe-path")]
        probe_path: std::path::PathBuf,
        #[arg(long, default_value = "4s", value_parser = api::duration::parse)]
        interval: std::time::Duration,
    },
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Version) => {
            println!("{}", injector::INFO.to_json());
            return;
        }
        Some(Command::Probe {
            probe_path,
            interval,
        }) => {
            if let Err(e) = mesh::webhook::probe(&probe_path, interval) {
                eprintln!("sidecar-injector probe: {e}");
                std::process::exit(1);
            }
            return;
        }
        None => {}
    }
    mesh::telemetry::init(cli.log_as_json, "info");
    tracing::info!(
        version = injector::INFO.version,
        "starting sidecar-injector"
    );
    let config = match Config::load(&cli.server.sources()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            std::process::exit(64);
        }
    };
    tracing::info!(policy = ?config.policy, version = %config.version, "injection config loaded");
    let shutdown = mesh::shutdown::on_signal();
    if let Err(e) = server::run(*cli.server, config, shutdown).await {
        tracing::error!("sidecar-injector failed: {e:#}");
        std::process::exit(1);
    }
}
