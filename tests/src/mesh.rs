use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::citadel::Citadel;
use crate::galley::Galley;
use crate::process::Proc;
use crate::topology::{Pod, Topology};
use crate::{bin, envoy, eventually};

pub const PROXY_HTTP_PORT: u16 = 15080;
pub(crate) const STARTUP: Duration = Duration::from_secs(20);

/// A running mesh: pilot-discovery, one sidecar per pod, and the backends.
pub struct Mesh {
    pub dir: TempDir,
    pub topology: Topology,
    pub pilot: Option<Proc>,
    pub agents: Vec<(Pod, Proc)>,
    /// mixer-policy processes, by index (their address is `topology.policy_ip(i)`).
    pub policies: Vec<Option<Proc>>,
    pub telemetry: Option<Proc>,
    pub statsd_bridge: Option<Proc>,
    /// Citadel, when the sidecars take their certificates from it over SDS.
    pub citadel: Option<Citadel>,
    /// Galley, when Pilot and Mixer read the config directory through it.
    pub galley: Option<Galley>,
    /// What each sidecar's node agent asks Citadel for (`--secretTtl`).
    secret_ttl: String,
    /// Proxies reach Pilot on 15011 over mutual TLS.
    control_plane_mtls: bool,
    agent_args: Vec<String>,
    backends: Vec<Proc>,
    /// Plain HTTP client, for admin and debug endpoints.
    pub http: reqwest::Client,
    /// Sends through the client pod's sidecar, as its application would.
    pub client: reqwest::Client,
}

/// `pilot-discovery discovery` on `ip` with the File registry over `config_dir`.
pub fn pilot_args(ip: &str, config_dir: &Path, mesh_config: &Path) -> Vec<String> {
    let config_dir = config_dir.display().to_string();
    let mesh_config = mesh_config.display().to_string();
    [
        "discovery",
        "--registries",
        "File",
        "--configDir",
        &config_dir,
        "--meshConfig",
        &mesh_config,
        "--grpcAddr",
        &format!("{ip}:15010"),
        "--httpAddr",
        &format!("{ip}:8080"),
        "--monitoringAddr",
        &format!("{ip}:15014"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What a test adds to the standard mesh.
#[derive(Default)]
pub struct Options {
    /// Lines appended to the mesh config.
    pub mesh: String,
    /// mixer-policy processes to run, behind `istio-policy.istio-system`.
    pub policy_servers: usize,
    /// Annotations by pod name.
    pub annotations: Vec<(&'static str, &'static str, &'static str)>,
    /// Run mixer-telemetry behind `istio-telemetry.istio-system`, and send
    /// the sidecars' reports to it.
    pub telemetry: bool,
    /// Run statsd-bridge (with this mapping file's text, when not empty)
    /// and point every sidecar's statsd sink at it.
    pub statsd_bridge: Option<String>,
    /// Extra flags for every pilot-agent.
    pub agent_args: Vec<String>,
    /// Run Citadel, give every pod a token for its ServiceAccount and every
    /// sidecar a node agent that serves Envoy its certificates over SDS,
    /// which live this long (an hour when empty).
    pub citadel: Option<&'static str>,
    /// Control-plane security (with `citadel`): Pilot serves xDS on 15011
    /// over mutual TLS with its Citadel certificate, and every sidecar
    /// connects there with its own.
    pub control_plane_mtls: bool,
    /// Run Galley over the config directory: Pilot reads its config over
    /// MCP (the mesh config's `configSources`), and Mixer too (`mcp://`).
    pub galley: bool,
}

/// The mesh config line that turns SDS certificates on (the path is only a
/// switch: each pilot-agent's bootstrap names its own socket).
/// Pilot's ServiceAccount, as Istio's chart names it.
pub const PILOT_ACCOUNT: &str = "istio-pilot-service-account";

pub const SDS_MESH: &str = "sdsUdsPath: unix:/var/run/sds/uds_path\n";

/// The mesh config lines that send sidecars' checks to `istio-policy`.
pub const POLICY_MESH: &str = "mixerCheckServer: istio-policy.istio-system.svc.cluster.local:9091\ndisablePolicyChecks: false\n";

/// The mesh config line that sends sidecars' reports to `istio-telemetry`.
pub const TELEMETRY_MESH: &str =
    "mixerReportServer: istio-telemetry.istio-system.svc.cluster.local:9091\n";

/// Waits until `url` answers 2xx.
pub async fn wait_ok(http: &reqwest::Client, url: &str, what: &str, timeout: Duration) {
    eventually(what, timeout, || async {
        let r = http.get(url).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

pub fn next_subnet() -> u8 {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    // Spread concurrent test processes apart as well as tests within one.
    20 + ((std::process::id() % 8) as u8) * 25 + NEXT.fetch_add(1, Ordering::Relaxed) % 25
}

impl Mesh {
    /// Starts everything and returns once pilot and every sidecar are ready.
    pub async fn start(versions: &[&str], config: &[(&str, &str)]) -> Mesh {
        Mesh::start_with(versions, config, Options::default()).await
    }

    pub async fn start_with(versions: &[&str], config: &[(&str, &str)], options: Options) -> Mesh {
        let mut topology = Topology::reviews(next_subnet(), versions);
        for (pod, key, value) in &options.annotations {
            let pod = topology
                .versions
                .iter_mut()
                .chain(std::iter::once(&mut topology.client))
                .find(|p| p.name == *pod)
                .expect("annotated pod");
            pod.annotations.push((key.to_string(), value.to_string()));
        }
        let mut dir = tempfile::Builder::new()
            .prefix("trireme-e2e-")
            .tempdir()
            .expect("tempdir");
        // For post-mortems: TRIREME_KEEP=1 leaves the logs and config behind.
        if std::env::var_os("TRIREME_KEEP").is_some() {
            dir.disable_cleanup(true);
        }
        std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
        std::fs::write(
            dir.path().join("mesh.yaml"),
            format!(
                "proxyHttpPort: {PROXY_HTTP_PORT}\n{}{}{}{}",
                options.mesh,
                if options.galley {
                    format!(
                        "configSources:\n- address: {}:{}\n",
                        topology.galley_ip(),
                        crate::galley::MCP_PORT
                    )
                } else {
                    String::new()
                },
                if options.citadel.is_some() {
                    SDS_MESH
                } else {
                    ""
                },
                if options.telemetry {
                    TELEMETRY_MESH
                } else {
                    ""
                }
            ),
        )
        .expect("mesh");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let client = reqwest::Client::builder()
            .proxy(
                reqwest::Proxy::http(format!("http://{}:{PROXY_HTTP_PORT}", topology.client.ip))
                    .expect("proxy"),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut mesh = Mesh {
            dir,
            topology,
            pilot: None,
            agents: Vec::new(),
            policies: Vec::new(),
            telemetry: None,
            statsd_bridge: None,
            citadel: None,
            galley: None,
            secret_ttl: options.citadel.unwrap_or_default().to_string(),
            control_plane_mtls: options.control_plane_mtls,
            agent_args: options.agent_args.clone(),
            backends: Vec::new(),
            http,
            client,
        };
        mesh.write_config("cluster.yaml", &mesh.topology.cluster_yaml());
        mesh.write_config("dr.yaml", &mesh.topology.destination_rule_yaml(""));
        if options.policy_servers > 0 {
            mesh.write_config(
                "policy.yaml",
                &mesh.topology.policy_yaml(options.policy_servers),
            );
        }
        if options.telemetry {
            mesh.write_config("telemetry.yaml", &mesh.topology.telemetry_yaml());
        }
        for (file, yaml) in config {
            mesh.write_config(file, yaml);
        }
        if options.citadel.is_some() {
            mesh.start_citadel().await;
        }
        if options.galley {
            let work = mesh.dir.path().join("galley");
            std::fs::create_dir_all(&work).expect("galley dir");
            mesh.galley = Some(
                Galley::start(&mesh.topology.galley_ip(), &mesh.config_dir(), &work, None).await,
            );
        }
        if options.telemetry {
            mesh.start_telemetry().await;
        }
        if let Some(mapping) = &options.statsd_bridge {
            mesh.start_statsd_bridge(mapping).await;
        }
        for i in 0..options.policy_servers {
            mesh.start_policy(i).await;
        }
        mesh.start_pilot().await;
        for pod in mesh.topology.versions.clone() {
            mesh.start_backend(&pod).await;
        }
        for pod in mesh.topology.pods().cloned().collect::<Vec<_>>() {
            mesh.start_agent(&pod);
        }
        for pod in mesh.topology.pods().cloned().collect::<Vec<_>>() {
            mesh.wait_sidecar_ready(&pod).await;
        }
        mesh
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Replaces a config file in one rename, as `kubectl cp` or a ConfigMap update would.
    pub fn write_config(&self, file: &str, yaml: &str) {
        let tmp = self.config_dir().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.config_dir().join(file)).expect("rename config");
    }

    pub fn pilot_http(&self) -> String {
        format!("http://{}:8080", self.topology.pilot_ip())
    }

    pub async fn start_pilot(&mut self) {
        self.spawn_pilot("File", &[]);
        let url = format!("{}/ready", self.pilot_http());
        wait_ok(&self.http, &url, "pilot-discovery /ready", STARTUP).await;
    }

    /// Starts the `i`th mixer-policy on its own address, reading the same
    /// config directory as Pilot, and waits until it is ready.
    pub async fn start_policy(&mut self, i: usize) {
        let ip = self.topology.policy_ip(i);
        let proc = self
            .start_mixer("mixer-policy", &ip, &format!("mixer-policy-{i}"))
            .await;
        if self.policies.len() <= i {
            self.policies.resize_with(i + 1, || None);
        }
        self.policies[i] = Some(proc);
    }

    /// Starts `binary` (a Mixer) on `ip` with the mesh's config directory as
    /// its store, and waits until it is ready.
    pub(crate) async fn start_mixer(&self, binary: &str, ip: &str, log: &str) -> Proc {
        let store = match &self.galley {
            Some(galley) => format!("mcp://{}", galley.address()),
            None => format!("fs://{}", self.config_dir().display()),
        };
        let args: Vec<String> = vec![
            "server".into(),
            "--configStoreURL".into(),
            store,
            "--address".into(),
            format!("tcp://{ip}:9091"),
            "--monitoringPort".into(),
            "15014".into(),
        ];
        let proc = Proc::spawn(binary, &bin(binary), &args, &[], &self.log(log));
        let url = format!("http://{ip}:15014/ready");
        wait_ok(&self.http, &url, &format!("{binary} /ready"), STARTUP).await;
        proc
    }

    /// Kills the `i`th mixer-policy outright, as a crashed Pod.
    pub fn kill_policy(&mut self, i: usize) {
        if let Some(mut p) = self.policies.get_mut(i).and_then(Option::take) {
            p.signal(nix::sys::signal::Signal::SIGKILL);
            assert!(p.wait_exit(Duration::from_secs(10)), "mixer-policy exits");
        }
    }

    /// The `i`th mixer-policy's Prometheus metrics.
    pub async fn policy_metrics(&self, i: usize) -> String {
        let url = format!("http://{}:15014/metrics", self.topology.policy_ip(i));
        let response = self.http.get(&url).send().await;
        match response {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => panic!("{url}: {e}"),
        }
    }

    /// One counter from a pod's Envoy, by a suffix of its name (0 when absent).
    pub async fn agent_stat(&self, pod: &str, suffix: &str) -> u64 {
        let url = format!("http://{}:15000/stats", self.pod(pod).ip);
        let text = self.http.get(&url).send().await.ok();
        let text = match text {
            Some(r) => r.text().await.unwrap_or_default(),
            None => String::new(),
        };
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(name, _)| name.ends_with(suffix))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }

    /// mixer-policy's config page: generation, rules, handlers, errors.
    pub async fn policy_configz(&self, i: usize) -> Value {
        let ip = self.topology.policy_ip(i);
        self.get_json(&format!("http://{ip}:15014/debug/configz"))
            .await
    }

    /// Starts pilot-discovery with `registries`, without waiting for it to be ready.
    pub fn spawn_pilot(&mut self, registries: &str, env: &[(&str, String)]) {
        let mesh_config = self.dir.path().join("mesh.yaml");
        let mut args = pilot_args(&self.topology.pilot_ip(), &self.config_dir(), &mesh_config);
        args[2] = registries.to_string();
        if let Some(certs) = self.pilot_cert_dir() {
            args.extend([
                "--secureGrpcAddr".into(),
                format!("{}:15011", self.topology.pilot_ip()),
                "--certDir".into(),
                certs.display().to_string(),
            ]);
        }
        let log = self.log("pilot-discovery");
        self.pilot = Some(Proc::spawn(
            "pilot-discovery",
            &bin("pilot-discovery"),
            &args,
            env,
            &log,
        ));
    }

    async fn start_backend(&mut self, pod: &Pod) {
        let Some(addr) = &pod.app_addr else { return };
        let version = pod
            .labels
            .iter()
            .find(|(k, _)| k == "version")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let args = vec![
            "--listen".into(),
            addr.clone(),
            "--service".into(),
            "reviews".into(),
            "--version".into(),
            version,
            "--pod".into(),
            pod.name.clone(),
        ];
        let log = self.log(&format!("{}-app", pod.name));
        self.backends
            .push(Proc::spawn(&pod.name, &bin("echo"), &args, &[], &log));
        let addr = addr.clone();
        eventually(&format!("backend {addr}"), STARTUP, || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ()) }
        })
        .await;
    }

    /// Citadel on its own address, with the pods' ServiceAccounts, issuing
    /// ECDSA certificates of up to an hour.
    async fn start_citadel(&mut self) {
        let args = [
            "--self-signed-ca",
            "--key-algorithm",
            "ecdsa",
            "--workload-cert-ttl",
            "1h",
            "--max-workload-cert-ttl",
            "1h",
        ];
        let ip = self.topology.citadel_ip();
        let mut accounts = self.topology.accounts_yaml();
        if self.control_plane_mtls {
            accounts.push_str(&format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {PILOT_ACCOUNT}, namespace: istio-system}}\n"
            ));
        }
        let citadel = Citadel::start(&ip, &accounts, &args, &[]).await;
        if self.control_plane_mtls {
            eventually("Pilot's certificate", STARTUP, || async {
                citadel
                    .secret("istio-system", &format!("istio.{PILOT_ACCOUNT}"), "key.pem")
                    .map(|_| ())
            })
            .await;
        }
        self.citadel = Some(citadel);
    }

    /// Where Citadel keeps Pilot's `istio.<sa>` Secret: its `--certDir`.
    fn pilot_cert_dir(&self) -> Option<PathBuf> {
        let citadel = self.citadel.as_ref().filter(|_| self.control_plane_mtls)?;
        Some(citadel.path(&format!("secrets/istio-system/istio.{PILOT_ACCOUNT}")))
    }

    /// The node-agent flags of `pod`'s pilot-agent, its token written where
    /// they say, when the mesh runs Citadel.
    fn sds_args(&self, pod: &Pod, dir: &Path) -> Vec<String> {
        let Some(citadel) = &self.citadel else {
            return Vec::new();
        };
        std::fs::create_dir_all(dir).expect("pod dir");
        let token = dir.join("istio-token");
        std::fs::write(&token, citadel.token("default", &pod.service_account)).expect("token");
        let mut args = vec![
            "--sdsUdsPath".to_string(),
            format!("unix:{}", dir.join("sds/uds_path").display()),
            "--caAddr".into(),
            format!("{}:8060", citadel.ip),
            "--caRootCert".into(),
            citadel
                .path("secrets/istio-system/istio-ca-secret/root-cert.pem")
                .display()
                .to_string(),
            "--tokenPath".into(),
            token.display().to_string(),
            "--serviceAccount".into(),
            pod.service_account.clone(),
            "--keyAlgorithm".into(),
            "ecdsa".into(),
        ];
        let ttl = if self.secret_ttl.is_empty() {
            "1h"
        } else {
            &self.secret_ttl
        };
        args.extend(["--secretTtl".to_string(), ttl.to_string()]);
        if self.control_plane_mtls {
            args.extend(["--controlPlaneAuthPolicy".into(), "MUTUAL_TLS".into()]);
        }
        args
    }

    fn xds_port(&self) -> u16 {
        if self.control_plane_mtls {
            15011
        } else {
            15010
        }
    }

    /// Flags for the pilot-agents started from now on.
    pub(crate) fn add_agent_args(&mut self, args: &[String]) {
        self.agent_args.extend_from_slice(args);
    }

    pub fn start_agent(&mut self, pod: &Pod) {
        self.start_agent_draining(pod, "0s");
    }

    /// A sidecar that, on SIGTERM, lets in-flight requests finish for `drain`.
    pub fn start_agent_draining(&mut self, pod: &Pod, drain: &str) {
        let dir = self.dir.path().join(&pod.name);
        let labels: BTreeMap<&str, &str> = pod
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let args: Vec<String> = [
            "proxy".into(),
            "sidecar".into(),
            "--discoveryAddress".into(),
            format!("{}:{}", self.topology.pilot_ip(), self.xds_port()),
            "--binaryPath".into(),
            envoy().display().to_string(),
            "--configPath".into(),
            dir.display().to_string(),
            "--concurrency".into(),
            "1".into(),
            "--terminationDrainDuration".into(),
            drain.into(),
        ]
        .into_iter()
        .chain(self.agent_args.iter().cloned())
        .chain(self.sds_args(pod, &dir))
        .collect();
        let env = [
            ("POD_NAME", pod.name.clone()),
            ("POD_NAMESPACE", "default".to_string()),
            ("INSTANCE_IP", pod.ip.clone()),
            ("ISTIO_META_INTERCEPTION_MODE", "NONE".to_string()),
            (
                "ISTIO_METAJSON_LABELS",
                serde_json::to_string(&labels).unwrap_or_default(),
            ),
        ];
        let log = self.log(&format!("{}-agent", pod.name));
        self.agents.push((
            pod.clone(),
            Proc::spawn(&pod.name, &bin("pilot-agent"), &args, &env, &log),
        ));
    }

    pub async fn wait_sidecar_ready(&self, pod: &Pod) {
        let url = format!("http://{}:15020/healthz/ready", pod.ip);
        wait_ok(
            &self.http,
            &url,
            &format!("sidecar {} ready", pod.name),
            STARTUP,
        )
        .await;
    }

    /// Stops a pod's sidecar and starts it again with another drain duration.
    pub async fn restart_agent_draining(&mut self, name: &str, drain: &str) {
        let i = self
            .agents
            .iter()
            .position(|(p, _)| p.name == name)
            .expect("agent");
        let (pod, mut agent) = self.agents.remove(i);
        agent.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(agent.wait_exit(Duration::from_secs(10)), "{name} stops");
        self.start_agent_draining(&pod, drain);
        self.wait_sidecar_ready(&pod).await;
    }

    pub fn agent(&self, name: &str) -> &Proc {
        &self
            .agents
            .iter()
            .find(|(p, _)| p.name == name)
            .expect("agent")
            .1
    }

    pub fn pod(&self, name: &str) -> Pod {
        self.topology
            .pods()
            .find(|p| p.name == name)
            .cloned()
            .expect("pod")
    }

    /// One request through the client's sidecar: (status, version that answered).
    pub async fn call(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
        let mut req = self.client.get(format!(
            "http://reviews.default.svc.cluster.local:9080{path}"
        ));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Option<Value> = r.json().await.ok();
                let version =
                    body.and_then(|b| b.get("version").and_then(Value::as_str).map(str::to_string));
                (status, version)
            }
            Err(e) => panic!("request {path} failed: {e}"),
        }
    }

    /// One request through `pod`'s sidecar, as that pod's application would
    /// send it: (status, body).
    pub async fn call_from(
        &self,
        pod: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let proxy = format!("http://{}:{PROXY_HTTP_PORT}", self.pod(pod).ip);
        let client = reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(proxy).expect("proxy"))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut req = client.get(format!(
            "http://reviews.default.svc.cluster.local:9080{path}"
        ));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {path} from {pod} failed: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Sends `n` requests and counts answers by version (or `status <code>` when not 200).
    pub async fn tally(
        &self,
        n: usize,
        path: &str,
        headers: &[(&str, &str)],
    ) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let (status, version) = self.call(path, headers).await;
            let key = match (status, version) {
                (200, Some(v)) => v,
                (s, _) => format!("status {s}"),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    pub async fn pilot_json(&self, path: &str) -> Value {
        self.get_json(&format!("{}{path}", self.pilot_http())).await
    }

    pub async fn config_dump(&self, pod: &str) -> Value {
        self.get_json(&format!("http://{}:15000/config_dump", self.pod(pod).ip))
            .await
    }

    async fn get_json(&self, url: &str) -> Value {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// The clusters a pod's Envoy has taken into use (not those still warming), as JSON text.
    pub async fn active_clusters(&self, pod: &str) -> String {
        let url = format!(
            "http://{}:15000/config_dump?resource=dynamic_active_clusters",
            self.pod(pod).ip
        );
        self.get_json(&url).await.to_string()
    }

    /// The listeners a pod's Envoy holds, as JSON text.
    pub async fn listeners_dump(&self, pod: &str) -> String {
        let url = format!(
            "http://{}:15000/config_dump?resource=dynamic_listeners",
            self.pod(pod).ip
        );
        self.get_json(&url).await.to_string()
    }

    /// The load assignments a pod's Envoy holds, as text.
    pub async fn endpoints_dump(&self, pod: &str) -> Option<String> {
        let url = format!(
            "http://{}:15000/config_dump?resource=dynamic_endpoint_configs&include_eds",
            self.pod(pod).ip
        );
        self.http.get(&url).send().await.ok()?.text().await.ok()
    }

    /// The route tables in Envoy's config_dump, as JSON text.
    pub async fn routes_dump(&self, pod: &str) -> String {
        let dump = self.config_dump(pod).await;
        let configs = dump["configs"].as_array().cloned().unwrap_or_default();
        configs
            .iter()
            .filter(|c| {
                c["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("RoutesConfigDump"))
            })
            .map(|c| c.to_string())
            .collect()
    }

    /// The sync status of one pod's proxy for one type (`cds`, `eds`, `lds`, `rds`).
    pub async fn sync_state(&self, pod: &str, kind: &str) -> Option<Value> {
        let syncz = self.pilot_json("/debug/syncz").await;
        let prefix = format!("sidecar~{}~", self.pod(pod).ip);
        syncz
            .as_array()?
            .iter()
            .find(|c| c["proxy"].as_str().is_some_and(|p| p.starts_with(&prefix)))
            .map(|c| c["watches"][kind].clone())
    }
}
