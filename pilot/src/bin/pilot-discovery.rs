use clap::{Parser, Subcommand};
use pilot::discovery::{self, DiscoveryArgs};

#[derive(Parser)]
#[command(
    name = "pilot-discovery",
    version,
    about = "Trireme Pilot: service discovery and Envoy xDS"
)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long = "log_as_json", global = true)]
    log_as_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve xDS to Envoy proxies.
    Discovery(Box<DiscoveryArgs>),
    /// Print version information.
    Version,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    mesh::telemetry::init(cli.log_as_json, "info");
    mesh::tls::install_crypto_provider();
    let args = match cli.command {
        Command::Version => {
            println!("{}", discovery::INFO.to_json());
            return;
        }
        Command::Discovery(args) => *args,
    };
    tracing::info!(
        version = discovery::INFO.version,
        "starting pilot-discovery"
    );
    let valid = match discovery::validate(&args) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("invalid configuration: {e:#}");
            std::process::exit(64);
        }
    };
    let shutdown = mesh::shutdown::on_signal();
    if let Err(e) = discovery::run(args, valid, shutdown).await {
        tracing::error!("pilot-discovery failed: {e:#}");
        std::process::exit(1);
    }
}
