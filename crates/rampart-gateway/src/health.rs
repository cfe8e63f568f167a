//! Active health checks of upstream servers: each pool's servers are checked every
//! `health_check.interval` (HTTP GET of a path, or a TCP connect), all at once. The first
//! round, at start and after each reload, sets the state outright so that readiness is
//! known before serving; later rounds move it only across the thresholds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::runtime::{Pool, Runtime, Server};
use crate::server::Shared;

async fn check(pool: &Pool, server: &Server) -> bool {
    let c = &pool.health_check;
    server
        .endpoint
        .check(
            c.path.as_deref(),
            &server.host_header,
            c.expected_status,
            c.timeout,
        )
        .await
}

fn set_health(pool: &Pool, server: &Server, healthy: bool, was: bool) {
    server.metrics.up.set(i64::from(healthy));
    if healthy != was {
        tracing::warn!(
            pool = %pool.name,
            upstream = %server.url,
            healthy,
            "upstream health changed"
        );
    }
}

/// Checks every server of `pools` at once; each server with its result.
async fn check_pools<'a>(
    pools: impl Iterator<Item = &'a Pool>,
) -> Vec<(&'a Pool, &'a Server, bool)> {
    let servers: Vec<(&Pool, &Server)> = pools
        .flat_map(|p| p.servers.iter().map(move |s| (p, s)))
        .collect();
    let results = join_all(servers.iter().map(|(p, s)| check(p, s))).await;
    servers
        .into_iter()
        .zip(results)
        .map(|((p, s), passed)| (p, s, passed))
        .collect()
}

/// Checks every server of every pool once and sets the results outright.
pub async fn check_all(runtime: &Runtime) {
    for (pool, server, healthy) in check_pools(runtime.pools.values().map(|p| &**p)).await {
        let was = server.healthy();
        server.health.set(healthy);
        set_health(pool, server, healthy, was);
    }
}

/// Runs the checks on each pool's interval until shutdown; also closes idle upstream
/// connections that expired or were closed by the server.
pub async fn check_loop(shared: Arc<Shared>) {
    const TICK: Duration = Duration::from_millis(100);
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut current: Option<Arc<Runtime>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let runtime = shared.runtime.load_full();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &runtime)) {
            // A new config was just checked in full by the reload.
            let now = Instant::now();
            due = runtime
                .pools
                .values()
                .map(|p| (p.name.clone(), now + p.health_check.interval))
                .collect();
            current = Some(runtime.clone());
        }
        let now = Instant::now();
        let pools: Vec<&Pool> = runtime
            .pools
            .values()
            .filter(|p| due.get(&p.name).is_none_or(|at| *at <= now))
            .map(|p| &**p)
            .collect();
        if pools.is_empty() {
            continue;
        }
        for pool in &pools {
            due.insert(pool.name.clone(), now + pool.health_check.interval);
        }
        for (pool, server, passed) in check_pools(pools.into_iter()).await {
            let was = server.healthy();
            if let Some(healthy) = server.health.record(passed, &pool.health_check) {
                set_health(pool, server, healthy, was);
            }
            server.endpoint.sweep();
        }
    }
}
