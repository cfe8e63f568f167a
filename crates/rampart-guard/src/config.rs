//! The inspection settings of a route (`[inspection]` globally, `[routes.inspection]` per
//! route).

use serde::{Deserialize, Serialize};

use crate::rules::{self, Family};

/// What a route does with what inspection finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse requests whose anomaly score reaches the threshold (403).
    #[default]
    Block,
    /// Log and count what would have been refused, and pass the request.
    Detect,
    /// Do not inspect.
    Off,
}

/// What to do with a body larger than `max_body_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// Inspect the first `max_body_bytes` and pass the rest uninspected.
    #[default]
    InspectPrefix,
    /// Refuse the request with 413.
    Refuse,
}

/// Rules not to apply to a parameter. With neither `rules` nor `families`, the parameter is
/// not inspected at all.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// Parameter, header or cookie name (exact, case-sensitive); `*` for every parameter.
    pub parameter: String,
    /// Rule ids not to apply.
    #[serde(default)]
    pub rules: Vec<u32>,
    /// Families not to apply (`xss`, `sqli`, ...).
    #[serde(default)]
    pub families: Vec<Family>,
}

impl Exclusion {
    pub(crate) fn matches_parameter(&self, name: &str) -> bool {
        self.parameter == "*" || self.parameter == name
    }
}

/// Inspection settings. Defaults: block at paranoia level 1, threshold 5, inspect
/// `User-Agent`, `Referer` and cookies, buffer up to 1 MiB of body, JSON nesting up to 64.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    pub mode: Mode,
    /// 1 (fewest false positives) to 4 (most rules).
    pub paranoia: u8,
    /// Anomaly score at which a request is refused; one critical finding scores 5.
    pub threshold: u32,
    /// Headers whose values are inspected (case-insensitive); `cookie` is split into values.
    pub headers: Vec<String>,
    /// Body bytes buffered for inspection.
    pub max_body_bytes: u64,
    /// What happens to a longer body.
    pub oversize: Oversize,
    /// Deepest JSON nesting accepted; deeper documents are refused with 400.
    pub json_max_depth: u32,
    pub exclusions: Vec<Exclusion>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            mode: Mode::Block,
            paranoia: 1,
            threshold: 5,
            headers: vec!["user-agent".into(), "referer".into(), "cookie".into()],
            max_body_bytes: 1024 * 1024,
            oversize: Oversize::InspectPrefix,
            json_max_depth: 64,
            exclusions: Vec::new(),
        }
    }
}

/// An inspection setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("paranoia must be 1 to 4, not {0}")]
    Paranoia(u8),
    #[error("threshold must be at least 1")]
    Threshold,
    #[error(
        "exclusion for parameter {parameter:?} names rule {rule}, which does not exist (rule ids are listed in the README)"
    )]
    UnknownRule { parameter: String, rule: u32 },
    #[error("an exclusion needs a parameter name (or \"*\")")]
    EmptyParameter,
    #[error("json_max_depth must be 1 to 512, not {0}")]
    JsonDepth(u32),
}

impl GuardConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=4).contains(&self.paranoia) {
            return Err(ConfigError::Paranoia(self.paranoia));
        }
        if self.threshold == 0 {
            return Err(ConfigError::Threshold);
        }
        if !(1..=512).contains(&self.json_max_depth) {
            return Err(ConfigError::JsonDepth(self.json_max_depth));
        }
        for e in &self.exclusions {
            if e.parameter.is_empty() {
                return Err(ConfigError::EmptyParameter);
            }
            if let Some(&rule) = e.rules.iter().find(|id| rules::by_id(**id).is_none()) {
                return Err(ConfigError::UnknownRule {
                    parameter: e.parameter.clone(),
                    rule,
                });
            }
        }
        Ok(())
    }
}
