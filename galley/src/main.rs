use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use galley::server::{self, ServerArgs};

#[derive(Parser)]
#[command(
    name = "galley",
    version,
    about = "Trireme Galley: validates Istio config and serves it over MCP"
)]
struct Cli {
    #[arg(long = "log_as_json", global = true)]
    log_as_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate config and serve it over MCP and the admission webhook.
    Server(Box<ServerArgs>),
    /// Check files of Istio config: exit 0 when every object is valid,
    /// else 1 with every error listed.
    Validate {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// Exit 0 while the probe file is fresh (a Kubernetes exec probe).
    Probe {
        #[arg(long = "probe-path")]
        probe_path: PathBuf,
        #[arg(long, default_value = "10s", value_parser = api::duration::parse)]
        interval: Duration,
    },
    /// Print version information.
    Version,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The MCP streams and the sources share a multi-threaded runtime with
    // the webhook's actix system (whose workers have their own threads).
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    };
    actix_web::rt::System::with_tokio_rt(runtime).block_on(run());
}

async fn run() {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Version => {
            println!("{}", galley::INFO.to_json());
            return;
        }
        Command::Probe {
            probe_path,
            interval,
        } => {
            if let Err(e) = mesh::webhook::probe(&probe_path, interval) {
                eprintln!("galley probe: {e}");
                std::process::exit(1);
            }
            return;
        }
        Command::Validate { files } => {
            std::process::exit(galley::validate::run_cli("galley validate", &files));
        }
        Command::Server(args) => args,
    };
    mesh::telemetry::init(cli.log_as_json, "info");
    tracing::info!(version = galley::INFO.version, "starting galley");
    let valid = match args.validate() {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("invalid arguments: {e:#}");
            std::process::exit(64);
        }
    };
    let shutdown = mesh::shutdown::on_signal();
    if let Err(e) = server::run(*args, valid, shutdown).await {
        tracing::error!("galley failed: {e:#}");
        std::process::exit(1);
    }
}
