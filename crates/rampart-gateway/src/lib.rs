//! Rampart's gateway: an HTTP reverse proxy with secure defaults.
//!
//! ```no_run
//! # async fn example() -> Result<(), rampart_gateway::GatewayError> {
//! let gateway = rampart_gateway::Gateway::bind(rampart_gateway::Config::default()).await?;
//! let handle = gateway.handle();
//! tokio::spawn(gateway.run());
//! // later: handle.reload(new_config).await?; handle.shutdown();
//! # Ok(()) }
//! ```

mod access_log;
mod admin;
mod body;
pub mod config;
mod cors;
mod exchange;
mod headers;
mod health;
mod inspect;
pub mod metrics;
mod proxy;
mod runtime;
mod server;
mod upstream;

pub use config::{Config, ConfigError, DEFAULT_CONFIG_TOML};
pub use server::{Gateway, GatewayError, GatewayHandle};
