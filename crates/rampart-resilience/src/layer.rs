//! The building blocks as tower layers, for use without the gateway.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::breaker::{CircuitBreaker, Outcome, Rejected};
use crate::retry::{RetryBudget, RetryConfig};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The error of a service behind a [`CircuitBreakerLayer`].
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    #[error(transparent)]
    Open(Rejected),
    #[error(transparent)]
    Inner(E),
}

/// Guards a service with a circuit breaker; `is_failure` decides which results count as
/// failures (errors, 5xx responses, ...).
#[derive(Clone)]
pub struct CircuitBreakerLayer<F> {
    breaker: Arc<CircuitBreaker>,
    is_failure: F,
}

impl<F> CircuitBreakerLayer<F> {
    pub fn new(breaker: Arc<CircuitBreaker>, is_failure: F) -> Self {
        CircuitBreakerLayer {
            breaker,
            is_failure,
        }
    }
}

impl<S, F: Clone> Layer<S> for CircuitBreakerLayer<F> {
    type Service = CircuitBreakerService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            is_failure: self.is_failure.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CircuitBreakerService<S, F> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    is_failure: F,
}

impl<S, F, Req> Service<Req> for CircuitBreakerService<S, F>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: 'static,
    S::Error: 'static,
    F: Fn(&Result<S::Response, S::Error>) -> bool + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = BoxFuture<Result<S::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match self.breaker.try_acquire_owned() {
            Ok(p) => p,
            Err(rejected) => return Box::pin(async move { Err(BreakerError::Open(rejected)) }),
        };
        let started = Instant::now();
        let call = self.inner.call(req);
        let is_failure = self.is_failure.clone();
        Box::pin(async move {
            let result = call.await;
            permit.record(Outcome {
                failure: is_failure(&result),
                duration: started.elapsed(),
            });
            result.map_err(BreakerError::Inner)
        })
    }
}

/// Retries a service's calls with backoff and within a budget; `should_retry` decides
/// which results are retried. The request must be `Clone` (buffered).
#[derive(Clone)]
pub struct RetryLayer<F> {
    config: Arc<RetryConfig>,
    budget: Arc<RetryBudget>,
    should_retry: F,
}

impl<F> RetryLayer<F> {
    pub fn new(config: RetryConfig, should_retry: F) -> Self {
        let budget = Arc::new(RetryBudget::new(config.budget.clone()));
        RetryLayer {
            config: Arc::new(config),
            budget,
            should_retry,
        }
    }

    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }
}

impl<S, F: Clone> Layer<S> for RetryLayer<F> {
    type Service = RetryService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            config: self.config.clone(),
            budget: self.budget.clone(),
            should_retry: self.should_retry.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RetryService<S, F> {
    inner: S,
    config: Arc<RetryConfig>,
    budget: Arc<RetryBudget>,
    should_retry: F,
}

impl<S, F, Req> Service<Req> for RetryService<S, F>
where
    Req: Clone + Send + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    F: Fn(&Result<S::Response, S::Error>) -> bool + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The ready service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let budget = self.budget.clone();
        let should_retry = self.should_retry.clone();
        Box::pin(async move {
            budget.deposit(Instant::now());
            let mut result = inner.call(req.clone()).await;
            for retry in 1..config.max_attempts {
                if !should_retry(&result) || !budget.try_withdraw(Instant::now()) {
                    break;
                }
                tokio::time::sleep(config.backoff(retry)).await;
                result = match inner.ready().await {
                    Ok(ready) => ready.call(req.clone()).await,
                    Err(e) => Err(e),
                };
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerConfig;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_breaker_layer_fails_fast_once_open() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let failing = tower::service_fn(move |_: ()| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), &str>("down") }
        });
        let breaker = Arc::new(CircuitBreaker::new(BreakerConfig {
            minimum_calls: 3,
            window_size: 3,
            ..BreakerConfig::default()
        }));
        let mut svc =
            CircuitBreakerLayer::new(breaker, |r: &Result<(), &str>| r.is_err()).layer(failing);
        for _ in 0..3 {
            assert!(matches!(
                svc.ready().await.unwrap().call(()).await,
                Err(BreakerError::Inner("down"))
            ));
        }
        for _ in 0..10 {
            assert!(matches!(
                svc.ready().await.unwrap().call(()).await,
                Err(BreakerError::Open(_))
            ));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "no call reached the service while open"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_layer_retries_until_success_within_max_attempts() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let flaky = tower::service_fn(move |_: u8| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err("busy") } else { Ok(n) } }
        });
        let layer = RetryLayer::new(
            RetryConfig {
                max_attempts: 3,
                backoff_base: Duration::from_millis(10),
                ..RetryConfig::default()
            },
            |r: &Result<usize, &str>| r.is_err(),
        );
        let mut svc = layer.layer(flaky);
        let result = svc.ready().await.unwrap().call(7).await;
        assert_eq!(result, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_budget_caps_retries_under_total_failure() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let down = tower::service_fn(move |_: ()| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), &str>("down") }
        });
        let layer = RetryLayer::new(
            RetryConfig {
                max_attempts: 3,
                budget: crate::retry::BudgetConfig {
                    percent: 10.0,
                    min_per_second: 0,
                    window: Duration::from_secs(10),
                },
                ..RetryConfig::default()
            },
            |r: &Result<(), &str>| r.is_err(),
        );
        let budget = layer.budget().clone();
        let mut svc = layer.layer(down);
        for _ in 0..1000 {
            let _ = svc.ready().await.unwrap().call(()).await;
        }
        let total = calls.load(Ordering::SeqCst);
        assert!(
            total <= 1100,
            "amplification {} > 1.1",
            total as f64 / 1000.0
        );
        assert!(total >= 1090, "the budget is used: {total}");
        assert!(budget.exhausted() > 0);
    }
}
