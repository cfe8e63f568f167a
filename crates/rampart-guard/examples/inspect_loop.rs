//! Inspects the benchmark's typical request (or, with `JSON` set, its 64 KB JSON body, with
//! `JSON=distinct` the body whose strings all differ, with `VALUE` set, that one query
//! value, or with `QUERY` set, that query string) `N` times, for counting instructions under
//! cachegrind where timings are too noisy to compare (`bench/guard-instructions.sh`). With
//! `FRESH` set, every inspection gets a new `Report`, whose buffers grow again.

use std::hint::black_box;

use rampart_guard::{GuardConfig, Location, Policy, Report};

#[path = "../benches/inputs/mod.rs"]
mod inputs;
use inputs::{inspect_typical_request, json_body, json_body_distinct, typical_query};

fn main() {
    let policy = Policy::new(&GuardConfig::default()).expect("the default policy builds");
    let iterations: usize = std::env::var("N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let json = std::env::var("JSON").ok().map(|kind| match kind.as_str() {
        "distinct" => json_body_distinct(64 * 1024),
        _ => json_body(64 * 1024),
    });
    let value = std::env::var("VALUE").ok();
    let query = std::env::var("QUERY").ok();
    let typical = typical_query();
    let fresh = std::env::var_os("FRESH").is_some();
    let mut report = Report::default();
    for _ in 0..iterations {
        if fresh {
            report = Report::default();
        } else {
            report.clear();
        }
        if let Some(value) = &value {
            policy.inspect_value(Location::QueryValue, "q", black_box(value), &mut report);
            continue;
        }
        if let Some(query) = &query {
            policy.inspect_query(black_box(query), &mut report);
            continue;
        }
        match &json {
            Some(body) => policy
                .inspect_body(
                    Some("application/json"),
                    black_box(body.as_bytes()),
                    &mut report,
                )
                .expect("the benchmark body parses"),
            None => inspect_typical_request(&policy, &typical, &mut report),
        }
        assert!(report.is_empty(), "the benchmark inputs are benign");
    }
}
