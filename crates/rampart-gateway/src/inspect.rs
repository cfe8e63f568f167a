//! The inspection step of a request: path, query, chosen headers and (buffered) body go
//! through the route's [`rampart_guard::Policy`]; findings become security events, and a
//! score at the threshold blocks the request on `block` routes.

use std::cell::RefCell;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use http_body_util::BodyExt;
use rampart_guard::{BodyError, Mode, Oversize, Policy, Report};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::body::ClientBody;

/// The request body as inspection left it.
pub enum InspectedBody {
    /// Not read: stream it as it comes.
    Untouched(ClientBody),
    /// Read to its end.
    Complete(Bytes),
    /// The first bytes were read; the rest is still to come.
    Prefix(Bytes, ClientBody),
}

/// Why inspection refused a request before any finding.
pub enum Refusal {
    /// The body is longer than the inspection buffer and the route refuses such bodies.
    TooLarge,
    /// The body does not parse as its declared type.
    Unparsable(BodyError),
    /// The body could not be read (client error or timeout).
    Unreadable { timed_out: bool },
}

pub struct Outcome {
    pub body: InspectedBody,
    pub report: PooledReport,
}

/// Most spare reports a thread keeps: a report is held only while its request is inspected
/// and judged, so one thread seldom needs more than one at a time.
const SPARE_REPORTS: usize = 4;

thread_local! {
    #[expect(clippy::vec_box, reason = "a request holds its report by the box it was kept in")]
    static SPARES: RefCell<Vec<Box<Report>>> = const { RefCell::new(Vec::new()) };
}

/// A request's report, whose buffers go back to this thread's spares when the request is
/// done with it: the scratch a query's inspection grows (tokens, decoded views, the form
/// buffers) would otherwise be allocated anew for every request, 6,000 instructions of a
/// typical request's 61,000 (`FRESH=1 bench/guard-instructions.sh`). A report that inspected
/// a body is not kept: its buffers may be as large as the body. Boxed, so that the outcome
/// moves a pointer as the request's future moves it, not the report's few hundred bytes.
pub struct PooledReport {
    report: Option<Box<Report>>,
    keep: bool,
}

impl PooledReport {
    fn take() -> PooledReport {
        let report = SPARES
            .try_with(|spares| spares.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        PooledReport {
            report: Some(report),
            keep: true,
        }
    }
}

/// The report is taken out of its `Option` only by the drop.
const PRESENT: &str = "a pooled report is present until it is dropped";

impl std::ops::Deref for PooledReport {
    type Target = Report;

    fn deref(&self) -> &Report {
        self.report.as_deref().expect(PRESENT)
    }
}

impl std::ops::DerefMut for PooledReport {
    fn deref_mut(&mut self) -> &mut Report {
        self.report.as_deref_mut().expect(PRESENT)
    }
}

impl Drop for PooledReport {
    fn drop(&mut self) {
        let Some(mut report) = self.report.take().filter(|_| self.keep) else {
            return;
        };
        report.clear();
        // A thread that is ending has no spares to keep: the report is dropped.
        let _ = SPARES.try_with(|spares| {
            let mut spares = spares.borrow_mut();
            if spares.len() < SPARE_REPORTS {
                spares.push(report);
            }
        });
    }
}

/// Values found clean recently on this thread. A path or header value is inspected once and
/// then recognised: most requests to an AI service go to a few endpoints from a few
/// clients' User-Agents. Only clean verdicts are kept (a finding is always inspected again),
/// and a key holds the runtime's generation and the route, so a reload or another route
/// never reuses a verdict. Direct-mapped: a collision replaces the older value.
struct CleanValues {
    slots: Vec<Option<CleanValue>>,
}

struct CleanValue {
    hash: u64,
    policy: PolicyKey,
    location: u8,
    name_len: usize,
    bytes: Box<[u8]>,
}

/// Which policy a verdict was made under: the runtime generation and the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyKey {
    pub generation: u64,
    pub route: usize,
}

const CLEAN_SLOTS: usize = 64;
/// Longer values are inspected every time: they are rarely repeated, and the memory stays
/// small.
const CLEAN_MAX_BYTES: usize = 256;

thread_local! {
    static CLEAN: RefCell<CleanValues> = const { RefCell::new(CleanValues { slots: Vec::new() }) };
}

impl CleanValues {
    /// One-shot hashes, the name's seeding the value's: the streaming hasher's state is
    /// 576 bytes to set up and copy, for inputs of a few dozen bytes. (A slot is compared in
    /// full before it is trusted; the hash only chooses it.)
    fn hash(policy: PolicyKey, location: u8, name: &str, value: &str) -> u64 {
        let key =
            policy.generation.rotate_left(32) ^ (policy.route as u64) << 8 ^ u64::from(location);
        xxh3_64_with_seed(value.as_bytes(), xxh3_64_with_seed(name.as_bytes(), key))
    }

    fn knows(&self, hash: u64, policy: PolicyKey, location: u8, name: &str, value: &str) -> bool {
        let Some(Some(slot)) = self.slots.get(hash as usize % CLEAN_SLOTS) else {
            return false;
        };
        slot.hash == hash
            && slot.policy == policy
            && slot.location == location
            && slot.name_len == name.len()
            && slot.bytes[..name.len()] == *name.as_bytes()
            && slot.bytes[name.len()..] == *value.as_bytes()
    }

    fn remember(&mut self, hash: u64, policy: PolicyKey, location: u8, name: &str, value: &str) {
        if self.slots.is_empty() {
            self.slots.resize_with(CLEAN_SLOTS, || None);
        }
        let bytes = [name.as_bytes(), value.as_bytes()]
            .concat()
            .into_boxed_slice();
        self.slots[hash as usize % CLEAN_SLOTS] = Some(CleanValue {
            hash,
            policy,
            location,
            name_len: name.len(),
            bytes,
        });
    }
}

/// Inspects one value through `inspect` unless this thread found it clean before.
fn inspect_remembered(
    policy: PolicyKey,
    location: u8,
    name: &str,
    value: &str,
    report: &mut Report,
    inspect: impl FnOnce(&mut Report),
) {
    if name.len() + value.len() > CLEAN_MAX_BYTES {
        return inspect(report);
    }
    let hash = CleanValues::hash(policy, location, name, value);
    if CLEAN.with_borrow(|clean| clean.knows(hash, policy, location, name, value)) {
        return;
    }
    let before = report.findings().len();
    inspect(report);
    if report.findings().len() == before {
        CLEAN.with_borrow_mut(|clean| clean.remember(hash, policy, location, name, value));
    }
}

/// Inspects a request. `body_limit` is the route's own body limit, which inspection never
/// buffers past; `key` names the policy for the memory of clean values.
#[allow(clippy::too_many_arguments)]
pub async fn inspect(
    policy: &Policy,
    key: PolicyKey,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: ClientBody,
    body_limit: u64,
    read_timeout: Duration,
) -> Result<Outcome, Refusal> {
    let mut report = PooledReport::take();
    if policy.mode() == Mode::Off {
        return Ok(Outcome {
            body: InspectedBody::Untouched(body),
            report,
        });
    }
    inspect_remembered(key, 0, "", path, &mut report, |r| {
        policy.inspect_path(path, r)
    });
    if let Some(query) = query {
        policy.inspect_query(query, &mut report);
    }
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        let name = name.as_str();
        if name == "cookie" {
            // Cookies are secrets as often as not: never kept.
            policy.inspect_header(name, value, &mut report);
        } else {
            inspect_remembered(key, 1, name, value, &mut report, |r| {
                policy.inspect_header(name, value, r)
            });
        }
    }
    let content_type = crate::headers::field(headers, &CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !policy.inspects_body(content_type) || http_body::Body::is_end_stream(&body) {
        return Ok(Outcome {
            body: InspectedBody::Untouched(body),
            report,
        });
    }
    let config = policy.config();
    let max = config.max_body_bytes.min(body_limit) as usize;
    let declared = http_body::Body::size_hint(&body).exact();
    if declared.is_some_and(|n| n > max as u64) && config.oversize == Oversize::Refuse {
        return Err(Refusal::TooLarge);
    }
    report.keep = false;
    let read = tokio::time::timeout(read_timeout, Box::pin(read_prefix(body, max))).await;
    let body = match read {
        Err(_) => return Err(Refusal::Unreadable { timed_out: true }),
        Ok(Err(())) => return Err(Refusal::Unreadable { timed_out: false }),
        Ok(Ok(body)) => body,
    };
    match &body {
        InspectedBody::Complete(bytes) => policy
            .inspect_body(content_type, bytes, &mut report)
            .map_err(Refusal::Unparsable)?,
        InspectedBody::Prefix(bytes, _) => {
            if config.oversize == Oversize::Refuse {
                return Err(Refusal::TooLarge);
            }
            // A cut document cannot parse as its type; its text is still inspected.
            let prefix = &bytes[..bytes.len().min(max)];
            policy
                .inspect_body(Some("text/plain"), prefix, &mut report)
                .map_err(Refusal::Unparsable)?;
        }
        InspectedBody::Untouched(_) => {}
    }
    Ok(Outcome { body, report })
}

/// Reads frames until the body ends or more than `max` bytes have arrived.
async fn read_prefix(mut body: ClientBody, max: usize) -> Result<InspectedBody, ()> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ())?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > max {
                return Ok(InspectedBody::Prefix(buf.freeze(), body));
            }
        }
    }
    Ok(InspectedBody::Complete(buf.freeze()))
}

/// The findings as the security-event log and the 403 body show them.
pub fn rules_json(report: &Report, with_evidence: bool) -> serde_json::Value {
    let rules: Vec<_> = report
        .findings()
        .iter()
        .map(|f| {
            let mut rule = serde_json::json!({
                "id": f.rule,
                "name": f.name,
                "family": f.family,
            });
            if with_evidence {
                rule["location"] = serde_json::json!(f.location);
                rule["parameter"] = serde_json::json!(f.parameter);
                rule["evidence"] = serde_json::json!(f.evidence);
            }
            rule
        })
        .collect();
    serde_json::Value::Array(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_guard::GuardConfig;

    const KEY: PolicyKey = PolicyKey {
        generation: 7,
        route: 0,
    };

    /// Inspects `value` as a header through the memory; true when the policy was asked.
    fn asked(
        policy: &Policy,
        key: PolicyKey,
        name: &str,
        value: &str,
        report: &mut Report,
    ) -> bool {
        let mut asked = false;
        inspect_remembered(key, 1, name, value, report, |r| {
            asked = true;
            policy.inspect_header(name, value, r);
        });
        asked
    }

    #[test]
    fn a_report_goes_back_to_its_thread_cleared_and_a_few_are_kept() {
        // A thread of its own, whose spares no other test touches.
        std::thread::spawn(|| {
            let policy = Policy::new(&GuardConfig::default()).unwrap();
            let spares = || SPARES.with_borrow(Vec::len);
            let mut first = PooledReport::take();
            policy.inspect_query("q=1' union select password from users--", &mut first);
            assert!(!first.is_empty(), "the attack is found");
            drop(first);
            assert_eq!(spares(), 1, "the report is kept");
            let again = PooledReport::take();
            assert_eq!(spares(), 0, "and taken by the next request");
            assert!(again.is_empty(), "cleared of the last request's findings");
            drop(again);

            let mut with_body = PooledReport::take();
            with_body.keep = false;
            drop(with_body);
            assert_eq!(spares(), 0, "a report that read a body is not kept");

            let many: Vec<_> = (0..SPARE_REPORTS + 2)
                .map(|_| PooledReport::take())
                .collect();
            drop(many);
            assert_eq!(spares(), SPARE_REPORTS, "no more than the most kept");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_clean_value_is_inspected_once_a_finding_every_time() {
        let policy = Policy::new(&GuardConfig::default()).unwrap();
        let mut report = Report::default();
        let agent = "Mozilla/5.0 (X11; Linux x86_64) memo-test/1";
        assert!(asked(&policy, KEY, "user-agent", agent, &mut report));
        assert!(
            !asked(&policy, KEY, "user-agent", agent, &mut report),
            "remembered"
        );
        assert!(report.is_empty());

        let attack = "sqlmap/1.0' UNION SELECT password FROM users--";
        assert!(asked(&policy, KEY, "user-agent", attack, &mut report));
        assert!(!report.is_empty(), "the attack is found");
        let mut again = Report::default();
        assert!(
            asked(&policy, KEY, "user-agent", attack, &mut again),
            "findings are never remembered"
        );
        assert!(!again.is_empty(), "and found again");
    }

    #[test]
    fn a_verdict_is_not_reused_for_another_route_generation_name_or_a_long_value() {
        let policy = Policy::new(&GuardConfig::default()).unwrap();
        let mut report = Report::default();
        let agent = "client/2.0 memo-scope";
        assert!(asked(&policy, KEY, "user-agent", agent, &mut report));
        let other_route = PolicyKey { route: 1, ..KEY };
        let reloaded = PolicyKey {
            generation: 8,
            ..KEY
        };
        assert!(asked(
            &policy,
            other_route,
            "user-agent",
            agent,
            &mut report
        ));
        assert!(asked(&policy, reloaded, "user-agent", agent, &mut report));
        assert!(asked(&policy, KEY, "referer", agent, &mut report));
        let long = "a".repeat(CLEAN_MAX_BYTES + 1);
        assert!(asked(&policy, KEY, "user-agent", &long, &mut report));
        assert!(
            asked(&policy, KEY, "user-agent", &long, &mut report),
            "long values are not kept"
        );
    }
}
