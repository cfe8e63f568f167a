//! Prometheus metrics. Handles for each route are resolved when the config is compiled, so
//! the request path records without label lookups.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use rampart_lanes::Lanes;
use rampart_limit::{LimiterStats, Redis};

/// Latency buckets in seconds: 100 µs × 1.5^k up to 30 s (32 buckets), so that any
/// quantile read from them is within 25% of the truth.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    (0..32)
        .map(|k| 100e-6 * 1.5f64.powi(k))
        .take_while(|b| *b < 30.0)
        .chain(std::iter::once(30.0))
}

/// [`latency_buckets`] in nanoseconds, the unit durations are counted in.
static LATENCY_BOUNDS_NANOS: LazyLock<Vec<u64>> = LazyLock::new(|| {
    latency_buckets()
        .map(|b| (b * 1e9).round() as u64)
        .collect()
});

/// Bucket counters of a [`LatencyHistogram`]: one per bound of [`latency_buckets`], and
/// one past the last (`+Inf`).
const BUCKETS: usize = 34;

/// A latency histogram of [`latency_buckets`], kept in per-thread lanes
/// ([`rampart_lanes`]): a request records two, and a worker thread records into its own
/// lane with plain loads and stores, where shared atomics cost two read-modify-writes
/// a histogram. The count is the sum of the buckets when scraped, so `_count` and the
/// `+Inf` bucket always agree.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    inner: Arc<Lanes<LatencyCounts>>,
}

#[derive(Debug)]
struct LatencyCounts {
    buckets: [AtomicU64; BUCKETS],
    /// Nanoseconds; wraps after 584 years of summed latency, which a scraper reads as a
    /// counter reset.
    sum_nanos: AtomicU64,
}

impl Default for LatencyCounts {
    fn default() -> Self {
        LatencyCounts {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is at least the value (Prometheus' `le`).
        let bucket = LATENCY_BOUNDS_NANOS
            .partition_point(|&bound| bound < nanos)
            .min(BUCKETS - 1);
        let lane = self.inner.local();
        lane.add(|c| &c.buckets[bucket], 1);
        lane.add(|c| &c.sum_nanos, nanos);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut counts = [0u64; BUCKETS];
        let mut sum_nanos = 0u64;
        for lane in self.inner.iter() {
            for (total, count) in counts.iter_mut().zip(&lane.buckets) {
                *total = total.wrapping_add(count.load(Ordering::Relaxed));
            }
            sum_nanos = sum_nanos.wrapping_add(lane.sum_nanos.load(Ordering::Relaxed));
        }
        let bounds = latency_buckets().chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
        let count = counts.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(sum_nanos as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A counter bumped on the request path, kept in per-thread lanes like
/// [`LatencyHistogram`].
#[derive(Clone, Debug, Default)]
pub struct LaneCounter {
    inner: Arc<rampart_lanes::Counter>,
}

impl LaneCounter {
    pub fn inc(&self) {
        self.inner.inc();
    }
}

impl TypedMetric for LaneCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for LaneCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.inner.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Rejection,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    pool: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Why the gateway itself answered instead of the upstream.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Rejection {
    no_route,
    body_too_large,
    headers_too_large,
    cors_refused,
    upstream_timeout,
    upstream_unavailable,
    circuit_open,
    bad_request,
    denied,
    banned,
    rate_limited,
    limit_unavailable,
    inspection_blocked,
    body_unparsable,
}

impl Rejection {
    const ALL: [Rejection; 14] = [
        Rejection::no_route,
        Rejection::body_too_large,
        Rejection::headers_too_large,
        Rejection::cors_refused,
        Rejection::upstream_timeout,
        Rejection::upstream_unavailable,
        Rejection::circuit_open,
        Rejection::bad_request,
        Rejection::denied,
        Rejection::banned,
        Rejection::rate_limited,
        Rejection::limit_unavailable,
        Rejection::inspection_blocked,
        Rejection::body_unparsable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::no_route => "no_route",
            Rejection::body_too_large => "body_too_large",
            Rejection::headers_too_large => "headers_too_large",
            Rejection::cors_refused => "cors_refused",
            Rejection::upstream_timeout => "upstream_timeout",
            Rejection::upstream_unavailable => "upstream_unavailable",
            Rejection::circuit_open => "circuit_open",
            Rejection::bad_request => "bad_request",
            Rejection::denied => "denied",
            Rejection::banned => "banned",
            Rejection::rate_limited => "rate_limited",
            Rejection::limit_unavailable => "limit_unavailable",
            Rejection::inspection_blocked => "inspection_blocked",
            Rejection::body_unparsable => "body_unparsable",
        }
    }
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, LaneCounter>,
    request_duration: Family<RouteLabel, LatencyHistogram>,
    upstream_duration: Family<RouteLabel, LatencyHistogram>,
    rejections: [LaneCounter; Rejection::ALL.len()],
    server_up: Family<ServerLabels, Gauge>,
    server_requests: Family<ServerLabels, LaneCounter>,
    server_failures: Family<ServerLabels, Counter>,
    server_ejections: Family<ServerLabels, Counter>,
    server_breaker: Family<ServerLabels, Gauge>,
    pool_breaker: Family<PoolLabel, Gauge>,
    retries: Family<RouteLabel, Counter>,
    budget_exhausted: Family<RouteLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    pub active_connections: Gauge,
    pub connections: Counter,
    pub bans: Counter,
    inspections: Family<ResultLabel, Counter>,
}

/// Exports the limiters' and Redis' own counters at each scrape.
#[derive(Debug)]
struct LimitCollector {
    stats: Arc<LimiterStats>,
    redis: Option<Arc<Redis>>,
}

impl Collector for LimitCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut counter = |name: &str, help: &str, value: u64| {
            let c = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(metric)
        };
        let s = &self.stats;
        counter(
            "rate_limit_allowed",
            "Requests allowed by the rate limits",
            s.allowed.get(),
        )?;
        counter(
            "rate_limit_limited",
            "Requests refused by the rate limits",
            s.limited.get(),
        )?;
        counter(
            "rate_limit_fallbacks",
            "Rate limit decisions taken locally because Redis was unreachable",
            s.fallbacks.load(Ordering::Relaxed),
        )?;
        if let Some(redis) = &self.redis {
            counter(
                "redis_failures",
                "Redis calls that failed or timed out",
                redis.failures(),
            )?;
        }
        Ok(())
    }
}

/// The status classes a route's request counter is split by.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A route's metric handles.
#[derive(Clone)]
pub struct RouteMetrics {
    by_status_class: [LaneCounter; 5],
    pub request_duration: LatencyHistogram,
    pub upstream_duration: LatencyHistogram,
    pub retries: Counter,
    pub budget_exhausted: Counter,
}

/// An upstream server's metric handles.
#[derive(Clone)]
pub struct ServerMetrics {
    pub up: Gauge,
    pub requests: LaneCounter,
    pub failures: Counter,
    pub ejections: Counter,
    pub breaker_state: Gauge,
}

impl RouteMetrics {
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_status_class[class].inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rampart");
        let requests = Family::<RequestLabels, LaneCounter>::default();
        let request_duration = Family::<RouteLabel, LatencyHistogram>::default();
        let upstream_duration = Family::<RouteLabel, LatencyHistogram>::default();
        let rejection_family = Family::<ReasonLabel, LaneCounter>::default();
        let rejections = Rejection::ALL.map(|reason| {
            rejection_family
                .get_or_create(&ReasonLabel { reason })
                .clone()
        });
        let server_up = Family::<ServerLabels, Gauge>::default();
        let server_requests = Family::<ServerLabels, LaneCounter>::default();
        let server_failures = Family::<ServerLabels, Counter>::default();
        let server_ejections = Family::<ServerLabels, Counter>::default();
        let server_breaker = Family::<ServerLabels, Gauge>::default();
        let pool_breaker = Family::<PoolLabel, Gauge>::default();
        let retries = Family::<RouteLabel, Counter>::default();
        let budget_exhausted = Family::<RouteLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let active_connections = Gauge::default();
        let connections = Counter::default();
        let bans = Counter::default();
        registry.register("bans", "Bans issued by this gateway", bans.clone());
        let inspections = Family::<ResultLabel, Counter>::default();
        registry.register(
            "inspection_findings",
            "Requests whose inspection score reached the threshold, by result (blocked, detected)",
            inspections.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by route and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request head to the end of the response body",
            request_duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending the request upstream to the upstream's response head",
            upstream_duration.clone(),
        );
        registry.register(
            "rejections",
            "Requests the gateway answered itself, by reason",
            rejection_family,
        );
        registry.register(
            "upstream_server_up",
            "1 when the upstream server passes its active health checks",
            server_up.clone(),
        );
        registry.register(
            "upstream_requests",
            "Calls made to the upstream server",
            server_requests.clone(),
        );
        registry.register(
            "upstream_failures",
            "Calls to the upstream server that failed (as the pool's failure policy says)",
            server_failures.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Times the upstream server was ejected after consecutive failures",
            server_ejections.clone(),
        );
        registry.register(
            "upstream_breaker_state",
            "Circuit breaker of the upstream server: 0 closed, 1 open, 2 half-open",
            server_breaker.clone(),
        );
        registry.register(
            "pool_breaker_state",
            "Circuit breaker of the pool: 0 closed, 1 open, 2 half-open",
            pool_breaker.clone(),
        );
        registry.register(
            "retries",
            "Upstream calls retried, by route",
            retries.clone(),
        );
        registry.register(
            "retry_budget_exhausted",
            "Retries refused because the route's retry budget was spent",
            budget_exhausted.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            reloads.clone(),
        );
        registry.register(
            "active_connections",
            "Client connections open now",
            active_connections.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted",
            connections.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            rejections,
            server_up,
            server_requests,
            server_failures,
            server_ejections,
            server_breaker,
            pool_breaker,
            retries,
            budget_exhausted,
            reloads,
            active_connections,
            connections,
            bans,
            inspections,
        }
    }

    pub fn route(&self, name: &str) -> RouteMetrics {
        let label = RouteLabel {
            route: name.to_owned(),
        };
        RouteMetrics {
            by_status_class: STATUS_CLASSES.map(|status| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: name.to_owned(),
                        status,
                    })
                    .clone()
            }),
            request_duration: self.request_duration.get_or_create(&label).clone(),
            upstream_duration: self.upstream_duration.get_or_create(&label).clone(),
            retries: self.retries.get_or_create(&label).clone(),
            budget_exhausted: self.budget_exhausted.get_or_create(&label).clone(),
        }
    }

    /// Exports the limiters' counters (and Redis' failures) from now on.
    pub fn register_limits(&mut self, stats: Arc<LimiterStats>, redis: Option<Arc<Redis>>) {
        self.registry
            .register_collector(Box::new(LimitCollector { stats, redis }));
    }

    /// A request over its route's inspection threshold: blocked, or only detected.
    pub fn inspection(&self, blocked: bool) {
        let result = if blocked { "blocked" } else { "detected" };
        self.inspections
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejections[reason as usize].inc();
    }

    pub fn server(&self, pool: &str, server: &str) -> ServerMetrics {
        let labels = ServerLabels {
            pool: pool.to_owned(),
            server: server.to_owned(),
        };
        ServerMetrics {
            up: self.server_up.get_or_create(&labels).clone(),
            requests: self.server_requests.get_or_create(&labels).clone(),
            failures: self.server_failures.get_or_create(&labels).clone(),
            ejections: self.server_ejections.get_or_create(&labels).clone(),
            breaker_state: self.server_breaker.get_or_create(&labels).clone(),
        }
    }

    pub fn pool_breaker_gauge(&self, pool: &str) -> Gauge {
        self.pool_breaker
            .get_or_create(&PoolLabel {
                pool: pool.to_owned(),
            })
            .clone()
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_span_100us_to_30s_finely() {
        let b: Vec<f64> = latency_buckets().collect();
        assert!((b[0] - 100e-6).abs() < 1e-12);
        assert_eq!(*b.last().unwrap(), 30.0);
        assert!(
            b.windows(2)
                .all(|w| w[1] / w[0] <= 1.5 + 1e-9 && w[1] > w[0])
        );
    }

    #[test]
    fn latencies_land_in_the_first_bucket_at_least_as_large_and_add_up() {
        let histogram = LatencyHistogram::default();
        for micros in [50, 100, 101, 600, 40_000_000] {
            histogram.observe(Duration::from_micros(micros));
        }
        let mut registry = Registry::default();
        registry.register("latency", "test", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |series: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{series} in {text}"))
        };
        // Cumulative counts, bucket by bucket: 50 µs and exactly 100 µs are at most the
        // first bound (100 µs), 101 µs within the second (150 µs), 600 µs within the sixth
        // (759 µs), 40 s past the last (30 s).
        let buckets: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("latency_bucket{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert_eq!(buckets.len(), latency_buckets().count() + 1);
        assert_eq!(&buckets[..6], &[2.0, 3.0, 3.0, 3.0, 3.0, 4.0]);
        assert_eq!(buckets[buckets.len() - 2], 4.0);
        assert_eq!(value("latency_bucket{le=\"30.0\"}"), 4.0);
        assert_eq!(value("latency_bucket{le=\"+Inf\"}"), 5.0);
        assert_eq!(value("latency_count"), 5.0);
        assert!((value("latency_sum") - 40.000851).abs() < 1e-9);
    }

    #[test]
    fn a_histogram_has_a_counter_per_bucket_and_one_past_the_last() {
        assert_eq!(BUCKETS, latency_buckets().count() + 1);
        assert_eq!(LATENCY_BOUNDS_NANOS.len() + 1, BUCKETS);
    }

    #[test]
    fn rejection_index_matches_order() {
        for (i, r) in Rejection::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
