//! Objects compiled into what the dispatcher runs: handlers built by their
//! adapters, instances and rule matches parsed and type-checked. A bad object
//! is left out with an error naming it and its field; objects that refer to
//! it are left out too, with errors of their own; the rest works.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::kinds::{
    AdapterSpec, AttributeManifestSpec, HandlerSpec, HeaderOperation, InstanceSpec, RuleSpec,
    TemplateSpec,
};
use super::object::{ConfigError, Object};
use super::quota::QuotaBindings;
use crate::adapter::{self, Handler, Registry, grpc};
use crate::attribute::{ValueType, Vocabulary};
use crate::expr::{self, Expression};
use crate::template::{InstanceBuilder, SharedMaps, Template, Variety, short_name};

/// A handler and what built it, so an unchanged handler is reused by the
/// next snapshot with its state.
pub struct HandlerEntry {
    pub name: String,
    pub adapter: String,
    pub templates: Vec<Template>,
    pub handler: Arc<dyn Handler>,
    /// The adapter name, address and params as JSON: equal keys, same handler.
    key: String,
}

pub struct Action {
    pub handler: Arc<HandlerEntry>,
    pub instances: Vec<Arc<InstanceBuilder>>,
}

pub struct HeaderOp {
    pub name: String,
    pub values: Vec<Expression>,
    pub operation: HeaderOperation,
}

pub struct Rule {
    pub name: String,
    pub namespace: String,
    /// None matches every request.
    pub matcher: Option<Expression>,
    pub actions: Vec<Action>,
    pub request_header_ops: Vec<HeaderOp>,
    pub response_header_ops: Vec<HeaderOp>,
}

impl Rule {
    /// Whether any action has instances of this variety.
    pub fn has(&self, variety: Variety) -> bool {
        self.actions
            .iter()
            .any(|a| a.instances.iter().any(|i| i.template.variety() == variety))
    }
}

/// One consistent config.
pub struct Snapshot {
    /// Increases with every snapshot: cached decisions of older ones are void.
    pub generation: u64,
    pub default_namespace: String,
    pub vocabulary: Vocabulary,
    pub rules: Vec<Arc<Rule>>,
    pub handlers: BTreeMap<String, Arc<HandlerEntry>>,
    pub instances: HashMap<String, Arc<InstanceBuilder>>,
    pub quotas: QuotaBindings,
    /// Whether any rule generates attributes (most configs: none, and
    /// requests skip the step).
    pub generates: bool,
    pub errors: Vec<ConfigError>,
    /// Objects read, including rejected ones.
    pub objects: usize,
}

impl Snapshot {
    pub fn empty(default_namespace: &str) -> Snapshot {
        Snapshot {
            generation: 0,
            default_namespace: default_namespace.to_string(),
            vocabulary: Vocabulary::standard(),
            rules: Vec::new(),
            handlers: BTreeMap::new(),
            instances: HashMap::new(),
            quotas: QuotaBindings::default(),
            generates: false,
            errors: Vec::new(),
            objects: 0,
        }
    }

    /// Compiles `objects`; `errors` are those found while reading them.
    pub fn build(
        objects: &[Object],
        mut errors: Vec<ConfigError>,
        previous: &Snapshot,
        adapters: &Registry,
    ) -> Snapshot {
        let ns = previous.default_namespace.clone();
        let objects = &last_of_each(objects, &mut errors);
        let mut b = Build {
            adapters,
            previous,
            errors: &mut errors,
            foreign: HashSet::new(),
        };
        let vocabulary = b.vocabulary(objects);
        let declared_adapters = b.declared_adapters(objects);
        let handlers = b.handlers(objects, &declared_adapters);
        let instances = b.instances(objects, &vocabulary);
        let rules = b.rules(objects, &vocabulary, &handlers, &instances);
        let quotas = QuotaBindings::compile(objects, &ns, b.errors);
        let vocabulary = vocabulary.reading(read_by(&rules, &quotas));
        Snapshot {
            generation: previous.generation + 1,
            default_namespace: ns,
            vocabulary,
            generates: rules.iter().any(|r| r.has(Variety::AttributeGeneration)),
            rules,
            handlers,
            instances,
            quotas,
            objects: objects.len(),
            errors,
        }
    }
}

/// Attributes the dispatcher reads itself, whatever the config: a rule
/// outside the default namespace applies by the destination's namespace,
/// and QuotaSpecs bind to the destination service.
const READ_BY_DISPATCH: [&str; 4] = [
    "destination.service.namespace",
    "destination.namespace",
    "destination.service.host",
    "destination.service.name",
];

/// Every attribute the config may read: those its rules' matches, header
/// operations and instances mention (a rule that matches nothing reads
/// nothing) and its QuotaSpecs' clauses; with a key where a string map is
/// read at a constant key.
fn read_by<'a>(
    rules: &'a [Arc<Rule>],
    quotas: &'a QuotaBindings,
) -> Vec<(&'a str, Option<&'a str>)> {
    let mut names: Vec<_> = READ_BY_DISPATCH.iter().map(|n| (*n, None)).collect();
    for rule in rules {
        if rule.matcher.as_ref().is_some_and(Expression::is_never) {
            continue;
        }
        let ops = rule
            .request_header_ops
            .iter()
            .chain(&rule.response_header_ops);
        let exprs = rule
            .matcher
            .iter()
            .chain(ops.flat_map(|op| op.values.iter()));
        names.extend(exprs.flat_map(Expression::reads));
        let instances = rule.actions.iter().flat_map(|a| a.instances.iter());
        names.extend(instances.flat_map(|i| i.reads()));
    }
    names.extend(quotas.reads());
    names
}

/// One object per full name: the last read wins, and each earlier one is
/// reported, as Pilot does for its kinds.
fn last_of_each(objects: &[Object], errors: &mut Vec<ConfigError>) -> Vec<Object> {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, o) in objects.iter().enumerate() {
        if let Some(earlier) = last.insert(o.full_name(), i) {
            errors.push(ConfigError {
                object: objects[earlier].label(),
                field: "metadata.name".into(),
                message: format!(
                    "defined more than once ({} and {}); the last one read wins",
                    objects[earlier].source, o.source
                ),
            });
        }
    }
    objects
        .iter()
        .enumerate()
        .filter(|(i, o)| last.get(&o.full_name()) == Some(i))
        .map(|(_, o)| o.clone())
        .collect()
}

/// Kinds a rule may name as handlers before Istio 1.1: one per adapter.
fn is_legacy_handler(kind: &str, adapters: &Registry) -> bool {
    adapters.get(kind).is_some() || (adapters.is_validation() && adapter::IN_TREE.contains(&kind))
}

struct Build<'a> {
    adapters: &'a Registry,
    previous: &'a Snapshot,
    errors: &'a mut Vec<ConfigError>,
    /// Handlers of adapters the other Mixer binary offers.
    foreign: HashSet<String>,
}

impl Build<'_> {
    fn error(&mut self, object: &Object, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            object: object.label(),
            field: field.into(),
            message: message.into(),
        });
    }

    /// After `o` failed to compile (an error was recorded since `mark`):
    /// its previous version, if it had one, stays in force, so a typo in a
    /// deny rule's handler does not open the door.
    fn last_good<T: Clone>(&mut self, mark: usize, previous: Option<&T>) -> Option<T> {
        if self.errors.len() == mark {
            return None;
        }
        let kept = previous?.clone();
        if let Some(e) = self.errors.last_mut() {
            e.message.push_str("; the last good version stays in force");
        }
        Some(kept)
    }

    fn spec<T: DeserializeOwned>(&mut self, object: &Object) -> Option<T> {
        object.spec().map_err(|e| self.errors.push(e)).ok()
    }

    fn vocabulary(&mut self, objects: &[Object]) -> Vocabulary {
        let mut declared = Vec::new();
        for o in objects.iter().filter(|o| o.kind == "attributemanifest") {
            let Some(spec) = self.spec::<AttributeManifestSpec>(o) else {
                continue;
            };
            for (name, info) in spec.attributes {
                match ValueType::parse(&info.value_type) {
                    Some(t) => declared.push((name, t)),
                    None => self.error(
                        o,
                        &format!("spec.attributes.{name}.valueType"),
                        format!("unknown value type {:?}", info.value_type),
                    ),
                }
            }
        }
        Vocabulary::standard().with(declared)
    }

    /// `adapter` objects by full name: the templates each out-of-process
    /// adapter serves.
    fn declared_adapters(&mut self, objects: &[Object]) -> HashMap<String, Vec<Template>> {
        let mut out = HashMap::new();
        for o in objects.iter().filter(|o| o.kind == "template") {
            // Descriptors are accepted as written; templates are known by name.
            let _ = self.spec::<TemplateSpec>(o);
        }
        for o in objects.iter().filter(|o| o.kind == "adapter") {
            let Some(spec) = self.spec::<AdapterSpec>(o) else {
                continue;
            };
            let mut templates = Vec::new();
            for (i, t) in spec.templates.iter().enumerate() {
                match Template::parse(short_name(t)) {
                    // The out-of-process client speaks listentry's service only.
                    Some(t) if t != Template::ListEntry => self.error(
                        o,
                        &format!("spec.templates[{i}]"),
                        format!(
                            "out-of-process {} adapters are not supported yet (listentry is)",
                            t.name()
                        ),
                    ),
                    Some(t) => templates.push(t),
                    None => self.error(
                        o,
                        &format!("spec.templates[{i}]"),
                        format!("unknown template {t:?}"),
                    ),
                }
            }
            out.insert(o.full_name(), templates);
        }
        out
    }

    fn handlers(
        &mut self,
        objects: &[Object],
        declared_adapters: &HashMap<String, Vec<Template>>,
    ) -> BTreeMap<String, Arc<HandlerEntry>> {
        let mut out = BTreeMap::new();
        for o in objects {
            let mark = self.errors.len();
            let name = o.full_name();
            let built = if o.kind == "handler" || is_legacy_handler(&o.kind, self.adapters) {
                self.handler_of(o, declared_adapters).map(Arc::new)
            } else {
                if adapter::IN_TREE.contains(&o.kind.as_str()) {
                    self.foreign.insert(name);
                }
                continue;
            };
            let previous = self.previous.handlers.get(&name);
            if let Some(h) = built.or_else(|| self.last_good(mark, previous)) {
                out.insert(name, h);
            }
        }
        out
    }

    fn handler_of(
        &mut self,
        o: &Object,
        declared_adapters: &HashMap<String, Vec<Template>>,
    ) -> Option<HandlerEntry> {
        {
            let (spec, legacy) = if o.kind == "handler" {
                (self.spec::<HandlerSpec>(o)?, false)
            } else {
                let spec = HandlerSpec {
                    compiled_adapter: o.kind.clone(),
                    params: o.spec.clone(),
                    ..Default::default()
                };
                (spec, true)
            };
            self.handler(o, spec, legacy, declared_adapters)
        }
    }

    fn handler(
        &mut self,
        o: &Object,
        spec: HandlerSpec,
        legacy: bool,
        declared_adapters: &HashMap<String, Vec<Template>>,
    ) -> Option<HandlerEntry> {
        let params_field = if legacy { "spec" } else { "spec.params" };
        let remote_templates = if spec.adapter.is_empty() {
            None
        } else {
            resolve(&spec.adapter, "adapter", &o.namespace)
                .iter()
                .find_map(|n| declared_adapters.get(n))
        };
        // Everything that shapes the handler: equal keys, same handler.
        let key = format!(
            "{}|{}|{:?}|{:?}|{}",
            spec.compiled_adapter,
            spec.adapter,
            spec.connection.as_ref().map(|c| (&c.address, c.timeout)),
            remote_templates,
            spec.params
        );
        let reuse = self
            .previous
            .handlers
            .get(&o.full_name())
            .filter(|h| h.key == key);
        if let Some(previous) = reuse {
            return Some(HandlerEntry {
                name: previous.name.clone(),
                adapter: previous.adapter.clone(),
                templates: previous.templates.clone(),
                handler: previous.handler.clone(),
                key,
            });
        }
        match (spec.compiled_adapter.as_str(), spec.adapter.as_str()) {
            ("", "") => {
                self.error(o, "spec", "one of compiledAdapter and adapter is required");
                None
            }
            (compiled, "") => {
                if self.adapters.is_validation() && adapter::IN_TREE.contains(&compiled) {
                    return Some(HandlerEntry {
                        name: o.full_name(),
                        adapter: compiled.to_string(),
                        templates: Template::ALL.to_vec(),
                        handler: Arc::new(adapter::Unbuilt),
                        key,
                    });
                }
                if self.adapters.get(compiled).is_none() && adapter::IN_TREE.contains(&compiled) {
                    tracing::debug!(handler = %o.full_name(), adapter = compiled, "handler for the other Mixer skipped");
                    self.foreign.insert(o.full_name());
                    return None;
                }
                let Some(adapter) = self.adapters.get(compiled) else {
                    let mut known: Vec<_> = self.adapters.names().collect();
                    known.sort();
                    self.error(
                        o,
                        "spec.compiledAdapter",
                        format!("unknown adapter {compiled:?} (known: {})", known.join(", ")),
                    );
                    return None;
                };
                match adapter.build(&spec.params) {
                    Ok(handler) => Some(HandlerEntry {
                        name: o.full_name(),
                        adapter: compiled.to_string(),
                        templates: adapter.templates().to_vec(),
                        handler,
                        key,
                    }),
                    Err(e) => {
                        let field = if e.field.is_empty() {
                            params_field.to_string()
                        } else {
                            format!("{params_field}.{}", e.field)
                        };
                        self.error(o, &field, e.message);
                        None
                    }
                }
            }
            ("", remote) => {
                let Some(templates) = remote_templates else {
                    self.error(
                        o,
                        "spec.adapter",
                        format!("no adapter object named {remote:?}"),
                    );
                    return None;
                };
                let Some(connection) = spec.connection else {
                    self.error(
                        o,
                        "spec.connection.address",
                        "an out-of-process adapter needs connection.address",
                    );
                    return None;
                };
                let timeout = connection
                    .timeout
                    .map(|t| t.as_duration())
                    .unwrap_or(Duration::from_secs(1));
                match grpc::Remote::new(&connection.address, timeout, &spec.params) {
                    Ok(handler) => Some(HandlerEntry {
                        name: o.full_name(),
                        adapter: remote.to_string(),
                        templates: templates.clone(),
                        handler: Arc::new(handler),
                        key,
                    }),
                    Err(message) => {
                        self.error(o, "spec.connection.address", message);
                        None
                    }
                }
            }
            (_, _) => {
                self.error(
                    o,
                    "spec",
                    "compiledAdapter and adapter are exclusive: set one",
                );
                None
            }
        }
    }

    fn instances(
        &mut self,
        objects: &[Object],
        vocab: &Vocabulary,
    ) -> HashMap<String, Arc<InstanceBuilder>> {
        let mut out = HashMap::new();
        let mut maps = SharedMaps::default();
        for o in objects {
            if o.kind != "instance" && Template::parse(&o.kind).is_none() {
                continue;
            }
            let mark = self.errors.len();
            let name = o.full_name();
            let built = self
                .instance(o, vocab)
                .map(|b| Arc::new(b.share_maps(&mut maps)));
            let previous = self.previous.instances.get(&name);
            if let Some(b) = built.or_else(|| self.last_good(mark, previous)) {
                out.insert(name, b);
            }
        }
        out
    }

    fn instance(&mut self, o: &Object, vocab: &Vocabulary) -> Option<InstanceBuilder> {
        let (template_name, params, bindings, field) = if o.kind == "instance" {
            let spec = self.spec::<InstanceSpec>(o)?;
            let name = match (spec.compiled_template.as_str(), spec.template.as_str()) {
                ("", "") => {
                    self.error(
                        o,
                        "spec",
                        "one of compiledTemplate and template is required",
                    );
                    return None;
                }
                (t, "") => t.to_string(),
                // A `template` object's name is the template's.
                ("", t) => short_name(t).to_string(),
                _ => {
                    self.error(o, "spec", "compiledTemplate and template are exclusive");
                    return None;
                }
            };
            (name, spec.params, spec.attribute_bindings, "spec.params")
        } else {
            // A legacy kind: the kind is the template, the spec its params,
            // but for the bindings written beside them.
            let mut params = o.spec.clone();
            let bindings = params
                .as_object_mut()
                .and_then(|m| {
                    m.remove("attribute_bindings")
                        .or_else(|| m.remove("attributeBindings"))
                })
                .map(|b| serde_json::from_value(b).map_err(|e| e.to_string()))
                .transpose();
            let bindings = match bindings {
                Ok(b) => b.unwrap_or_default(),
                Err(e) => {
                    self.error(o, "spec.attributeBindings", e);
                    return None;
                }
            };
            (o.kind.clone(), params, bindings, "spec")
        };
        let Some(template) = Template::parse(&template_name) else {
            self.error(
                o,
                "spec.compiledTemplate",
                format!("unknown template {template_name:?}"),
            );
            return None;
        };
        let built = InstanceBuilder::compile(o.full_name().into(), template, &params, vocab)
            .map_err(|(f, message)| {
                let f = f.strip_prefix("params").unwrap_or(&f);
                (format!("{field}{f}"), message)
            })
            .and_then(|b| {
                b.bind(&bindings, vocab)
                    .map_err(|(f, message)| (format!("spec.{f}"), message))
            });
        match built {
            Ok(b) => Some(b),
            Err((f, message)) => {
                self.error(o, &f, message);
                None
            }
        }
    }

    fn rules(
        &mut self,
        objects: &[Object],
        vocab: &Vocabulary,
        handlers: &BTreeMap<String, Arc<HandlerEntry>>,
        instances: &HashMap<String, Arc<InstanceBuilder>>,
    ) -> Vec<Arc<Rule>> {
        let mut out = Vec::new();
        for o in objects.iter().filter(|o| o.kind == "rule") {
            let mark = self.errors.len();
            let built = self
                .spec::<RuleSpec>(o)
                .and_then(|spec| self.rule(o, spec, vocab, handlers, instances))
                .map(Arc::new);
            let name = o.full_name();
            let previous = self.previous.rules.iter().find(|r| r.name == name);
            if let Some(rule) = built.or_else(|| self.last_good(mark, previous)) {
                out.push(rule);
            }
        }
        out
    }

    fn rule(
        &mut self,
        o: &Object,
        spec: RuleSpec,
        vocab: &Vocabulary,
        handlers: &BTreeMap<String, Arc<HandlerEntry>>,
        instances: &HashMap<String, Arc<InstanceBuilder>>,
    ) -> Option<Rule> {
        let matcher = if spec.match_.trim().is_empty() {
            None
        } else {
            match expr::compile_bool(&spec.match_, vocab) {
                Ok(e) => Some(e),
                Err(e) => {
                    self.error(o, "spec.match", e.to_string());
                    return None;
                }
            }
        };
        let mut actions = Vec::new();
        for (i, a) in spec.actions.iter().enumerate() {
            let field = format!("spec.actions[{i}]");
            let Some(handler) = resolve(&a.handler, "handler", &o.namespace)
                .iter()
                .find_map(|n| handlers.get(n))
                .cloned()
            else {
                // Policy and telemetry read one config: an action for the
                // other binary's adapters (a handler of an adapter offered
                // there, or instances of varieties served there) is not this
                // binary's to run; anything else is an error.
                let foreign = resolve(&a.handler, "handler", &o.namespace)
                    .iter()
                    .any(|n| self.foreign.contains(n))
                    || (!a.instances.is_empty()
                        && a.instances.iter().all(|name| {
                            resolve(name, "instance", &o.namespace)
                                .iter()
                                .find_map(|n| instances.get(n))
                                .is_some_and(|i| !self.adapters.serves(i.template.variety()))
                        }));
                if foreign {
                    tracing::debug!(rule = %o.full_name(), handler = %a.handler, "action for the other Mixer skipped");
                    continue;
                }
                self.error(
                    o,
                    &format!("{field}.handler"),
                    format!("no valid handler named {:?}", a.handler),
                );
                return None;
            };
            let mut built = Vec::new();
            for (j, name) in a.instances.iter().enumerate() {
                let f = format!("{field}.instances[{j}]");
                let Some(instance) = resolve(name, "instance", &o.namespace)
                    .iter()
                    .find_map(|n| instances.get(n))
                    .cloned()
                else {
                    self.error(o, &f, format!("no valid instance named {name:?}"));
                    return None;
                };
                if !handler.templates.contains(&instance.template) {
                    self.error(
                        o,
                        &f,
                        format!(
                            "handler {} ({}) does not take {} instances",
                            handler.name,
                            handler.adapter,
                            instance.template.name()
                        ),
                    );
                    return None;
                }
                if built
                    .iter()
                    .any(|b: &Arc<InstanceBuilder>| b.name == instance.name)
                {
                    self.error(o, &f, format!("instance {name:?} is listed twice"));
                    return None;
                }
                built.push(instance);
            }
            actions.push(Action {
                handler,
                instances: built,
            });
        }
        let request_header_ops = self.header_ops(
            o,
            "requestHeaderOperations",
            &spec.request_header_operations,
            vocab,
        )?;
        let response_header_ops = self.header_ops(
            o,
            "responseHeaderOperations",
            &spec.response_header_operations,
            vocab,
        )?;
        Some(Rule {
            name: o.full_name(),
            namespace: o.namespace.clone(),
            matcher,
            actions,
            request_header_ops,
            response_header_ops,
        })
    }

    fn header_ops(
        &mut self,
        o: &Object,
        field: &str,
        specs: &[super::kinds::HeaderOperationSpec],
        vocab: &Vocabulary,
    ) -> Option<Vec<HeaderOp>> {
        let mut out = Vec::new();
        for (i, op) in specs.iter().enumerate() {
            let mut values = Vec::new();
            for (j, v) in op.values.iter().enumerate() {
                let at = format!("spec.{field}[{i}].values[{j}]");
                match Expression::compile(v, vocab) {
                    Ok(e) if e.result_type().is_textual() => values.push(e),
                    Ok(e) => {
                        self.error(
                            o,
                            &at,
                            format!("`{v}` is {}, a header needs a STRING", e.result_type()),
                        );
                        return None;
                    }
                    Err(e) => {
                        self.error(o, &at, e.to_string());
                        return None;
                    }
                }
            }
            out.push(HeaderOp {
                name: op.name.to_ascii_lowercase(),
                values,
                operation: op.operation,
            });
        }
        Some(out)
    }
}

/// The full names a reference in a rule may mean, in the order Istio tried
/// them: `x` is `x.<kind>.<ns>`; `a.b` is the legacy `a.b.<ns>` (b a kind)
/// or `a.<kind>.b` (b a namespace); three parts are already full.
pub fn resolve(reference: &str, kind: &str, namespace: &str) -> Vec<String> {
    let parts: Vec<&str> = reference.split('.').collect();
    match parts.as_slice() {
        [name] => vec![format!("{name}.{kind}.{namespace}")],
        [a, b] => vec![format!("{a}.{b}.{namespace}"), format!("{a}.{kind}.{b}")],
        [_, _, _] => vec![reference.to_string()],
        // Namespaces have no dots, so more parts cannot name anything.
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_as_istio_did() {
        assert_eq!(resolve("h", "handler", "ns"), ["h.handler.ns"]);
        assert_eq!(
            resolve("denyall.denier", "handler", "istio-system"),
            ["denyall.denier.istio-system", "denyall.handler.denier"]
        );
        assert_eq!(resolve("a.instance.b", "instance", "ns"), ["a.instance.b"]);
        assert!(resolve("a.b.c.d", "instance", "ns").is_empty());
    }
}
