//! The in-process adapters mixer-policy offers.

mod denier;
mod list;
mod memquota;
mod quota;
mod redisquota;

use std::sync::Arc;

use mixer::adapter::Registry;

/// Every adapter a handler may name with `compiledAdapter` (or as a legacy kind).
pub fn registry() -> Registry {
    Registry::new(vec![
        Arc::new(denier::Denier),
        Arc::new(list::ListChecker),
        Arc::new(memquota::MemQuota),
        Arc::new(redisquota::RedisQuota),
    ])
}
