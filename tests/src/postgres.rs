//! A private PostgreSQL server a test can stop and start again: its own data
//! directory and address, torn down when dropped. PostgreSQL refuses to run
//! as root, so as root its programs run as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub struct Postgres {
    pub host: String,
    data: TempDir,
    bin: PathBuf,
    running: bool,
}

fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRIREME_PG_BIN") {
        return PathBuf::from(dir);
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok();
    let mut found: Vec<PathBuf> = versions
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("no PostgreSQL: set TRIREME_PG_BIN or run `make test`, which installs it")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Postgres {
    /// A new cluster listening on `host`:5432, started.
    pub fn start(host: &str) -> Postgres {
        let data = tempfile::Builder::new()
            .prefix("trireme-pg-")
            .tempdir()
            .expect("tempdir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(data.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the data directory to postgres");
        }
        let mut pg = Postgres {
            host: host.to_string(),
            bin: pg_bin(),
            data,
            running: false,
        };
        let dir = pg.dir().join("db");
        pg.run(
            "initdb",
            &[
                "-D",
                &dir.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        pg.start_again();
        pg
    }

    fn dir(&self) -> &Path {
        self.data.path()
    }

    fn run(&self, program: &str, args: &[&str]) {
        if let Err(e) = self.try_run(program, args) {
            panic!("{e}");
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let program = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd
            .args(args)
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {args:?}: {}",
                program.display(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_again(&mut self) {
        let dir = self.dir().join("db").display().to_string();
        let options = format!(
            "-c listen_addresses={} -p 5432 -k {} -c fsync=off",
            self.host,
            self.dir().display()
        );
        let log = self.dir().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &dir, "-o", &options, "-l", &log, "-w", "start"],
        );
        self.running = true;
    }

    /// Stops the server (fast: open sessions are ended), waiting until it has.
    pub fn stop(&mut self) {
        let dir = self.dir().join("db").display().to_string();
        self.run("pg_ctl", &["-D", &dir, "-m", "fast", "-w", "stop"]);
        self.running = false;
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@{}:5432/postgres", self.host)
    }

    /// One value from `sql`, by psql.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h", &self.host, "-p", "5432", "-U", "postgres", "-d", "postgres", "-tAc", sql,
            ])
            .output()
            .expect("psql");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let dir = self.dir().join("db").display().to_string();
            let _ = self.try_run("pg_ctl", &["-D", &dir, "-m", "immediate", "-w", "stop"]);
        }
    }
}
