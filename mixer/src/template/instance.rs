use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value as Json;

use super::remembered::{self, Bound, Remembered};
use super::{FieldKind, Template};
use crate::attribute::{Attr, Attributes, Value, Vocabulary};
use crate::expr::Expression;

/// One field of a built instance.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Value(Value),
    Map(ValueMap),
}

/// A map field of a built instance (dimensions, variables, tags): names to
/// values in the order the instance's config gave them. The names are shared
/// with the compiled instance, so building one allocates no strings, and
/// instances of one request with the same map share one (see [`Evaluated`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueMap(Arc<[(Arc<str>, Value)]>);

impl Default for ValueMap {
    fn default() -> ValueMap {
        ValueMap(Arc::new([]))
    }
}

impl ValueMap {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
    }

    /// The entry at `i`: a consumer that looks up the same names in
    /// instances of one shape can remember where each was.
    pub fn at(&self, i: usize) -> Option<(&str, &Value)> {
        self.0.get(i).map(|(k, v)| (&**k, v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Where the entries are: maps shared by instances of one request (see
    /// [`Evaluated`]) are the same entries.
    pub fn as_ptr(&self) -> *const (Arc<str>, Value) {
        self.0.as_ptr()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a ValueMap {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, Value)>,
        fn(&'a (Arc<str>, Value)) -> (&'a str, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (&**k, v))
    }
}

impl<K: Into<Arc<str>>, const N: usize> From<[(K, Value); N]> for ValueMap {
    fn from(entries: [(K, Value); N]) -> ValueMap {
        entries.into_iter().collect()
    }
}

impl<K: Into<Arc<str>>> FromIterator<(K, Value)> for ValueMap {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> ValueMap {
        ValueMap(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

/// What an adapter receives: a template's fields evaluated for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The full name, `<name>.<kind>.<namespace>`.
    pub name: Arc<str>,
    pub template: Template,
    pub fields: Vec<(&'static str, FieldValue)>,
}

impl Instance {
    pub fn value(&self, path: &str) -> Option<&Value> {
        self.fields.iter().find_map(|(p, v)| match v {
            FieldValue::Value(v) if *p == path => Some(v),
            _ => None,
        })
    }

    pub fn map(&self, path: &str) -> Option<&ValueMap> {
        self.fields.iter().find_map(|(p, v)| match v {
            FieldValue::Map(m) if *p == path => Some(m),
            _ => None,
        })
    }

    /// The instance's name without kind and namespace, as Mixer's API keys
    /// quotas (`requestcount` for `requestcount.quota.istio-system`).
    pub fn short_name(&self) -> &str {
        short_name(&self.name)
    }
}

/// `requestcount` of `requestcount.quota.istio-system`.
pub fn short_name(full: &str) -> &str {
    full.split('.').next().unwrap_or(full)
}

#[derive(Debug)]
enum Compiled {
    Expr(Expression),
    Map(Arc<MapExprs>),
}

/// A map field's expressions, with a digest of their names and texts so that
/// equal maps of different instances are recognised cheaply.
#[derive(Debug)]
struct MapExprs {
    digest: u64,
    entries: Vec<(Arc<str>, Expression)>,
}

impl MapExprs {
    fn new(entries: Vec<(Arc<str>, Expression)>) -> MapExprs {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (k, e) in &entries {
            h.update(k.as_bytes());
            h.update(&[0]);
            h.update(e.text().as_bytes());
            h.update(&[0]);
        }
        MapExprs {
            digest: h.digest(),
            entries,
        }
    }

    fn same_as(&self, other: &MapExprs) -> bool {
        self.digest == other.digest
            && self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((k1, e1), (k2, e2))| k1 == k2 && e1.text() == e2.text())
    }
}

/// Equal map fields of a config's instances, made one (see
/// [`InstanceBuilder::share_maps`]).
#[derive(Default)]
pub struct SharedMaps(Vec<Arc<MapExprs>>);

/// The map fields already evaluated for one request. Istio's standard
/// metric instances share the same 17 dimensions: built with one of these,
/// the four of a request evaluate them once, not four times. Maps are told
/// apart by address, so only maps made one by [`SharedMaps`] are shared.
#[derive(Default)]
pub struct Evaluated<'a> {
    maps: Vec<(&'a MapExprs, ValueMap)>,
}

/// An instance's params, compiled: evaluates to an [`Instance`] per request.
#[derive(Debug)]
pub struct InstanceBuilder {
    pub name: Arc<str>,
    pub template: Template,
    fields: Vec<(&'static str, Compiled)>,
    /// For attribute-generating templates: attribute name ← expression over
    /// the adapter's `$out` and the request's attributes.
    bindings: Vec<(Attr, Expression)>,
    /// Set when the bindings read only `$out`: then what they bind follows
    /// from the instance alone, for as long as the handler's state holds.
    remembered: Option<Remembered>,
}

/// How bindings name an attribute-generating adapter's output fields.
const OUT: &str = "$out.";

/// What an attribute-generating adapter produced, with the request's
/// attributes behind it: how `attributeBindings` see `$out.<field>`.
struct Generated<'a> {
    out: &'a [(&'static str, Value)],
    attrs: &'a dyn Attributes,
}

impl Attributes for Generated<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        match name.strip_prefix(OUT) {
            Some(field) => self.out.iter().find(|(f, _)| *f == field).map(|(_, v)| v),
            None => self.attrs.get(name),
        }
    }
}

/// A params error: the field (dotted, under `params`) and what is wrong.
pub type FieldError = (String, String);

impl InstanceBuilder {
    pub fn compile(
        name: Arc<str>,
        template: Template,
        params: &Json,
        vocab: &Vocabulary,
    ) -> Result<InstanceBuilder, FieldError> {
        let mut given = Vec::new();
        match params {
            Json::Null => {}
            Json::Object(_) => flatten(params, String::new(), &mut given, template)?,
            _ => return Err(("params".into(), "params must be a mapping".into())),
        }
        let mut fields = Vec::new();
        for (path, json) in given {
            let field = template
                .fields()
                .iter()
                .find(|f| f.path == path)
                .ok_or_else(|| {
                    (
                        format!("params.{path}"),
                        format!("unknown field `{path}` for template {}", template.name()),
                    )
                })?;
            let at = |sub: &str| format!("params.{path}{sub}");
            let compiled = match field.kind {
                FieldKind::Map => {
                    let Json::Object(entries) = json else {
                        return Err((at(""), "must be a mapping of names to expressions".into()));
                    };
                    let mut out = Vec::with_capacity(entries.len());
                    for (key, e) in entries {
                        let expr = expression(e, vocab).map_err(|m| (at(&format!(".{key}")), m))?;
                        out.push((Arc::from(key.as_str()), expr));
                    }
                    Compiled::Map(Arc::new(MapExprs::new(out)))
                }
                FieldKind::Any => Compiled::Expr(expression(json, vocab).map_err(|m| (at(""), m))?),
                FieldKind::Typed(want) => {
                    let expr = expression(json, vocab).map_err(|m| (at(""), m))?;
                    let got = expr.result_type();
                    if got != want && !(got.is_textual() && want.is_textual()) {
                        return Err((
                            at(""),
                            format!("`{}` is {got}, the field takes {want}", expr.text()),
                        ));
                    }
                    Compiled::Expr(expr)
                }
            };
            fields.push((field.path, compiled));
        }
        Ok(InstanceBuilder {
            name,
            template,
            fields,
            bindings: Vec::new(),
            remembered: None,
        })
    }

    /// Compiles `attributeBindings`: each names a declared attribute and
    /// gives an expression of its type over `$out.<field>` and attributes.
    pub fn bind(
        mut self,
        bindings: &BTreeMap<String, String>,
        vocab: &Vocabulary,
    ) -> Result<InstanceBuilder, FieldError> {
        if bindings.is_empty() {
            return Ok(self);
        }
        let outputs = self.template.outputs();
        if outputs.is_empty() {
            return Err((
                "attributeBindings".into(),
                format!(
                    "template {} produces no attributes to bind",
                    self.template.name()
                ),
            ));
        }
        let with_out = vocab.with(outputs.iter().map(|(f, t)| (format!("{OUT}{f}"), *t)));
        for (attribute, text) in bindings {
            let at = format!("attributeBindings.{attribute}");
            let Some(want) = vocab.type_of(attribute) else {
                return Err((at, format!("`{attribute}` is not a declared attribute")));
            };
            let expr =
                Expression::compile(text, &with_out).map_err(|e| (at.clone(), e.to_string()))?;
            let got = expr.result_type();
            if got != want && !(got.is_textual() && want.is_textual()) {
                return Err((at, format!("`{text}` is {got}, `{attribute}` is {want}")));
            }
            self.bindings
                .push((Attr::new(Arc::from(attribute.as_str()), vocab), expr));
        }
        let only_out = self
            .bindings
            .iter()
            .all(|(_, e)| e.attributes().iter().all(|a| a.starts_with(OUT)));
        self.remembered = only_out.then(Remembered::default);
        Ok(self)
    }

    /// Replaces each map field equal to one `shared` holds by that one, and
    /// adds the rest: instances of one config then share their evaluated
    /// maps, told apart by address instead of compared key by key.
    pub fn share_maps(mut self, shared: &mut SharedMaps) -> InstanceBuilder {
        for (_, compiled) in &mut self.fields {
            if let Compiled::Map(exprs) = compiled {
                match shared.0.iter().find(|m| m.same_as(exprs)) {
                    Some(same) => *exprs = same.clone(),
                    None => shared.0.push(exprs.clone()),
                }
            }
        }
        self
    }

    /// What building this instance may read of each attribute (a key, or
    /// the whole attribute: see [`Expression::reads`]): its fields' and,
    /// `$out` aside, its bindings'.
    pub fn reads(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        let fields = self.fields.iter().flat_map(|(_, c)| match c {
            Compiled::Expr(e) => e.reads(),
            Compiled::Map(m) => m.entries.iter().flat_map(|(_, e)| e.reads()).collect(),
        });
        let bindings = self.bindings.iter().flat_map(|(_, e)| e.reads());
        fields.chain(bindings).filter(|(a, _)| !a.starts_with(OUT))
    }

    /// The attributes this attribute-generating instance binds for
    /// `attrs`, with `generate` as its handler's answer. When the bindings
    /// read only `$out` and the handler has a `version` of its state, the
    /// answer for an equal instance under the same version is reused.
    pub fn generate(
        &self,
        attrs: &dyn Attributes,
        version: Option<u64>,
        generate: impl FnOnce(&Instance) -> Result<Vec<(&'static str, Value)>, String>,
    ) -> Result<Bound, String> {
        let instance = self.build(attrs)?;
        let memo = self
            .remembered
            .as_ref()
            .zip(version)
            .map(|(memo, version)| {
                let key = remembered::key(&instance);
                (memo, version, key)
            });
        if let Some((memo, version, key)) = &memo
            && let Some(bound) = memo.get(key, *version)
        {
            return Ok(bound);
        }
        let bound: Bound = self.bound(&generate(&instance)?, attrs).into();
        if let Some((memo, version, key)) = memo {
            memo.put(&key, version, bound.clone());
        }
        Ok(bound)
    }

    /// The attributes `out` (an attribute-generating adapter's answer for
    /// this instance) binds. A binding that cannot be evaluated is skipped.
    fn bound(&self, out: &[(&'static str, Value)], attrs: &dyn Attributes) -> Vec<(Attr, Value)> {
        let scope = Generated { out, attrs };
        self.bindings
            .iter()
            .filter_map(|(name, e)| Some((name.clone(), e.eval(&scope).ok()?)))
            .collect()
    }

    /// Evaluates every field. A missing attribute without a `|` default
    /// fails the instance, naming the field.
    pub fn build(&self, attrs: &dyn Attributes) -> Result<Instance, String> {
        self.build_sharing(attrs, &mut Evaluated::default())
    }

    /// [`build`](Self::build), reusing the map fields other instances of the
    /// same request (the same `attrs`) evaluated into `evaluated`.
    pub fn build_sharing<'a>(
        &'a self,
        attrs: &dyn Attributes,
        evaluated: &mut Evaluated<'a>,
    ) -> Result<Instance, String> {
        let mut fields = Vec::with_capacity(self.fields.len());
        for (path, compiled) in &self.fields {
            let value = match compiled {
                Compiled::Expr(e) => FieldValue::Value(
                    e.eval(attrs)
                        .map_err(|err| format!("instance {}: {path}: {err}", self.name))?,
                ),
                Compiled::Map(exprs) => {
                    let exprs: &MapExprs = exprs;
                    if let Some((_, done)) =
                        evaluated.maps.iter().find(|(m, _)| std::ptr::eq(*m, exprs))
                    {
                        FieldValue::Map(done.clone())
                    } else {
                        let mut map = Vec::with_capacity(exprs.entries.len());
                        for (key, e) in &exprs.entries {
                            let v = e.eval(attrs).map_err(|err| {
                                format!("instance {}: {path}.{key}: {err}", self.name)
                            })?;
                            map.push((key.clone(), v));
                        }
                        let map = ValueMap(map.into());
                        evaluated.maps.push((exprs, map.clone()));
                        FieldValue::Map(map)
                    }
                }
            };
            fields.push((*path, value));
        }
        Ok(Instance {
            name: self.name.clone(),
            template: self.template,
            fields,
        })
    }
}

/// Params are expressions as text; YAML scalars that are not strings (a
/// bare `1` or `true`) are taken as the literal they spell.
fn expression(json: &Json, vocab: &Vocabulary) -> Result<Expression, String> {
    let text = match json {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        _ => return Err("must be an expression".into()),
    };
    Expression::compile(&text, vocab).map_err(|e| e.to_string())
}

/// Nested messages (`subject: {user: …}`) become dotted paths; map fields
/// stop the descent. Keys may be snake_case, as Istio's protos also took.
fn flatten<'a>(
    json: &'a Json,
    prefix: String,
    out: &mut Vec<(String, &'a Json)>,
    template: Template,
) -> Result<(), FieldError> {
    let Json::Object(map) = json else {
        return Ok(());
    };
    for (key, value) in map {
        let path = if prefix.is_empty() {
            camel(key)
        } else {
            format!("{prefix}.{}", camel(key))
        };
        let is_map_field = template
            .fields()
            .iter()
            .any(|f| f.path == path && f.kind == FieldKind::Map);
        let is_message = value.is_object()
            && template
                .fields()
                .iter()
                .any(|f| f.path.starts_with(&format!("{path}.")));
        if is_message && !is_map_field {
            flatten(value, path, out, template)?;
        } else {
            out.push((path, value));
        }
    }
    Ok(())
}

fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::Bag;

    fn metric(name: &str, dimensions: Json) -> InstanceBuilder {
        let params = serde_json::json!({"value": "1", "dimensions": dimensions});
        InstanceBuilder::compile(
            name.into(),
            Template::Metric,
            &params,
            &Vocabulary::standard(),
        )
        .unwrap()
    }

    #[test]
    fn instances_with_the_same_map_share_its_values() {
        let dims = serde_json::json!({
            "source_workload": "source.workload.name | \"unknown\"",
            "response_code": "response.code | 200",
        });
        let mut shared = SharedMaps::default();
        let count = metric("requestcount.instance.istio-system", dims.clone());
        let count = count.share_maps(&mut shared);
        let size = metric("requestsize.instance.istio-system", dims.clone());
        let alone = metric("alone.instance.istio-system", dims);
        let size = size.share_maps(&mut shared);
        let other = metric(
            "other.instance.istio-system",
            serde_json::json!({
                "source_workload": "source.workload.name | \"unknown\"",
                "response_code": "response.code | 500",
            }),
        )
        .share_maps(&mut shared);
        let bag: Bag = [("response.code", Value::Int64(404))].into_iter().collect();
        let mut evaluated = Evaluated::default();
        let a = count.build_sharing(&bag, &mut evaluated).unwrap();
        let b = size.build_sharing(&bag, &mut evaluated).unwrap();
        let c = other.build_sharing(&bag, &mut evaluated).unwrap();
        let map = |i: &Instance| i.map("dimensions").unwrap().clone();
        assert!(
            Arc::ptr_eq(&map(&a).0, &map(&b).0),
            "one evaluation, shared"
        );
        assert_eq!(map(&b).get("response_code"), Some(&Value::Int64(404)));
        assert!(!Arc::ptr_eq(&map(&a).0, &map(&c).0), "a different map");
        assert_eq!(
            map(&c).get("source_workload"),
            Some(&Value::string("unknown"))
        );
        // Built alone, each evaluates for itself and gives the same values;
        // so does an equal map that was not made one with the others.
        assert_eq!(size.build(&bag).unwrap(), b);
        let d = alone.build_sharing(&bag, &mut evaluated).unwrap();
        assert!(!Arc::ptr_eq(&map(&a).0, &map(&d).0), "not made one");
        assert_eq!(map(&d), map(&a));
    }
}
