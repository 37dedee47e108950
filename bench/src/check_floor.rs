//! `check-floor --address IP:PORT`: the floor server of
//! [`trireme_bench::floor`], started by the load tools in place of
//! mixer-policy.

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to serve on.
    #[arg(long)]
    address: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    trireme_bench::floor::serve(&Args::parse().address).await
}
