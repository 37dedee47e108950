use clap::{Parser, Subcommand};
use mixer_telemetry::server::{self, ServerArgs};

#[derive(Parser)]
#[command(
    name = "mixer-telemetry",
    version,
    about = "Trireme Mixer telemetry: Report and Envoy's access logs into metrics and logs"
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
    /// Serve Report and the access log service.
    Server(Box<ServerArgs>),
    /// Print version information.
    Version,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    mesh::telemetry::init(cli.log_as_json, "info");
    let args = match cli.command {
        Command::Version => {
            println!("{}", server::INFO.to_json());
            return;
        }
        Command::Server(args) => *args,
    };
    tracing::info!(version = server::INFO.version, "starting mixer-telemetry");
    let valid = match server::validate(&args) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("invalid configuration: {e:#}");
            std::process::exit(64);
        }
    };
    let shutdown = mesh::shutdown::on_signal();
    if let Err(e) = server::run(args, valid, shutdown).await {
        tracing::error!("mixer-telemetry failed: {e:#}");
        std::process::exit(1);
    }
}
