//! Inspection cost: a typical request (10 query parameters, about 1 KB in all, plus the
//! inspected headers), a 64 KB JSON body, and adversarial inputs at 1 KB and 64 KB to show the
//! cost grows linearly.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rampart_guard::{GuardConfig, Location, Policy, Report};

fn typical_query() -> String {
    let pairs = [
        ("name", "María O'Brien-Smith"),
        ("email", "maria.obrien@example.com"),
        ("address", "Calle de Alcalá 42, 3º izquierda, 28014 Madrid"),
        ("phone", "+34 612 345 678"),
        (
            "q",
            "best union select of running shoes for trail and road, under 120 euros",
        ),
        ("page", "3"),
        ("sort", "price_desc"),
        ("redirect", "https://shop.example.com/cart?item=1234&qty=2"),
        (
            "comment",
            "Great service -- will order again! Delivery took 2-3 days; packaging was fine.",
        ),
        (
            "session_note",
            "user prefers email; last order #48213 (shipped) & return pending",
        ),
    ];
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let mut q = query.finish();
    while q.len() < 1000 {
        q.push_str("&utm_source=newsletter");
    }
    q
}

fn json_body(size: usize) -> String {
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let item = serde_json::json!({
            "id": i,
            "title": format!("Order {i} for customer number {}", i * 7),
            "notes": "Leave the parcel at the door; ring twice. Thanks -- M.",
            "tags": ["priority", "gift-wrap", "fragile"],
            "price": 19.99,
        });
        len += item.to_string().len() + 1;
        items.push(item);
        i += 1;
    }
    serde_json::json!({ "orders": items }).to_string()
}

fn bench(c: &mut Criterion) {
    let policy = Policy::new(&GuardConfig::default()).unwrap();
    let query = typical_query();
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
    let referer = "https://shop.example.com/products/shoes?color=blue&size=42";
    let cookie = "session=3f9a8c7d6e5b4a3f2e1d0c9b8a7f6e5d; theme=dark; lang=es";
    let mut report = Report::default();

    let mut group = c.benchmark_group("inspect");
    group.throughput(Throughput::Bytes(
        (query.len() + ua.len() + referer.len() + cookie.len()) as u64,
    ));
    group.bench_function("typical_request_10_params_1kb", |b| {
        b.iter(|| {
            report.clear();
            policy.inspect_path(black_box("/api/v1/orders/search"), &mut report);
            policy.inspect_query(black_box(&query), &mut report);
            policy.inspect_header("user-agent", black_box(ua), &mut report);
            policy.inspect_header("referer", black_box(referer), &mut report);
            policy.inspect_header("cookie", black_box(cookie), &mut report);
            assert!(report.is_empty());
        })
    });
    let body = json_body(64 * 1024);
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("json_body_64kb", |b| {
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
    for (name, unit) in [
        ("quotes_and_parens", "'(\"(-- "),
        ("percent_escapes", "%25%32%35"),
        ("tags", "<a b='<c "),
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
