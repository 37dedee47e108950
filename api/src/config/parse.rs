//! From YAML text, or from an already decoded object, to a [`Document`].

use serde::Deserialize;

use super::{
    ConfigError, ConfigObject, Document, INVALID_YAML, Kind, Meta, OtherDocument, Spec,
    object_name, validate_spec,
};

/// Parses every document of a (possibly multi-document) YAML text. Each document
/// succeeds or fails on its own, so one bad object never hides the good ones.
/// Documents are parsed as the iterator is advanced, so only one document's
/// syntax tree is alive at a time however large the file. A rejected object
/// is one [`ConfigError`] (see [`ConfigError::combine`]).
pub fn parse_documents(text: &str) -> impl Iterator<Item = Result<Document, ConfigError>> + '_ {
    parse_documents_all(text).map(|doc| doc.map_err(combine))
}

/// [`parse_documents`], with every error of a rejected object on its own.
pub fn parse_documents_all(
    text: &str,
) -> impl Iterator<Item = Result<Document, Vec<ConfigError>>> + '_ {
    let mut docs = serde_yaml::Deserializer::from_str(text).enumerate();
    let mut broken = false;
    std::iter::from_fn(move || {
        loop {
            if broken {
                return None;
            }
            let (index, de) = docs.next()?;
            let label = format!("document {}", index + 1);
            let value = match serde_yaml::Value::deserialize(de) {
                Ok(v) => v,
                Err(e) => {
                    // The YAML stream cannot be resumed after a syntax error.
                    broken = true;
                    return Some(Err(vec![ConfigError {
                        object: label,
                        field: String::new(),
                        message: format!("{INVALID_YAML}: {e}"),
                    }]));
                }
            };
            if !value.is_null() {
                return Some(parse_value_all(value, &label));
            }
        }
    })
}

/// Parses one decoded object (from YAML, from JSON through
/// `serde_yaml::to_value`, from an MCP resource) with exactly the checks
/// [`parse_documents`] applies. `label` names it in errors when its own
/// name cannot be read: `document 3`, `body`.
pub fn parse_value(value: serde_yaml::Value, label: &str) -> Result<Document, ConfigError> {
    parse_value_all(value, label).map_err(combine)
}

fn combine(errors: Vec<ConfigError>) -> ConfigError {
    ConfigError::combine(errors).unwrap_or_else(|| ConfigError {
        object: String::new(),
        field: String::new(),
        message: "rejected".into(),
    })
}

/// [`parse_value`], with every error on its own (never an empty list).
/// The envelope's errors (not a mapping, no `apiVersion` or `kind`, bad
/// `metadata`, no name) stop the parse; past them, the unknown top-level
/// fields, the spec's shape and its validation are all reported.
pub fn parse_value_all(
    value: serde_yaml::Value,
    label: &str,
) -> Result<Document, Vec<ConfigError>> {
    let err = |object: &str, field: &str, message: String| ConfigError {
        object: object.to_string(),
        field: field.to_string(),
        message,
    };
    let serde_yaml::Value::Mapping(map) = value else {
        return Err(vec![err(label, "", "a document must be a mapping".into())]);
    };
    let text_field = |name: &str| {
        map.get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                vec![err(
                    label,
                    name,
                    format!("{name} is required and must be a string"),
                )]
            })
    };
    let api_version = text_field("apiVersion")?;
    let kind_name = text_field("kind")?;
    let meta: Meta = match map.get("metadata") {
        Some(m) => serde_yaml::from_value(m.clone()).map_err(|e| {
            vec![err(
                &format!("{kind_name} in {label}"),
                "metadata",
                e.to_string(),
            )]
        })?,
        None => Meta::default(),
    };
    let Some(kind) = Kind::parse(&api_version, &kind_name) else {
        // Mixer's kinds are Mixer's to read; Pilot only notes where rules are.
        let mixer_group = api_version.starts_with("config.istio.io/")
            || api_version.starts_with("policy.istio.io/");
        if api_version.contains("istio.io") && !mixer_group {
            return Err(vec![err(
                &format!("{kind_name} {}", meta.name),
                "kind",
                format!("{api_version} {kind_name} is not a kind Trireme serves"),
            )]);
        }
        let value = serde_json::to_value(&map)
            .map_err(|e| vec![err(&format!("{kind_name} in {label}"), "", e.to_string())])?;
        return Ok(Document::Other(OtherDocument {
            api_version,
            kind: kind_name,
            value,
        }));
    };
    let mut meta = meta;
    if !kind.is_namespaced() {
        meta.namespace.clear();
    } else if meta.namespace.is_empty() {
        meta.namespace = "default".into();
    }
    let object = object_name(kind, &meta);
    if meta.name.is_empty() {
        return Err(vec![err(
            &object,
            "metadata.name",
            "name is required".into(),
        )]);
    }
    let mut errors: Vec<ConfigError> = map
        .keys()
        .map(|key| key.as_str().unwrap_or_default())
        .filter(|key| !matches!(*key, "apiVersion" | "kind" | "metadata" | "spec" | "status"))
        .map(|key| err(&object, key, format!("unknown field `{key}`")))
        .collect();
    let spec_value = map.get("spec").cloned().unwrap_or(serde_yaml::Value::Null);
    match parse_spec(kind, spec_value) {
        Err((field, message)) => errors.push(err(&object, &field, message)),
        Ok(spec) => {
            let invalid = validate_spec(kind, &meta.name, &spec).0;
            errors.extend(
                invalid
                    .into_iter()
                    .map(|e| err(&object, &e.field, e.message)),
            );
            if errors.is_empty() {
                return Ok(Document::Config(Box::new(ConfigObject {
                    kind,
                    meta,
                    spec,
                })));
            }
        }
    }
    Err(errors)
}

fn parse_spec(kind: Kind, value: serde_yaml::Value) -> Result<Spec, (String, String)> {
    fn typed<T: serde::de::DeserializeOwned>(
        value: serde_yaml::Value,
    ) -> Result<T, (String, String)> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "spec".to_string()
            } else {
                format!("spec.{path}")
            };
            (field, e.into_inner().to_string())
        })
    }
    if value.is_null() {
        return Err(("spec".into(), "spec is required".into()));
    }
    Ok(match kind {
        Kind::VirtualService => Spec::VirtualService(typed(value)?),
        Kind::DestinationRule => Spec::DestinationRule(Box::new(typed(value)?)),
        Kind::ServiceEntry => Spec::ServiceEntry(typed(value)?),
        Kind::Sidecar => Spec::Sidecar(typed(value)?),
        Kind::Policy | Kind::MeshPolicy => Spec::Authentication(typed(value)?),
        Kind::AuthorizationPolicy => Spec::AuthorizationPolicy(typed(value)?),
        Kind::Gateway => Spec::Gateway(typed(value)?),
        Kind::EnvoyFilter => Spec::EnvoyFilter(Box::new(typed(value)?)),
        Kind::ServiceRole => Spec::ServiceRole(typed(value)?),
        Kind::ServiceRoleBinding => Spec::ServiceRoleBinding(typed(value)?),
        Kind::RbacConfig | Kind::ClusterRbacConfig => Spec::RbacConfig(typed(value)?),
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Document, ConfigError> {
        let mut docs: Vec<_> = parse_documents(text).collect();
        assert_eq!(docs.len(), 1, "{docs:?}");
        docs.remove(0)
    }

    const VS: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
"#;

    #[test]
    fn parses_a_virtual_service_into_the_default_namespace() {
        let Ok(Document::Config(obj)) = one(VS) else {
            panic!()
        };
        assert_eq!(obj.key(), "VirtualService default/reviews");
        let Spec::VirtualService(vs) = obj.spec else {
            panic!()
        };
        assert_eq!(vs.http.len(), 2);
        assert_eq!(vs.http[1].route[0].weight, Some(80));
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let text = VS.replace("weight: 80", "weigth: 80");
        let e = one(&text).unwrap_err();
        assert_eq!(e.object, "VirtualService default/reviews");
        assert_eq!(e.field, "spec.http[1].route[0].weigth");
        assert!(e.message.contains("unknown field `weigth`"), "{e}");
    }

    #[test]
    fn weights_must_add_up_to_100() {
        let e = one(&VS.replace("weight: 20", "weight: 10")).unwrap_err();
        assert_eq!(e.field, "spec.http[1].route");
        assert!(e.message.contains("add up to 90"), "{e}");
    }

    #[test]
    fn bad_regex_is_rejected() {
        let e = one(&VS.replace("exact: jason", "regex: \"(jason\"")).unwrap_err();
        assert_eq!(e.field, "spec.http[0].match[0].headers.end-user.regex");
    }

    #[test]
    fn kubernetes_documents_are_handed_on() {
        let docs: Vec<_> =
            parse_documents("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n").collect();
        assert!(matches!(&docs[0], Ok(Document::Other(d)) if d.kind == "Service"));
    }

    #[test]
    fn one_bad_document_does_not_hide_the_others() {
        let text = format!(
            "{VS}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {{name: g}}\nspec: {{}}\n---\n{VS}"
        );
        let docs: Vec<_> = parse_documents(&text).collect();
        assert_eq!(docs.len(), 3);
        assert!(docs[0].is_ok() && docs[1].is_err() && docs[2].is_ok());
    }

    #[test]
    fn yaml_syntax_errors_name_the_document() {
        let e = one("apiVersion: v1\nkind: [unclosed\n").unwrap_err();
        assert_eq!(e.object, "document 1");
        assert!(e.message.starts_with("invalid YAML"));
    }

    #[test]
    fn a_decoded_json_object_gets_the_same_checks() {
        let json = serde_json::json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "Gateway",
            "metadata": {"name": "bookinfo-gateway", "namespace": "bookinfo"},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]
            }
        });
        let value = serde_yaml::to_value(&json).unwrap();
        let Ok(Document::Config(obj)) = parse_value(value, "body") else {
            panic!()
        };
        assert_eq!(obj.key(), "Gateway bookinfo/bookinfo-gateway");
        assert!(obj.validate().is_empty());
        let e = parse_value(
            serde_yaml::to_value(serde_json::json!([1])).unwrap(),
            "body",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "body: a document must be a mapping");
    }

    #[test]
    fn every_error_is_reported_and_the_one_error_lists_the_rest() {
        let text = "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {name: g}\nstatus: {}\nextra: 1\nspec:\n  servers:\n  - port: {number: 0, name: http, protocol: HTTP}\n";
        let all: Vec<_> = parse_documents_all(text).collect();
        let Err(errors) = &all[0] else { panic!() };
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "Gateway default/g: extra: unknown field `extra`",
                "Gateway default/g: spec.servers[0].hosts: at least one host is required",
                "Gateway default/g: spec.servers[0].port.number: port number 0 is not in 1..65535",
            ]
        );
        let one = one(text).unwrap_err();
        assert_eq!(one.field, "extra");
        assert!(one.message.ends_with("(and 2 more: spec.servers[0].hosts: at least one host is required; spec.servers[0].port.number: port number 0 is not in 1..65535)"), "{one}");
    }

    #[test]
    fn other_istio_kinds_are_still_refused_and_mixer_kinds_handed_on() {
        let e = one("apiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: w}\nspec: {}\n").unwrap_err();
        assert_eq!(e.field, "kind");
        assert!(e.message.ends_with("is not a kind Trireme serves"), "{e}");
        let rule = one(
            "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r}\nspec: {}\n",
        );
        assert!(matches!(rule, Ok(Document::Other(_))));
    }

    #[test]
    fn cluster_scoped_rbac_config_has_no_namespace_and_one_name() {
        let text = "apiVersion: rbac.istio.io/v1alpha1\nkind: ClusterRbacConfig\nmetadata: {name: default, namespace: x}\nspec: {mode: 'ON'}\n";
        let Ok(Document::Config(obj)) = one(text) else {
            panic!()
        };
        assert_eq!(obj.key(), "ClusterRbacConfig default");
        let e = one(&text.replace("name: default", "name: other")).unwrap_err();
        assert_eq!(e.field, "metadata.name");
    }
}
