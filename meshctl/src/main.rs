//! `meshctl`: the operator's command line.

mod kube_inject;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "meshctl", version, about = "Trireme's operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add the sidecar to the Pods and workloads of a YAML file, as the
    /// injector webhook would (istioctl kube-inject).
    KubeInject(kube_inject::Args),
    /// Check files of Istio config as Galley would: exit 0 when every
    /// object is valid, else 1 with every error listed.
    Validate {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<std::path::PathBuf>,
    },
    /// Print version information.
    Version,
}

const INFO: mesh::version::Info = mesh::version::Info::new("meshctl", env!("CARGO_PKG_VERSION"));

fn main() {
    let result = match Cli::parse().command {
        Command::KubeInject(args) => kube_inject::run(&args),
        Command::Validate { files } => {
            std::process::exit(galley::validate::run_cli("meshctl validate", &files))
        }
        Command::Version => {
            println!("{}", INFO.to_json());
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("meshctl: {e:#}");
        std::process::exit(1);
    }
}
