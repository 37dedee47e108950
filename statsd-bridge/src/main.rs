use clap::Parser;
use clap::error::ErrorKind;
use statsd_bridge::server::{self, Args};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return;
        }
        // A flag clap cannot read is bad configuration like any other.
        Err(e) => {
            let _ = e.print();
            std::process::exit(64);
        }
    };
    mesh::telemetry::init(args.log_format == "json", &args.log_level);
    tracing::info!(version = server::INFO.version, "starting statsd-bridge");
    let valid = match server::validate(&args) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("invalid configuration: {e:#}");
            std::process::exit(64);
        }
    };
    if args.check_config {
        tracing::info!(
            mappings = valid.mapper.len(),
            "configuration check successful"
        );
        return;
    }
    let shutdown = mesh::shutdown::on_signal();
    if let Err(e) = server::run(valid, shutdown).await {
        tracing::error!("statsd-bridge failed: {e:#}");
        std::process::exit(1);
    }
}
