//! The inputs of the inspection benchmarks, shared by the criterion bench and the
//! instruction-count loop (`examples/inspect_loop.rs`, run by `bench/guard-instructions.sh`).

use std::hint::black_box;

use rampart_guard::{Policy, Report};

pub const PATH: &str = "/api/v1/orders/search";
pub const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";
pub const REFERER: &str = "https://shop.example.com/products/shoes?color=blue&size=42";
pub const COOKIE: &str = "session=3f9a8c7d6e5b4a3f2e1d0c9b8a7f6e5d; theme=dark; lang=es";

pub fn typical_query() -> String {
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

/// A JSON array of orders of about `size` bytes, as an API receives it: each order has its own
/// id and title, and repeats the others' note and tags.
pub fn json_body(size: usize) -> String {
    orders(size, |i| {
        serde_json::json!({
            "id": i,
            "title": format!("Order {i} for customer number {}", i * 7),
            "notes": "Leave the parcel at the door; ring twice. Thanks -- M.",
            "tags": ["priority", "gift-wrap", "fragile"],
            "price": 19.99,
        })
    })
}

/// The orders of [`json_body`], but no two strings alike: the cost when nothing repeats.
pub fn json_body_distinct(size: usize) -> String {
    orders(size, |i| {
        serde_json::json!({
            "id": i,
            "title": format!("Order {i} for customer number {}", i * 7),
            "notes": format!("Leave parcel {i} at the door; ring {} times. Thanks -- M.", i % 5 + 1),
            "tags": [format!("priority-{i}"), format!("gift-wrap {}", i * 3), format!("fragile/{}", i * 11)],
            "price": 19.99,
        })
    })
}

fn orders(size: usize, order: impl Fn(usize) -> serde_json::Value) -> String {
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let item = order(i);
        len += item.to_string().len() + 1;
        items.push(item);
        i += 1;
    }
    serde_json::json!({ "orders": items }).to_string()
}

/// Inspects the typical request: its path, the query from [`typical_query`] and the inspected
/// headers.
pub fn inspect_typical_request(policy: &Policy, query: &str, report: &mut Report) {
    policy.inspect_path(black_box(PATH), report);
    policy.inspect_query(black_box(query), report);
    policy.inspect_header("user-agent", black_box(USER_AGENT), report);
    policy.inspect_header("referer", black_box(REFERER), report);
    policy.inspect_header("cookie", black_box(COOKIE), report);
}
