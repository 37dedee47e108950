//! Mixer config the tests share, as operators write it, and a Mixer binary
//! started on its own for tests of its API.

use std::path::Path;
use std::time::Duration;

use api::mixer::mixer_client::MixerClient;
use tonic::transport::Channel;

use crate::mesh::wait_ok;
use crate::process::Proc;
use crate::{bin, eventually};

/// `binary` (`mixer-policy` or `mixer-telemetry`) serving the config in
/// `dir` on `ip`, once ready: the process, a Mixer API client, and a plain
/// HTTP client for its other ports.
pub async fn start_mixer(
    binary: &str,
    dir: &Path,
    ip: &str,
) -> (Proc, MixerClient<Channel>, reqwest::Client) {
    let args: Vec<String> = vec![
        "server".into(),
        "--configStoreURL".into(),
        format!("fs://{}", dir.display()),
        "--address".into(),
        format!("tcp://{ip}:9091"),
    ];
    let log = dir.join(format!("{binary}.log"));
    let proc = Proc::spawn(binary, &bin(binary), &args, &[], &log);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let ready = format!("http://{ip}:15014/ready");
    wait_ok(
        &http,
        &ready,
        &format!("{binary} /ready"),
        Duration::from_secs(20),
    )
    .await;
    let endpoint = format!("http://{ip}:9091");
    let client = eventually("the gRPC port", Duration::from_secs(10), || {
        let endpoint = endpoint.clone();
        async move { MixerClient::connect(endpoint).await.ok() }
    })
    .await;
    (proc, client, http)
}

/// A denier (PERMISSION_DENIED, "Not allowed") for requests whose `x-user`
/// header is `blocked`, mesh-wide.
pub const DENY_BLOCKED_USER: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyall, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: Not allowed}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny-blocked, namespace: istio-system}
spec:
  match: request.headers["x-user"] == "blocked"
  actions:
  - handler: denyall
    instances: [denyrequest]
"#;
