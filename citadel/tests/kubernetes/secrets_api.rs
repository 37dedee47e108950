//! A model of the API server's Secrets, enough for `KubeStore`: get,
//! server-side apply, delete, and LIST by field selector in pages.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fake::{Reply, Seen, fixture, status};

/// Secrets as the API server keeps them: by namespace and name, applied
/// server-side, listed by field selector two to a page.
pub struct SecretsApi {
    objects: BTreeMap<(String, String), Value>,
    version: u64,
    fail: Option<Value>,
}

impl SecretsApi {
    pub fn seeded() -> SecretsApi {
        let mut api = SecretsApi::empty();
        for item in fixture("secrets.json")["items"].as_array().unwrap() {
            let meta = &item["metadata"];
            let key = (
                meta["namespace"].as_str().unwrap().to_string(),
                meta["name"].as_str().unwrap().to_string(),
            );
            api.objects.insert(key, item.clone());
        }
        api
    }

    pub fn empty() -> SecretsApi {
        SecretsApi {
            objects: BTreeMap::new(),
            version: 60000,
            fail: None,
        }
    }

    /// Every request is answered with `status`.
    pub fn failing(status: Value) -> SecretsApi {
        SecretsApi {
            fail: Some(status),
            ..SecretsApi::empty()
        }
    }

    pub fn respond(mut self) -> impl FnMut(&Seen) -> Reply {
        move |req| match self.fail.clone() {
            Some(status) => {
                let code = StatusCode::from_u16(status["code"].as_u64().unwrap() as u16).unwrap();
                Reply::Json(code, status)
            }
            None => self.answer(req),
        }
    }

    fn answer(&mut self, req: &Seen) -> Reply {
        if req.path == "/api/v1/secrets" && req.method == Method::GET {
            return self.list(req);
        }
        let Some((namespace, name)) = req
            .path
            .strip_prefix("/api/v1/namespaces/")
            .and_then(|rest| rest.split_once("/secrets/"))
        else {
            return Reply::Json(
                StatusCode::NOT_FOUND,
                status(404, "NotFound", "no such path"),
            );
        };
        let key = (namespace.to_string(), name.to_string());
        let not_found = || {
            let message = format!("secrets \"{name}\" not found");
            Reply::Json(StatusCode::NOT_FOUND, status(404, "NotFound", &message))
        };
        match req.method {
            Method::GET => match self.objects.get(&key) {
                Some(o) => Reply::Json(StatusCode::OK, o.clone()),
                None => not_found(),
            },
            Method::DELETE => match self.objects.remove(&key) {
                Some(_) => Reply::Json(
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                           "details": {"name": name, "kind": "secrets"}}),
                ),
                None => not_found(),
            },
            Method::PATCH => self.apply(key, req),
            _ => Reply::Json(
                StatusCode::METHOD_NOT_ALLOWED,
                status(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method",
                ),
            ),
        }
    }

    fn list(&self, req: &Seen) -> Reply {
        let selector = req.param("fieldSelector").unwrap_or_default();
        let kind = selector.strip_prefix("type=");
        let matching: Vec<&Value> = self
            .objects
            .values()
            .filter(|o| kind.is_none_or(|k| o["type"] == k))
            .collect();
        let from: usize = req.param("continue").map_or(0, |c| c.parse().unwrap());
        let page: Vec<Value> = matching
            .iter()
            .skip(from)
            .take(2)
            .map(|o| (*o).clone())
            .collect();
        let mut metadata = json!({"resourceVersion": self.version.to_string()});
        if from + 2 < matching.len() {
            metadata["continue"] = json!((from + 2).to_string());
        }
        let list =
            json!({"apiVersion": "v1", "kind": "SecretList", "metadata": metadata, "items": page});
        Reply::Json(StatusCode::OK, list)
    }

    fn apply(&mut self, key: (String, String), req: &Seen) -> Reply {
        if req.content_type != "application/apply-patch+yaml" {
            let message = format!(
                "the body of the request was in an unknown format - accepted media types include: application/apply-patch+yaml (got {})",
                req.content_type
            );
            return Reply::Json(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                status(415, "UnsupportedMediaType", &message),
            );
        }
        if req.param("fieldManager").is_none() {
            let message = "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch";
            return Reply::Json(
                StatusCode::UNPROCESSABLE_ENTITY,
                status(422, "Invalid", message),
            );
        }
        self.version += 1;
        let body = &req.body;
        let (code, object) = match self.objects.get(&key) {
            Some(existing) => {
                let mut object = existing.clone();
                object["type"] = body["type"].clone();
                object["data"] = body["data"].clone();
                if let Some(applied) = body["metadata"]["annotations"].as_object() {
                    let annotations = &mut object["metadata"]["annotations"];
                    if !annotations.is_object() {
                        *annotations = json!({});
                    }
                    for (k, v) in applied {
                        annotations[k] = v.clone();
                    }
                }
                (StatusCode::OK, object)
            }
            None => {
                let mut object = body.clone();
                object["metadata"]["uid"] =
                    json!(format!("00000000-0000-4000-8000-{:012}", self.version));
                object["metadata"]["creationTimestamp"] = json!("2026-11-20T12:00:00Z");
                (StatusCode::CREATED, object)
            }
        };
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.objects.insert(key, object.clone());
        Reply::Json(code, object)
    }
}
