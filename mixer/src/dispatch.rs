//! The dispatcher: which rules match a request, the instances their actions
//! name, and the handlers' answers combined. Matching and instance building
//! happen first, synchronously, through a [`Tracker`] that records what they
//! read; then the handlers are called concurrently, each within a deadline.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::join_all;
use tonic::Code;

use crate::adapter::{CheckResult, Handler, QuotaArgs, QuotaResult, Status};
use crate::attribute::{Attributes, Bag};
use crate::cache::CheckCache;
use crate::config::kinds::HeaderOperation;
use crate::config::store::Current;
use crate::config::{HandlerEntry, HeaderOp, Rule, Snapshot};
use crate::referenced::{Read, Tracker};
use crate::template::{Evaluated, Instance, Variety, short_name};

/// One header operation a check answer asks the proxy to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderChange {
    pub name: String,
    pub value: String,
    pub operation: HeaderOperation,
}

/// A precondition check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub result: CheckResult,
    /// What the answer depended on.
    pub referenced: Arc<[Read]>,
    pub request_headers: Vec<HeaderChange>,
    pub response_headers: Vec<HeaderChange>,
    pub cache_hit: bool,
}

/// A quota allocation's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaOutcome {
    pub result: QuotaResult,
    pub referenced: Arc<[Read]>,
}

pub struct Dispatcher {
    current: Current,
    cache: CheckCache<CheckOutcome>,
    deadline: Duration,
}

type Call = (Arc<dyn Handler>, String, Instance);

impl Dispatcher {
    /// `deadline` bounds each handler call; `cache_size` 0 turns the check
    /// cache off.
    pub fn new(current: Current, deadline: Duration, cache_size: usize) -> Dispatcher {
        Dispatcher {
            current,
            cache: CheckCache::new(cache_size),
            deadline,
        }
    }

    /// The current config: decode a request with it, then pass it back.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.get()
    }

    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Answers a precondition check of `bag` under `snapshot` (the one the
    /// caller decoded the request with, so one request sees one config).
    pub async fn check(&self, snapshot: &Snapshot, bag: &Bag) -> CheckOutcome {
        if let Some(hit) = self.cache.get(snapshot.generation, bag) {
            let mut outcome = hit.value;
            outcome.result.valid_duration = hit.valid_for;
            outcome.result.valid_use_count = hit.uses_left;
            outcome.cache_hit = true;
            return outcome;
        }
        let (calls, failure, request_headers, response_headers, referenced) = {
            let tracker = Tracker::new(bag);
            let mut request_headers = Vec::new();
            let mut response_headers = Vec::new();
            let (calls, failure) = calls(
                snapshot,
                &tracker,
                Variety::Check,
                |_| true,
                |rule| {
                    headers(&rule.request_header_ops, &tracker, &mut request_headers);
                    headers(&rule.response_header_ops, &tracker, &mut response_headers);
                },
            );
            (
                calls,
                failure,
                request_headers,
                response_headers,
                tracker.into_reads(),
            )
        };
        let referenced = self.cache.shared(snapshot.generation, referenced);
        let result = match failure {
            // An instance that cannot be built fails the check, as in Istio.
            Some(status) => CheckResult::once(status),
            None => combine(self.answers(&calls).await, &calls),
        };
        let ok = result.status.is_ok();
        let outcome = CheckOutcome {
            result,
            referenced,
            request_headers: if ok { request_headers } else { Vec::new() },
            response_headers: if ok { response_headers } else { Vec::new() },
            cache_hit: false,
        };
        self.cache.put(
            snapshot.generation,
            bag,
            &outcome.referenced,
            outcome.clone(),
            outcome.result.valid_duration,
            outcome.result.valid_use_count,
        );
        outcome
    }

    /// The handlers' answers to `calls`, in order. Most in-process
    /// adapters answer without waiting: each call is polled once first, and
    /// only those still waiting get a deadline (a timer each) and are
    /// awaited together.
    async fn answers(&self, calls: &[Call]) -> Vec<CheckResult> {
        let mut answers = Vec::with_capacity(calls.len());
        let mut waiting = Vec::new();
        for (i, (handler, name, instance)) in calls.iter().enumerate() {
            let mut call = handler.check(instance);
            match (&mut call).now_or_never() {
                Some(answer) => answers.push(answer),
                None => {
                    // Replaced below, once the call answers or times out.
                    answers.push(CheckResult::ok_default());
                    waiting.push((i, name, call));
                }
            }
        }
        let late = join_all(waiting.into_iter().map(|(i, name, call)| async move {
            let answer = match tokio::time::timeout(self.deadline, call).await {
                Ok(r) => r,
                Err(_) => CheckResult::once(Status::new(
                    Code::DeadlineExceeded,
                    format!("handler {name} did not answer within {:?}", self.deadline),
                )),
            };
            (i, answer)
        }))
        .await;
        for (i, answer) in late {
            answers[i] = answer;
        }
        answers
    }

    /// Allocates `args.amount` of the quota named `name` (an instance's short
    /// name, compared without case as Istio's dispatcher did). With no rule
    /// naming it, the whole amount is granted.
    pub async fn quota(
        &self,
        snapshot: &Snapshot,
        bag: &Bag,
        name: &str,
        args: &QuotaArgs,
    ) -> QuotaOutcome {
        let (calls, failure, referenced) = {
            let tracker = Tracker::new(bag);
            let (calls, failure) = calls(
                snapshot,
                &tracker,
                Variety::Quota,
                |instance| short_name(instance).eq_ignore_ascii_case(name),
                |_| {},
            );
            (calls, failure, tracker.into_reads())
        };
        if let Some(status) = failure {
            return QuotaOutcome {
                result: QuotaResult::denied(status),
                referenced,
            };
        }
        if calls.is_empty() {
            return QuotaOutcome {
                result: QuotaResult {
                    status: Status::OK,
                    granted: args.amount,
                    valid_duration: Duration::from_secs(60),
                },
                referenced,
            };
        }
        let answers = join_all(calls.iter().map(|(handler, hname, instance)| async move {
            match tokio::time::timeout(self.deadline, handler.quota(instance, args)).await {
                Ok(r) => r,
                Err(_) => QuotaResult::denied(Status::new(
                    Code::DeadlineExceeded,
                    format!("handler {hname} did not answer within {:?}", self.deadline),
                )),
            }
        }))
        .await;
        // The smallest grant wins; a failed allocation grants nothing.
        let mut result = QuotaResult {
            status: Status::OK,
            granted: args.amount,
            valid_duration: Duration::MAX,
        };
        for a in answers {
            if !a.status.is_ok() && result.status.is_ok() {
                result.status = a.status.clone();
            }
            result.granted = result.granted.min(a.granted);
            result.valid_duration = result.valid_duration.min(a.valid_duration);
        }
        if !result.status.is_ok() || (result.granted < args.amount && !args.best_effort) {
            result.granted = 0;
        }
        if result.granted == 0 && result.status.is_ok() {
            result.status = Status::new(
                Code::ResourceExhausted,
                format!("quota {name} is exhausted"),
            );
        }
        QuotaOutcome { result, referenced }
    }
}

/// What one batch of reports came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReportOutcome {
    /// Instances built and handed to handlers.
    pub instances: usize,
    /// Instances that could not be built (a missing attribute with no `|`
    /// default), and the first such error.
    pub build_errors: usize,
    pub first_build_error: Option<String>,
    /// Handlers that failed or timed out on the batch, with why.
    pub handler_errors: Vec<(String, String)>,
}

impl Dispatcher {
    /// Runs the attribute-generating rules (Istio's `kubernetesenv`) over
    /// `bag` and adds the attributes their instances bind, as Istio's
    /// preprocessing did before every check and report. A handler that
    /// cannot answer adds nothing.
    pub fn generate(&self, snapshot: &Snapshot, bag: &mut Bag) {
        if !snapshot.generates {
            return;
        }
        let mut produced = Vec::new();
        for rule in matching(snapshot, bag, Variety::AttributeGeneration) {
            for action in &rule.actions {
                for builder in &action.instances {
                    if builder.template.variety() != Variety::AttributeGeneration {
                        continue;
                    }
                    let handler = &action.handler.handler;
                    match builder.generate(bag, handler.generation(), |i| handler.generate(i)) {
                        Ok(bound) => produced.push(bound),
                        Err(e) => {
                            tracing::debug!(handler = %action.handler.name, "no attributes generated: {e}")
                        }
                    }
                }
            }
        }
        for (attr, value) in produced.iter().flat_map(|bound| bound.iter()) {
            bag.set_attr(attr, value.clone());
        }
    }

    /// Hands every report rule's instances for `bags` to their handlers:
    /// one call per handler for the whole batch, each within the deadline.
    pub async fn report(&self, snapshot: &Snapshot, bags: &[Bag]) -> ReportOutcome {
        let mut outcome = ReportOutcome::default();
        let mut batches: Vec<(&HandlerEntry, Vec<Instance>)> = Vec::new();
        for bag in bags {
            let mut evaluated = Evaluated::default();
            for rule in matching(snapshot, bag, Variety::Report) {
                for action in &rule.actions {
                    for builder in &action.instances {
                        if builder.template.variety() != Variety::Report {
                            continue;
                        }
                        let instance = match builder.build_sharing(bag, &mut evaluated) {
                            Ok(i) => i,
                            Err(e) => {
                                outcome.build_errors += 1;
                                outcome.first_build_error.get_or_insert(e);
                                continue;
                            }
                        };
                        outcome.instances += 1;
                        let entry = action.handler.as_ref();
                        match batches.iter_mut().find(|(h, _)| std::ptr::eq(*h, entry)) {
                            Some((_, batch)) => batch.push(instance),
                            None => batches.push((entry, vec![instance])),
                        }
                    }
                }
            }
        }
        let results = join_all(batches.iter().map(|(entry, batch)| async move {
            match tokio::time::timeout(self.deadline, entry.handler.report(batch)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some((entry.name.clone(), e)),
                Err(_) => Some((
                    entry.name.clone(),
                    format!("did not finish within {:?}", self.deadline),
                )),
            }
        }))
        .await;
        outcome.handler_errors = results.into_iter().flatten().collect();
        outcome
    }
}

/// The handler calls of the rules that match, for their instances of
/// `variety` that `wanted` keeps; `each` sees every matching rule, in the
/// same pass. The first instance that cannot be built fails the request.
fn calls(
    snapshot: &Snapshot,
    tracker: &Tracker,
    variety: Variety,
    wanted: impl Fn(&str) -> bool,
    mut each: impl FnMut(&Rule),
) -> (Vec<Call>, Option<Status>) {
    let mut calls = Vec::new();
    for rule in matching(snapshot, tracker, variety) {
        each(rule);
        for action in &rule.actions {
            for builder in &action.instances {
                if builder.template.variety() != variety || !wanted(&builder.name) {
                    continue;
                }
                match builder.build(tracker) {
                    Ok(instance) => calls.push((
                        action.handler.handler.clone(),
                        action.handler.name.clone(),
                        instance,
                    )),
                    Err(e) => return (calls, Some(Status::new(Code::Internal, e))),
                }
            }
        }
    }
    (calls, None)
}

/// Rules that apply to the request: those of the default config namespace
/// apply everywhere, the others only to destinations in their namespace.
fn matching<'s>(
    snapshot: &'s Snapshot,
    attrs: &dyn Attributes,
    variety: Variety,
) -> impl Iterator<Item = &'s Rule> {
    let mut destination_ns: Option<Option<String>> = None;
    let mut out = Vec::new();
    for rule in &snapshot.rules {
        if !rule.has(variety)
            && rule.request_header_ops.is_empty()
            && rule.response_header_ops.is_empty()
        {
            continue;
        }
        if rule.namespace != snapshot.default_namespace {
            let ns = destination_ns.get_or_insert_with(|| {
                attrs
                    .get("destination.service.namespace")
                    .or_else(|| attrs.get("destination.namespace"))
                    .and_then(|v| v.as_str().map(str::to_string))
            });
            if ns.as_deref() != Some(rule.namespace.as_str()) {
                continue;
            }
        }
        let matched = match &rule.matcher {
            None => true,
            // A match that cannot be evaluated (a missing attribute without a
            // `|` default) does not match, as in Istio.
            Some(m) => m.eval_bool(attrs).unwrap_or(false),
        };
        if matched {
            out.push(rule.as_ref());
        }
    }
    out.into_iter()
}

fn headers(ops: &[HeaderOp], attrs: &dyn Attributes, out: &mut Vec<HeaderChange>) {
    for op in ops {
        if op.operation == HeaderOperation::Remove {
            out.push(HeaderChange {
                name: op.name.clone(),
                value: String::new(),
                operation: op.operation,
            });
            continue;
        }
        for v in &op.values {
            // A value that cannot be evaluated, or is empty, is skipped.
            if let Ok(value) = v.eval(attrs) {
                let value = value.to_string();
                if !value.is_empty() {
                    out.push(HeaderChange {
                        name: op.name.clone(),
                        value,
                        operation: op.operation,
                    });
                }
            }
        }
    }
}

/// The first denial in rule order decides; the shortest validity wins.
fn combine(answers: Vec<CheckResult>, calls: &[Call]) -> CheckResult {
    if answers.is_empty() {
        return CheckResult::ok_default();
    }
    let mut out = CheckResult {
        status: Status::OK,
        valid_duration: Duration::MAX,
        valid_use_count: i32::MAX,
    };
    for (answer, (_, name, _)) in answers.into_iter().zip(calls) {
        if !answer.status.is_ok() && out.status.is_ok() {
            // Name the handler, as Istio's denials did.
            let message = if answer.status.message.is_empty() {
                name.clone()
            } else {
                format!("{name}:{}", answer.status.message)
            };
            out.status = Status::new(answer.status.code, message);
        }
        out.valid_duration = out.valid_duration.min(answer.valid_duration);
        out.valid_use_count = out.valid_use_count.min(answer.valid_use_count);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use serde::Deserialize;

    use super::*;
    use crate::adapter::{self, Adapter, Handler, ParamsError, Registry};
    use crate::attribute::Value;
    use crate::config::parse_file;
    use crate::template::Template;

    /// Answers every check with `code`, after `delay_ms`; counts its builds.
    struct Fixed(Arc<AtomicUsize>);

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct FixedParams {
        #[serde(default)]
        code: i32,
        #[serde(default)]
        delay_ms: u64,
        #[serde(default = "ten")]
        valid_seconds: u64,
    }

    fn ten() -> u64 {
        10
    }

    struct FixedHandler(FixedParams);

    #[async_trait]
    impl Handler for FixedHandler {
        async fn check(&self, instance: &Instance) -> CheckResult {
            tokio::time::sleep(Duration::from_millis(self.0.delay_ms)).await;
            CheckResult {
                status: Status::new(Code::from_i32(self.0.code), instance.short_name()),
                valid_duration: Duration::from_secs(self.0.valid_seconds),
                valid_use_count: 100,
            }
        }
    }

    impl Adapter for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn templates(&self) -> &'static [Template] {
            &[Template::CheckNothing, Template::ListEntry]
        }
        fn build(&self, params: &serde_json::Value) -> Result<Arc<dyn Handler>, ParamsError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(Arc::new(FixedHandler(adapter::params(params)?)))
        }
    }

    fn snapshot(yaml: &str, previous: &Snapshot, registry: &Registry) -> Snapshot {
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        for r in parse_file("test.yaml", yaml, "istio-system") {
            match r {
                Ok(o) => objects.push(o),
                Err(e) => errors.push(e),
            }
        }
        Snapshot::build(&objects, errors, previous, registry)
    }

    fn dispatcher(yaml: &str) -> (Dispatcher, Snapshot) {
        let registry = Registry::new(vec![Arc::new(Fixed(Arc::default()))]);
        let s = snapshot(yaml, &Snapshot::empty("istio-system"), &registry);
        let errors = s.errors.clone();
        let current = Current::new(s);
        let shown = Snapshot {
            errors,
            ..Snapshot::empty("istio-system")
        };
        (
            Dispatcher::new(current, Duration::from_millis(200), 100),
            shown,
        )
    }

    fn bag(pairs: &[(&'static str, &str)]) -> Bag {
        let mut bag = Bag::new();
        for (k, v) in pairs {
            bag.set(*k, Value::string(v));
        }
        bag
    }

    const LEGACY: &str = "apiVersion: config.istio.io/v1alpha2\nkind: fixed\nmetadata: {name: deny}\nspec: {code: 7}\n---\napiVersion: config.istio.io/v1alpha2\nkind: checknothing\nmetadata: {name: req}\nspec: {}\n---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r}\nspec:\n  match: source.name == \"bad\"\n  actions: [{handler: deny.fixed, instances: [req.checknothing]}]\n";

    #[tokio::test]
    async fn legacy_kinds_and_references_work_as_in_istio_1_0() {
        let (d, shown) = dispatcher(LEGACY);
        assert!(shown.errors.is_empty(), "{:?}", shown.errors);
        let denied = d
            .check(&d.snapshot(), &bag(&[("source.name", "bad")]))
            .await;
        assert_eq!(denied.result.status.code, Code::PermissionDenied);
        assert_eq!(denied.result.status.message, "deny.fixed.istio-system:req");
        let ok = d
            .check(&d.snapshot(), &bag(&[("source.name", "good")]))
            .await;
        assert_eq!(ok.result, CheckResult::ok_default());
        assert_eq!(*ok.referenced, [Read::new("source.name", None)]);
    }

    #[test]
    fn decoding_keeps_only_what_the_config_reads() {
        // `off` matches nothing: what only its instance reads is not kept.
        let yaml = "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: h}\nspec: {compiledAdapter: fixed}\n---\napiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: list}\nspec: {compiledTemplate: listentry, params: {value: 'source.user | request.headers[\"x-user\"]'}}\n---\napiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: agent}\nspec: {compiledTemplate: listentry, params: {value: request.useragent}}\n---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: on}\nspec:\n  match: request.path == \"/x\"\n  actions: [{handler: h, instances: [list]}]\n---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: off}\nspec:\n  match: \"false\"\n  actions: [{handler: h, instances: [agent]}]\n";
        let (d, shown) = dispatcher(yaml);
        assert!(shown.errors.is_empty(), "{:?}", shown.errors);
        let vocab = &d.snapshot().vocabulary;
        let read = |name| vocab.declaration(name).map(|d| d.read);
        for name in [
            "request.path",
            "source.user",
            "request.headers",
            "destination.service.namespace",
        ] {
            assert_eq!(read(name), Some(true), "{name}");
        }
        for name in ["request.useragent", "request.id", "source.ip"] {
            assert_eq!(read(name), Some(false), "{name}");
        }
        // The headers are read at one constant key only: decoding keeps it.
        let keys = vocab.keys(&vocab.declaration("request.headers").unwrap());
        assert_eq!(keys.map(<[_]>::to_vec), Some(vec!["x-user".into()]));
    }

    #[tokio::test]
    async fn shortest_validity_wins_and_slow_handlers_time_out() {
        let yaml = "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: a}\nspec: {compiledAdapter: fixed, params: {validSeconds: 30}}\n---\napiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: b}\nspec: {compiledAdapter: fixed, params: {validSeconds: 5}}\n---\napiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: slow}\nspec: {compiledAdapter: fixed, params: {delayMs: 5000}}\n---\napiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: i}\nspec: {compiledTemplate: checknothing}\n---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: both}\nspec:\n  actions: [{handler: a, instances: [i]}, {handler: b, instances: [i]}]\n---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: slow, namespace: shop}\nspec:\n  actions: [{handler: slow.handler.istio-system, instances: [i.instance.istio-system]}]\n";
        let (d, shown) = dispatcher(yaml);
        assert!(shown.errors.is_empty(), "{:?}", shown.errors);
        let r = d.check(&d.snapshot(), &bag(&[])).await.result;
        assert_eq!(
            (r.status.code, r.valid_duration),
            (Code::Ok, Duration::from_secs(5))
        );
        // The `shop` rule applies only to destinations in `shop`.
        let r = d
            .check(
                &d.snapshot(),
                &bag(&[("destination.service.namespace", "shop")]),
            )
            .await
            .result;
        assert_eq!(r.status.code, Code::DeadlineExceeded);
        assert!(
            r.status.message.contains("slow.handler.istio-system"),
            "{}",
            r.status.message
        );
    }

    #[tokio::test]
    async fn bad_objects_are_rejected_alone_and_handlers_survive_edits() {
        let builds = Arc::new(AtomicUsize::new(0));
        let registry = Registry::new(vec![Arc::new(Fixed(builds.clone()))]);
        let bad = "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: typo}\nspec:\n  match: source.nmae == \"x\"\n  actions: [{handler: deny.fixed, instances: [req.checknothing]}]\n---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: dangling}\nspec:\n  actions: [{handler: nothere, instances: [req.checknothing]}]\n---\napiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: bad}\nspec: {compiledAdapter: fixed, params: {nope: 1}}\n";
        let first = snapshot(
            &format!("{LEGACY}---\n{bad}"),
            &Snapshot::empty("istio-system"),
            &registry,
        );
        let errors: Vec<String> = first.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("handler bad.handler.istio-system: spec.params.nope"),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("rule typo.rule.istio-system: spec.match")
                    && e.contains("source.nmae")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("rule dangling.rule.istio-system: spec.actions[0].handler")),
            "{errors:?}"
        );
        assert_eq!(first.rules.len(), 1);
        // `deny`, and `bad`'s attempt.
        assert_eq!(builds.load(Ordering::Relaxed), 2);
        // An unrelated edit keeps the built handler (and its state).
        let second = snapshot(
            &format!("{LEGACY}---\n{}", rule_only("other")),
            &first,
            &registry,
        );
        assert_eq!(builds.load(Ordering::Relaxed), 2);
        assert_eq!(second.generation, first.generation + 1);
        assert_eq!(second.rules.len(), 2);
    }

    #[tokio::test]
    async fn a_bad_edit_keeps_the_last_good_version_and_duplicates_are_named() {
        let registry = Registry::new(vec![Arc::new(Fixed(Arc::default()))]);
        let first = snapshot(LEGACY, &Snapshot::empty("istio-system"), &registry);
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        // The deny handler gets a typo and the rule a bad match: both keep
        // their last good versions, so the deny still holds.
        let broken = LEGACY
            .replace("spec: {code: 7}", "spec: {code: 7, typo: 1}")
            .replace("source.name == \"bad\"", "source.name ==");
        let second = snapshot(&broken, &first, &registry);
        let errors: Vec<String> = second.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .all(|e| e.ends_with("the last good version stays in force")),
            "{errors:?}"
        );
        let d = Dispatcher::new(Current::new(second), Duration::from_secs(1), 0);
        let r = d
            .check(&d.snapshot(), &bag(&[("source.name", "bad")]))
            .await;
        assert_eq!(r.result.status.code, Code::PermissionDenied);

        let twice = format!("{LEGACY}---\n{}", rule_only("r"));
        let third = snapshot(&twice, &Snapshot::empty("istio-system"), &registry);
        let errors: Vec<String> = third.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            errors[0].contains("rule r.rule.istio-system: metadata.name: defined more than once"),
            "{errors:?}"
        );
        assert_eq!(third.rules.len(), 1);
    }

    #[tokio::test]
    async fn report_only_rules_for_other_binaries_are_skipped_quietly() {
        let yaml = "apiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: requestcount}\nspec:\n  compiledTemplate: metric\n  params: {value: \"1\"}\n---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: promhttp}\nspec:\n  actions: [{handler: prometheus, instances: [requestcount]}]\n";
        let (_, shown) = dispatcher(yaml);
        assert!(shown.errors.is_empty(), "{:?}", shown.errors);
    }

    fn rule_only(name: &str) -> String {
        format!(
            "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {{name: {name}}}\nspec:\n  actions: [{{handler: deny.fixed, instances: [req.checknothing]}}]\n  requestHeaderOperations: [{{name: X-Who, values: ['source.name | \"nobody\"']}}]\n"
        )
    }

    #[tokio::test]
    async fn header_operations_and_the_cache() {
        let ok_handler = "apiVersion: config.istio.io/v1alpha2\nkind: fixed\nmetadata: {name: deny}\nspec: {}\n---\napiVersion: config.istio.io/v1alpha2\nkind: checknothing\nmetadata: {name: req}\nspec: {}\n---\n";
        let (d, _) = dispatcher(&format!("{ok_handler}{}", rule_only("h")));
        let first = d
            .check(
                &d.snapshot(),
                &bag(&[("source.name", "jason"), ("request.id", "1")]),
            )
            .await;
        assert_eq!(
            first.request_headers,
            [HeaderChange {
                name: "x-who".into(),
                value: "jason".into(),
                operation: HeaderOperation::Replace
            }]
        );
        assert!(!first.cache_hit);
        let again = d
            .check(
                &d.snapshot(),
                &bag(&[("source.name", "jason"), ("request.id", "2")]),
            )
            .await;
        assert!(
            again.cache_hit,
            "request.id was not read, so it is not in the key"
        );
        let other = d
            .check(&d.snapshot(), &bag(&[("source.name", "ann")]))
            .await;
        assert!(!other.cache_hit);
        assert_eq!(other.request_headers[0].value, "ann");
    }

    /// Keeps every report it is handed.
    #[derive(Clone, Default)]
    struct Collect(Arc<std::sync::Mutex<Vec<Instance>>>);

    #[async_trait]
    impl Handler for Collect {
        async fn report(&self, instances: &[Instance]) -> Result<(), String> {
            self.0.lock().unwrap().extend_from_slice(instances);
            Ok(())
        }
    }

    impl Adapter for Collect {
        fn name(&self) -> &'static str {
            "collect"
        }
        fn templates(&self) -> &'static [Template] {
            &[Template::Metric, Template::LogEntry]
        }
        fn build(&self, _: &serde_json::Value) -> Result<Arc<dyn Handler>, ParamsError> {
            Ok(Arc::new(self.clone()))
        }
    }

    const TELEMETRY: &str = r#"apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: collect}
spec: {compiledAdapter: collect}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: kubernetesenv}
spec: {compiledAdapter: kubernetesenv, params: {}}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyall}
spec: {compiledAdapter: denier}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: attributes}
spec:
  compiledTemplate: kubernetes
  params:
    source_uid: source.uid | ""
    source_ip: source.ip | ip("0.0.0.0")
    destination_uid: destination.uid | ""
    destination_ip: destination.ip | ip("0.0.0.0")
  attributeBindings:
    source.workload.name: $out.source_workload_name | "unknown"
    source.labels: $out.source_labels | emptyStringMap()
    destination.workload.name: $out.destination_workload_name | "unknown"
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: kubeattrgenrulerule}
spec:
  actions: [{handler: kubernetesenv, instances: [attributes]}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount}
spec:
  compiledTemplate: metric
  params:
    value: "1"
    dimensions:
      source_workload: source.workload.name
      source_app: source.labels["app"] | "unknown"
      destination_workload: destination.workload.name
      response_code: response.code
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: promhttp}
spec:
  match: context.protocol == "http"
  actions: [{handler: collect, instances: [requestcount]}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: denyrequest}
spec: {compiledTemplate: checknothing}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: deny}
spec:
  actions: [{handler: denyall, instances: [denyrequest]}]
"#;

    #[tokio::test]
    async fn generated_attributes_follow_the_pods() {
        use adapter::kubernetesenv::{KubernetesEnv, PodIndex, Pods, dir};
        let pods = PodIndex::default();
        pods.set(dir::tests_pods());
        let registry = Registry::new(vec![
            Arc::new(Collect::default()),
            Arc::new(KubernetesEnv::new(pods.clone())),
        ]);
        let s = snapshot(TELEMETRY, &Snapshot::empty("istio-system"), &registry);
        let d = Dispatcher::new(Current::new(s), Duration::from_millis(200), 0);
        let snapshot = d.snapshot();
        let workload = |source: &str| {
            let mut bag = bag(&[("context.protocol", "http")]);
            bag.set("source.ip", Value::IpAddress(source.parse().unwrap()));
            d.generate(&snapshot, &mut bag);
            bag.get("source.workload.name").map(Value::to_string)
        };
        // The second time from memory, and the same.
        assert_eq!(workload("10.1.0.1").as_deref(), Some("productpage-v1"));
        assert_eq!(workload("10.1.0.1").as_deref(), Some("productpage-v1"));
        assert_eq!(workload("10.1.0.2").as_deref(), Some("reviews-v1"));
        pods.set(Pods::new([]));
        assert_eq!(workload("10.1.0.1").as_deref(), Some("unknown"));
        pods.set(dir::tests_pods());
        assert_eq!(workload("10.1.0.1").as_deref(), Some("productpage-v1"));
    }

    #[tokio::test]
    async fn reports_carry_generated_workload_attributes_to_handlers() {
        let pods = adapter::kubernetesenv::PodIndex::default();
        pods.set(adapter::kubernetesenv::dir::tests_pods());
        let collect = Collect::default();
        let registry = Registry::new(vec![
            Arc::new(collect.clone()),
            Arc::new(adapter::kubernetesenv::KubernetesEnv::new(pods)),
        ]);
        let s = snapshot(TELEMETRY, &Snapshot::empty("istio-system"), &registry);
        // Policy's denier rule is the other Mixer's: no error here.
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert!(s.generates);
        let d = Dispatcher::new(Current::new(s), Duration::from_millis(200), 0);
        let snapshot = d.snapshot();
        let mut bags = Vec::new();
        for (source, code) in [("10.1.0.1", 200), ("10.9.9.9", 503)] {
            let mut bag = bag(&[("context.protocol", "http")]);
            bag.set("source.ip", Value::IpAddress(source.parse().unwrap()));
            bag.set(
                "destination.ip",
                Value::IpAddress("10.1.0.2".parse().unwrap()),
            );
            bag.set("response.code", Value::Int64(code));
            d.generate(&snapshot, &mut bag);
            bags.push(bag);
        }
        let mut tcp = bag(&[("context.protocol", "tcp")]);
        d.generate(&snapshot, &mut tcp);
        bags.push(tcp);
        // Nothing but the protocol: the instance cannot be built, and is counted.
        bags.push(bag(&[("context.protocol", "http")]));

        let outcome = d.report(&snapshot, &bags).await;
        assert_eq!(
            (outcome.instances, outcome.build_errors),
            (2, 1),
            "{outcome:?}"
        );
        let error = outcome.first_build_error.unwrap();
        assert!(
            error.contains("requestcount.instance.istio-system: dimensions.")
                && error.contains("is missing"),
            "{error}"
        );
        assert!(outcome.handler_errors.is_empty());
        let got = collect.0.lock().unwrap();
        let dims = |i: usize| {
            let m = got[i].map("dimensions").unwrap();
            [
                "source_workload",
                "source_app",
                "destination_workload",
                "response_code",
            ]
            .map(|k| m.get(k).unwrap().to_string())
        };
        assert_eq!(
            dims(0),
            ["productpage-v1", "productpage", "reviews-v1", "200"]
        );
        // An address no Pod has: the bindings' defaults.
        assert_eq!(dims(1), ["unknown", "unknown", "reviews-v1", "503"]);
    }
}
