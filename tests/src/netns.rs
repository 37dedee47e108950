//! Hosts of the test's own, in network namespaces: a "node" holding a
//! bridge, and "pods" each wired to it by a veth pair, on 10.250.<n>.0/24.
//! Everything is removed when the [`Lan`] is dropped, test failed or not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Lan {
    pub node: String,
    pub pods: Vec<String>,
    /// `10.250.<n>`: the node is `.1`, pod i is `.(i + 2)`.
    pub prefix: String,
}

/// Runs `ip args`, or says what failed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lan {
    /// Needs root (CAP_NET_ADMIN) and iproute2.
    pub fn new(pods: usize, subnet: u8) -> Result<Lan, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "tr{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut lan = Lan {
            node: format!("{tag}-node"),
            pods: (0..pods).map(|i| format!("{tag}-pod{i}")).collect(),
            prefix: format!("10.250.{subnet}"),
        };
        let node = lan.node.clone();
        ip(&["netns", "add", &node])?;
        // From here on, Drop cleans up whatever was made.
        let made = lan.pods.clone();
        lan.pods.clear();
        ip(&["-n", &node, "link", "set", "lo", "up"])?;
        ip(&["-n", &node, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &node,
            "addr",
            "add",
            &format!("{}.1/24", lan.prefix),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &node, "link", "set", "br0", "up"])?;
        for (i, pod) in made.into_iter().enumerate() {
            ip(&["netns", "add", &pod])?;
            lan.pods.push(pod.clone());
            let veth = format!("v{i}");
            ip(&[
                "-n", &node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &pod,
            ])?;
            ip(&["-n", &node, "link", "set", &veth, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{}/24", lan.pod_ip(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &pod, "link", "set", "eth0", "up"])?;
            ip(&["-n", &pod, "link", "set", "lo", "up"])?;
            ip(&["-n", &pod, "route", "add", "default", "via", &lan.node_ip()])?;
        }
        Ok(lan)
    }

    pub fn node_ip(&self) -> String {
        format!("{}.1", self.prefix)
    }

    pub fn pod_ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 2)
    }

    /// `ip netns exec <ns> program args...` as an argument list.
    pub fn exec(ns: &str, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
        let mut all = vec!["netns".to_string(), "exec".into(), ns.to_string()];
        all.push(program.display().to_string());
        all.extend(args.iter().cloned());
        (PathBuf::from("ip"), all)
    }

    /// Runs curl in `ns`: the HTTP status and body, or `None` when it
    /// connected nowhere.
    pub async fn curl(ns: &str, url: &str) -> Option<(u16, String)> {
        let out = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "curl",
                "-s",
                "-m",
                "3",
                "-w",
                "\n%{http_code}",
                url,
            ])
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n')?;
        let code: u16 = code.trim().parse().ok()?;
        (code != 0).then(|| (code, body.to_string()))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain(std::iter::once(&self.node)) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
