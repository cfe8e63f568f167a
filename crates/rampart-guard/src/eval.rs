//! Runs a labelled corpus (the `../shared/corpus/waf/dev.jsonl` format) through a policy in
//! process and counts what it flags, per attack family and per source.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{Policy, Report};

/// Where each payload is placed in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// `GET /?q=<payload>`
    #[default]
    Query,
    /// `application/x-www-form-urlencoded` body `q=<payload>`
    Form,
    /// JSON body `{"q": "<payload>"}`
    Json,
    /// `User-Agent: <payload>`
    Header,
}

impl std::str::FromStr for Placement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "query" => Ok(Placement::Query),
            "form" => Ok(Placement::Form),
            "json" => Ok(Placement::Json),
            "header" => Ok(Placement::Header),
            other => Err(format!(
                "unknown placement {other:?}: use query, form, json or header"
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Row {
    label: String,
    #[serde(default)]
    family: String,
    src: String,
    payload: String,
}

/// Flagged out of total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub total: u64,
    pub flagged: u64,
}

impl Count {
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.flagged as f64 / self.total as f64
        }
    }
}

/// The figures of one corpus run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Evaluation {
    /// Attacks per family: `flagged` is the number blocked (the detection rate's numerator).
    pub families: BTreeMap<String, Count>,
    /// Every source, attack or benign: for benign sources `flagged` counts false positives.
    pub sources: BTreeMap<String, Count>,
    /// Whether each source is benign.
    pub benign_sources: BTreeMap<String, bool>,
    pub decisions: u64,
    pub seconds: f64,
    pub decisions_per_second: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("reading the corpus: {0}")]
    Io(#[from] std::io::Error),
    #[error("corpus line {line}: {message}")]
    Line { line: usize, message: String },
}

/// Reads a corpus: one JSON object per line with `label`, `family`, `src` and `payload`.
pub fn read_corpus(
    reader: impl BufRead,
) -> Result<Vec<(String, String, String, String)>, EvalError> {
    let mut rows = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(&line).map_err(|e| EvalError::Line {
            line: i + 1,
            message: e.to_string(),
        })?;
        rows.push((row.label, row.family, row.src, row.payload));
    }
    Ok(rows)
}

/// The payloads of the shared corpus (`../shared/corpus/waf/dev.jsonl`), for the tests that
/// hold a property over every one of them.
#[cfg(test)]
pub(crate) fn shared_corpus_payloads() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus/waf/dev.jsonl");
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("the shared corpus is read from {}: {e}", path.display()));
    let rows = read_corpus(std::io::BufReader::new(file))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    rows.into_iter().map(|(_, _, _, payload)| payload).collect()
}

/// Whether the policy blocks this payload in this placement.
pub fn decide(policy: &Policy, placement: Placement, payload: &str, report: &mut Report) -> bool {
    report.clear();
    match placement {
        Placement::Query => {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("q", payload)
                .finish();
            policy.inspect_query(&query, report);
        }
        Placement::Form => {
            let body: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("q", payload)
                .finish();
            // A form always parses; the error arm cannot be taken.
            let _ = policy.inspect_body(
                Some("application/x-www-form-urlencoded"),
                body.as_bytes(),
                report,
            );
        }
        Placement::Json => {
            let body = serde_json::json!({ "q": payload }).to_string();
            if policy
                .inspect_body(Some("application/json"), body.as_bytes(), report)
                .is_err()
            {
                return true;
            }
        }
        Placement::Header => {
            // What a client can put in a header: no line breaks.
            let value: String = payload
                .chars()
                .filter(|c| *c != '\r' && *c != '\n')
                .collect();
            policy.inspect_header("user-agent", &value, report);
        }
    }
    policy.blocks(report)
}

/// Runs the corpus and counts.
pub fn evaluate(
    policy: &Policy,
    placement: Placement,
    rows: &[(String, String, String, String)],
) -> Evaluation {
    evaluate_each(policy, placement, rows, |_, _, _| {})
}

/// Runs the corpus and counts, calling `each` with every row (label, family, src, payload),
/// the decision and the report behind it.
pub fn evaluate_each(
    policy: &Policy,
    placement: Placement,
    rows: &[(String, String, String, String)],
    mut each: impl FnMut(&(String, String, String, String), bool, &Report),
) -> Evaluation {
    let mut eval = Evaluation::default();
    let mut report = Report::default();
    let started = Instant::now();
    for (label, family, src, payload) in rows {
        let blocked = decide(policy, placement, payload, &mut report);
        each(
            &(label.clone(), family.clone(), src.clone(), payload.clone()),
            blocked,
            &report,
        );
        let benign = label != "attack";
        let count = eval.sources.entry(src.clone()).or_default();
        count.total += 1;
        count.flagged += u64::from(blocked);
        eval.benign_sources.insert(src.clone(), benign);
        if !benign {
            let count = eval.families.entry(family.clone()).or_default();
            count.total += 1;
            count.flagged += u64::from(blocked);
        }
        eval.decisions += 1;
    }
    eval.seconds = started.elapsed().as_secs_f64();
    eval.decisions_per_second = eval.decisions as f64 / eval.seconds.max(1e-9);
    eval
}

/// One line of the table: name, rate in percent, flagged / total.
fn row(out: &mut String, name: &str, width: usize, decimals: usize, c: &Count) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "  {name:<width$} {:>6.decimals$}%  {:>6} / {:<6}",
        c.rate() * 100.0,
        c.flagged,
        c.total
    );
}

impl Evaluation {
    /// The human-readable table.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "detection by family (attacks blocked / attacks)");
        for (family, c) in &self.families {
            row(&mut out, family, 12, 1, c);
        }
        let _ = writeln!(
            out,
            "false positives by benign source (benign blocked / benign)"
        );
        for (src, c) in &self.sources {
            if self.benign_sources.get(src) == Some(&true) {
                row(&mut out, src, 12, 2, c);
            }
        }
        let _ = writeln!(out, "detection by attack source");
        for (src, c) in &self.sources {
            if self.benign_sources.get(src) == Some(&false) {
                row(&mut out, src, 15, 1, c);
            }
        }
        let _ = writeln!(
            out,
            "{} decisions in {:.3} s: {:.0} decisions/s",
            self.decisions, self.seconds, self.decisions_per_second
        );
        out
    }
}
