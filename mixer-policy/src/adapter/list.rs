//! `listchecker` (Istio's list adapter): is a listentry's value on a list of
//! strings, case-insensitive strings, IP networks or regexes? A whitelist
//! refuses what is absent (NOT_FOUND), a blacklist what is present
//! (PERMISSION_DENIED). Entries come from `overrides` and, when
//! `providerUrl` is set, from that URL (one entry per line), refreshed every
//! `refreshInterval` and kept for `ttl` when the provider is unreachable.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use api::duration::IstioDuration;
use async_trait::async_trait;
use ipnet::IpNet;
use mixer::adapter::{self, Adapter, CheckResult, Handler, ParamsError, Status};
use mixer::attribute::Value;
use mixer::template::{Instance, Template};
use regex::RegexSet;
use serde::Deserialize;
use tokio::time::Instant;
use tonic::Code;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum EntryType {
    #[default]
    Strings,
    CaseInsensitiveStrings,
    IpAddresses,
    Regex,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default, alias = "provider_url")]
    provider_url: String,
    #[serde(default, alias = "refresh_interval")]
    refresh_interval: Option<IstioDuration>,
    #[serde(default)]
    ttl: Option<IstioDuration>,
    #[serde(default, alias = "caching_interval")]
    caching_interval: Option<IstioDuration>,
    #[serde(default, alias = "caching_use_count")]
    caching_use_count: Option<i32>,
    #[serde(default)]
    overrides: Vec<String>,
    #[serde(default, alias = "entry_type")]
    entry_type: EntryType,
    #[serde(default)]
    blacklist: bool,
}

/// One compiled list.
#[derive(Default)]
struct Entries {
    /// Hashed with foldhash: the entries are the operator's, not a
    /// request's, and every Check looks one up.
    strings: HashSet<String, foldhash::fast::RandomState>,
    nets: Vec<IpNet>,
    regexes: Option<RegexSet>,
}

impl Entries {
    fn compile(kind: EntryType, items: &[String]) -> Result<Entries, (usize, String)> {
        let mut e = Entries::default();
        match kind {
            EntryType::Strings => e.strings = items.iter().cloned().collect(),
            EntryType::CaseInsensitiveStrings => {
                e.strings = items.iter().map(|s| s.to_lowercase()).collect()
            }
            EntryType::IpAddresses => {
                for (i, item) in items.iter().enumerate() {
                    let net = match item.parse::<IpNet>() {
                        Ok(n) => n,
                        Err(_) => item
                            .parse::<IpAddr>()
                            .map(IpNet::from)
                            .map_err(|_| (i, format!("{item:?} is not an IP address or CIDR")))?,
                    };
                    e.nets.push(net);
                }
            }
            EntryType::Regex => {
                for (i, item) in items.iter().enumerate() {
                    regex::Regex::new(item).map_err(|err| (i, format!("{item:?}: {err}")))?;
                }
                e.regexes = Some(RegexSet::new(items).map_err(|err| (0, err.to_string()))?);
            }
        }
        Ok(e)
    }
}

struct State {
    overrides: Entries,
    provided: Option<(Entries, Instant)>,
}

struct ListHandler {
    kind: EntryType,
    /// Whether entries come from a provider as well as `overrides`.
    has_provider: bool,
    blacklist: bool,
    ttl: Duration,
    caching_interval: Duration,
    caching_use_count: i32,
    state: RwLock<State>,
}

pub struct ListChecker;

impl Adapter for ListChecker {
    fn name(&self) -> &'static str {
        "listchecker"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::ListEntry]
    }

    fn build(&self, params: &serde_json::Value) -> Result<Arc<dyn Handler>, ParamsError> {
        let p: Params = adapter::params(params)?;
        let refresh = p
            .refresh_interval
            .map_or(Duration::from_secs(60), |d| d.as_duration());
        let ttl = p.ttl.map_or(Duration::from_secs(300), |d| d.as_duration());
        if refresh < Duration::from_secs(1) {
            return Err(ParamsError::new("refreshInterval", "must be at least 1s"));
        }
        if ttl < refresh {
            return Err(ParamsError::new("ttl", "must be at least refreshInterval"));
        }
        let uses = p.caching_use_count.unwrap_or(10_000);
        if uses < 0 {
            return Err(ParamsError::new("cachingUseCount", "must not be negative"));
        }
        let overrides = Entries::compile(p.entry_type, &p.overrides)
            .map_err(|(i, m)| ParamsError::new(format!("overrides[{i}]"), m))?;
        let url = if p.provider_url.is_empty() {
            None
        } else {
            let url = reqwest::Url::parse(&p.provider_url).map_err(|e| {
                ParamsError::new("providerUrl", format!("{:?}: {e}", p.provider_url))
            })?;
            if !url.has_host() {
                return Err(ParamsError::new("providerUrl", "needs a scheme and a host"));
            }
            Some(url)
        };
        let handler = Arc::new(ListHandler {
            kind: p.entry_type,
            has_provider: url.is_some(),
            blacklist: p.blacklist,
            ttl,
            caching_interval: p
                .caching_interval
                .map_or(Duration::from_secs(300), |d| d.as_duration()),
            caching_use_count: uses,
            state: RwLock::new(State {
                overrides,
                provided: None,
            }),
        });
        if let Some(url) = url {
            tokio::spawn(refresh_loop(Arc::downgrade(&handler), url, refresh));
        }
        Ok(handler)
    }
}

/// Fetches the list until the handler is dropped (its config changed).
async fn refresh_loop(handler: Weak<ListHandler>, url: reqwest::Url, every: Duration) {
    let client = reqwest::Client::builder()
        .timeout(every.min(Duration::from_secs(10)))
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(h) = handler.upgrade() else { return };
        match fetch(&client, &url).await {
            Ok(items) => match Entries::compile(h.kind, &items) {
                Ok(entries) => {
                    tracing::debug!(%url, entries = items.len(), "list refreshed");
                    h.state.write().unwrap_or_else(|p| p.into_inner()).provided =
                        Some((entries, Instant::now()));
                }
                Err((i, m)) => {
                    tracing::warn!(%url, "list line {}: {m}; keeping the last list", i + 1)
                }
            },
            Err(e) => tracing::warn!(%url, "list provider unreachable: {e}; keeping the last list"),
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &reqwest::Url) -> Result<Vec<String>, String> {
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok(body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

impl ListHandler {
    fn contains(&self, entries: &Entries, value: &Value) -> Result<bool, String> {
        Ok(match self.kind {
            EntryType::Strings => match value.as_str() {
                Some(text) => entries.strings.contains(text),
                None => entries.strings.contains(&value.to_string()),
            },
            EntryType::CaseInsensitiveStrings => {
                entries.strings.contains(&value.to_string().to_lowercase())
            }
            EntryType::IpAddresses => {
                let ip: IpAddr = match value {
                    Value::IpAddress(ip) => *ip,
                    other => other
                        .to_string()
                        .parse()
                        .map_err(|_| format!("{other} is not an IP address"))?,
                };
                // Dual-stack listeners report IPv4 peers as ::ffff:a.b.c.d.
                let ip = ip.to_canonical();
                entries.nets.iter().any(|n| n.contains(&ip))
            }
            EntryType::Regex => entries
                .regexes
                .as_ref()
                .is_some_and(|r| r.is_match(&value.to_string())),
        })
    }
}

#[async_trait]
impl Handler for ListHandler {
    async fn check(&self, instance: &Instance) -> CheckResult {
        let Some(value) = instance.value("value") else {
            return CheckResult::once(Status::new(
                Code::InvalidArgument,
                format!("instance {} has no value", instance.name),
            ));
        };
        let (found, complete) = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            let provided = state
                .provided
                .as_ref()
                .filter(|(_, at)| at.elapsed() <= self.ttl)
                .map(|(e, _)| e);
            let mut found = self.contains(&state.overrides, value);
            if let (Ok(false), Some(p)) = (&found, provided) {
                found = self.contains(p, value);
            }
            (found, !self.has_provider || provided.is_some())
        };
        let status = match found {
            Err(e) => return CheckResult::once(Status::new(Code::InvalidArgument, e)),
            Ok(true) if self.blacklist => {
                Status::new(Code::PermissionDenied, format!("{value} is blacklisted"))
            }
            Ok(false) if !self.blacklist => {
                Status::new(Code::NotFound, format!("{value} is not whitelisted"))
            }
            Ok(_) => Status::OK,
        };
        if !complete {
            // Before the first fetch, or past the ttl: answer, but let no
            // one cache an answer the list may soon contradict.
            return CheckResult::once(status);
        }
        CheckResult {
            status,
            valid_duration: self.caching_interval,
            valid_use_count: self.caching_use_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer::template::FieldValue;
    use serde_json::json;

    fn entry(v: Value) -> Instance {
        Instance {
            name: "sourceip.instance.istio-system".into(),
            template: Template::ListEntry,
            fields: vec![("value", FieldValue::Value(v))],
        }
    }

    async fn code(params: serde_json::Value, v: Value) -> Code {
        ListChecker
            .build(&params)
            .unwrap()
            .check(&entry(v))
            .await
            .status
            .code
    }

    #[tokio::test]
    async fn whitelist_and_blacklist_of_strings() {
        let list = json!({"overrides": ["v1", "v2"]});
        assert_eq!(code(list.clone(), Value::string("v1")).await, Code::Ok);
        assert_eq!(code(list, Value::string("V1")).await, Code::NotFound);
        let list = json!({"overrides": ["v1"], "entryType": "CASE_INSENSITIVE_STRINGS", "blacklist": true});
        assert_eq!(
            code(list.clone(), Value::string("V1")).await,
            Code::PermissionDenied
        );
        assert_eq!(code(list, Value::string("v3")).await, Code::Ok);
    }

    #[tokio::test]
    async fn ip_networks() {
        let list = json!({"overrides": ["10.0.0.0/8", "192.168.1.7"], "entryType": "IP_ADDRESSES"});
        let ip = |s: &str| Value::IpAddress(s.parse().unwrap());
        assert_eq!(code(list.clone(), ip("10.2.3.4")).await, Code::Ok);
        assert_eq!(code(list.clone(), ip("192.168.1.7")).await, Code::Ok);
        assert_eq!(code(list.clone(), ip("192.168.1.8")).await, Code::NotFound);
        assert_eq!(
            code(list, Value::string("nope")).await,
            Code::InvalidArgument
        );
    }

    /// Polls until the handler answers `want` for `v`, for up to 10 s.
    async fn until(h: &Arc<dyn Handler>, v: &str, want: Code) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if h.check(&entry(Value::string(v))).await.status.code == want {
                return;
            }
            assert!(Instant::now() < deadline, "{v} never answered {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A real HTTP provider: its list is fetched, refreshed, and kept when it
    /// goes away.
    #[tokio::test]
    async fn provider_url_is_fetched_refreshed_and_kept_when_down() {
        let body = Arc::new(std::sync::Mutex::new(
            "# callers\nproductpage\n".to_string(),
        ));
        let served = body.clone();
        let app = axum::Router::new().route(
            "/list",
            axum::routing::get(move || {
                let served = served.clone();
                async move { served.lock().unwrap().clone() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn({
            let stop = stop.clone();
            async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
        });
        let h = ListChecker
            .build(&json!({
                "providerUrl": format!("http://{addr}/list"),
                "refreshInterval": "1s",
                "ttl": "60s",
                "overrides": ["reviews"],
            }))
            .unwrap();
        until(&h, "productpage", Code::Ok).await;
        assert_eq!(
            h.check(&entry(Value::string("reviews"))).await.status.code,
            Code::Ok
        );
        assert_eq!(
            h.check(&entry(Value::string("details"))).await.status.code,
            Code::NotFound
        );
        *body.lock().unwrap() = "details\n".into();
        until(&h, "productpage", Code::NotFound).await;
        until(&h, "details", Code::Ok).await;
        stop.cancel();
        server.await.unwrap().unwrap();
        // The provider is gone; within its ttl the last list still answers.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            h.check(&entry(Value::string("details"))).await.status.code,
            Code::Ok
        );
    }

    #[tokio::test]
    async fn regexes_and_bad_params() {
        let list = json!({"overrides": ["^/admin"], "entryType": "REGEX", "blacklist": true});
        assert_eq!(
            code(list.clone(), Value::string("/admin/x")).await,
            Code::PermissionDenied
        );
        assert_eq!(code(list, Value::string("/x")).await, Code::Ok);
        let e = ListChecker
            .build(&json!({"overrides": ["ok", "("], "entryType": "REGEX"}))
            .err()
            .unwrap();
        assert_eq!(e.field, "overrides[1]");
        let e = ListChecker
            .build(&json!({"overrides": ["300.1.1.1"], "entryType": "IP_ADDRESSES"}))
            .err()
            .unwrap();
        assert_eq!(e.field, "overrides[0]");
        let e = ListChecker
            .build(&json!({"entryType": "NUMBERS"}))
            .err()
            .unwrap();
        assert_eq!(e.field, "entryType");
        let e = ListChecker
            .build(&json!({"providerUrl": "nohost"}))
            .err()
            .unwrap();
        assert_eq!(e.field, "providerUrl");
    }
}
