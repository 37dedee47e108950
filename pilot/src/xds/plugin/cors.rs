//! VirtualService `corsPolicy`: Envoy's CORS filter on outbound connection
//! managers, configured per route.

use api::networking::{self as istio};
use envoy_types::pb::envoy::config::route::v3::Route;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{self as cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;

use super::{ListenerContext, Plugin, RouteContext, outbound_filter};
use crate::xds::generate::rds::string_matcher;
use crate::xds::names::{any, bool_value};

pub const FILTER: &str = "envoy.filters.http.cors";

pub struct Cors;

impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn http_filters(&self, ctx: &ListenerContext) -> Vec<HttpFilter> {
        outbound_filter(ctx, FILTER, &cors::Cors::default())
    }

    fn on_http_route(&self, ctx: &RouteContext, route: &mut Route) {
        if let Some(policy) = &ctx.route.cors_policy {
            route
                .typed_per_filter_config
                .insert(FILTER.into(), any(&config(policy)));
        }
    }
}

fn config(c: &istio::CorsPolicy) -> CorsPolicy {
    let exact = c.allow_origin.iter().map(|o| istio::StringMatch {
        exact: Some(o.clone()),
        ..Default::default()
    });
    CorsPolicy {
        allow_origin_string_match: exact
            .chain(c.allow_origins.iter().cloned())
            .map(|m| string_matcher(&m))
            .collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .map(|d| d.0.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(bool_value),
        ..Default::default()
    }
}
