use clap::{Parser, Subcommand};
use pilot::agent::{self, ProxyArgs};

#[derive(Parser)]
#[command(
    name = "pilot-agent",
    version,
    about = "Trireme sidecar agent: bootstraps and supervises Envoy"
)]
struct Cli {
    #[arg(long = "log_as_json", global = true)]
    log_as_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Envoy as a sidecar or a router (gateway).
    Proxy(Box<ProxyArgs>),
    /// Set up the Pod's traffic capture (istio-init), or print it with --dry-run.
    IstioIptables(Box<agent::iptables::IptablesArgs>),
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
            println!("{}", agent::INFO.to_json());
            return;
        }
        Command::Proxy(args) => *args,
        Command::IstioIptables(args) => {
            if let Err(e) = agent::iptables::run(&args) {
                eprintln!("istio-iptables: {e}");
                std::process::exit(1);
            }
            return;
        }
    };
    tracing::info!(version = agent::INFO.version, role = ?args.role, "starting pilot-agent");
    let shutdown = mesh::shutdown::on_signal();
    if let Err(e) = agent::run(args, shutdown).await {
        tracing::error!("pilot-agent failed: {e:#}");
        std::process::exit(1);
    }
}
