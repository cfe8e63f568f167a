//! Inspection cost: a typical request (10 query parameters, about 1 KB in all, plus the
//! inspected headers), a 64 KB JSON body (records that repeat some values, and the same with
//! no string repeated), and adversarial inputs at 1 KB and 64 KB to show the
//! cost grows linearly.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rampart_guard::{GuardConfig, Location, Policy, Report};

mod inputs;
use inputs::{
    COOKIE, REFERER, USER_AGENT, inspect_typical_request, json_body, json_body_distinct,
    typical_query,
};

fn bench(c: &mut Criterion) {
    let policy = Policy::new(&GuardConfig::default()).unwrap();
    let query = typical_query();
    let mut report = Report::default();

    let mut group = c.benchmark_group("inspect");
    group.throughput(Throughput::Bytes(
        (query.len() + USER_AGENT.len() + REFERER.len() + COOKIE.len()) as u64,
    ));
    group.bench_function("typical_request_10_params_1kb", |b| {
        b.iter(|| {
            report.clear();
            inspect_typical_request(&policy, &query, &mut report);
            assert!(report.is_empty());
        })
    });
    for (name, body) in [
        ("json_body_64kb", json_body(64 * 1024)),
        (
            "json_body_64kb_no_string_repeated",
            json_body_distinct(64 * 1024),
        ),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                report.clear();
                policy
                    .inspect_body(
                        Some("application/json"),
                        black_box(body.as_bytes()),
                        &mut report,
                    )
                    .unwrap();
                assert!(report.is_empty());
            })
        });
    }
    for (name, unit) in [
        ("quotes_and_parens", "'(\"(-- "),
        ("percent_escapes", "%25%32%35"),
        ("tags", "<a b='<c "),
        ("template_opens", "{{x "),
        ("dots", "..%c0%af"),
    ] {
        for size in [1024usize, 64 * 1024] {
            let input = unit.repeat(size / unit.len());
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_function(format!("adversarial_{name}_{}kb", size / 1024), |b| {
                b.iter(|| {
                    report.clear();
                    policy.inspect_value(Location::QueryValue, "q", black_box(&input), &mut report);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
