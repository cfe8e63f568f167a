//! Upstream reachability: a TCP connect probe per server, run at start, after each reload
//! and every `health.interval`. The request path also marks a server down on a connect
//! error and up on a response, so the state follows traffic between probes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::net::TcpStream;

use crate::runtime::{Runtime, Server};
use crate::server::Shared;

async fn probe(server: &Server, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(server.endpoint.address())).await,
        Ok(Ok(_))
    )
}

/// Probes every server of every pool at once and records the results.
pub async fn probe_all(runtime: &Runtime, timeout: Duration) {
    let servers: Vec<&Server> = runtime
        .pools
        .values()
        .flat_map(|p| p.servers.iter())
        .collect();
    let results = join_all(servers.iter().map(|s| probe(s, timeout))).await;
    for (server, up) in servers.into_iter().zip(results) {
        if server.reachable() != up {
            tracing::info!(upstream = %server.url, reachable = up, "upstream reachability changed");
        }
        server.set_reachable(up);
    }
}

/// Probes on the configured interval until shutdown.
pub async fn probe_loop(shared: Arc<Shared>) {
    loop {
        let runtime = shared.runtime.load_full();
        let interval = runtime.config.health.interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let runtime = shared.runtime.load_full();
        probe_all(&runtime, runtime.config.health.connect_timeout).await;
        for server in runtime.pools.values().flat_map(|p| p.servers.iter()) {
            server.endpoint.sweep();
        }
    }
}
