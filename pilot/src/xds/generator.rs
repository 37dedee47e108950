//! What one proxy is sent for one resource type.

use super::proxy::{Proxy, ProxyKind};
use super::push::PushContext;
use super::resource::{Resource, XdsType};
use super::{cluster, listener, route};

/// The resources of `kind` for `proxy`. For RDS and EDS only the requested
/// `names` are returned; LDS and CDS are always whole.
pub fn generate(
    push: &PushContext,
    proxy: &Proxy,
    kind: XdsType,
    names: &[String],
) -> Vec<Resource> {
    match kind {
        XdsType::Cluster => {
            let mut out: Vec<Resource> = push.outbound_clusters.iter().cloned().collect();
            if proxy.kind == ProxyKind::Sidecar {
                out.extend(cluster::inbound(push, proxy));
            }
            out
        }
        XdsType::Endpoint => names
            .iter()
            .filter_map(|n| push.endpoints.get(n).cloned())
            .collect(),
        XdsType::Listener => listener::build(push, proxy),
        XdsType::Route => names
            .iter()
            .filter_map(|n| route::outbound(push, proxy, n))
            .collect(),
    }
}
