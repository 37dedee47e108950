//! Istio's resource names and the proto helpers every generator shares, in
//! one place so that the generators never import each other for them.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    socket_address,
};
use envoy_types::pb::google::protobuf;
use prost::{Message, Name};

/// `outbound|9080|v1|reviews.default.svc.cluster.local`
pub fn outbound_cluster_name(port: u32, subset: &str, hostname: &str) -> String {
    format!("outbound|{port}|{subset}|{hostname}")
}

/// `inbound|9080|http|reviews.default.svc.cluster.local`
pub fn inbound_cluster_name(port: u32, port_name: &str, hostname: &str) -> String {
    format!("inbound|{port}|{port_name}|{hostname}")
}

pub const BLACKHOLE: &str = "BlackHoleCluster";
pub const PASSTHROUGH: &str = "PassthroughCluster";
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughClusterIpv4";

/// The route name Istio gives outbound HTTP routes on a port.
pub fn port_route_name(port: u32) -> String {
    port.to_string()
}

pub const HTTP_PROXY_ROUTE: &str = "http_proxy";

/// Packs an extension config into `Any`.
pub fn any<M: Message + Name>(message: &M) -> protobuf::Any {
    protobuf::Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

pub fn duration(d: Duration) -> protobuf::Duration {
    protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn u32_value(value: u32) -> protobuf::UInt32Value {
    protobuf::UInt32Value { value }
}

pub fn bool_value(value: bool) -> protobuf::BoolValue {
    protobuf::BoolValue { value }
}

pub fn ads_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(
            ConfigSourceSpecifier::Ads(AggregatedConfigSource::default()),
        ),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub fn socket_address(host: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}
