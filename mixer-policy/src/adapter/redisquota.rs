//! `redisquota`: rate-limit quotas counted in Redis, so every mixer-policy
//! process that shares one Redis enforces one quota. Each allocation is one
//! Lua script run on the server, so checking and charging a counter is atomic
//! across processes, and windows follow the Redis server's clock (`TIME`)
//! rather than each process's own.
//!
//! Every quota is a rate limit: `FIXED_WINDOW` keeps one counter per window
//! of `validDuration`; `ROLLING_WINDOW` keeps a hash of `bucketDuration`
//! buckets and counts those that overlap the last `validDuration`. Retries
//! carrying the same deduplication id within a second get the first answer,
//! kept in Redis beside the counter so that a retry landing on another
//! process is answered the same.
//!
//! Redis may be down when the handler is built or at any time after: the
//! handler connects lazily, bounds every allocation by [`CALL_TIMEOUT`],
//! refuses (`FAIL_CLOSE`, Istio's behaviour) or grants (`FAIL_OPEN`) what it
//! cannot count, warns at most once per [`WARN_EVERY`], and reconnects by
//! itself when Redis is back.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mixer::adapter::{self, Adapter, Handler, ParamsError, QuotaArgs, QuotaResult, Status};
use mixer::template::{Instance, Template};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Script, ScriptInvocation};
use serde::Deserialize;
use tokio::time::Instant;
use tonic::Code;

use super::quota::{self, Algorithm, QuotaParams};

/// Every key this adapter writes starts with this, then the limit's key.
const KEY_PREFIX: &str = "trireme:quota:";
/// The longest an allocation waits for Redis, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a deduplication id's answer is kept.
const DEDUP_WINDOW: Duration = Duration::from_secs(1);
/// At most one warning about an unreachable Redis this often, per handler.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Checks and charges one counter, atomically.
///
/// KEYS[1]: the counter's base key; KEYS[2] (optional): the dedup key.
/// ARGV: algorithm (`f` fixed, `r` rolling), max amount, window ms, bucket
/// ms, amount, best effort (`1`/`0`), dedup ms.
/// Returns {granted, amount the answer was for, 1 if a dedup hit else 0}.
const ALLOCATE: &str = r#"
local base = KEYS[1]
local dedup = KEYS[2]
local rolling = ARGV[1] == 'r'
local max = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local bucket = tonumber(ARGV[4])
local amount = tonumber(ARGV[5])
local best_effort = ARGV[6] == '1'
local dedup_ms = tonumber(ARGV[7])

if dedup then
  local seen = redis.call('GET', dedup)
  if seen then
    local sep = string.find(seen, ':', 1, true)
    if sep then
      return {tonumber(string.sub(seen, 1, sep - 1)), tonumber(string.sub(seen, sep + 1)), 1}
    end
  end
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local key
local used = 0
if rolling then
  key = base .. ':rw'
  -- A bucket counts while any part of it lies in the last window.
  local oldest = math.floor((now - window) / bucket)
  local fields = redis.call('HGETALL', key)
  local stale = {}
  for i = 1, #fields, 2 do
    if tonumber(fields[i]) >= oldest then
      used = used + tonumber(fields[i + 1])
    else
      stale[#stale + 1] = fields[i]
    end
  end
  if #stale > 0 then
    redis.call('HDEL', key, unpack(stale))
  end
else
  key = base .. ':fw:' .. string.format('%d', math.floor(now / window))
  used = tonumber(redis.call('GET', key) or '0')
end

local available = max - used
if available < 0 then
  available = 0
end
local granted = 0
if amount <= available then
  granted = amount
elseif best_effort then
  granted = available
end

if granted > 0 then
  if rolling then
    redis.call('HINCRBY', key, string.format('%d', math.floor(now / bucket)), granted)
    redis.call('PEXPIRE', key, window + bucket)
  elseif redis.call('INCRBY', key, granted) == granted then
    redis.call('PEXPIRE', key, window)
  end
end

if dedup then
  redis.call('SET', dedup, string.format('%d:%d', granted, amount), 'PX', dedup_ms)
end
return {granted, amount, 0}
"#;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum FailPolicy {
    /// Refuse what cannot be counted, with `UNAVAILABLE` (Istio's behaviour).
    #[default]
    FailClose,
    /// Grant what cannot be counted.
    FailOpen,
}

fn default_server_url() -> String {
    "localhost:6379".into()
}

fn default_pool_size() -> i64 {
    10
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    quotas: Vec<QuotaParams>,
    #[serde(default = "default_server_url", alias = "redis_server_url")]
    redis_server_url: String,
    #[serde(default = "default_pool_size", alias = "connection_pool_size")]
    connection_pool_size: i64,
    #[serde(default, alias = "fail_policy")]
    fail_policy: FailPolicy,
}

pub struct RedisQuota;

impl Adapter for RedisQuota {
    fn name(&self) -> &'static str {
        "redisquota"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::Quota]
    }

    fn build(&self, params: &serde_json::Value) -> Result<Arc<dyn Handler>, ParamsError> {
        let p: Params = adapter::params(params)?;
        quota::validate(&p.quotas)?;
        for (i, q) in p.quotas.iter().enumerate() {
            if q.valid_duration.is_none_or(|d| d.as_duration().is_zero()) {
                return Err(ParamsError::new(
                    format!("quotas[{i}].validDuration"),
                    "redisquota only rate-limits: every quota needs a positive validDuration",
                ));
            }
            for (j, o) in q.overrides.iter().enumerate() {
                if o.valid_duration.is_some_and(|d| d.as_duration().is_zero()) {
                    return Err(ParamsError::new(
                        format!("quotas[{i}].overrides[{j}].validDuration"),
                        "redisquota only rate-limits: must be positive when given",
                    ));
                }
            }
        }
        if !(1..=1000).contains(&p.connection_pool_size) {
            return Err(ParamsError::new(
                "connectionPoolSize",
                format!("must be between 1 and 1000, not {}", p.connection_pool_size),
            ));
        }
        let (client, address) =
            client(&p.redis_server_url).map_err(|m| ParamsError::new("redisServerUrl", m))?;
        Ok(Arc::new(RedisQuotaHandler {
            quotas: p.quotas,
            fail_policy: p.fail_policy,
            pool: Pool::new(client, p.connection_pool_size as usize),
            address,
            script: Script::new(ALLOCATE),
            health: Health::default(),
        }))
    }
}

/// A client for `host:port` or `redis://host:port[/db]`, and the address to
/// name in messages (without any password the URL carries).
fn client(url: &str) -> Result<(redis::Client, String), String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("must name a Redis server: host:port or redis://host:port[/db]".into());
    }
    let full = match url.split_once("://") {
        Some(("redis", _)) => url.to_string(),
        Some((scheme, _)) => {
            return Err(format!(
                "`{scheme}://` is not supported: give host:port or redis://host:port[/db]"
            ));
        }
        None => format!("redis://{url}"),
    };
    let client = redis::Client::open(full.as_str())
        .map_err(|e| format!("not host:port or redis://host:port[/db]: {e}"))?;
    let info = client.get_connection_info();
    let address = match info.redis_settings().db() {
        0 => info.addr().to_string(),
        db => format!("{}/{db}", info.addr()),
    };
    Ok((client, address))
}

/// `connectionPoolSize` multiplexed connections, each made on first use and
/// remade after it breaks; allocations take them in turn.
struct Pool {
    client: redis::Client,
    /// Each slot's connection, with an id telling a replaced one apart.
    slots: Vec<tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>>,
    next: AtomicUsize,
    ids: AtomicU64,
}

impl Pool {
    fn new(client: redis::Client, size: usize) -> Pool {
        Pool {
            client,
            slots: (0..size).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            ids: AtomicU64::new(0),
        }
    }

    /// The slot's connection, connecting it when it has none; and whether
    /// it was made just now.
    async fn get(&self, slot: usize) -> RedisResult<(u64, MultiplexedConnection, bool)> {
        let mut held = self.slots[slot].lock().await;
        if let Some((id, conn)) = &*held {
            return Ok((*id, conn.clone(), false));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        *held = Some((id, conn.clone()));
        Ok((id, conn, true))
    }

    /// Forgets the slot's connection `id` if it is still there. Never waits:
    /// a slot that is busy connecting holds no connection worth forgetting,
    /// and a stale one left behind is found broken and replaced by its next
    /// user.
    fn discard(&self, slot: usize, id: u64) {
        if let Ok(mut held) = self.slots[slot].try_lock()
            && held.as_ref().is_some_and(|(i, _)| *i == id)
        {
            *held = None;
        }
    }

    /// Runs `call` on the next connection. A connection that was kept from
    /// before and turns out broken (Redis restarted, say) is replaced and the
    /// call tried once more on a new one, so the first call after Redis comes
    /// back succeeds.
    async fn run(&self, call: &ScriptInvocation<'_>) -> RedisResult<Vec<i64>> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (id, mut conn, fresh) = self.get(slot).await?;
            match call.invoke_async(&mut conn).await {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    let broken =
                        e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error();
                    if broken {
                        self.discard(slot, id);
                    }
                    if !broken || fresh || attempt >= 2 {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Whether Redis answered lately, and when an outage was last warned about.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    warnings: Mutex<Warnings>,
}

#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
    suppressed: u64,
}

impl Health {
    /// Notes a failure. Some(failures not warned about since the last
    /// warning) when this one is to be warned about.
    fn failed(&self) -> Option<u64> {
        self.down.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let mut w = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        if w.last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            w.suppressed += 1;
            None
        } else {
            w.last = Some(now);
            Some(std::mem::take(&mut w.suppressed))
        }
    }

    /// Notes a success: true when it ends an outage.
    fn succeeded(&self) -> bool {
        self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed)
    }
}

struct RedisQuotaHandler {
    quotas: Vec<QuotaParams>,
    fail_policy: FailPolicy,
    pool: Pool,
    /// The server, as messages name it.
    address: String,
    script: Script,
    health: Health,
}

/// Whole milliseconds, at least one (Redis counts time in milliseconds).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisQuotaHandler {
    /// The answer when Redis could not count, by the fail policy.
    fn unavailable(&self, args: &QuotaArgs, why: &str) -> QuotaResult {
        if let Some(suppressed) = self.health.failed() {
            tracing::warn!(
                redis = %self.address,
                suppressed,
                policy = ?self.fail_policy,
                "redisquota: cannot count quotas in Redis: {why} \
                 ({suppressed} failures not logged since the last warning)"
            );
        }
        match self.fail_policy {
            FailPolicy::FailClose => QuotaResult::denied(Status::new(
                Code::Unavailable,
                format!(
                    "redisquota: Redis at {} is unavailable: {why}",
                    self.address
                ),
            )),
            // Granted for no time, so that callers ask again soon.
            FailPolicy::FailOpen => QuotaResult {
                status: Status::OK,
                granted: args.amount,
                valid_duration: Duration::ZERO,
            },
        }
    }
}

#[async_trait]
impl Handler for RedisQuotaHandler {
    async fn quota(&self, instance: &Instance, args: &QuotaArgs) -> QuotaResult {
        let Some(limit) = quota::limit(&self.quotas, instance) else {
            return QuotaResult::denied(Status::new(
                Code::InvalidArgument,
                format!("redisquota has no quota named {}", instance.name),
            ));
        };
        if args.amount < 0 {
            return QuotaResult::denied(Status::new(
                Code::InvalidArgument,
                format!("quota amount must not be negative, not {}", args.amount),
            ));
        }
        let base = format!("{KEY_PREFIX}{}", limit.key);
        let mut call = self.script.prepare_invoke();
        call.key(&base);
        if !args.dedup_id.is_empty() {
            call.key(format!("{base}:dedup:{}", args.dedup_id));
        }
        call.arg(match limit.algorithm {
            Algorithm::FixedWindow => "f",
            Algorithm::RollingWindow => "r",
        })
        .arg(limit.max_amount)
        .arg(millis(limit.window))
        .arg(millis(limit.bucket))
        .arg(args.amount)
        .arg(u8::from(args.best_effort))
        .arg(millis(DEDUP_WINDOW));
        let answer = match tokio::time::timeout(CALL_TIMEOUT, self.pool.run(&call)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return self.unavailable(args, &e.to_string()),
            Err(_) => {
                return self.unavailable(args, &format!("no answer within {CALL_TIMEOUT:?}"));
            }
        };
        let &[granted, answered, ..] = answer.as_slice() else {
            return self.unavailable(args, &format!("unexpected answer {answer:?}"));
        };
        if self.health.succeeded() {
            tracing::info!(redis = %self.address, "redisquota: Redis is reachable again");
        }
        QuotaResult {
            status: if granted > 0 || answered == 0 {
                Status::OK
            } else {
                Status::new(
                    Code::ResourceExhausted,
                    format!("quota {} is exhausted", instance.short_name()),
                )
            },
            granted,
            valid_duration: limit.window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer::attribute::Value;
    use mixer::template::FieldValue;
    use serde_json::json;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn redis_address() -> String {
        std::env::var("TRIREME_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into())
    }

    /// A quota name no other test, run or process uses (no dots: it is also
    /// the instance's short name).
    fn unique(tag: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!(
            "rq-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn instance(name: &str, user: &str) -> Instance {
        Instance {
            name: format!("{name}.instance.istio-system").into(),
            template: Template::Quota,
            fields: vec![(
                "dimensions",
                FieldValue::Map([("user".to_string(), Value::string(user))].into()),
            )],
        }
    }

    fn args(id: &str, amount: i64, best_effort: bool) -> QuotaArgs {
        QuotaArgs {
            dedup_id: id.into(),
            amount,
            best_effort,
        }
    }

    fn build(params: serde_json::Value) -> Arc<dyn Handler> {
        RedisQuota.build(&params).unwrap()
    }

    /// One quota `name` counted in the test Redis.
    fn params(name: &str, quota: serde_json::Value) -> serde_json::Value {
        let mut quota = quota;
        quota["name"] = json!(name);
        json!({"quotas": [quota], "redisServerUrl": redis_address()})
    }

    async fn raw(address: &str) -> RedisResult<MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://{address}"))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Removes the keys a test's quota left behind.
    async fn cleanup(name: &str) {
        let mut conn = raw(&redis_address()).await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{KEY_PREFIX}{name}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }

    /// Waits until a fixed window of `window` has just begun by the Redis
    /// server's clock, which is what the windows follow.
    async fn next_window(window: Duration) {
        let mut conn = raw(&redis_address()).await.unwrap();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
        let now = secs * 1000 + micros / 1000;
        let w = millis(window);
        tokio::time::sleep(Duration::from_millis(w - now % w + 30)).await;
    }

    async fn grant(h: &Arc<dyn Handler>, i: &Instance, a: QuotaArgs) -> (i64, Code) {
        let r = h.quota(i, &a).await;
        (r.granted, r.status.code)
    }

    #[tokio::test]
    async fn fixed_window_grants_refuses_then_refills() {
        let name = unique("fixed");
        let h = build(params(
            &name,
            json!({"maxAmount": 3, "validDuration": "1s", "rateLimitAlgorithm": "FIXED_WINDOW"}),
        ));
        let i = instance(&name, "jason");
        next_window(Duration::from_secs(1)).await;
        for _ in 0..3 {
            assert_eq!(grant(&h, &i, args("", 1, false)).await, (1, Code::Ok));
        }
        let refused = h.quota(&i, &args("", 1, false)).await;
        assert_eq!(
            (refused.granted, refused.status.code),
            (0, Code::ResourceExhausted)
        );
        assert_eq!(refused.status.message, format!("quota {name} is exhausted"));
        // The next window starts from nothing.
        next_window(Duration::from_secs(1)).await;
        let again = h.quota(&i, &args("", 1, false)).await;
        assert_eq!((again.granted, again.status.code), (1, Code::Ok));
        assert_eq!(again.valid_duration, Duration::from_secs(1));
        cleanup(&name).await;
    }

    #[tokio::test]
    async fn rolling_window_releases_each_grant_a_window_later() {
        let name = unique("rolling");
        let h = build(params(
            &name,
            json!({
                "maxAmount": 2,
                "validDuration": "2s",
                "bucketDuration": "200ms",
                "rateLimitAlgorithm": "ROLLING_WINDOW",
            }),
        ));
        let i = instance(&name, "jason");
        let start = Instant::now();
        assert_eq!(grant(&h, &i, args("", 1, false)).await, (1, Code::Ok));
        tokio::time::sleep_until(start + Duration::from_secs(1)).await;
        assert_eq!(grant(&h, &i, args("", 1, false)).await, (1, Code::Ok));
        assert_eq!(
            grant(&h, &i, args("", 1, false)).await,
            (0, Code::ResourceExhausted)
        );
        // The first grant left the window (after 2s, at most one bucket
        // more); the second is still in it (until 3s at least).
        tokio::time::sleep_until(start + Duration::from_millis(2500)).await;
        assert_eq!(grant(&h, &i, args("", 1, false)).await, (1, Code::Ok));
        assert_eq!(
            grant(&h, &i, args("", 1, false)).await,
            (0, Code::ResourceExhausted)
        );
        cleanup(&name).await;
    }

    #[tokio::test]
    async fn two_handlers_share_one_quota() {
        let name = unique("shared");
        for algorithm in ["FIXED_WINDOW", "ROLLING_WINDOW"] {
            let p = params(
                &format!("{name}-{algorithm}"),
                json!({"maxAmount": 4, "validDuration": "1h", "rateLimitAlgorithm": algorithm}),
            );
            // Two processes: each its own handler and connections.
            let (a, b) = (build(p.clone()), build(p));
            let i = instance(&format!("{name}-{algorithm}"), "jason");
            for h in [&a, &b, &a, &b] {
                assert_eq!(
                    grant(h, &i, args("", 1, false)).await,
                    (1, Code::Ok),
                    "{algorithm}"
                );
            }
            for h in [&a, &b] {
                assert_eq!(
                    grant(h, &i, args("", 1, false)).await,
                    (0, Code::ResourceExhausted),
                    "{algorithm}"
                );
            }
        }
        cleanup(&name).await;
    }

    #[tokio::test]
    async fn dedup_answers_retries_across_handlers() {
        let name = unique("dedup");
        let p = params(&name, json!({"maxAmount": 2, "validDuration": "1h"}));
        let (a, b) = (build(p.clone()), build(p));
        let i = instance(&name, "jason");
        assert_eq!(grant(&a, &i, args("r1", 1, false)).await, (1, Code::Ok));
        // A retry reaching the other process is answered the same, uncharged.
        assert_eq!(grant(&b, &i, args("r1", 1, false)).await, (1, Code::Ok));
        assert_eq!(grant(&b, &i, args("r2", 1, false)).await, (1, Code::Ok));
        assert_eq!(
            grant(&a, &i, args("r3", 1, false)).await,
            (0, Code::ResourceExhausted)
        );
        // A refusal is repeated too, even to an amount that would fit.
        assert_eq!(
            grant(&b, &i, args("r3", 0, false)).await,
            (0, Code::ResourceExhausted)
        );
        // Ids are per counter: another user's "r1" is a new request.
        assert_eq!(
            grant(&a, &instance(&name, "sam"), args("r1", 1, false)).await,
            (1, Code::Ok)
        );
        // After the dedup window, "r1" is a new request, and the quota is spent.
        tokio::time::sleep(DEDUP_WINDOW + Duration::from_millis(200)).await;
        assert_eq!(
            grant(&b, &i, args("r1", 1, false)).await,
            (0, Code::ResourceExhausted)
        );
        cleanup(&name).await;
    }

    #[tokio::test]
    async fn best_effort_grants_what_is_left() {
        let name = unique("besteffort");
        let h = build(params(
            &name,
            json!({"maxAmount": 5, "validDuration": "1h"}),
        ));
        let i = instance(&name, "jason");
        assert_eq!(grant(&h, &i, args("", 3, false)).await, (3, Code::Ok));
        // Too much, not best effort: nothing granted, nothing charged.
        assert_eq!(
            grant(&h, &i, args("", 3, false)).await,
            (0, Code::ResourceExhausted)
        );
        assert_eq!(grant(&h, &i, args("", 3, true)).await, (2, Code::Ok));
        assert_eq!(
            grant(&h, &i, args("", 1, true)).await,
            (0, Code::ResourceExhausted)
        );
        // Asking for nothing is always fine.
        assert_eq!(grant(&h, &i, args("", 0, false)).await, (0, Code::Ok));
        assert_eq!(
            grant(&h, &i, args("", -1, false)).await,
            (0, Code::InvalidArgument)
        );
        let unknown = instance(&unique("unknown"), "jason");
        assert_eq!(
            grant(&h, &unknown, args("", 1, false)).await,
            (0, Code::InvalidArgument)
        );
        cleanup(&name).await;
    }

    #[tokio::test]
    async fn overrides_pick_limits_by_dimension() {
        let name = unique("overrides");
        let h = build(params(
            &name,
            json!({
                "maxAmount": 1,
                "validDuration": "1h",
                "overrides": [{"dimensions": {"user": "vip"}, "maxAmount": 3}],
            }),
        ));
        let (plain, vip) = (instance(&name, "jason"), instance(&name, "vip"));
        assert_eq!(grant(&h, &plain, args("", 1, false)).await, (1, Code::Ok));
        assert_eq!(
            grant(&h, &plain, args("", 1, false)).await,
            (0, Code::ResourceExhausted)
        );
        // Other dimensions count apart, with their override.
        for _ in 0..3 {
            assert_eq!(grant(&h, &vip, args("", 1, false)).await, (1, Code::Ok));
        }
        assert_eq!(
            grant(&h, &vip, args("", 1, false)).await,
            (0, Code::ResourceExhausted)
        );
        assert_eq!(
            grant(&h, &instance(&name, "sam"), args("", 1, false)).await,
            (1, Code::Ok)
        );
        cleanup(&name).await;
    }

    #[test]
    fn params_errors_name_their_field() {
        let field = |p: serde_json::Value| RedisQuota.build(&p).err().unwrap().field;
        let q = json!([{"name": "q", "maxAmount": 1, "validDuration": "1s"}]);
        assert_eq!(
            field(json!({"quotas": q, "redisServerUrl": "http://x:1"})),
            "redisServerUrl"
        );
        assert_eq!(
            field(json!({"quotas": q, "redisServerUrl": "x:port"})),
            "redisServerUrl"
        );
        assert_eq!(
            field(json!({"quotas": q, "redisServerUrl": ""})),
            "redisServerUrl"
        );
        assert_eq!(
            field(json!({"quotas": q, "connectionPoolSize": 0})),
            "connectionPoolSize"
        );
        assert_eq!(
            field(json!({"quotas": q, "connectionPoolSize": 1001})),
            "connectionPoolSize"
        );
        assert_eq!(
            field(json!({"quotas": q, "failPolicy": "MAYBE"})),
            "failPolicy"
        );
        assert_eq!(field(json!({"quotas": q, "bogus": 1})), "bogus");
        assert_eq!(
            field(json!({"quotas": [{"name": "q", "maxAmount": 1}]})),
            "quotas[0].validDuration"
        );
        assert_eq!(
            field(json!({"quotas": [{"name": "q", "maxAmount": 1, "validDuration": "0s"}]})),
            "quotas[0].validDuration"
        );
        assert_eq!(
            field(
                json!({"quotas": [{"name": "q", "maxAmount": 1, "validDuration": "1s",
                "overrides": [{"maxAmount": 1, "validDuration": "0s"}]}]})
            ),
            "quotas[0].overrides[0].validDuration"
        );
        assert_eq!(
            field(json!({"quotas": [{"name": "q", "maxAmount": -1, "validDuration": "1s"}]})),
            "quotas[0].maxAmount"
        );
        // Snake-case names, URLs with a db, and an unreachable server are
        // all fine at build time (no runtime is even running here).
        for url in ["redis://127.0.0.1:1/3", "127.0.0.1:1", "localhost"] {
            RedisQuota
                .build(&json!({
                    "quotas": q,
                    "redis_server_url": url,
                    "connection_pool_size": 1000,
                    "fail_policy": "FAIL_OPEN",
                }))
                .unwrap();
        }
        RedisQuota.build(&serde_json::Value::Null).unwrap();
    }

    #[tokio::test]
    async fn unreachable_redis_fails_closed_or_open_quickly() {
        let quotas = json!([{"name": "q", "maxAmount": 1, "validDuration": "1s"}]);
        let close = build(json!({"quotas": quotas, "redisServerUrl": "127.0.0.1:1"}));
        let open = build(json!({
            "quotas": quotas, "redisServerUrl": "127.0.0.1:1", "failPolicy": "FAIL_OPEN",
        }));
        let i = instance("q", "jason");
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let refused = close.quota(&i, &args("", 2, false)).await;
            assert!(started.elapsed() < Duration::from_secs(2));
            assert_eq!(
                (refused.granted, refused.status.code),
                (0, Code::Unavailable)
            );
            assert!(
                refused.status.message.contains("127.0.0.1:1"),
                "{refused:?}"
            );
            let granted = open.quota(&i, &args("", 2, false)).await;
            assert_eq!((granted.granted, granted.status.code), (2, Code::Ok));
        }
    }

    #[tokio::test]
    async fn silent_redis_is_given_up_on_within_the_timeout() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let h = build(json!({
            "quotas": [{"name": "q", "maxAmount": 1, "validDuration": "1s"}],
            "redisServerUrl": format!("127.0.0.1:{port}"),
        }));
        let started = std::time::Instant::now();
        let refused = h.quota(&instance("q", "jason"), &args("", 1, false)).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(refused.status.code, Code::Unavailable);
        silent.abort();
    }

    /// A throwaway Redis on `port`, answering PING before this returns.
    async fn start_redis(port: u16) -> tokio::process::Child {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server on PATH");
        for _ in 0..200 {
            if let Ok(mut conn) = raw(&format!("127.0.0.1:{port}")).await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return child;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {port} never answered PING");
    }

    #[tokio::test]
    async fn recovers_when_redis_comes_back() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Built while nothing listens there, with one connection so that
        // the stale one is reused after the restart below.
        let h = build(json!({
            "quotas": [{"name": "q", "maxAmount": 100, "validDuration": "1h"}],
            "redisServerUrl": format!("127.0.0.1:{port}"),
            "connectionPoolSize": 1,
        }));
        let i = instance("q", "jason");
        let down = h.quota(&i, &args("", 1, false)).await;
        assert_eq!(down.status.code, Code::Unavailable);

        let mut redis = start_redis(port).await;
        assert_eq!(grant(&h, &i, args("", 1, false)).await, (1, Code::Ok));

        redis.kill().await.unwrap();
        assert_eq!(
            grant(&h, &i, args("", 1, false)).await,
            (0, Code::Unavailable)
        );

        // The next call after it is back succeeds, on a new connection.
        let mut redis = start_redis(port).await;
        assert_eq!(grant(&h, &i, args("", 1, false)).await, (1, Code::Ok));

        // A restart between two calls: the kept connection is found broken
        // and replaced within the same call.
        redis.kill().await.unwrap();
        let mut redis = start_redis(port).await;
        assert_eq!(grant(&h, &i, args("", 1, false)).await, (1, Code::Ok));
        redis.kill().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn outages_are_warned_about_once_per_ten_seconds() {
        let health = Health::default();
        assert!(!health.succeeded());
        assert_eq!(health.failed(), Some(0));
        for _ in 0..3 {
            assert_eq!(health.failed(), None);
        }
        tokio::time::advance(WARN_EVERY - Duration::from_millis(1)).await;
        assert_eq!(health.failed(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        // The warning counts the failures it did not warn about.
        assert_eq!(health.failed(), Some(4));
        assert!(health.succeeded());
        assert!(!health.succeeded());
    }
}
