//! The in-process adapters mixer-policy offers.

mod denier;
mod list;
mod memquota;
mod quota;
mod redisquota;

use std::sync::Arc;

use mixer::adapter::Registry;
use mixer::adapter::kubernetesenv::KubernetesEnv;

/// Every adapter a handler may name with `compiledAdapter` (or as a legacy
/// kind); `kubernetesenv` so that rules can match workloads.
pub fn registry(kubernetesenv: KubernetesEnv) -> Registry {
    Registry::new(vec![
        Arc::new(kubernetesenv),
        Arc::new(denier::Denier),
        Arc::new(list::ListChecker),
        Arc::new(memquota::MemQuota),
        Arc::new(redisquota::RedisQuota),
    ])
}
