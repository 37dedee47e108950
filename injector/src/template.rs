//! Istio's injection template: Go template text over the Pod (`.ObjectMeta`,
//! `.Spec`), its workload (`.DeploymentMeta`), `.ProxyConfig`, `.MeshConfig`
//! and `.Values`, rendering YAML with the containers, init containers,
//! volumes and pull secrets to add. Istio's own helper functions are
//! provided, so an operator's 1.x template keeps working.

use std::collections::{BTreeMap, HashMap};

use gtmpl::{Context, FuncError, Value as Go};
use gtmpl_value::Number;
use serde::Deserialize;
use serde_json::Value;

pub struct Template(gtmpl::Template);

/// What a template renders.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// Istio 1.4's templates say here whether probes are rewritten: a
    /// boolean, or a string as an annotation gives it.
    #[serde(default, rename = "rewriteAppHTTPProbe")]
    pub rewrite_app_http_probe: Option<Value>,
    #[serde(default)]
    pub init_containers: Vec<Value>,
    #[serde(default)]
    pub containers: Vec<Value>,
    #[serde(default)]
    pub volumes: Vec<Value>,
    #[serde(default)]
    pub image_pull_secrets: Vec<Value>,
}

impl Sidecar {
    pub fn rewrites_probes(&self) -> Result<bool, String> {
        match &self.rewrite_app_http_probe {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "t" => Ok(true),
                "false" | "0" | "f" | "" => Ok(false),
                _ => Err(format!("rewriteAppHTTPProbe: {s:?} is not true or false")),
            },
            Some(other) => Err(format!("rewriteAppHTTPProbe: {other} is not true or false")),
        }
    }
}

/// The template's inputs, as JSON in Kubernetes' field names.
pub struct Inputs<'a> {
    pub metadata: &'a Value,
    pub spec: &'a Value,
    pub deployment_name: &'a str,
    pub namespace: &'a str,
    pub proxy_config: &'a Value,
    pub mesh_config: &'a Value,
    pub values: &'a Value,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut t = gtmpl::Template::default();
        t.add_funcs(&[
            ("annotation", annotation as gtmpl_value::Func),
            ("valueOrDefault", value_or_default),
            ("isset", isset),
            ("quote", quote),
            ("toJSON", to_json),
            ("toJson", to_json),
            ("toLower", to_lower),
            ("contains", contains),
            ("includeInboundPorts", container_ports),
            ("applicationPorts", container_ports),
            ("excludeInboundPort", exclude_inbound_port),
            ("image", image),
            ("int", int),
        ]);
        t.parse(text).map_err(|e| e.to_string())?;
        Ok(Template(t))
    }

    pub fn render(&self, inputs: &Inputs) -> Result<Sidecar, String> {
        let text = self.render_text(inputs)?;
        // JSON is YAML too, and reads many times faster.
        if text.trim_start().starts_with('{') {
            return serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(
                &text,
            ))
            .map_err(|e| format!("the rendered template: {}: {}", e.path(), e.inner()));
        }
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text))
            .map_err(|e| format!("the rendered template: {}: {}", e.path(), e.inner()))
    }

    /// The template's output, before it is read as YAML.
    fn render_text(&self, inputs: &Inputs) -> Result<String, String> {
        let mut meta = HashMap::new();
        for (go, k8s) in [
            ("Name", "name"),
            ("Namespace", "namespace"),
            ("GenerateName", "generateName"),
        ] {
            meta.insert(
                go.to_string(),
                Go::String(inputs.metadata[k8s].as_str().unwrap_or_default().into()),
            );
        }
        if inputs.metadata["namespace"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            meta.insert("Namespace".into(), Go::String(inputs.namespace.into()));
        }
        // Present even when empty: `index .ObjectMeta.Labels "app"` must work.
        for (go, k8s) in [("Labels", "labels"), ("Annotations", "annotations")] {
            meta.insert(go.to_string(), verbatim(&inputs.metadata[k8s]));
        }
        let mut deployment = HashMap::new();
        deployment.insert("Name".into(), Go::String(inputs.deployment_name.into()));
        deployment.insert("Namespace".into(), Go::String(inputs.namespace.into()));
        let mut root = HashMap::new();
        root.insert("ObjectMeta".into(), Go::Map(meta));
        root.insert("Spec".into(), go_struct(inputs.spec, false));
        root.insert("DeploymentMeta".into(), Go::Map(deployment));
        root.insert("ProxyConfig".into(), go_struct(inputs.proxy_config, false));
        root.insert("MeshConfig".into(), go_struct(inputs.mesh_config, false));
        root.insert("Values".into(), verbatim(inputs.values));
        self.0
            .render(&Context::from(Go::Object(root)))
            .map_err(|e| format!("rendering the template: {e}"))
    }
}

/// Fields of Kubernetes objects whose keys are data, not field names.
const MAP_FIELDS: [&str; 6] = [
    "labels",
    "annotations",
    "nodeSelector",
    "matchLabels",
    "limits",
    "requests",
];

/// JSON as Go's structs show it to a template: `containerPort` is
/// `.ContainerPort`; maps keep their keys. A field the object does not
/// carry reads as no value (a Go struct's zero value), not an error.
fn go_struct(v: &Value, is_map: bool) -> Go {
    match v {
        Value::Object(o) => Go::Map(
            o.iter()
                .map(|(k, v)| {
                    let child_is_map = MAP_FIELDS.contains(&k.as_str());
                    let key = if is_map { k.clone() } else { exported(k) };
                    (key, go_struct(v, child_is_map))
                })
                .collect(),
        ),
        Value::Array(a) => Go::Array(a.iter().map(|v| go_struct(v, false)).collect()),
        other => scalar(other),
    }
}

/// JSON with its keys as they are (`.Values`, labels, annotations).
fn verbatim(v: &Value) -> Go {
    match v {
        Value::Object(o) => Go::Map(o.iter().map(|(k, v)| (k.clone(), verbatim(v))).collect()),
        Value::Array(a) => Go::Array(a.iter().map(verbatim).collect()),
        Value::Null => Go::Map(HashMap::new()),
        other => scalar(other),
    }
}

fn scalar(v: &Value) -> Go {
    match v {
        Value::Bool(b) => Go::Bool(*b),
        Value::String(s) => Go::String(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Go::Number(Number::from(i)),
            (None, Some(u), _) => Go::Number(Number::from(u)),
            (_, _, Some(f)) => Go::Number(Number::from(f)),
            _ => Go::Nil,
        },
        _ => Go::Nil,
    }
}

fn exported(k: &str) -> String {
    let mut c = k.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Back to JSON, maps sorted, for `toJSON`.
fn to_value(v: &Go) -> Value {
    match v {
        Go::Bool(b) => Value::Bool(*b),
        Go::String(s) => Value::String(s.clone()),
        Go::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_u64().map(Value::from))
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or(Value::Null),
        Go::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        Go::Map(m) | Go::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, to_value(v))).collect();
            serde_json::to_value(sorted).unwrap_or(Value::Null)
        }
        Go::Nil | Go::NoValue | Go::Function(_) => Value::Null,
    }
}

fn text(v: &Go) -> String {
    match v {
        Go::String(s) => s.clone(),
        Go::Nil | Go::NoValue => String::new(),
        other => other.to_string(),
    }
}

fn empty(v: &Go) -> bool {
    match v {
        Go::Nil | Go::NoValue => true,
        Go::String(s) => s.is_empty(),
        Go::Array(a) => a.is_empty(),
        Go::Map(m) | Go::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn args<'a, const N: usize>(name: &str, a: &'a [Go]) -> Result<&'a [Go; N], FuncError> {
    a.try_into()
        .map_err(|_| FuncError::ExactlyXArgs(name.into(), N))
}

fn field<'a>(v: &'a Go, key: &str) -> Option<&'a Go> {
    match v {
        Go::Map(m) | Go::Object(m) => m.get(key),
        _ => None,
    }
}

/// `annotation .ObjectMeta "name" default`: the Pod's annotation, or the default.
fn annotation(a: &[Go]) -> Result<Go, FuncError> {
    let [meta, name, default] = args::<3>("annotation", a)?;
    Ok(field(meta, "Annotations")
        .and_then(|m| field(m, &text(name)))
        .cloned()
        .unwrap_or_else(|| Go::String(text(default))))
}

fn value_or_default(a: &[Go]) -> Result<Go, FuncError> {
    let [v, default] = args::<2>("valueOrDefault", a)?;
    Ok(if empty(v) { default.clone() } else { v.clone() })
}

fn isset(a: &[Go]) -> Result<Go, FuncError> {
    let [map, key] = args::<2>("isset", a)?;
    Ok(Go::Bool(field(map, &text(key)).is_some()))
}

/// A double-quoted YAML scalar: whatever a Pod's annotation holds stays one
/// string and cannot add fields to the sidecar.
fn quote(a: &[Go]) -> Result<Go, FuncError> {
    let [v] = args::<1>("quote", a)?;
    let mut out = String::from("\"");
    for c in text(v).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // YAML refuses these raw (DEL and C1 included); escaped they stay text.
            c if c.is_control() || matches!(c, '\u{feff}' | '\u{fffe}' | '\u{ffff}') => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(Go::String(out))
}

fn to_json(a: &[Go]) -> Result<Go, FuncError> {
    let [v] = args::<1>("toJSON", a)?;
    Ok(Go::String(to_value(v).to_string()))
}

fn to_lower(a: &[Go]) -> Result<Go, FuncError> {
    let [v] = args::<1>("toLower", a)?;
    Ok(Go::String(text(v).to_lowercase()))
}

/// Sprig's argument order: `contains "/" .Values.global.proxy.image`.
fn contains(a: &[Go]) -> Result<Go, FuncError> {
    let [needle, haystack] = args::<2>("contains", a)?;
    Ok(Go::Bool(text(haystack).contains(&text(needle))))
}

/// The containers' declared ports, comma-separated.
fn container_ports(a: &[Go]) -> Result<Go, FuncError> {
    let [containers] = args::<1>("includeInboundPorts", a)?;
    let mut ports = Vec::new();
    if let Go::Array(containers) = containers {
        for c in containers {
            if let Some(Go::Array(list)) = field(c, "Ports") {
                ports.extend(
                    list.iter()
                        .filter_map(|p| field(p, "ContainerPort"))
                        .map(text),
                );
            }
        }
    }
    Ok(Go::String(ports.join(",")))
}

/// `excludeInboundPort port list`: the list with the status port added.
fn exclude_inbound_port(a: &[Go]) -> Result<Go, FuncError> {
    let [port, list] = args::<2>("excludeInboundPort", a)?;
    let port = text(port);
    let mut ports: Vec<String> = text(list)
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    if !port.is_empty() && !ports.contains(&port) {
        ports.push(port);
    }
    Ok(Go::String(ports.join(",")))
}

/// An integer field from a string an annotation may set: anything else is
/// refused rather than written into the Pod.
fn int(a: &[Go]) -> Result<Go, FuncError> {
    let [v] = args::<1>("int", a)?;
    let t = text(v);
    t.trim()
        .parse::<i64>()
        .map(|n| Go::Number(Number::from(n)))
        .map_err(|_| FuncError::Generic(format!("{t:?} is not an integer")))
}

/// `image hub name tag`: `hub/name:tag`; `hub/name` when the name has its
/// own tag; `name` when it is a full reference.
fn image(a: &[Go]) -> Result<Go, FuncError> {
    let [hub, name, tag] = args::<3>("image", a)?;
    let name = text(name);
    Ok(Go::String(if name.contains('/') {
        name
    } else if name.contains(':') || name.contains('@') {
        format!("{}/{name}", text(hub))
    } else {
        format!("{}/{}:{}", text(hub), name, text(tag))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, metadata: Value, spec: Value) -> Result<Sidecar, String> {
        Template::parse(template)?.render(&Inputs {
            metadata: &metadata,
            spec: &spec,
            deployment_name: "web",
            namespace: "shop",
            proxy_config: &json!({"statusPort": 15020, "interceptionMode": "REDIRECT"}),
            mesh_config: &json!({}),
            values: &json!({"global": {"hub": "docker.io/trireme", "tag": "1.4", "proxy": {"image": "proxy"}}}),
        })
    }

    #[test]
    fn istio_helpers_see_the_pod_as_go_structs() {
        let sidecar = render(
            r#"containers:
- name: probe
  image: {{ image .Values.global.hub .Values.global.proxy.image .Values.global.tag }}
  args:
  - {{ annotation .ObjectMeta "sidecar.istio.io/interceptionMode" .ProxyConfig.InterceptionMode | quote }}
  - {{ includeInboundPorts .Spec.Containers | quote }}
  - {{ excludeInboundPort .ProxyConfig.StatusPort "15090" | quote }}
  - {{ toJSON .ObjectMeta.Labels | quote }}
  - {{ valueOrDefault (index .ObjectMeta.Labels "app") .DeploymentMeta.Name }}.{{ .ObjectMeta.Namespace }}
  - {{ isset .ObjectMeta.Annotations "a" }} {{ contains "/" .Values.global.proxy.image }}
"#,
            json!({"labels": {"b": "2", "a": "1"}, "annotations": {"sidecar.istio.io/interceptionMode": "TPROXY"}}),
            json!({"containers": [{"name": "app", "ports": [{"containerPort": 8080}, {"containerPort": 9090}]}]}),
        )
        .unwrap();
        assert_eq!(
            sidecar.containers[0],
            json!({"name": "probe", "image": "docker.io/trireme/proxy:1.4",
                   "args": ["TPROXY", "8080,9090", "15090,15020", "{\"a\":\"1\",\"b\":\"2\"}", "web.shop", "false false"]})
        );
    }

    #[test]
    fn a_quoted_annotation_cannot_add_fields() {
        let sidecar = render(
            "containers:\n- name: x\n  image: {{ annotation .ObjectMeta \"img\" \"i\" | quote }}\n",
            json!({"annotations": {"img": "a\n  securityContext: {privileged: true}"}}),
            json!({"containers": []}),
        )
        .unwrap();
        assert_eq!(sidecar.containers[0].as_object().unwrap().len(), 2);
        let sidecar = render(
            "containers:\n- name: x\n  image: {{ annotation .ObjectMeta \"img\" \"i\" | quote }}\n",
            json!({"annotations": {"img": "a\u{7f}\u{85}\"\\b"}}),
            json!({"containers": []}),
        )
        .unwrap();
        assert_eq!(sidecar.containers[0]["image"], "a\u{7f}\u{85}\"\\b");
    }

    #[test]
    fn image_references() {
        let i = |name: &str| {
            text(&image(&[Go::from("hub.io/t"), Go::from(name), Go::from("1.4")]).unwrap())
        };
        assert_eq!(i("proxy"), "hub.io/t/proxy:1.4");
        assert_eq!(i("proxy:debug"), "hub.io/t/proxy:debug");
        assert_eq!(
            i("registry.example/mesh/proxy:2"),
            "registry.example/mesh/proxy:2"
        );
    }

    #[test]
    fn errors_say_where() {
        let e = render("containers: {{ valueOrDefault 1 }}", json!({}), json!({})).unwrap_err();
        assert!(e.starts_with("rendering the template: "), "{e}");
        assert!(e.contains("valueOrDefault requires exactly 2"), "{e}");
        let e = render("containers: 3\n", json!({}), json!({})).unwrap_err();
        assert!(e.starts_with("the rendered template: containers: "), "{e}");
        let e = render("sidecars: []\n", json!({}), json!({})).unwrap_err();
        assert!(e.contains("unknown field `sidecars`"), "{e}");
    }
}
