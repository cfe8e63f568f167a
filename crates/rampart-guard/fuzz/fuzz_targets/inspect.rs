//! Feeds arbitrary bytes to the decoding pipeline, every detector and every body parser.
//! Run: `cargo install cargo-fuzz && cd crates/rampart-guard && cargo +nightly fuzz run inspect`
//! (or with a stable toolchain: `RUSTC_BOOTSTRAP=1 cargo fuzz run inspect`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_guard::{GuardConfig, Hits, Location, Policy, Report, scan_value};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut hits = Hits::default();
    scan_value(&text, Location::QueryValue, &mut hits);
    scan_value(&text, Location::Path, &mut hits);
    let policy = Policy::new(&GuardConfig::default()).expect("default policy");
    let mut report = Report::default();
    policy.inspect_query(&text, &mut report);
    for content_type in [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/xml",
        "multipart/form-data; boundary=b",
        "text/plain",
    ] {
        let _ = policy.inspect_body(Some(content_type), data, &mut report);
    }
});
