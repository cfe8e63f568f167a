//! The inspection step of a request: path, query, chosen headers and (buffered) body go
//! through the route's [`rampart_guard::Policy`]; findings become security events, and a
//! score at the threshold blocks the request on `block` routes.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use http_body_util::BodyExt;
use rampart_guard::{BodyError, Mode, Oversize, Policy, Report};

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
    pub report: Report,
}

/// Inspects a request. `body_limit` is the route's own body limit, which inspection never
/// buffers past.
pub async fn inspect(
    policy: &Policy,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: ClientBody,
    body_limit: u64,
    read_timeout: Duration,
) -> Result<Outcome, Refusal> {
    let mut report = Report::default();
    if policy.mode() == Mode::Off {
        return Ok(Outcome {
            body: InspectedBody::Untouched(body),
            report,
        });
    }
    policy.inspect_path(path, &mut report);
    if let Some(query) = query {
        policy.inspect_query(query, &mut report);
    }
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            policy.inspect_header(name.as_str(), value, &mut report);
        }
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
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
