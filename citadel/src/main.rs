use citadel::server::{self, ServerArgs};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "citadel",
    version,
    about = "Trireme Citadel: the mesh's certificate authority (Istio's istio_ca)"
)]
struct Cli {
    /// Log as JSON lines.
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
    /// Local mode's token issuer: make its key, print its JWKS, mint tokens.
    #[command(subcommand)]
    Token(citadel::token::issuer::Command),
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    mesh::telemetry::init(cli.log_as_json, "info");
    match cli.command {
        Some(Command::Version) => {
            println!("{}", server::INFO.to_json());
            return;
        }
        Some(Command::Token(command)) => {
            if let Err(e) = command.run() {
                eprintln!("citadel token: {e}");
                std::process::exit(1);
            }
            return;
        }
        None => {}
    }
    tracing::info!(version = server::INFO.version, "starting citadel");
    let valid = match server::validate(&cli.server) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("invalid configuration: {e:#}");
            std::process::exit(64);
        }
    };
    let shutdown = mesh::shutdown::on_signal();
    if let Err(e) = server::run(*cli.server, valid, shutdown).await {
        tracing::error!("citadel failed: {e:#}");
        std::process::exit(1);
    }
}
