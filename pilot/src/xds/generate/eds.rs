//! EDS: one load assignment per outbound EDS cluster, with the instances of the
//! service port that carry the subset's labels.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Address;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};

use crate::model::{Resolution, Service, ServiceModel, labels_match};
use crate::xds::names::{outbound_cluster_name, socket_address};
use crate::xds::push::PushContext;
use crate::xds::resource::Resource;

pub fn load_assignment(cluster: &str, endpoints: Vec<(&str, u32)>) -> ClusterLoadAssignment {
    load_assignment_at(
        cluster,
        endpoints
            .into_iter()
            .map(|(h, p)| socket_address(h, p))
            .collect(),
    )
}

pub fn load_assignment_at(cluster: &str, addresses: Vec<Address>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addresses
                .into_iter()
                .map(|address| LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(address),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Load assignments for one service: the plain cluster of each port and each subset cluster.
fn for_service(push: &PushContext, service: &Service, out: &mut BTreeMap<String, Resource>) {
    if service.resolution != Resolution::ClientSideLb {
        return;
    }
    let instances = push.model.instances.get(&service.hostname);
    let instances = instances.map(|l| l.as_slice()).unwrap_or_default();
    let subsets = push
        .destination_rule(&service.hostname)
        .map(|d| d.subsets.as_slice())
        .unwrap_or_default();
    for port in &service.ports {
        let of_port = || instances.iter().filter(|i| i.service_port == port.port);
        let name = outbound_cluster_name(port.port, "", &service.hostname);
        let eps = of_port().map(|i| (i.address.as_str(), i.port)).collect();
        out.insert(
            name.clone(),
            Resource::encode(&name, &load_assignment(&name, eps)),
        );
        for subset in subsets {
            let name = outbound_cluster_name(port.port, &subset.name, &service.hostname);
            let eps = of_port()
                .filter(|i| labels_match(&subset.labels, &i.labels))
                .map(|i| (i.address.as_str(), i.port))
                .collect();
            out.insert(
                name.clone(),
                Resource::encode(&name, &load_assignment(&name, eps)),
            );
        }
    }
}

pub fn all(push: &PushContext) -> BTreeMap<String, Resource> {
    let mut out = BTreeMap::new();
    for service in push.model.services.values() {
        for_service(push, service, &mut out);
    }
    out
}

/// Reuses the previous assignments of every service whose instances did not change.
pub fn update(
    push: &PushContext,
    previous_model: &ServiceModel,
    previous: &BTreeMap<String, Resource>,
) -> BTreeMap<String, Resource> {
    let mut out = BTreeMap::new();
    for (host, service) in &push.model.services {
        let unchanged = previous_model.instances.get(host) == push.model.instances.get(host)
            && previous_model.services.get(host) == Some(service);
        if unchanged {
            let prefix_match = |name: &String| name.ends_with(&format!("|{host}"));
            out.extend(
                previous
                    .iter()
                    .filter(|(n, _)| prefix_match(n))
                    .map(|(n, r)| (n.clone(), r.clone())),
            );
        } else {
            for_service(push, service, &mut out);
        }
    }
    out
}
