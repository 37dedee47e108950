//! `csr-load`: drives the real citadel's CSR service over TLS with
//! service-account tokens and measures certificates signed per second and
//! per CPU-second, for an RSA 2048 and an ECDSA P-256 CA, beside `openssl
//! speed`'s signing rate on the same core in the same run; and times one
//! reconcile pass that issues a Secret for each of 1,000 ServiceAccounts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::ca::IstioCertificateRequest;
use api::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use citadel::token::issuer::{Issuer, Mint};
use clap::{Parser, ValueEnum};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use trireme_bench::{cpu_seconds, start_server};
use trireme_tests::mesh::next_subnet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Algorithm {
    Rsa,
    Ecdsa,
}

#[derive(Parser)]
#[command(about = "CSR signing load against the real citadel")]
struct Args {
    /// CA key kinds to measure (both when not given).
    #[arg(long, value_enum)]
    algorithm: Vec<Algorithm>,
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// CSRs in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// taskset CPU list for citadel (and for openssl speed).
    #[arg(long)]
    server_cpus: Option<String>,
    /// ServiceAccounts for the issuance pass.
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    /// Only the issuance pass.
    #[arg(long)]
    issuance_only: bool,
}

fn workload_csr(algorithm: Algorithm) -> String {
    let key = match algorithm {
        Algorithm::Ecdsa => rcgen::KeyPair::generate().expect("key"),
        Algorithm::Rsa => {
            let rsa = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("rsa");
            let der = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&rsa).expect("pkcs8");
            rcgen::KeyPair::try_from(der.as_bytes()).expect("key")
        }
    };
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://cluster.local/ns/default/sa/load"
            .try_into()
            .expect("uri"),
    )];
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

struct Server {
    proc: trireme_tests::process::Proc,
    ip: String,
    dir: tempfile::TempDir,
    issuer: Issuer,
}

async fn start(algorithm: Algorithm, cpus: Option<&str>, accounts: &str) -> anyhow::Result<Server> {
    // On tmpfs where there is one: 4,000 files written at once measure
    // ext4's inode allocator otherwise (after many runs, its search for
    // inodes not recently deleted took 90% of a pass).
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    };
    let issuer = Issuer::generate(false).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(dir.path().join("jwks.json"), issuer.jwks())?;
    std::fs::create_dir(dir.path().join("config"))?;
    std::fs::write(dir.path().join("config/accounts.yaml"), accounts)?;
    let ip = format!("127.{}.0.40", next_subnet());
    let p = |f: &str| dir.path().join(f).display().to_string();
    let args = vec![
        "--self-signed-ca".into(),
        "--key-algorithm".into(),
        format!("{algorithm:?}").to_lowercase(),
        "--configDir".into(),
        p("config"),
        "--secrets-dir".into(),
        p("secrets"),
        "--token-jwks".into(),
        p("jwks.json"),
        "--ledger-url".into(),
        format!("sqlite://{}", p("ledger.db")),
        "--bind-address".into(),
        ip.clone(),
    ];
    let binary = trireme_tests::bin("citadel");
    let ready = format!("http://{ip}:15014/ready");
    let (proc, _) = start_server("citadel", &binary, args, cpus, dir.path(), &ready).await;
    Ok(Server {
        proc,
        ip,
        dir,
        issuer,
    })
}

async fn channel(server: &Server) -> anyhow::Result<Channel> {
    let roots = std::fs::read_to_string(
        server
            .dir
            .path()
            .join("secrets/istio-system/istio-ca-secret/root-cert.pem"),
    )?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(roots))
        .domain_name("istio-citadel");
    Ok(Channel::from_shared(format!("https://{}:8060", server.ip))?
        .tls_config(tls)?
        .connect()
        .await?)
}

fn openssl_speed(which: &str, cpus: Option<&str>) -> Option<f64> {
    let mut cmd = match cpus {
        Some(c) => {
            let mut cmd = std::process::Command::new("taskset");
            cmd.args(["-c", c, "openssl"]);
            cmd
        }
        None => std::process::Command::new("openssl"),
    };
    let out = cmd.args(["speed", "-seconds", "3", which]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 2048 bits 0.000290s 0.000008s   3447.5 118342.1": sign/s is the
    // first of the two rates; ECDSA's line has the same shape.
    let line = text
        .lines()
        .find(|l| l.contains(" 2048 bits ") || l.contains("(nistp256)"))?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    numbers.get(numbers.len().checked_sub(2)?).copied()
}

async fn signing(args: &Args, algorithm: Algorithm) -> anyhow::Result<()> {
    let server = start(algorithm, args.server_cpus.as_deref(), "").await?;
    let csrs: Arc<Vec<String>> = Arc::new((0..16).map(|_| workload_csr(algorithm)).collect());
    let token = server
        .issuer
        .mint(&Mint {
            namespace: "default".into(),
            service_account: "load".into(),
            audience: Some("istio-ca".into()),
            issuer: "kubernetes/local".into(),
            ttl: Some(Duration::from_secs(3600)),
        })
        .map_err(anyhow::Error::msg)?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(channel(&server).await.context("TLS channel")?);
    }
    let run = |seconds: u64| {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|i| {
                let mut client =
                    IstioCertificateServiceClient::new(channels[i % channels.len()].clone());
                let csrs = csrs.clone();
                let bearer = bearer.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut n = i;
                    while Instant::now() < deadline {
                        let mut request = tonic::Request::new(IstioCertificateRequest {
                            csr: csrs[n % csrs.len()].clone(),
                            subject_id: String::new(),
                            validity_duration: 3600,
                        });
                        request
                            .metadata_mut()
                            .insert("authorization", bearer.clone());
                        let started = Instant::now();
                        client.create_certificate(request).await.expect("signed");
                        latencies.push(started.elapsed());
                        n += 1;
                    }
                    latencies
                })
            })
            .collect();
        async move {
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("load task"));
            }
            all
        }
    };
    run(args.warmup).await;
    let cpu_before = cpu_seconds(server.proc.pid());
    let started = Instant::now();
    let mut latencies = run(args.duration).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server.proc.pid()) - cpu_before;
    latencies.sort();
    let at =
        |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
    let rate = latencies.len() as f64 / elapsed;
    let per_cpu = latencies.len() as f64 / cpu;
    let (label, speed) = match algorithm {
        Algorithm::Rsa => (
            "RSA 2048",
            openssl_speed("rsa2048", args.server_cpus.as_deref()),
        ),
        Algorithm::Ecdsa => (
            "ECDSA P-256",
            openssl_speed("ecdsap256", args.server_cpus.as_deref()),
        ),
    };
    println!(
        "{label} CA: {rate:.0} CSRs/s, {per_cpu:.0} per CPU-second ({cpu:.2} CPU-s in {elapsed:.1} s), p50 {:.2} ms, p99 {:.2} ms",
        at(0.5),
        at(0.99)
    );
    if let Some(speed) = speed {
        println!(
            "  openssl speed on the same core: {speed:.0} signs/s; citadel per CPU-second = {:.0}% of it",
            100.0 * per_cpu / speed
        );
    }
    Ok(())
}

async fn issuance(args: &Args) -> anyhow::Result<()> {
    let server = start(Algorithm::Ecdsa, args.server_cpus.as_deref(), "").await?;
    let yaml: String = (0..args.accounts)
        .map(|i| format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa-{i}, namespace: ns-{}}}\n---\n", i % 20))
        .collect();
    // Counted on disk, not through /metrics: scraping 1,000 expiry gauges
    // every few milliseconds would take citadel's one core from the pass.
    let secrets = server.dir.path().join("secrets");
    let written = || {
        (0..20)
            .filter_map(|n| std::fs::read_dir(secrets.join(format!("ns-{n}"))).ok())
            .flat_map(|dir| dir.flatten())
            .filter(|e| e.path().join("cert-chain.pem").exists())
            .count()
    };
    let started = Instant::now();
    std::fs::write(server.dir.path().join("config/accounts.yaml"), yaml)?;
    let deadline = started + Duration::from_secs(60);
    while written() < args.accounts {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the Secrets were not all written within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed();
    println!(
        "{} ServiceAccounts (ECDSA): every Secret written {:.0} ms after the file changed (100 ms of that is the watch's quiet period)",
        args.accounts,
        wall.as_secs_f64() * 1000.0
    );
    drop(server.proc);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    install_crypto_provider();
    let algorithms = if args.algorithm.is_empty() {
        vec![Algorithm::Ecdsa, Algorithm::Rsa]
    } else {
        args.algorithm.clone()
    };
    for algorithm in algorithms.into_iter().filter(|_| !args.issuance_only) {
        signing(&args, algorithm).await?;
    }
    issuance(&args).await
}

/// tonic's TLS needs a process-wide rustls provider.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
