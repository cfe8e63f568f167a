//! Resilience for calls to upstream services: circuit breakers, retries with backoff and
//! a retry budget, passive outlier ejection, active health state and load balancing.
//!
//! Each piece is a small state machine usable on its own (the gateway consults them on
//! its request path) and the breaker and retries are also tower layers
//! ([`CircuitBreakerLayer`], [`RetryLayer`]).

pub mod balance;
pub mod breaker;
pub mod health;
pub mod layer;
pub mod outlier;
pub mod retry;

pub use balance::{Balancer, InFlight, Strategy};
pub use breaker::{BreakerConfig, CircuitBreaker, Outcome, Permit, Rejected, State};
pub use health::{HealthCheckConfig, HealthState};
pub use layer::{BreakerError, CircuitBreakerLayer, RetryLayer};
pub use outlier::{Ejection, OutlierConfig, OutlierDetector};
pub use retry::{BudgetConfig, RetryBudget, RetryConfig, RetryOn};
