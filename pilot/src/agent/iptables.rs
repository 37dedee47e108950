//! `pilot-agent istio-iptables`: the traffic capture `istio-init` sets up in
//! the Pod's network namespace, with Istio 1.4's flags. Outbound TCP goes to
//! Envoy's 15001, inbound to 15006, except the proxy's own traffic (by uid
//! and gid), loopback, and the excluded ranges and ports. Rules are applied
//! in one `iptables-restore`, so a Pod never runs with half of them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    Redirect,
    Tproxy,
}

#[derive(Debug, Clone, Args)]
pub struct IptablesArgs {
    /// Envoy's outbound capture port.
    #[arg(short = 'p', long = "envoy-port", default_value_t = 15001)]
    pub envoy_port: u16,
    /// Envoy's inbound capture port.
    #[arg(short = 'z', long = "inbound-capture-port", default_value_t = 15006)]
    pub inbound_capture_port: u16,
    /// The proxy's uids (comma-separated): their traffic is never captured.
    #[arg(short = 'u', long = "proxy-uid", default_value = "1337")]
    pub proxy_uid: String,
    /// The proxy's gids; the uids when not given.
    #[arg(short = 'g', long = "proxy-gid")]
    pub proxy_gid: Option<String>,
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        value_enum,
        default_value = "REDIRECT",
        ignore_case = true
    )]
    pub mode: Mode,
    /// Outbound IPv4 ranges captured: `*` for all, empty for none.
    #[arg(short = 'i', long = "istio-service-cidr", default_value = "*")]
    pub include_cidrs: String,
    /// Outbound ranges never captured.
    #[arg(short = 'x', long = "istio-service-exclude-cidr", default_value = "")]
    pub exclude_cidrs: String,
    /// Inbound ports captured: `*` for all, empty for none.
    #[arg(short = 'b', long = "istio-inbound-ports", default_value = "*")]
    pub inbound_ports: String,
    /// Inbound ports never captured when `-b` is `*` (the status port).
    #[arg(short = 'd', long = "istio-local-exclude-ports", default_value = "")]
    pub exclude_inbound_ports: String,
    /// Outbound ports never captured.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        default_value = ""
    )]
    pub exclude_outbound_ports: String,
    /// Interfaces (KubeVirt's) whose incoming traffic is treated as outbound.
    #[arg(short = 'k', long = "kube-virt-interfaces", default_value = "")]
    pub kube_virt_interfaces: String,
    /// Print the rules instead of applying them.
    #[arg(long = "dry-run", env = "DRY_RUN")]
    pub dry_run: bool,
    /// The `iptables-restore` to apply them with.
    #[arg(long = "iptables-restore", default_value = "iptables-restore")]
    pub iptables_restore: String,
}

/// Either all of the list (`*`) or these items.
#[derive(Debug, PartialEq)]
enum Set<T> {
    All,
    Only(Vec<T>),
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

fn ports(flag: &str, s: &str) -> Result<Vec<u16>, String> {
    list(s)
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{flag}: {p:?} is not a port"))
        })
        .collect()
}

fn port_set(flag: &str, s: &str) -> Result<Set<u16>, String> {
    if s.trim() == "*" {
        return Ok(Set::All);
    }
    ports(flag, s).map(Set::Only)
}

fn cidrs(flag: &str, s: &str) -> Result<Vec<String>, String> {
    list(s)
        .map(|c| {
            let (ip, len) = c.split_once('/').unwrap_or((c, "32"));
            let ip: Ipv4Addr = ip.parse().map_err(|_| {
                if ip.contains(':') {
                    format!("{flag}: {c:?}: IPv6 ranges are not captured yet (IPv4 only)")
                } else {
                    format!("{flag}: {c:?} is not an IPv4 address or CIDR")
                }
            })?;
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| *l <= 32)
                .ok_or_else(|| format!("{flag}: {c:?}: prefix length must be 0..=32"))?;
            Ok(format!("{ip}/{len}"))
        })
        .collect()
}

fn ids(flag: &str, s: &str) -> Result<Vec<u32>, String> {
    let ids: Vec<u32> = list(s)
        .map(|i| {
            i.parse()
                .map_err(|_| format!("{flag}: {i:?} is not a numeric id"))
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(format!("{flag}: at least one id is needed"));
    }
    Ok(ids)
}

/// The rules, in `iptables-restore` format; or what is wrong with the flags.
pub fn rules(a: &IptablesArgs) -> Result<String, String> {
    if a.mode == Mode::Tproxy {
        return Err("-m TPROXY: Trireme's sidecars capture with REDIRECT only".into());
    }
    let uids = ids("-u", &a.proxy_uid)?;
    let gids = ids("-g", a.proxy_gid.as_deref().unwrap_or(&a.proxy_uid))?;
    let include = if a.include_cidrs.trim() == "*" {
        Set::All
    } else {
        Set::Only(cidrs("-i", &a.include_cidrs)?)
    };
    let exclude = cidrs("-x", &a.exclude_cidrs)?;
    let inbound = port_set("-b", &a.inbound_ports)?;
    let exclude_inbound = ports("-d", &a.exclude_inbound_ports)?;
    let exclude_outbound = ports("-o", &a.exclude_outbound_ports)?;
    let interfaces: Vec<&str> = list(&a.kube_virt_interfaces).collect();
    if let Some(bad) = interfaces.iter().find(|i| {
        i.len() > 15
            || !i
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    }) {
        return Err(format!("-k: {bad:?} is not an interface name"));
    }

    let mut r = String::from("*nat\n");
    for chain in [
        "ISTIO_INBOUND",
        "ISTIO_IN_REDIRECT",
        "ISTIO_OUTPUT",
        "ISTIO_REDIRECT",
    ] {
        let _ = writeln!(r, ":{chain} - [0:0]");
    }
    let _ = writeln!(
        r,
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        a.envoy_port
    );
    let _ = writeln!(
        r,
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        a.inbound_capture_port
    );

    // KubeVirt's interfaces carry a VM's outbound traffic: it goes to Envoy
    // as outbound, ahead of the inbound rules.
    for iface in &interfaces {
        for cidr in &exclude {
            let _ = writeln!(r, "-A PREROUTING -i {iface} -d {cidr} -j RETURN");
        }
        match &include {
            Set::All => {
                let _ = writeln!(r, "-A PREROUTING -i {iface} -j ISTIO_REDIRECT");
            }
            Set::Only(list) => {
                for cidr in list {
                    let _ = writeln!(r, "-A PREROUTING -i {iface} -d {cidr} -j ISTIO_REDIRECT");
                }
            }
        }
    }

    let capture_inbound = inbound != Set::Only(vec![]);
    if capture_inbound {
        r.push_str("-A PREROUTING -p tcp -j ISTIO_INBOUND\n");
        match &inbound {
            Set::All => {
                // SSH stays reachable, as Istio kept it.
                for port in std::iter::once(&22).chain(&exclude_inbound) {
                    let _ = writeln!(r, "-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN");
                }
                r.push_str("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n");
            }
            Set::Only(list) => {
                for port in list {
                    let _ = writeln!(
                        r,
                        "-A ISTIO_INBOUND -p tcp --dport {port} -j ISTIO_IN_REDIRECT"
                    );
                }
            }
        }
    }

    r.push_str("-A OUTPUT -p tcp -j ISTIO_OUTPUT\n");
    for port in &exclude_outbound {
        let _ = writeln!(r, "-A ISTIO_OUTPUT -p tcp --dport {port} -j RETURN");
    }
    // Envoy's connections to the app, from InboundPassthroughCluster's bind address.
    r.push_str("-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN\n");
    for (flag, owners) in [("--uid-owner", &uids), ("--gid-owner", &gids)] {
        for id in owners {
            if capture_inbound {
                // The proxy calling this Pod's own IP reaches the app through the inbound side.
                let _ = writeln!(
                    r,
                    "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner {flag} {id} -j ISTIO_IN_REDIRECT"
                );
            }
            let _ = writeln!(r, "-A ISTIO_OUTPUT -o lo -m owner ! {flag} {id} -j RETURN");
            let _ = writeln!(r, "-A ISTIO_OUTPUT -m owner {flag} {id} -j RETURN");
        }
    }
    r.push_str("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n");
    for cidr in &exclude {
        let _ = writeln!(r, "-A ISTIO_OUTPUT -d {cidr} -j RETURN");
    }
    match &include {
        Set::All => r.push_str("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n"),
        Set::Only(list) => {
            for cidr in list {
                let _ = writeln!(r, "-A ISTIO_OUTPUT -d {cidr} -j ISTIO_REDIRECT");
            }
        }
    }
    r.push_str("COMMIT\n");
    Ok(r)
}

/// Prints or applies the rules; the error says which flag or what failed.
pub fn run(a: &IptablesArgs) -> Result<(), String> {
    let rules = rules(a)?;
    if a.dry_run {
        print!("{rules}");
        return Ok(());
    }
    let mut child = Command::new(&a.iptables_restore)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", a.iptables_restore))?;
    child
        .stdin
        .take()
        .ok_or("iptables-restore: no stdin")?
        .write_all(rules.as_bytes())
        .map_err(|e| format!("{}: {e}", a.iptables_restore))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", a.iptables_restore))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}\nrules were:\n{rules}",
            a.iptables_restore,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    eprint!("{rules}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: IptablesArgs,
    }

    fn parse(line: &str) -> IptablesArgs {
        Cli::try_parse_from(std::iter::once("x").chain(line.split_whitespace()))
            .unwrap()
            .args
    }

    #[test]
    fn istio_init_arguments_make_istio_chains() {
        let rules = rules(&parse(
            "-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x 10.0.0.1/32 -b * -d 15090,15020 -o 3306",
        ))
        .unwrap();
        let expected = "\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -d 10.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
        assert_eq!(rules, expected);
    }

    #[test]
    fn listed_ports_and_ranges_are_the_only_ones_captured() {
        let listed = rules(&parse(
            "-i 10.96.0.0/12,10.244.1.7 -b 9080,9090 -u 1337 -g 1338",
        ))
        .unwrap();
        assert!(listed.contains("-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT\n-A ISTIO_INBOUND -p tcp --dport 9090 -j ISTIO_IN_REDIRECT\n"));
        assert!(!listed.contains("--dport 22"));
        assert!(listed.contains("-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT\n-A ISTIO_OUTPUT -d 10.244.1.7/32 -j ISTIO_REDIRECT\nCOMMIT\n"));
        assert!(listed.contains("--gid-owner 1338"));
        // Nothing inbound: no PREROUTING jump at all.
        let none = Cli::try_parse_from(["x", "-b", ""]).unwrap().args;
        let outbound_only = rules(&none).unwrap();
        assert!(!outbound_only.contains("PREROUTING"), "{outbound_only}");
        assert!(
            !outbound_only.contains("-j ISTIO_IN_REDIRECT\n-A ISTIO_OUTPUT -o lo"),
            "{outbound_only}"
        );
    }

    #[test]
    fn bad_flags_are_named() {
        assert_eq!(
            rules(&parse("-b 80,http")).unwrap_err(),
            "-b: \"http\" is not a port"
        );
        assert_eq!(
            rules(&parse("-x 10.0.0.0/40")).unwrap_err(),
            "-x: \"10.0.0.0/40\": prefix length must be 0..=32"
        );
        assert!(rules(&parse("-i fd00::/8")).unwrap_err().contains("IPv6"));
        assert!(rules(&parse("-u root")).unwrap_err().starts_with("-u: "));
        assert!(
            rules(&parse("-m TPROXY"))
                .unwrap_err()
                .contains("REDIRECT only")
        );
        assert_eq!(
            rules(&parse("-k eth0;x")).unwrap_err(),
            "-k: \"eth0;x\" is not an interface name"
        );
    }

    #[test]
    fn kubevirt_interfaces_go_outbound_before_anything_inbound() {
        let r = rules(&parse("-k net1 -x 10.0.0.0/8 -b *")).unwrap();
        let virt = r.find("-A PREROUTING -i net1 -d 10.0.0.0/8 -j RETURN\n-A PREROUTING -i net1 -j ISTIO_REDIRECT").unwrap();
        assert!(
            virt < r.find("-A PREROUTING -p tcp -j ISTIO_INBOUND").unwrap(),
            "{r}"
        );
    }
}
