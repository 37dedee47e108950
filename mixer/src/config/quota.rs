//! `QuotaSpec` and `QuotaSpecBinding`: which quotas a request to a service is
//! charged. Istio's proxy read them to fill a Check's `quotas`; our ext_authz
//! front reads them for the unmodified Envoy that cannot.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;

use super::kinds::{IstioService, QuotaSpecBindingSpec, QuotaSpecSpec, StringMatch};
use super::object::{ConfigError, Object};
use crate::attribute::{Attributes, Value};

enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl Matcher {
    fn matches(&self, text: &str) -> bool {
        match self {
            Matcher::Exact(s) => text == s,
            Matcher::Prefix(p) => text.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(text),
        }
    }
}

/// An attribute, or one key of a string-map attribute (`request.headers[x-user]`).
struct Clause {
    attribute: String,
    key: Option<String>,
    matcher: Matcher,
}

struct QuotaRule {
    /// Any group matches when all its clauses do; no group matches everything.
    matches: Vec<Vec<Clause>>,
    charges: Vec<(String, i64)>,
}

struct Binding {
    services: Vec<IstioService>,
    namespace: String,
    specs: Vec<Arc<Vec<QuotaRule>>>,
}

#[derive(Default)]
pub struct QuotaBindings(Vec<Binding>);

impl QuotaBindings {
    pub fn compile(
        objects: &[Object],
        default_namespace: &str,
        errors: &mut Vec<ConfigError>,
    ) -> QuotaBindings {
        let err = |o: &Object, field: String, message: String| ConfigError {
            object: o.label(),
            field,
            message,
        };
        let mut specs: BTreeMap<String, Arc<Vec<QuotaRule>>> = BTreeMap::new();
        for o in objects.iter().filter(|o| o.kind == "QuotaSpec") {
            let spec: QuotaSpecSpec = match o.spec() {
                Ok(s) => s,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match compile_rules(spec) {
                Ok(rules) => {
                    specs.insert(format!("{}/{}", o.namespace, o.name), Arc::new(rules));
                }
                Err((field, message)) => errors.push(err(o, field, message)),
            }
        }
        let mut bindings = Vec::new();
        for o in objects.iter().filter(|o| o.kind == "QuotaSpecBinding") {
            let spec: QuotaSpecBindingSpec = match o.spec() {
                Ok(s) => s,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut found = Vec::new();
            for (i, r) in spec.quota_specs.iter().enumerate() {
                let ns = if r.namespace.is_empty() {
                    &o.namespace
                } else {
                    &r.namespace
                };
                match specs.get(&format!("{ns}/{}", r.name)) {
                    Some(s) => found.push(s.clone()),
                    None => errors.push(err(
                        o,
                        format!("spec.quotaSpecs[{i}]"),
                        format!("no valid QuotaSpec {ns}/{}", r.name),
                    )),
                }
            }
            bindings.push(Binding {
                services: spec.services,
                namespace: if o.namespace.is_empty() {
                    default_namespace.to_string()
                } else {
                    o.namespace.clone()
                },
                specs: found,
            });
        }
        QuotaBindings(bindings)
    }

    /// The quotas (short names) and charges for a request, by the destination
    /// service attributes it carries.
    pub fn charges(&self, attrs: &dyn Attributes) -> Vec<(String, i64)> {
        let text = |name: &str| attrs.get(name).and_then(Value::as_str);
        let host = text("destination.service.host");
        let name = text("destination.service.name");
        let namespace = text("destination.service.namespace");
        let mut out: Vec<(String, i64)> = Vec::new();
        for b in &self.0 {
            let bound = b.services.iter().any(|s| {
                if !s.service.is_empty() {
                    return s.service == "*" || Some(s.service.as_str()) == host;
                }
                let ns = if s.namespace.is_empty() {
                    &b.namespace
                } else {
                    &s.namespace
                };
                Some(s.name.as_str()) == name && Some(ns.as_str()) == namespace
            });
            if !bound {
                continue;
            }
            for rule in b.specs.iter().flat_map(|s| s.iter()) {
                let hit = rule.matches.is_empty()
                    || rule
                        .matches
                        .iter()
                        .any(|group| group.iter().all(|c| clause_holds(c, attrs)));
                if !hit {
                    continue;
                }
                for (quota, charge) in &rule.charges {
                    match out.iter_mut().find(|(q, _)| q == quota) {
                        Some((_, total)) => *total = total.saturating_add(*charge),
                        None => out.push((quota.clone(), *charge)),
                    }
                }
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The attributes the specs' clauses read (besides the destination
    /// service's, which [`charges`](Self::charges) reads for every binding).
    pub fn reads(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0
            .iter()
            .flat_map(|b| b.specs.iter().flat_map(|s| s.iter()))
            .flat_map(|r| r.matches.iter().flatten())
            .map(|c| (c.attribute.as_str(), c.key.as_deref()))
    }
}

fn clause_holds(c: &Clause, attrs: &dyn Attributes) -> bool {
    match &c.key {
        Some(key) => attrs
            .get_key(&c.attribute, key)
            .is_some_and(|v| c.matcher.matches(v)),
        None => attrs
            .get(&c.attribute)
            .is_some_and(|v| c.matcher.matches(&v.to_string())),
    }
}

fn compile_rules(spec: QuotaSpecSpec) -> Result<Vec<QuotaRule>, (String, String)> {
    let mut rules = Vec::new();
    for (i, rule) in spec.rules.into_iter().enumerate() {
        let mut matches = Vec::new();
        for (j, m) in rule.match_.into_iter().enumerate() {
            let mut group = Vec::new();
            for (attribute, string_match) in m.clause {
                let field = format!("spec.rules[{i}].match[{j}].clause.{attribute}");
                let matcher = match string_match {
                    StringMatch::Exact(s) => Matcher::Exact(s),
                    StringMatch::Prefix(s) => Matcher::Prefix(s),
                    StringMatch::Regex(r) => Matcher::Regex(
                        Regex::new(&format!("^(?:{r})$"))
                            .map_err(|e| (field.clone(), e.to_string()))?,
                    ),
                };
                let (attribute, key) = match attribute.split_once('[') {
                    Some((a, rest)) => {
                        let key = rest.strip_suffix(']').ok_or_else(|| {
                            (
                                field.clone(),
                                "a map key is written `attribute[key]`".to_string(),
                            )
                        })?;
                        (a.to_string(), Some(key.trim_matches('"').to_string()))
                    }
                    None => (attribute, None),
                };
                group.push(Clause {
                    attribute,
                    key,
                    matcher,
                });
            }
            matches.push(group);
        }
        let mut charges = Vec::new();
        for (j, q) in rule.quotas.into_iter().enumerate() {
            if q.quota.is_empty() {
                return Err((
                    format!("spec.rules[{i}].quotas[{j}].quota"),
                    "a quota name is required".into(),
                ));
            }
            if q.charge <= 0 {
                return Err((
                    format!("spec.rules[{i}].quotas[{j}].charge"),
                    format!("charge must be positive, not {}", q.charge),
                ));
            }
            charges.push((q.quota, q.charge));
        }
        rules.push(QuotaRule { matches, charges });
    }
    Ok(rules)
}
