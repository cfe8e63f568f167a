//! Abuse protection: exact rate limits (GCRA), allow and deny lists, automatic bans —
//! decided in memory on one machine, or shared by every replica through Redis.

pub mod access;
pub mod bans;
pub mod gcra;
pub mod key;
pub mod limiter;
pub mod memory;
pub mod redis;

pub use access::{Access, AccessConfig, Policy};
pub use bans::{Ban, BanConfig, BanEngine, BanRule, BanTable, EventKind};
pub use gcra::{Decision, KeyKind, LimitConfig, OnRedisError, Quota};
pub use key::{Key, aggregate};
pub use limiter::{LimiterStats, QuotaInfo, RateLimitConfig, RateLimiter, RequestKeys, Verdict};
pub use memory::MemoryStore;
pub use redis::{Redis, RedisConfig, RedisFailure};
