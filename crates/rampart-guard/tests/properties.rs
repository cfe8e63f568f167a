//! Arbitrary input never panics and the decoding work stays proportional to the input.

use proptest::prelude::*;
use rampart_guard::{GuardConfig, Hits, Location, Policy, Report, decode, scan_value};

/// Strings biased towards the characters the decoders and tokenizers react to.
fn tricky() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("%".to_owned()),
        Just("%25".to_owned()),
        Just("%u".to_owned()),
        Just("%c0%ae".to_owned()),
        Just("&#".to_owned()),
        Just("&lt;".to_owned()),
        Just("\\x".to_owned()),
        Just("\\u{".to_owned()),
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just("--".to_owned()),
        Just("<".to_owned()),
        Just("${".to_owned()),
        Just("{{".to_owned()),
        Just("../".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(";".to_owned()),
        Just("$IFS".to_owned()),
        Just("0x2f".to_owned()),
        Just("\u{ff0e}".to_owned()),
        "[a-z0-9 ]{0,6}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(pieces, 0..64).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn scanning_any_value_never_panics(value in tricky()) {
        let mut hits = Hits::default();
        for location in [Location::Path, Location::QueryValue, Location::Header, Location::BodyValue] {
            scan_value(&value, location, &mut hits);
        }
        // One finding per rule at most.
        prop_assert!(hits.iter().count() <= rampart_guard::rules::ALL.len());
    }

    #[test]
    fn arbitrary_bytes_never_panic_anywhere(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let mut hits = Hits::default();
        scan_value(&text, Location::QueryValue, &mut hits);
        let policy = Policy::new(&GuardConfig::default()).unwrap();
        let mut report = Report::default();
        for content_type in ["application/json", "application/x-www-form-urlencoded", "text/xml", "multipart/form-data; boundary=b", "text/plain"] {
            // Either parses and is inspected or is a clean error: never a panic.
            let _ = policy.inspect_body(Some(content_type), &bytes, &mut report);
        }
        policy.inspect_query(&text, &mut report);
    }

    #[test]
    fn every_decoding_step_is_bounded_by_its_input(value in tricky()) {
        // Decoding only shrinks `%XX` escapes, entities and escapes; NFKC can expand a
        // character, by at most 18 times in Unicode (U+FDFA), so that is the bound.
        let base = decode::base(&value);
        prop_assert!(base.len() <= value.len() * 18 + 8);
        let markup = decode::markup(&base);
        prop_assert!(markup.len() <= base.len() * 4 + 8);
        let shell = decode::shell(&base);
        prop_assert!(shell.len() <= base.len());
        let path = decode::path(&base);
        prop_assert!(path.len() <= base.len() * 3);
        if let Some(loose) = decode::loose_path(&path) {
            prop_assert!(loose.len() <= path.len());
        }
    }
}

#[test]
fn deeply_nested_and_huge_inputs_finish() {
    // Inputs built to make backtracking or repeated decoding explode: each completes in one
    // linear pass (the criterion benchmark `adversarial` measures the cost per byte).
    let policy = Policy::new(&GuardConfig::default()).unwrap();
    let mut report = Report::default();
    for value in [
        "%25".repeat(20_000),
        "((((((((".repeat(8_000),
        "'".repeat(64_000),
        "<a ".repeat(20_000),
        "${".repeat(30_000),
        "{{x ".repeat(16_000),
        "<svg onload=".repeat(5_000),
        " b='<a x'".repeat(6_000),
        ";onload=".repeat(8_000),
        "%0a".repeat(20_000),
        "/*!".repeat(20_000),
        "&#x26;".repeat(10_000),
        // Comments whose nested reading never closes: each is read nested once at most.
        "/* /* */ ".repeat(8_000),
    ] {
        report.clear();
        policy.inspect_value(Location::QueryValue, "q", &value, &mut report);
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(
        policy
            .inspect_body(Some("application/json"), deep.as_bytes(), &mut report)
            .is_err()
    );
}
