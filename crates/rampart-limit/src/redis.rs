//! Shared state through Redis: limits decided atomically by a Lua GCRA script that reads
//! Redis `TIME` (so replicas' clocks do not matter), called by EVALSHA and loaded again
//! after a Redis restart; bans kept as keys with a TTL and announced on a pub/sub channel.
//!
//! Every call has a short timeout. After a failure Redis is left alone for a moment
//! (callers fall back to local state) and then tried again, so the gateway returns to
//! shared state by itself when Redis is back.

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde::Deserialize;
use tokio::time::Instant;

use crate::bans::{Ban, BanTable};

/// `[redis]`: shared state for several replicas.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`; absent: everything stays local.
    pub url: Option<String>,
    /// Time one Redis call may take before local state is used instead.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Replicas sharing the limits: with Redis unreachable each enforces rate / this.
    pub expected_replicas: u32,
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            timeout: Duration::from_millis(20),
            expected_replicas: 2,
            key_prefix: "rampart:".into(),
        }
    }
}

impl RedisConfig {
    pub fn problem(&self) -> Option<String> {
        if let Some(url) = &self.url
            && let Err(e) = redis::Client::open(url.as_str())
        {
            return Some(format!("redis url `{url}`: {e}"));
        }
        if self.timeout.is_zero() || self.expected_replicas == 0 {
            return Some(
                "redis timeout must be above zero and expected_replicas at least 1".into(),
            );
        }
        None
    }
}

/// GCRA over several keys at once: all are consumed or none. Times in microseconds from
/// Redis `TIME`. ARGV holds (emission, tolerance) per key. Returns `allowed` followed by
/// (remaining, retry_after, reset) per key.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local allowed = 1
local tats = {}
local out = {0}
for i = 1, #KEYS do
  local T = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + T
  local allow_at = new_tat - tau
  if allow_at > now then
    allowed = 0
    out[#out + 1] = 0
    out[#out + 1] = allow_at - now
    out[#out + 1] = tat - now
  else
    tats[i] = new_tat
    out[#out + 1] = math.floor((tau - (new_tat - now)) / T)
    out[#out + 1] = 0
    out[#out + 1] = new_tat - now
  end
end
if allowed == 1 then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], tats[i], 'PX', math.ceil((tats[i] - now) / 1000) + 1)
  end
end
out[1] = allowed
return out
"#;

/// Why a Redis call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("redis is marked unavailable")]
    Unavailable,
    #[error("redis call timed out")]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A connection to Redis shared by the limiter and the ban bus.
pub struct Redis {
    client: redis::Client,
    config: RedisConfig,
    manager: Mutex<Option<ConnectionManager>>,
    /// Held while connecting, so that concurrent callers wait for one attempt.
    connecting: tokio::sync::Mutex<()>,
    script: redis::Script,
    epoch: Instant,
    /// Milliseconds after `epoch` before which Redis is not tried.
    down_until_ms: AtomicU64,
    down: AtomicBool,
    failures: AtomicU64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: not shown.
        f.debug_struct("Redis")
            .field("down", &self.is_down())
            .field("failures", &self.failures())
            .finish()
    }
}

/// How long Redis is left alone after a failure.
const BACKOFF: Duration = Duration::from_millis(250);

impl Redis {
    /// Prepares the client; nothing is connected until first used.
    pub fn new(config: RedisConfig) -> Result<Redis, String> {
        let url = config
            .url
            .clone()
            .ok_or_else(|| "no redis url configured".to_owned())?;
        let client = redis::Client::open(url.as_str()).map_err(|e| format!("redis url: {e}"))?;
        Ok(Redis {
            client,
            config,
            manager: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            script: redis::Script::new(GCRA_LUA),
            epoch: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Calls that failed or timed out.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether Redis is being avoided after a failure.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn mark_down(&self, why: &RedisFailure) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.down_until_ms.store(
            self.now_ms() + BACKOFF.as_millis() as u64,
            Ordering::Relaxed,
        );
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %why, "redis unavailable: falling back to local state");
        }
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("redis is back: shared state resumed");
        }
    }

    fn current(&self) -> Option<ConnectionManager> {
        self.manager
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Connects now rather than on first use; a failure is only logged (the gateway
    /// serves on local state until Redis answers).
    pub async fn connect(&self) {
        let _ = self.connection().await;
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisFailure> {
        if self.now_ms() < self.down_until_ms.load(Ordering::Relaxed) {
            return Err(RedisFailure::Unavailable);
        }
        if let Some(m) = self.current() {
            return Ok(m);
        }
        // One attempt at a time; those who waited for it use its result.
        let _attempt = self.connecting.lock().await;
        if let Some(m) = self.current() {
            return Ok(m);
        }
        if self.now_ms() < self.down_until_ms.load(Ordering::Relaxed) {
            return Err(RedisFailure::Unavailable);
        }
        let connected = tokio::time::timeout(
            self.config.timeout.max(Duration::from_millis(500)),
            ConnectionManager::new(self.client.clone()),
        )
        .await;
        let manager = match connected {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                let failure = RedisFailure::Redis(e);
                self.mark_down(&failure);
                return Err(failure);
            }
            Err(_) => {
                self.mark_down(&RedisFailure::Timeout);
                return Err(RedisFailure::Timeout);
            }
        };
        *self.manager.lock().unwrap_or_else(|e| e.into_inner()) = Some(manager.clone());
        Ok(manager)
    }

    /// Runs `f` on a connection within the timeout, tracking Redis' availability.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        let conn = self.connection().await?;
        let result = match tokio::time::timeout(self.config.timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisFailure::Redis(e)),
            Err(_) => Err(RedisFailure::Timeout),
        };
        match &result {
            Ok(_) => self.mark_up(),
            Err(e) => self.mark_down(e),
        }
        result
    }

    /// The GCRA script over `keys` with their (emission µs, tolerance µs).
    pub async fn gcra(&self, keys: &[(String, u64, u64)]) -> Result<Vec<i64>, RedisFailure> {
        let mut invocation = self.script.prepare_invoke();
        for (key, emission, tolerance) in keys {
            invocation.key(key).arg(*emission).arg(*tolerance);
        }
        self.call(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    fn ban_key(&self, ip: IpAddr) -> String {
        format!("{}ban:{ip}", self.config.key_prefix)
    }

    fn channel(&self) -> String {
        format!("{}bans", self.config.key_prefix)
    }

    /// Stores a ban with its TTL and announces it to every replica.
    pub async fn publish_ban(&self, ip: IpAddr, ban: &Ban) -> Result<(), RedisFailure> {
        let until_ms = millis_since_epoch(ban.until);
        let ttl = ban
            .until
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_millis()
            .max(1) as u64;
        let mut store = redis::cmd("SET");
        store
            .arg(self.ban_key(ip))
            .arg(format!("{until_ms} {}", ban.reason))
            .arg("PX")
            .arg(ttl);
        self.store_and_announce(store, format!("ban {ip} {until_ms} {}", ban.reason))
            .await
    }

    /// Lifts a ban everywhere.
    pub async fn publish_unban(&self, ip: IpAddr) -> Result<(), RedisFailure> {
        let mut delete = redis::cmd("DEL");
        delete.arg(self.ban_key(ip));
        self.store_and_announce(delete, format!("unban {ip}")).await
    }

    /// Runs `store` and publishes `message` on the ban channel, in one round trip.
    async fn store_and_announce(
        &self,
        store: redis::Cmd,
        message: String,
    ) -> Result<(), RedisFailure> {
        let mut pipe = redis::pipe();
        pipe.add_command(store)
            .ignore()
            .cmd("PUBLISH")
            .arg(self.channel())
            .arg(message)
            .ignore();
        self.call(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await
    }

    /// Loads every ban stored in Redis into `table`.
    async fn load_bans(&self, table: &BanTable) -> Result<usize, redis::RedisError> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let pattern = format!("{}ban:*", self.config.key_prefix);
        let mut cursor: u64 = 0;
        let mut loaded = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            for key in keys {
                let value: Option<String> =
                    redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                let ip = key.rsplit_once("ban:").and_then(|(_, ip)| ip.parse().ok());
                if let (Some(ip), Some(ban)) = (ip, value.as_deref().and_then(parse_ban)) {
                    table.insert(ip, ban);
                    loaded += 1;
                }
            }
            if next == 0 {
                return Ok(loaded);
            }
            cursor = next;
        }
    }

    /// Keeps `table` in step with the bans announced by every replica, until the task is
    /// dropped: subscribes, loads the stored bans, applies announcements as they come,
    /// and starts over after any connection loss.
    pub async fn follow_bans(&self, table: &BanTable) {
        loop {
            if let Err(e) = self.follow_once(table).await {
                tracing::debug!(error = %e, "ban channel lost; reconnecting");
            }
            tokio::time::sleep(BACKOFF).await;
        }
    }

    async fn follow_once(&self, table: &BanTable) -> Result<(), redis::RedisError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.channel()).await?;
        // Subscribed first, then loaded: no announcement falls between the two.
        let loaded = self.load_bans(table).await?;
        tracing::debug!(loaded, "bans loaded from redis");
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            apply_announcement(table, &text);
        }
        Ok(())
    }
}

fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// `"<until_ms> <reason>"`
fn parse_ban(value: &str) -> Option<Ban> {
    let (until, reason) = value.split_once(' ').unwrap_or((value, ""));
    let until = UNIX_EPOCH + Duration::from_millis(until.parse().ok()?);
    Some(Ban {
        until,
        reason: reason.to_owned(),
    })
}

/// Applies `ban <ip> <until_ms> <reason>` or `unban <ip>`.
fn apply_announcement(table: &BanTable, text: &str) {
    let mut parts = text.splitn(3, ' ');
    match (
        parts.next(),
        parts.next().and_then(|ip| ip.parse::<IpAddr>().ok()),
    ) {
        (Some("ban"), Some(ip)) => {
            if let Some(ban) = parts.next().and_then(parse_ban) {
                table.insert(ip, ban);
            }
        }
        (Some("unban"), Some(ip)) => {
            table.remove(ip);
        }
        _ => tracing::debug!(message = text, "unreadable ban announcement ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_apply_to_the_table() {
        let table = BanTable::default();
        let until = millis_since_epoch(SystemTime::now() + Duration::from_secs(60));
        apply_announcement(&table, &format!("ban 192.0.2.1 {until} too many requests"));
        let ban = table.get("192.0.2.1".parse().unwrap()).expect("banned");
        assert_eq!(ban.reason, "too many requests");
        apply_announcement(&table, "unban 192.0.2.1");
        assert!(table.get("192.0.2.1".parse().unwrap()).is_none());
        apply_announcement(&table, "ban not-an-ip 1 x");
        assert!(table.list().is_empty());
    }
}
