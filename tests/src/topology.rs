//! Cluster YAML for the tests: a `reviews` service with versions, each version
//! one pod on its own loopback address, and a `client` pod that only calls out.

use std::fmt::Write;

/// A pod: its address (where its sidecar listens) and, when it runs an app, the
/// address the app binds (the Sidecar ingress `defaultEndpoint`).
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub ip: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub app_addr: Option<String>,
    /// Its ServiceAccount in `default`: the identity Citadel gives it.
    pub service_account: String,
}

pub struct Topology {
    pub subnet: u8,
    pub client: Pod,
    pub versions: Vec<Pod>,
}

pub const REVIEWS_PORT: u16 = 9080;

impl Topology {
    /// `reviews` with the given versions, all in namespace `default`, in 127.<subnet>.0.0/16.
    pub fn reviews(subnet: u8, versions: &[&str]) -> Topology {
        let client = Pod {
            name: "client".into(),
            ip: format!("127.{subnet}.1.1"),
            labels: vec![("app".into(), "client".into())],
            annotations: Vec::new(),
            app_addr: None,
            service_account: "client".into(),
        };
        let versions = versions
            .iter()
            .enumerate()
            .map(|(i, v)| Pod {
                name: format!("reviews-{v}"),
                ip: format!("127.{subnet}.1.{}", i + 2),
                labels: vec![
                    ("app".into(), "reviews".into()),
                    ("version".into(), v.to_string()),
                ],
                annotations: Vec::new(),
                app_addr: Some(format!("127.{subnet}.2.{}:{REVIEWS_PORT}", i + 2)),
                service_account: "reviews".into(),
            })
            .collect();
        Topology {
            subnet,
            client,
            versions,
        }
    }

    pub fn pilot_ip(&self) -> String {
        format!("127.{}.0.1", self.subnet)
    }

    /// The address of the `i`th mixer-policy process (its "pod IP").
    pub fn policy_ip(&self, i: usize) -> String {
        format!("127.{}.0.{}", self.subnet, 10 + i)
    }

    /// `istio-policy` in `istio-system`, with Istio's port names, backed by
    /// `n` mixer-policy processes: sidecars reach it through Pilot's cluster.
    pub fn policy_yaml(&self, n: usize) -> String {
        let ips: Vec<String> = (0..n).map(|i| self.policy_ip(i)).collect();
        control_plane_yaml(
            "istio-policy",
            "10.96.0.30",
            &ips,
            &[("grpc-mixer", 9091), ("http-policy-monitoring", 15014)],
        )
    }

    /// The address of mixer-telemetry (its "pod IP").
    pub fn telemetry_ip(&self) -> String {
        format!("127.{}.0.20", self.subnet)
    }

    /// The address of statsd-bridge (its "pod IP").
    pub fn statsd_bridge_ip(&self) -> String {
        format!("127.{}.0.30", self.subnet)
    }

    /// `istio-telemetry` in `istio-system`, with Istio's port names.
    pub fn telemetry_yaml(&self) -> String {
        control_plane_yaml(
            "istio-telemetry",
            "10.96.0.31",
            &[self.telemetry_ip()],
            &[
                ("grpc-mixer", 9091),
                ("http-monitoring", 15014),
                ("prometheus", 42422),
            ],
        )
    }

    /// The address of Galley (its "pod IP").
    pub fn galley_ip(&self) -> String {
        format!("127.{}.0.50", self.subnet)
    }

    /// The address of Citadel (its "pod IP").
    pub fn citadel_ip(&self) -> String {
        format!("127.{}.0.40", self.subnet)
    }

    /// The pods' ServiceAccounts, for Citadel.
    pub fn accounts_yaml(&self) -> String {
        let mut names: Vec<&str> = self.pods().map(|p| p.service_account.as_str()).collect();
        names.sort();
        names.dedup();
        names
            .iter()
            .map(|n| format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {n}, namespace: default}}\n---\n"))
            .collect()
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        std::iter::once(&self.client).chain(&self.versions)
    }

    /// Service, Endpoints, Pods and per-pod Sidecars.
    pub fn cluster_yaml(&self) -> String {
        let mut y = String::new();
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  clusterIP: 10.96.0.20\n  ports: [{{name: http, port: {REVIEWS_PORT}, targetPort: {REVIEWS_PORT}}}]\n  selector: {{app: reviews}}\n---\n"
        );
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: reviews, namespace: default}}\nsubsets:\n- addresses:\n"
        );
        for p in &self.versions {
            let _ = writeln!(
                y,
                "  - ip: {}\n    targetRef: {{kind: Pod, name: {}, namespace: default}}",
                p.ip, p.name
            );
        }
        let _ = write!(y, "  ports: [{{name: http, port: {REVIEWS_PORT}}}]\n---\n");
        for p in self.pods() {
            let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let annotations: Vec<String> = p
                .annotations
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = write!(
                y,
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: default, labels: {{{}}}, annotations: {{{}}}}}\nspec: {{serviceAccountName: {}, containers: [{{name: app, image: app}}]}}\nstatus: {{podIP: {}}}\n---\n",
                p.name,
                labels.join(", "),
                annotations.join(", "),
                p.service_account,
                p.ip
            );
            if let Some(app) = &p.app_addr {
                let _ = write!(
                    y,
                    "apiVersion: networking.istio.io/v1alpha3\nkind: Sidecar\nmetadata: {{name: {}, namespace: default}}\nspec:\n  workloadSelector: {{labels: {{{}}}}}\n  ingress:\n  - port: {{number: {REVIEWS_PORT}, protocol: HTTP, name: http}}\n    defaultEndpoint: {app}\n---\n",
                    p.name,
                    labels.join(", ")
                );
            }
        }
        y
    }

    /// The subset DestinationRule, with `traffic_policy` (YAML, indented for
    /// `spec`) when given.
    pub fn destination_rule_yaml(&self, traffic_policy: &str) -> String {
        let subsets: Vec<String> = self
            .versions
            .iter()
            .filter_map(|p| p.labels.iter().find(|(k, _)| k == "version"))
            .map(|(_, v)| format!("  - {{name: {v}, labels: {{version: {v}}}}}"))
            .collect();
        format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  host: reviews\n{traffic_policy}  subsets:\n{}\n",
            subsets.join("\n")
        )
    }
}

/// A Service and its Endpoints in `istio-system` for a control-plane component.
fn control_plane_yaml(
    name: &str,
    cluster_ip: &str,
    ips: &[String],
    ports: &[(&str, u16)],
) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|(n, p)| format!("{{name: {n}, port: {p}}}"))
        .collect();
    let ports = ports.join(", ");
    let addresses: Vec<String> = ips.iter().map(|ip| format!("  - ip: {ip}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: istio-system}}\nspec:\n  clusterIP: {cluster_ip}\n  ports: [{ports}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: istio-system}}\nsubsets:\n- addresses:\n{}\n  ports: [{ports}]\n",
        addresses.join("\n")
    )
}
