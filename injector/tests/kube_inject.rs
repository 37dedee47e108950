//! `kube-inject` over every workload kind in one multi-document file.

use injector::config::Config;
use serde::Deserialize;
use serde_json::Value;

const WORKLOADS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80, name: http}]
  selector: {app: web}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web:1, ports: [{containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres:15}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: agent:1}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: cache}
spec:
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec:
      containers: [{name: cache, image: redis:7}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    metadata: {labels: {app: migrate}}
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: migrate:1}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: report}}
        spec:
          restartPolicy: OnFailure
          containers: [{name: report, image: report:1}]
---
apiVersion: v1
kind: Pod
metadata:
  name: opted-out
  annotations: {sidecar.istio.io/inject: "false"}
spec:
  containers: [{name: tool, image: tool:1}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
"#;

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn proxies(pod_spec: &Value) -> usize {
    pod_spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "istio-proxy")
        .count()
}

#[test]
fn every_workload_kind_gets_a_sidecar_and_other_kinds_pass_through() {
    let config = Config::builtin();
    let out = injector::workload::inject_documents(&config, WORKLOADS).unwrap();
    let before = documents(WORKLOADS);
    let after = documents(&out);
    assert_eq!(before.len(), after.len());
    let spec_of = |doc: &Value| -> Option<Value> {
        match doc["kind"].as_str()? {
            "Pod" => Some(doc["spec"].clone()),
            "CronJob" => Some(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone()),
            "Service" | "ConfigMap" => None,
            _ => Some(doc["spec"]["template"]["spec"].clone()),
        }
    };
    for (b, a) in before.iter().zip(&after) {
        let kind = a["kind"].as_str().unwrap();
        match (spec_of(a), a["metadata"]["name"].as_str().unwrap()) {
            (None, _) => assert_eq!(a, b, "{kind} changed"),
            (Some(_), "opted-out") => assert_eq!(a, b, "an opted-out Pod changed"),
            (Some(spec), name) => {
                assert_eq!(proxies(&spec), 1, "{kind}/{name}");
                assert_eq!(
                    spec["initContainers"][0]["name"], "istio-init",
                    "{kind}/{name}"
                );
            }
        }
    }
    // The Deployment's proxy is named after its app, in its namespace.
    let deployment = &after[1]["spec"]["template"]["spec"]["containers"][1]["args"];
    let args: Vec<&str> = deployment
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--serviceCluster", "web.$(POD_NAMESPACE)"]),
        "{args:?}"
    );

    // Injecting the output again changes nothing, to the byte.
    let twice = injector::workload::inject_documents(&config, &out).unwrap();
    assert_eq!(twice, out);
}

#[test]
fn a_new_config_replaces_an_earlier_injection() {
    let old = Config::builtin();
    let new = Config::from_texts(
        &(
            "built-in".into(),
            injector::config::DEFAULT_INJECT_CONFIG.into(),
        ),
        &("values".into(), "global:\n  tag: 9.9.9\n".into()),
        &("mesh".into(), String::new()),
    )
    .unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: app\n    image: app:1\n    livenessProbe: {tcpSocket: {port: 8080}}\n";
    let once = injector::workload::inject_documents(&old, pod).unwrap();
    let again = documents(&injector::workload::inject_documents(&new, &once).unwrap());
    let spec = &again[0]["spec"];
    assert_eq!(proxies(spec), 1);
    assert_eq!(
        spec["containers"][1]["image"],
        "docker.io/trireme/proxy:9.9.9"
    );
    assert_eq!(spec["initContainers"].as_array().unwrap().len(), 1);
    assert_eq!(spec["volumes"].as_array().unwrap().len(), 2);
    // Re-written once from the original, not from the rewritten probe.
    assert_eq!(
        spec["containers"][0]["livenessProbe"]["httpGet"]["path"],
        "/app-health/app/livez"
    );
    assert!(
        spec["containers"][1]["env"]
            .to_string()
            .contains(r#"\"tcpSocket\":{\"port\":8080}"#)
    );
}

#[test]
fn errors_name_the_document_and_object() {
    let config = Config::builtin();
    let e = injector::workload::inject_documents(
        &config,
        "kind: ConfigMap\n---\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "document 2 (Deployment/web): spec.template: missing");
    let e = injector::workload::inject_documents(&config, "kind: Service\n---\n: [\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("document 2: "), "{e}");
    let e = injector::workload::inject_documents(&config, "kind: Pod\nmetadata: {name: p}\n")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "document 1 (Pod/p): spec: expected an object");
    let e = injector::workload::inject_documents(
        &config,
        "kind: Pod\nmetadata:\n  name: p\n  annotations: {sidecar.istio.io/inject: false}\nspec: {containers: []}\n",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "document 1 (Pod/p): metadata.annotations[sidecar.istio.io/inject]: false is not a string (Kubernetes takes only strings: quote it)"
    );
}

#[test]
fn documents_left_alone_come_out_as_they_went_in() {
    let config = Config::builtin();
    let input = "# settings, kept as written\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\ndata:\n  b: '2'\n  a: \"1\"\n---\n--- \napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: web}]\n      volumes:\n      - name: conf\n        secret: {secretName: s, defaultMode: 0644}\n";
    let out = injector::workload::inject_documents(&config, input).unwrap();
    let (first, rest) = out.split_once("---\n").unwrap();
    assert_eq!(
        first,
        "# settings, kept as written\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\ndata:\n  b: '2'\n  a: \"1\"\n"
    );
    let injected = &documents(rest)[0];
    // YAML 1.1's octal, as Kubernetes reads it.
    assert_eq!(
        injected["spec"]["template"]["spec"]["volumes"][0]["secret"]["defaultMode"],
        0o644
    );
    assert_eq!(proxies(&injected["spec"]["template"]["spec"]), 1);
}
