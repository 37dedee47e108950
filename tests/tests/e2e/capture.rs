//! Transparent capture for real: two Pods in network namespaces of the
//! test's own, each set up by `pilot-agent istio-iptables` as istio-init
//! would, each with its sidecar running as uid 1337 in REDIRECT mode, Pilot
//! on the node. The app's plain TCP calls to another Pod are captured by its
//! Envoy, arrive through the other Pod's Envoy, and the status port is left
//! alone.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use trireme_tests::mesh::next_subnet;
use trireme_tests::netns::Lan;
use trireme_tests::process::Proc;
use trireme_tests::{bin, envoy, eventually};

const PROXY_UID: &str = "1337";

/// A copy of `program` that uid 1337 may run (the build's own directory may
/// be private to root).
fn runnable_by_proxy(program: &Path, dir: &Path) -> PathBuf {
    let ok = Command::new("setpriv")
        .args([
            "--reuid",
            PROXY_UID,
            "--regid",
            PROXY_UID,
            "--clear-groups",
            "test",
            "-x",
        ])
        .arg(program)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return program.to_path_buf();
    }
    let copy = dir.join(program.file_name().unwrap());
    std::fs::copy(program, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

fn spawn(
    name: &str,
    ns: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, String)],
    log: &Path,
) -> Proc {
    let (ip, all) = Lan::exec(ns, program, args);
    Proc::spawn(name, &ip, &all, env, log)
}

fn cluster_yaml(lan: &Lan) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: default}}\nspec:\n  clusterIP: 10.96.0.30\n  ports: [{{name: http, port: 8080, targetPort: 8080}}]\n  selector: {{app: echo}}\n---\n\
apiVersion: v1\nkind: Endpoints\nmetadata: {{name: echo, namespace: default}}\nsubsets:\n- addresses:\n  - ip: {b}\n    targetRef: {{kind: Pod, name: echo, namespace: default}}\n  ports: [{{name: http, port: 8080}}]\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {{name: sleep, namespace: default, labels: {{app: sleep}}}}\nspec: {{containers: [{{name: sleep, image: sleep}}]}}\nstatus: {{podIP: {a}}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {{name: echo, namespace: default, labels: {{app: echo}}}}\nspec: {{containers: [{{name: echo, image: echo, ports: [{{containerPort: 8080}}]}}]}}\nstatus: {{podIP: {b}}}\n",
        a = lan.pod_ip(0),
        b = lan.pod_ip(1),
    )
}

/// `istio-init`'s command and arguments from the built-in injection config.
fn istio_init_args() -> Vec<String> {
    let config = injector::config::Config::builtin();
    let mut pod = serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "app"}]}});
    injector::inject::inject(
        &config,
        &mut pod,
        injector::inject::Owner {
            namespace: "default",
            workload: "p",
        },
    )
    .unwrap();
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(
        init["command"],
        serde_json::json!(["pilot-agent", "istio-iptables"])
    );
    let args = init["args"].as_array().unwrap().iter();
    std::iter::once("istio-iptables".to_string())
        .chain(args.map(|a| a.as_str().unwrap().to_string()))
        .collect()
}

/// Envoy's counters in pod `ns` whose names match `pattern` (a regex), summed.
async fn stat(ns: &str, pattern: &str) -> u64 {
    let url = format!("http://127.0.0.1:15000/stats?filter={pattern}");
    let Some((200, body)) = Lan::curl(ns, &url).await else {
        return 0;
    };
    body.lines()
        .filter_map(|l| l.rsplit_once(": "))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn iptables_capture_sends_pod_traffic_through_both_sidecars() {
    let lan = Lan::new(2, next_subnet()).unwrap_or_else(|e| {
        panic!("this test makes network namespaces and needs root with CAP_NET_ADMIN: {e}")
    });
    let (sleep, echo) = (lan.pods[0].clone(), lan.pods[1].clone());
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = runnable_by_proxy(&bin("pilot-agent"), work.path());
    let envoy = runnable_by_proxy(&envoy(), work.path());

    let config = work.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("cluster.yaml"), cluster_yaml(&lan)).unwrap();
    let mesh = work.path().join("mesh.yaml");
    std::fs::write(&mesh, "").unwrap();
    let node_ip = lan.node_ip();
    let pilot_args = trireme_tests::mesh::pilot_args(&node_ip, &config, &mesh);
    let _pilot = spawn(
        "pilot",
        &lan.node,
        &bin("pilot-discovery"),
        &pilot_args,
        &[],
        &work.path().join("pilot.log"),
    );

    let app = spawn(
        "echo-app",
        &echo,
        &bin("echo"),
        &[
            "--listen".into(),
            "0.0.0.0:8080".into(),
            "--service".into(),
            "echo".into(),
            "--pod".into(),
            "echo".into(),
        ],
        &[],
        &work.path().join("echo-app.log"),
    );

    // istio-init, with the arguments the injector writes by default.
    let init = istio_init_args();
    for (pod, ns) in [("sleep", &sleep), ("echo", &echo)] {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin("pilot-agent"))
            .args(&init)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "istio-init in {pod}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut sidecars = Vec::new();
    for (i, (pod, ns)) in [("sleep", &sleep), ("echo", &echo)].into_iter().enumerate() {
        let dir = work.path().join(pod);
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(1337), Some(1337)).unwrap();
        let mut args: Vec<String> = [
            "--reuid",
            PROXY_UID,
            "--regid",
            PROXY_UID,
            "--clear-groups",
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(agent.display().to_string());
        args.extend(
            [
                "proxy",
                "sidecar",
                "--discoveryAddress",
                &format!("{node_ip}:15010"),
                "--binaryPath",
                &envoy.display().to_string(),
                "--configPath",
                &dir.display().to_string(),
                "--concurrency",
                "1",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let env = [
            ("POD_NAME", pod.to_string()),
            ("POD_NAMESPACE", "default".to_string()),
            ("INSTANCE_IP", lan.pod_ip(i)),
            ("ISTIO_META_INTERCEPTION_MODE", "REDIRECT".to_string()),
            ("ISTIO_METAJSON_LABELS", format!("{{\"app\":\"{pod}\"}}")),
        ];
        sidecars.push(spawn(
            pod,
            ns,
            Path::new("setpriv"),
            &args,
            &env,
            &work.path().join(format!("{pod}-agent.log")),
        ));
    }
    for (i, ns) in [&sleep, &echo].into_iter().enumerate() {
        let url = format!("http://{}:15020/healthz/ready", lan.pod_ip(i));
        eventually(
            &format!("sidecar in {ns} ready"),
            Duration::from_secs(30),
            || async { (Lan::curl(ns, &url).await?.0 == 200).then_some(()) },
        )
        .await;
    }

    // The app calls the Service; its Envoy routes it, the echo Pod's Envoy
    // takes it in.
    let outbound =
        "^cluster\\.outbound\\|8080\\|\\|echo\\.default\\.svc\\.cluster\\.local\\.upstream_rq_200$";
    let inbound = "^cluster\\.inbound\\|8080\\|.*\\.upstream_rq_200$";
    let (code, body) = eventually(
        "the Service through both sidecars",
        Duration::from_secs(20),
        || async {
            Lan::curl(&sleep, "http://10.96.0.30:8080/hello")
                .await
                .filter(|(c, _)| *c == 200)
        },
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("echo"), "{body}");
    assert!(stat(&sleep, outbound).await >= 1, "not captured outbound");
    assert!(stat(&echo, inbound).await >= 1, "not captured inbound");

    // Straight to the Pod's IP: captured all the same (15001 hands the
    // connection to the port's listener, whose counters it then moves).
    let virtual_outbound = "^listener\\.0\\.0\\.0\\.0_8080\\.downstream_cx_total$";
    let before = stat(&sleep, virtual_outbound).await;
    let inbound_before = stat(&echo, inbound).await;
    let (code, _) = Lan::curl(&sleep, &format!("http://{}:8080/direct", lan.pod_ip(1)))
        .await
        .expect("pod IP reachable");
    assert_eq!(code, 200);
    assert!(stat(&sleep, virtual_outbound).await > before);
    assert!(stat(&echo, inbound).await > inbound_before);

    // The status port is not captured on the way in.
    let virtual_inbound = "^listener\\.0\\.0\\.0\\.0_15006\\.downstream_cx_total$";
    let before = stat(&echo, virtual_inbound).await;
    assert!(
        before > 0,
        "no inbound connections counted: is the echo Pod's admin port reachable?"
    );
    let (code, _) = Lan::curl(
        &sleep,
        &format!("http://{}:15020/healthz/ready", lan.pod_ip(1)),
    )
    .await
    .expect("status port reachable");
    assert_eq!(code, 200);
    assert_eq!(
        stat(&echo, virtual_inbound).await,
        before,
        "the status port went through Envoy"
    );
    drop(app);
}
