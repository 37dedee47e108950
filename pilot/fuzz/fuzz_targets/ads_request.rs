//! Any bytes as a stream of ADS requests (length-prefixed, as several
//! messages) fed to one connection's state machine on a small mesh, with a
//! push in between: decode errors are refused, nothing panics.

#![no_main]

use std::sync::{Arc, LazyLock};

use api::mesh::MeshConfig;
use api::xds::DiscoveryRequest;
use libfuzzer_sys::fuzz_target;
use pilot::xds::fixtures::{mesh_yaml, push_from_yaml};
use pilot::xds::push::PushContext;
use pilot::xds::server::connection::Connection;
use prost::Message;

static PUSH: LazyLock<Arc<PushContext>> =
    LazyLock::new(|| Arc::new(push_from_yaml(1, &mesh_yaml(3, 2), MeshConfig::default())));
static NEXT: LazyLock<Arc<PushContext>> = LazyLock::new(|| {
    let yaml = mesh_yaml(4, 2).replace("weight: 90", "weight: 70").replace("weight: 10", "weight: 30");
    Arc::new(push_from_yaml(2, &yaml, MeshConfig::default()))
});

fuzz_target!(|data: &[u8]| {
    let mut conn = Connection::new();
    let mut rest = data;
    let mut pushed = false;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (message, tail) = tail.split_at(len);
        rest = tail;
        let Ok(request) = DiscoveryRequest::decode(message) else {
            continue;
        };
        let push = if pushed { &NEXT } else { &PUSH };
        if conn.on_request(request, push).is_err() {
            return;
        }
        if !pushed && rest.len() % 2 == 1 {
            conn.on_push(&NEXT);
            pushed = true;
        }
    }
});
