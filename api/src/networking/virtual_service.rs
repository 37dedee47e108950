use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Errors, StringMatch, validate_host, validate_percent};
use crate::duration::IstioDuration;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    #[serde(default)]
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default)]
    pub redirect: Option<HttpRedirect>,
    #[serde(default)]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default)]
    pub timeout: Option<IstioDuration>,
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    #[serde(default)]
    pub fault: Option<HttpFaultInjection>,
    #[serde(default)]
    pub headers: Option<Headers>,
    #[serde(default)]
    pub mirror: Option<Destination>,
    /// Istio 1.4's integer share of requests mirrored; `mirrorPercentage` (1.5+) wins when both are set.
    #[serde(default)]
    pub mirror_percent: Option<u32>,
    #[serde(default)]
    pub mirror_percentage: Option<super::Percent>,
    #[serde(default)]
    pub cors_policy: Option<CorsPolicy>,
    /// Deprecated in 1.x in favour of `headers`, still honoured.
    #[serde(default)]
    pub append_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub remove_response_headers: Vec<String>,
    #[serde(default)]
    pub append_response_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub remove_request_headers: Vec<String>,
    #[serde(default)]
    pub append_request_headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
    #[serde(default)]
    pub authority: Option<StringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub ignore_uri_case: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    pub host: String,
    #[serde(default)]
    pub subset: String,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    pub number: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: Option<i32>,
    #[serde(default)]
    pub headers: Option<Headers>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Exact origins (Istio 1.x).
    #[serde(default)]
    pub allow_origin: Vec<String>,
    /// Origins by match (Istio 1.5+).
    #[serde(default)]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub max_age: Option<IstioDuration>,
    #[serde(default)]
    pub allow_credentials: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub authority: String,
    #[serde(default)]
    pub redirect_code: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub authority: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    pub attempts: i32,
    #[serde(default)]
    pub per_try_timeout: Option<IstioDuration>,
    #[serde(default)]
    pub retry_on: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    #[serde(default)]
    pub fixed_delay: Option<IstioDuration>,
    #[serde(default)]
    pub percentage: Option<super::Percent>,
    /// Deprecated integer form of `percentage`.
    #[serde(default)]
    pub percent: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    #[serde(default)]
    pub http_status: Option<i32>,
    #[serde(default)]
    pub percentage: Option<super::Percent>,
    #[serde(default)]
    pub percent: Option<i32>,
}

/// The share of requests a fault applies to; unset means all of them.
pub fn fault_share(percentage: Option<super::Percent>, percent: Option<i32>) -> f64 {
    match (percentage, percent) {
        (Some(p), _) => p.value,
        (None, Some(p)) => p as f64,
        (None, None) => 100.0,
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub gateways: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: Option<i32>,
}

impl VirtualService {
    pub fn validate(&self) -> Errors {
        let mut errors = Errors::default();
        if self.hosts.is_empty() {
            errors.push("spec.hosts", "at least one host is required");
        }
        for (i, host) in self.hosts.iter().enumerate() {
            validate_host(host, &format!("spec.hosts[{i}]"), &mut errors);
        }
        if self.http.is_empty() && self.tcp.is_empty() {
            errors.push("spec", "at least one http or tcp route is required");
        }
        for (i, route) in self.http.iter().enumerate() {
            route.validate(&format!("spec.http[{i}]"), &mut errors);
        }
        for (i, route) in self.tcp.iter().enumerate() {
            let path = format!("spec.tcp[{i}]");
            if route.route.is_empty() {
                errors.push(
                    format!("{path}.route"),
                    "at least one destination is required",
                );
            }
            let weights: Vec<_> = route.route.iter().map(|d| d.weight).collect();
            validate_weights(&weights, &format!("{path}.route"), &mut errors);
            for (j, d) in route.route.iter().enumerate() {
                d.destination
                    .validate(&format!("{path}.route[{j}].destination"), &mut errors);
            }
        }
        errors
    }
}

impl HttpRoute {
    fn validate(&self, path: &str, errors: &mut Errors) {
        for (i, m) in self.matches.iter().enumerate() {
            let mpath = format!("{path}.match[{i}]");
            for (name, sm) in [
                ("uri", &m.uri),
                ("scheme", &m.scheme),
                ("method", &m.method),
                ("authority", &m.authority),
            ] {
                if let Some(sm) = sm {
                    sm.validate(&format!("{mpath}.{name}"), errors);
                }
            }
            for (name, sm) in &m.headers {
                sm.validate(&format!("{mpath}.headers.{name}"), errors);
                if name.chars().any(|c| c.is_ascii_uppercase()) {
                    errors.push(
                        format!("{mpath}.headers.{name}"),
                        "header names must be lower case",
                    );
                }
            }
            for (name, sm) in &m.query_params {
                sm.validate(&format!("{mpath}.queryParams.{name}"), errors);
            }
            if let Some(port) = m.port
                && (port == 0 || port > 65535)
            {
                errors.push(
                    format!("{mpath}.port"),
                    format!("port {port} is not in 1..65535"),
                );
            }
        }
        match (&self.redirect, self.route.is_empty()) {
            (Some(_), false) => errors.push(
                format!("{path}.redirect"),
                "a route may have a redirect or destinations, not both",
            ),
            (None, true) => errors.push(
                format!("{path}.route"),
                "at least one destination or a redirect is required",
            ),
            _ => {}
        }
        if let (Some(_), Some(_)) = (&self.redirect, &self.rewrite) {
            errors.push(
                format!("{path}.rewrite"),
                "rewrite cannot be used with redirect",
            );
        }
        if let Some(r) = &self.redirect {
            if r.uri.is_empty() && r.authority.is_empty() {
                errors.push(format!("{path}.redirect"), "uri or authority is required");
            }
            if let Some(code) = r.redirect_code
                && !matches!(code, 301 | 302 | 303 | 307 | 308)
            {
                errors.push(
                    format!("{path}.redirect.redirectCode"),
                    format!("redirect code {code} is not one of 301, 302, 303, 307, 308"),
                );
            }
        }
        if let Some(r) = &self.rewrite
            && r.uri.is_empty()
            && r.authority.is_empty()
        {
            errors.push(format!("{path}.rewrite"), "uri or authority is required");
        }
        let weights: Vec<_> = self.route.iter().map(|d| d.weight).collect();
        validate_weights(&weights, &format!("{path}.route"), errors);
        for (i, d) in self.route.iter().enumerate() {
            d.destination
                .validate(&format!("{path}.route[{i}].destination"), errors);
        }
        if let Some(m) = &self.mirror {
            m.validate(&format!("{path}.mirror"), errors);
        }
        if let Some(p) = self.mirror_percent
            && p > 100
        {
            errors.push(
                format!("{path}.mirrorPercent"),
                format!("{p} is not in [0, 100]"),
            );
        }
        if let Some(p) = self.mirror_percentage {
            validate_percent(p.value, &format!("{path}.mirrorPercentage.value"), errors);
        }
        if let Some(c) = &self.cors_policy {
            for (i, o) in c.allow_origins.iter().enumerate() {
                o.validate(&format!("{path}.corsPolicy.allowOrigins[{i}]"), errors);
            }
        }
        if let Some(r) = &self.retries {
            if r.attempts < 0 {
                errors.push(
                    format!("{path}.retries.attempts"),
                    "attempts must not be negative",
                );
            }
            for cond in r
                .retry_on
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
            {
                if !is_retry_condition(cond) {
                    errors.push(
                        format!("{path}.retries.retryOn"),
                        format!("unknown retry condition {cond:?}"),
                    );
                }
            }
        }
        if let Some(f) = &self.fault {
            if f.delay.is_none() && f.abort.is_none() {
                errors.push(format!("{path}.fault"), "delay or abort is required");
            }
            if let Some(d) = &f.delay {
                if d.fixed_delay.is_none() {
                    errors.push(
                        format!("{path}.fault.delay.fixedDelay"),
                        "fixedDelay is required",
                    );
                }
                let share = fault_share(d.percentage, d.percent);
                validate_percent(share, &format!("{path}.fault.delay.percentage"), errors);
            }
            if let Some(a) = &f.abort {
                match a.http_status {
                    Some(s) if (200..=599).contains(&s) => {}
                    Some(s) => errors.push(
                        format!("{path}.fault.abort.httpStatus"),
                        format!("http status {s} is not in 200..599"),
                    ),
                    None => errors.push(
                        format!("{path}.fault.abort.httpStatus"),
                        "httpStatus is required",
                    ),
                }
                let share = fault_share(a.percentage, a.percent);
                validate_percent(share, &format!("{path}.fault.abort.percentage"), errors);
            }
        }
    }
}

impl Destination {
    fn validate(&self, path: &str, errors: &mut Errors) {
        validate_host(&self.host, &format!("{path}.host"), errors);
        if let Some(p) = &self.port
            && (p.number == 0 || p.number > 65535)
        {
            errors.push(
                format!("{path}.port.number"),
                format!("port {} is not in 1..65535", p.number),
            );
        }
    }
}

/// Istio 1.x: with more than one destination the weights must add up to 100;
/// a lone destination may leave its weight unset.
fn validate_weights(weights: &[Option<i32>], path: &str, errors: &mut Errors) {
    for (i, w) in weights.iter().enumerate() {
        if let Some(w) = w
            && !(0..=100).contains(w)
        {
            errors.push(
                format!("{path}[{i}].weight"),
                format!("weight {w} is not in [0, 100]"),
            );
        }
    }
    if weights.len() > 1
        || weights
            .iter()
            .any(|w| w.is_some_and(|w| w != 100 && w != 0))
    {
        // Wide enough that no list of i32 weights can overflow it.
        let sum: i64 = weights.iter().map(|w| i64::from(w.unwrap_or(0))).sum();
        if sum != 100 {
            errors.push(path, format!("weights add up to {sum}, not 100"));
        }
    }
}

fn is_retry_condition(cond: &str) -> bool {
    matches!(
        cond,
        "5xx"
            | "gateway-error"
            | "reset"
            | "connect-failure"
            | "retriable-4xx"
            | "refused-stream"
            | "retriable-status-codes"
            | "retriable-headers"
            | "envoy-ratelimited"
            | "http3-post-connect-failure"
            | "cancelled"
            | "deadline-exceeded"
            | "internal"
            | "resource-exhausted"
            | "unavailable"
    ) || cond.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c))
}
