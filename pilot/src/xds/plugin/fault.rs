//! VirtualService `fault`: Envoy's fault filter on outbound connection
//! managers, configured per route.

use api::networking::{HttpFaultInjection, fault_share};
use envoy_types::pb::envoy::config::route::v3::Route;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay, fault_delay::FaultDelaySecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort::ErrorType,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;

use super::{ListenerContext, Plugin, RouteContext, outbound_filter};
use crate::xds::generate::rds::per_million;
use crate::xds::names::{any, duration};

pub const FILTER: &str = "envoy.filters.http.fault";

pub struct Fault;

impl Plugin for Fault {
    fn name(&self) -> &'static str {
        "fault"
    }

    fn http_filters(&self, ctx: &ListenerContext) -> Vec<HttpFilter> {
        outbound_filter(ctx, FILTER, &HttpFault::default())
    }

    fn on_http_route(&self, ctx: &RouteContext, route: &mut Route) {
        if let Some(fault) = &ctx.route.fault {
            route
                .typed_per_filter_config
                .insert(FILTER.into(), any(&config(fault)));
        }
    }
}

fn config(fault: &HttpFaultInjection) -> HttpFault {
    HttpFault {
        delay: fault.delay.as_ref().map(|d| FaultDelay {
            fault_delay_secifier: d
                .fixed_delay
                .map(|fd| FaultDelaySecifier::FixedDelay(duration(fd.0))),
            percentage: Some(per_million(fault_share(d.percentage, d.percent))),
        }),
        abort: fault.abort.as_ref().map(|a| FaultAbort {
            error_type: a.http_status.map(|s| ErrorType::HttpStatus(s as u32)),
            percentage: Some(per_million(fault_share(a.percentage, a.percent))),
            ..Default::default()
        }),
        ..Default::default()
    }
}
