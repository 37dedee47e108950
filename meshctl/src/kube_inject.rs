use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use injector::config::{Config, Sources};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The YAML to inject; `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    filename: PathBuf,
    /// Where to write the result; standard output when not given.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// The injection config (the `config` key of the istio-sidecar-injector
    /// ConfigMap); Istio 1.4's when not given.
    #[arg(long = "injectConfigFile")]
    inject_config_file: Option<PathBuf>,
    /// The mesh config (the `mesh` key of the istio ConfigMap).
    #[arg(long = "meshConfigFile")]
    mesh_config_file: Option<PathBuf>,
    /// Helm values the template reads (the `values` key of the
    /// istio-sidecar-injector ConfigMap).
    #[arg(long = "valuesFile")]
    values_file: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(&Sources {
        inject_config: args.inject_config_file.clone(),
        mesh_config: args.mesh_config_file.clone(),
        values: args.values_file.clone(),
    })?;
    let mut input = String::new();
    if args.filename.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading standard input")?;
    } else {
        input = std::fs::read_to_string(&args.filename)
            .with_context(|| format!("{}", args.filename.display()))?;
    }
    let name = args.filename.display().to_string();
    let output =
        injector::workload::inject_documents(&config, &input).with_context(|| name.clone())?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, output).with_context(|| format!("{}", path.display()))?
        }
        None => std::io::stdout()
            .write_all(output.as_bytes())
            .context("writing standard output")?,
    }
    Ok(())
}
