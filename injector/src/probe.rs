//! Probe rewriting (istio/istio#4429, #16110, #18467). Under mutual TLS the
//! kubelet's plain probes cannot reach the app through the sidecar, so each
//! `httpGet` (HTTP or HTTPS) and `tcpSocket` liveness, readiness and startup
//! probe is pointed at the agent's status port, `/app-health/<container>/
//! livez|readyz|startupz`; the agent runs the original, which travels in
//! the sidecar's `ISTIO_KUBE_APP_PROBERS`. `exec` and `grpc` probes are left
//! as they are.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

pub const PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";

const KINDS: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// Rewrites the probes of `containers` (the app's, not the sidecar's) and
/// returns the originals by their new path, ports resolved to numbers.
pub fn rewrite(containers: &mut [Value], status_port: u16) -> BTreeMap<String, Value> {
    let mut probers = BTreeMap::new();
    for container in containers {
        let name = container["name"].as_str().unwrap_or_default().to_string();
        let ports = container["ports"].clone();
        for (field, kind) in KINDS {
            let Some(probe) = container.get_mut(field).and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(original) = original(probe, &ports) else {
                continue;
            };
            // Already the agent's (a template that rewrote it itself).
            if original["httpGet"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/app-health/"))
                && original["httpGet"]["port"] == status_port
            {
                continue;
            }
            let path = format!("/app-health/{name}/{kind}");
            probe.remove("tcpSocket");
            probe.insert(
                "httpGet".into(),
                json!({"path": path, "port": status_port, "scheme": "HTTP"}),
            );
            probers.insert(path, original);
        }
    }
    probers
}

/// The prober the agent runs, or `None` for a probe it cannot run for the
/// kubelet (exec, grpc, a port name no container port declares).
fn original(probe: &Map<String, Value>, ports: &Value) -> Option<Value> {
    let timeout = probe.get("timeoutSeconds").cloned().unwrap_or(json!(1));
    if let Some(get) = probe.get("httpGet").and_then(Value::as_object) {
        let mut get = get.clone();
        let port = resolve(get.get("port")?, ports)?;
        get.insert("port".into(), json!(port));
        return Some(json!({"httpGet": get, "timeoutSeconds": timeout}));
    }
    if let Some(tcp) = probe.get("tcpSocket").and_then(Value::as_object) {
        let mut tcp = tcp.clone();
        let port = resolve(tcp.get("port")?, ports)?;
        tcp.insert("port".into(), json!(port));
        return Some(json!({"tcpSocket": tcp, "timeoutSeconds": timeout}));
    }
    None
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve(port: &Value, ports: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse().ok().or_else(|| {
            ports
                .as_array()?
                .iter()
                .find(|p| p["name"].as_str() == Some(s))?["containerPort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
        }),
        _ => None,
    }
}

/// Undoes [`rewrite`] from the probers the sidecar carried, for re-injection.
pub fn restore(containers: &mut [Value], probers: &Map<String, Value>) {
    for container in containers {
        let name = container["name"].as_str().unwrap_or_default().to_string();
        for (field, kind) in KINDS {
            let Some(original) = probers.get(&format!("/app-health/{name}/{kind}")) else {
                continue;
            };
            let Some(probe) = container.get_mut(field).and_then(Value::as_object_mut) else {
                continue;
            };
            probe.remove("httpGet");
            for key in ["httpGet", "tcpSocket"] {
                if let Some(v) = original.get(key) {
                    probe.insert(key.into(), v.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_https_tcp_and_startup_probes_go_to_the_agent() {
        let mut containers = vec![
            json!({
                "name": "app",
                "ports": [{"name": "http", "containerPort": 8080}],
                "livenessProbe": {"httpGet": {"path": "/live", "port": "http", "scheme": "HTTPS"}, "periodSeconds": 5},
                "readinessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 3},
                "startupProbe": {"httpGet": {"path": "/started", "port": 8081}},
            }),
            json!({
                "name": "worker",
                "livenessProbe": {"exec": {"command": ["true"]}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "missing"}},
            }),
        ];
        let before = containers.clone();
        let probers = rewrite(&mut containers, 15020);
        assert_eq!(
            serde_json::to_value(&probers).unwrap(),
            json!({
                "/app-health/app/livez": {"httpGet": {"path": "/live", "port": 8080, "scheme": "HTTPS"}, "timeoutSeconds": 1},
                "/app-health/app/readyz": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 3},
                "/app-health/app/startupz": {"httpGet": {"path": "/started", "port": 8081}, "timeoutSeconds": 1},
            })
        );
        assert_eq!(
            containers[0]["livenessProbe"],
            json!({"httpGet": {"path": "/app-health/app/livez", "port": 15020, "scheme": "HTTP"}, "periodSeconds": 5})
        );
        assert_eq!(
            containers[0]["readinessProbe"],
            json!({"httpGet": {"path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP"}, "timeoutSeconds": 3})
        );
        assert_eq!(
            containers[1], before[1],
            "exec and unresolvable probes stay"
        );

        restore(
            &mut containers,
            serde_json::to_value(&probers).unwrap().as_object().unwrap(),
        );
        // Named ports come back as numbers, which probe the same port.
        let mut expected = before[0].clone();
        expected["livenessProbe"]["httpGet"]["port"] = json!(8080);
        assert_eq!(containers[0], expected);
    }
}
