//! Request inspection for Rampart: a bounded decoding pipeline and detectors for SQL
//! injection, cross-site scripting, command injection, path traversal and file inclusion,
//! template injection, NoSQL and LDAP injection, XXE, Log4Shell lookups and header injection,
//! combined by anomaly scoring with paranoia levels, as in the OWASP Core Rule Set.
//!
//! ```
//! use rampart_guard::{GuardConfig, Policy, Report};
//!
//! let policy = Policy::new(&GuardConfig::default()).unwrap();
//! let mut report = Report::default();
//! policy.inspect_query("id=1%27%20OR%201%3D1--", &mut report);
//! assert!(policy.blocks(&report));
//! assert_eq!(report.findings()[0].family.as_str(), "sqli");
//! ```

mod body;
mod cmdi;
mod config;
pub mod decode;
pub mod eval;
mod form;
mod literals;
mod misc;
mod path;
pub mod rules;
mod shape;
mod sqli;
mod xss;

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Serialize;

use literals::Found;
use shape::Shape;

pub use body::BodyError;
pub use config::{Exclusion, GuardConfig, Mode, Oversize};
pub use rules::{Family, Rule};

/// Where in a request a value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Path,
    QueryName,
    QueryValue,
    Header,
    Cookie,
    BodyName,
    BodyValue,
}

impl Location {
    /// In the path, the query, a header or a cookie: places that carry no markup and no line
    /// breaks of their own, unlike bodies.
    pub(crate) fn in_url(self) -> bool {
        !matches!(self, Location::BodyName | Location::BodyValue)
    }
}

/// Rules matched while scanning, before policy (paranoia, exclusions) is applied, and the
/// buffers scanning reuses from value to value.
#[derive(Debug, Default)]
pub struct Hits {
    list: Vec<Hit>,
    /// The excerpts of every hit, one after another, so recording a hit allocates nothing
    /// once the buffer has grown.
    evidence: String,
    sql: sqli::Scratch,
    text: String,
    /// The base view of a value that decoding only lower-cased.
    lowered: String,
    /// Rules of a higher paranoia level than this are not recorded: a policy that will not
    /// count them does not pay for their excerpts. `None` records every rule.
    paranoia: Option<u8>,
}

#[derive(Debug)]
struct Hit {
    rule: &'static Rule,
    evidence: std::ops::Range<usize>,
}

/// Longest evidence excerpt kept, in characters: enough to recognise the attack, never a
/// whole body or a secret.
pub const EVIDENCE_CHARS: usize = 40;

impl Hits {
    pub(crate) fn add(&mut self, rule: &'static Rule, view: &str, at: usize) {
        if self.paranoia.is_some_and(|level| rule.paranoia > level)
            || self.list.iter().any(|h| std::ptr::eq(h.rule, rule))
        {
            return;
        }
        let start = self.evidence.len();
        push_excerpt(&mut self.evidence, view, at);
        self.list.push(Hit {
            rule,
            evidence: start..self.evidence.len(),
        });
    }

    /// Each rule matched, with an excerpt of the view where it matched.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Rule, &str)> {
        self.list
            .iter()
            .map(|hit| (hit.rule, &self.evidence[hit.evidence.clone()]))
    }

    pub fn clear(&mut self) {
        self.list.clear();
        self.evidence.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

fn push_excerpt(out: &mut String, view: &str, at: usize) {
    let mut start = at.min(view.len());
    while !view.is_char_boundary(start) {
        start -= 1;
    }
    out.extend(
        view[start..]
            .chars()
            .take(EVIDENCE_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c }),
    );
}

/// A set of literal patterns searched in one pass; built once per list.
pub(crate) struct Patterns {
    automaton: aho_corasick::AhoCorasick,
    patterns: &'static [&'static str],
}

impl Patterns {
    pub(crate) fn new(patterns: &'static [&'static str]) -> Self {
        // A DFA: the lists are small, so its memory is too, and it is the fastest per byte.
        let automaton = aho_corasick::AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(patterns)
            .expect("literal patterns build");
        Patterns {
            automaton,
            patterns,
        }
    }

    /// Whether any pattern occurs: the search stops at the first match.
    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        self.automaton.is_match(haystack)
    }

    /// Every non-overlapping match: (pattern, start).
    pub(crate) fn find_iter<'h>(
        &'h self,
        haystack: &'h [u8],
    ) -> impl Iterator<Item = (&'static str, usize)> + 'h {
        self.automaton
            .find_iter(haystack)
            .map(|m| (self.patterns[m.pattern().as_usize()], m.start()))
    }
}

/// A fixed list of words, looked up by hash. The hasher is fixed, not random: the set never
/// grows from input, so input cannot make its buckets collide.
pub(crate) struct Words {
    set: HashSet<&'static str, foldhash::fast::FixedState>,
    /// Longer text is no word of the list and is not hashed.
    longest: usize,
    filter: LetterFilter,
}

impl Words {
    pub(crate) fn new(words: &[&'static str]) -> Self {
        let mut filter = LetterFilter::default();
        for word in words {
            filter.insert(word);
        }
        Words {
            set: words.iter().copied().collect(),
            longest: words.iter().map(|w| w.len()).max().unwrap_or(0),
            filter,
        }
    }

    /// Inlined, so most words, which the filter tells apart, cost no call.
    #[inline(always)]
    pub(crate) fn get(&self, word: &str) -> Option<&'static str> {
        if word.len() > self.longest || !self.filter.may_hold(word) {
            return None;
        }
        self.hashed(word)
    }

    fn hashed(&self, word: &str) -> Option<&'static str> {
        self.set.get(word).copied()
    }

    pub(crate) fn contains(&self, word: &str) -> bool {
        self.get(word).is_some()
    }
}

/// For each word length, the first and the last letters a list's words of that length have:
/// most text is told apart from every word of the list without hashing.
#[derive(Default)]
pub(crate) struct LetterFilter {
    starts: [u32; 32],
    ends: [u32; 32],
}

impl LetterFilter {
    pub(crate) fn insert(&mut self, word: &str) {
        let bytes = word.as_bytes();
        if let Some(set) = self.starts.get_mut(word.len()) {
            *set |= letter_bit(bytes.first());
        }
        if let Some(set) = self.ends.get_mut(word.len()) {
            *set |= letter_bit(bytes.last());
        }
    }

    /// Whether the list may hold this word; words longer than the table are always let
    /// through to the hash.
    #[inline(always)]
    pub(crate) fn may_hold(&self, word: &str) -> bool {
        let bytes = word.as_bytes();
        self.starts
            .get(word.len())
            .is_none_or(|set| set & letter_bit(bytes.first()) != 0)
            && self
                .ends
                .get(word.len())
                .is_none_or(|set| set & letter_bit(bytes.last()) != 0)
    }
}

/// One bit per lower-case letter, and one for every other byte (and for no byte).
fn letter_bit(byte: Option<&u8>) -> u32 {
    match byte {
        Some(b @ b'a'..=b'z') => 1 << (b - b'a'),
        _ => 1 << 31,
    }
}

/// The first place a short constant needle occurs: `memchr` to its first byte, then a compare.
/// Unlike `memmem::find` this builds no searcher, which costs more than the search on the
/// short values requests carry; with a needle of a few bytes the cost stays linear.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(off) = memchr::memchr(first, &haystack[from..]) {
        let at = from + off;
        if haystack[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The first place a closing needle occurs at or after a position, remembered: a close found
/// once serves every later position before it, so reading many openings that share one
/// close (`{{ {{ {{ … }}`) searches for it once, not once per opening.
pub(crate) struct NextClose<'a> {
    haystack: &'a [u8],
    needle: &'a [u8],
    /// The last search's answer; `Some(None)` once no close is left at all.
    found: Option<Option<usize>>,
}

impl<'a> NextClose<'a> {
    pub(crate) fn new(haystack: &'a [u8], needle: &'a [u8]) -> Self {
        NextClose {
            haystack,
            needle,
            found: None,
        }
    }

    /// Where the first close at or after `from` starts. `from` must not go backwards from
    /// call to call.
    pub(crate) fn at_or_after(&mut self, from: usize) -> Option<usize> {
        match self.found {
            Some(Some(end)) if end >= from => Some(end),
            Some(None) => None,
            _ => {
                let end = find(&self.haystack[from..], self.needle).map(|o| from + o);
                self.found = Some(end);
                end
            }
        }
    }
}

/// Each cookie of a `Cookie` header as its name and value; a part without `=` is a value
/// without a name. Cut at the ASCII `;` and `=` by plain loops over a short header:
/// `str::split` and `split_once` search for a character, a longer way to the same bytes.
fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let pairs = rest?;
        let pair = match pairs.bytes().position(|b| b == b';') {
            Some(at) => {
                rest = Some(&pairs[at + 1..]);
                &pairs[..at]
            }
            None => {
                rest = None;
                pairs
            }
        };
        let trimmed = trim(pair);
        Some(match trimmed.bytes().position(|b| b == b'=') {
            Some(at) => (&trimmed[..at], &trimmed[at + 1..]),
            None => ("", pair),
        })
    })
}

/// The ASCII characters `char::is_whitespace` accepts: `u8::is_ascii_whitespace` and the
/// vertical tab it leaves out.
#[inline(always)]
pub(crate) const fn is_whitespace_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// What `str::trim` leaves, read by bytes where the text's ends are ASCII: `str::trim` is a
/// call that decodes characters, for text most often with nothing or a space to trim.
pub(crate) fn trim(text: &str) -> &str {
    let bytes = text.as_bytes();
    let kept = |b: &u8| !is_whitespace_byte(*b);
    let start = bytes.iter().position(kept).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(kept).map_or(start, |last| last + 1);
    // Past a non-ASCII character at either end, Unicode whitespace may follow.
    if bytes.get(start).is_some_and(|b| !b.is_ascii())
        || !bytes[..end].last().is_none_or(u8::is_ascii)
    {
        return text.trim();
    }
    &text[start..end]
}

pub(crate) fn decode_utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Runs every detector on one value, through the decoding pipeline.
pub fn scan_value(value: &str, location: Location, hits: &mut Hits) {
    let raw = Shape::of(value);
    if !says_nothing(value, raw) {
        scan_shaped(value, raw, location, hits);
    }
}

/// Nothing, or one word: that says nothing in any of the languages the detectors read, unless
/// it spells a path in hex (`0x2e0x2e0x2f`).
fn says_nothing(value: &str, raw: Shape) -> bool {
    value.is_empty()
        || raw.within(Shape::WORD)
            && !(raw.any(Shape::DIGIT)
                && value
                    .as_bytes()
                    .windows(2)
                    .any(|w| w[0] == b'0' && w[1].eq_ignore_ascii_case(&b'x')))
}

/// [`scan_value`] for a value that may say something, whose shape is known.
fn scan_shaped(value: &str, raw: Shape, location: Location, hits: &mut Hits) {
    let mut lowered = std::mem::take(&mut hits.lowered);
    scan_views(value, raw, location, hits, &mut lowered);
    hits.lowered = lowered;
}

/// Decodes a value into the views the detectors read and runs each detector on its view;
/// `lowered` is the buffer for a base view that is the value in lower case.
fn scan_views(value: &str, raw: Shape, location: Location, hits: &mut Hits, lowered: &mut String) {
    let (base, base_shape) = decode::base_shaped(value, raw, lowered);
    // The detectors search their lists only in values with one of these bytes (or a hex
    // spelling, for which nothing is known and so everything is searched).
    let searched = base_shape.any(const { Shape::bytes(b"(.[/:%?$").with(Shape::NON_ASCII) });
    let base = View {
        text: &base,
        shape: base_shape,
        found: if searched {
            Found::of(base.as_bytes())
        } else {
            Found::UNKNOWN
        },
    };
    sqli::scan(base, hits);
    if location != Location::Path || base.shape.any(const { Shape::bytes(b"<\"':") }) {
        let markup = decode::markup_shaped(base.text, base.shape, base.found);
        let markup = base.derived(&markup, matches!(markup, Cow::Borrowed(_)));
        xss::scan(markup, location.in_url(), hits);
        misc::scan(markup, location, hits);
        if !std::ptr::eq(markup.text, base.text) {
            // Entities can hide SQL as well as markup (`&#39; or 1=1--`).
            sqli::scan(markup, hits);
        }
    }
    let path_view = decode::path_shaped(base.text, base.shape);
    let path_view = base.derived(&path_view, matches!(path_view, Cow::Borrowed(_)));
    path::scan(path_view, value, raw, hits);
    let shell_view = decode::shell_shaped(base.text, base.shape);
    let shell_view = base.derived(&shell_view, matches!(shell_view, Cow::Borrowed(_)));
    cmdi::scan(base, shell_view, hits);
}

/// One decoded form of a value, with what is known of its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub text: &'a str,
    pub shape: Shape,
    /// The literal lists that occur in it.
    pub found: Found,
}

impl<'a> View<'a> {
    /// The view a decoding step made of this one: the same bytes when it changed nothing.
    fn derived(self, text: &'a str, unchanged: bool) -> View<'a> {
        if unchanged {
            View { text, ..self }
        } else {
            View {
                text,
                shape: Shape::of(text),
                found: Found::UNKNOWN,
            }
        }
    }
}

/// A rule that matched and counts under the policy.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: u32,
    pub name: &'static str,
    pub family: Family,
    pub score: u8,
    pub location: Location,
    /// The parameter, header or cookie name (truncated), or empty for the path and bodies.
    pub parameter: String,
    /// A short excerpt of the decoded input where the rule matched.
    pub evidence: String,
}

/// One value to inspect: where it was found, under which name, and the shape of its bytes.
#[derive(Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub location: Location,
    pub name: &'a str,
    pub value: &'a str,
    pub raw: Shape,
}

impl<'a> Subject<'a> {
    fn new(location: Location, name: &'a str, value: &'a str) -> Self {
        Subject {
            location,
            name,
            value,
            raw: Shape::of(value),
        }
    }
}

/// What one request's inspection found.
#[derive(Debug, Default)]
pub struct Report {
    findings: Vec<Finding>,
    score: u32,
    hits: Hits,
    body_clean: CleanInBody,
    form: form::Buffers,
}

/// The values of one body already found clean. The records of a body repeat their values
/// (tags, states, the same note in every order), and what scanning finds depends on nothing
/// but the value, its location and the policy's paranoia level, all fixed within one body: each
/// distinct value is scanned once per body. Only clean verdicts are kept, a value is compared
/// in full (a hash match alone proves nothing), and the memory is forgotten when the next body
/// starts.
#[derive(Debug, Default)]
struct CleanInBody {
    slots: Vec<CleanSlot>,
    /// The remembered values, one after another.
    bytes: Vec<u8>,
    /// Slots of an older body carry an older generation and count as empty.
    generation: u32,
}

#[derive(Debug, Clone, Default)]
struct CleanSlot {
    generation: u32,
    hash: u64,
    location: Option<Location>,
    value: std::ops::Range<usize>,
}

impl CleanInBody {
    /// Direct-mapped: a value whose slot is taken replaces the older one.
    const SLOTS: usize = 256;
    /// Longer values rarely repeat. (Any value asked about says something, and scanning it
    /// costs more than remembering it.)
    const MAX_VALUE_BYTES: usize = 512;
    /// Past this much remembered text, new values are scanned without being remembered.
    const MAX_BYTES: usize = 64 * 1024;

    fn forget(&mut self) {
        self.bytes.clear();
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // A wrapped generation could name a slot of long ago as current.
            self.slots.clear();
            self.generation = 1;
        }
    }

    fn key(location: Location, value: &str) -> Option<(u64, usize)> {
        if value.len() > Self::MAX_VALUE_BYTES {
            return None;
        }
        use std::hash::BuildHasher;
        let hash = foldhash::fast::FixedState::with_seed(0).hash_one((location, value));
        Some((hash, hash as usize % Self::SLOTS))
    }

    fn knows(&self, location: Location, value: &str, (hash, slot): (u64, usize)) -> bool {
        self.slots.get(slot).is_some_and(|s| {
            s.generation == self.generation
                && s.hash == hash
                && s.location == Some(location)
                && self.bytes.get(s.value.clone()) == Some(value.as_bytes())
        })
    }

    fn remember(&mut self, location: Location, value: &str, (hash, slot): (u64, usize)) {
        if self.bytes.len() + value.len() > Self::MAX_BYTES {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize(Self::SLOTS, CleanSlot::default());
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(value.as_bytes());
        self.slots[slot] = CleanSlot {
            generation: self.generation,
            hash,
            location: Some(location),
            value: start..self.bytes.len(),
        };
    }
}

impl Report {
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The anomaly score: the sum of the findings' scores.
    pub fn score(&self) -> u32 {
        self.score
    }

    pub fn is_empty(&self) -> bool {
        self.findings.is_empty()
    }

    pub fn clear(&mut self) {
        self.findings.clear();
        self.score = 0;
        self.hits.clear();
        self.body_clean.forget();
    }
}

/// A compiled [`GuardConfig`]: what to inspect and how findings count.
#[derive(Debug, Clone)]
pub struct Policy {
    config: GuardConfig,
}

const MAX_PARAMETER_CHARS: usize = 64;

impl Policy {
    pub fn new(config: &GuardConfig) -> Result<Self, config::ConfigError> {
        config.validate()?;
        let mut config = config.clone();
        for header in &mut config.headers {
            header.make_ascii_lowercase();
        }
        Ok(Policy { config })
    }

    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    pub fn mode(&self) -> Mode {
        self.config.mode
    }

    /// Whether the report's score reaches the threshold (in any mode; `detect` routes log
    /// what would have been blocked).
    pub fn blocks(&self, report: &Report) -> bool {
        report.score >= self.config.threshold
    }

    /// Inspects one value and records the findings that count under this policy.
    pub fn inspect_value(&self, location: Location, name: &str, value: &str, report: &mut Report) {
        self.inspect_shaped(Subject::new(location, name, value), report);
    }

    /// [`Policy::inspect_value`] for a value whose shape is known. Inlined, so that a value
    /// that says nothing (most query parameters) costs its checks and no call: the call saved
    /// and restored the registers of the whole scan, about 30 instructions a value.
    #[inline(always)]
    fn inspect_shaped(&self, subject: Subject<'_>, report: &mut Report) {
        if self.config.mode == Mode::Off
            || says_nothing(subject.value, subject.raw)
            || self.fully_excluded(subject.name)
        {
            return;
        }
        self.scan(subject, report);
    }

    /// Scans a value that may say something and records what counts; returns whether it was
    /// clean.
    #[inline(never)]
    fn scan(&self, subject: Subject<'_>, report: &mut Report) -> bool {
        let Subject {
            location,
            name,
            value,
            raw,
        } = subject;
        let Report {
            findings,
            score,
            hits,
            ..
        } = report;
        hits.clear();
        hits.paranoia = Some(self.config.paranoia);
        scan_shaped(value, raw, location, hits);
        if hits.is_empty() {
            return true;
        }
        self.count_hits(location, name, findings, score, hits);
        false
    }

    /// [`Policy::inspect_value`] for a value of the body being inspected: a value found clean
    /// before in the same body is not scanned again.
    // Inlined into the JSON walk, its hot caller: the 64 KB body takes 2.65M instructions
    // with a call here, 2.53M without.
    #[inline]
    pub(crate) fn inspect_body_value(
        &self,
        location: Location,
        name: &str,
        value: &str,
        report: &mut Report,
    ) {
        self.inspect_body_shaped(Subject::new(location, name, value), report);
    }

    /// [`Policy::inspect_body_value`] for a value whose shape is known.
    pub(crate) fn inspect_body_shaped(&self, subject: Subject<'_>, report: &mut Report) {
        let Subject {
            location,
            name,
            value,
            raw,
        } = subject;
        if says_nothing(value, raw) || self.fully_excluded(name) {
            return;
        }
        let Some(key) = CleanInBody::key(location, value) else {
            self.scan(subject, report);
            return;
        };
        if report.body_clean.knows(location, value, key) {
            return;
        }
        if self.scan(subject, report) {
            report.body_clean.remember(location, value, key);
        }
    }

    /// Records the hits of one value that count under this policy.
    fn count_hits(
        &self,
        location: Location,
        name: &str,
        findings: &mut Vec<Finding>,
        score: &mut u32,
        hits: &Hits,
    ) {
        for (rule, evidence) in hits.iter() {
            if rule.paranoia > self.config.paranoia || self.excluded(name, rule) {
                continue;
            }
            if findings
                .iter()
                .any(|f| f.rule == rule.id && f.location == location && f.parameter == name)
            {
                continue;
            }
            *score += u32::from(rule.score);
            findings.push(Finding {
                rule: rule.id,
                name: rule.name,
                family: rule.family,
                score: rule.score,
                location,
                parameter: name.chars().take(MAX_PARAMETER_CHARS).collect(),
                evidence: evidence.to_owned(),
            });
        }
    }

    fn fully_excluded(&self, name: &str) -> bool {
        self.config
            .exclusions
            .iter()
            .any(|e| e.rules.is_empty() && e.families.is_empty() && e.matches_parameter(name))
    }

    fn excluded(&self, name: &str, rule: &Rule) -> bool {
        self.config.exclusions.iter().any(|e| {
            e.matches_parameter(name)
                && (e.rules.contains(&rule.id)
                    || e.families.contains(&rule.family)
                    || e.rules.is_empty() && e.families.is_empty())
        })
    }

    /// The request path, as one value.
    pub fn inspect_path(&self, path: &str, report: &mut Report) {
        self.inspect_value(Location::Path, "", path, report);
    }

    /// A query string: each argument name and value, URL-decoded once as an application
    /// would see them (the pipeline decodes further).
    pub fn inspect_query(&self, query: &str, report: &mut Report) {
        let locations = [Location::QueryName, Location::QueryValue];
        let mut buffers = std::mem::take(&mut report.form);
        form::for_each_pair(query, locations, &mut buffers, |subject| {
            self.inspect_shaped(subject, report)
        });
        report.form = buffers;
    }

    /// A header, if this policy inspects it; cookies are split into their values.
    pub fn inspect_header(&self, name: &str, value: &str, report: &mut Report) {
        if !self
            .config
            .headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            return;
        }
        if name.eq_ignore_ascii_case("cookie") {
            for (cookie, cookie_value) in cookie_pairs(value) {
                self.inspect_value(Location::Cookie, cookie, cookie_value, report);
            }
        } else {
            self.inspect_value(Location::Header, name, value, report);
        }
    }

    /// A body of the declared content type; one that does not parse as its type is an error
    /// (the gateway answers 400), never passed uninspected.
    pub fn inspect_body(
        &self,
        content_type: Option<&str>,
        body: &[u8],
        report: &mut Report,
    ) -> Result<(), BodyError> {
        if self.config.mode == Mode::Off {
            return Ok(());
        }
        report.body_clean.forget();
        body::inspect(self, content_type, body, report)
    }

    /// Whether bodies of this content type are inspected (and so must be buffered).
    pub fn inspects_body(&self, content_type: Option<&str>) -> bool {
        self.config.mode != Mode::Off && body::BodyKind::of(content_type).is_some()
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Families flagged at this paranoia level for a query value.
    pub fn families(input: &str, paranoia: u8) -> Vec<&'static str> {
        families_at(input, Location::QueryValue, paranoia)
    }

    pub fn families_at(input: &str, location: Location, paranoia: u8) -> Vec<&'static str> {
        let policy = Policy::new(&GuardConfig {
            paranoia,
            ..GuardConfig::default()
        })
        .expect("valid policy");
        let mut report = Report::default();
        policy.inspect_value(location, "q", input, &mut report);
        if !policy.blocks(&report) {
            return Vec::new();
        }
        let mut f: Vec<_> = report
            .findings()
            .iter()
            .map(|f| f.family.as_str())
            .collect();
        f.dedup();
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The byte reading trims what `str::trim` trims, and only that.
        #[test]
        fn text_is_trimmed_as_str_trim_trims_it(
            text in "[ a\t\n\r\x0b\x0c\x1f\u{85}\u{a0}\u{3000}é]{0,12}"
        ) {
            proptest::prop_assert_eq!(trim(&text), text.trim());
        }

        /// The cookies are cut where `split(';')` and `split_once('=')` cut them.
        #[test]
        fn cookies_are_cut_as_the_string_splits_cut_them(header in "[ a=;é\t]{0,40}") {
            let expected: Vec<(&str, &str)> = header
                .split(';')
                .map(|pair| pair.trim().split_once('=').unwrap_or(("", pair)))
                .collect();
            proptest::prop_assert_eq!(cookie_pairs(&header).collect::<Vec<_>>(), expected);
        }
    }

    fn json_findings(policy: &Policy, body: &str, report: &mut Report) -> Vec<(String, u32)> {
        policy
            .inspect_body(Some("application/json"), body.as_bytes(), report)
            .expect("the test body parses");
        report
            .findings()
            .iter()
            .map(|f| (f.parameter.clone(), f.rule))
            .collect()
    }

    #[test]
    fn a_json_body_that_is_not_utf8_is_refused_with_where_it_breaks() {
        let policy = Policy::new(&GuardConfig::default()).expect("valid policy");
        for body in [&b"{\"a\":\"caf\xe9\"}"[..], b"{\"a\":1}\xff"] {
            let err = policy
                .inspect_body(Some("application/json"), body, &mut Report::default())
                .expect_err("not UTF-8");
            let at = body.iter().position(|b| *b >= 0x80).expect("a bad byte");
            assert_eq!(
                err,
                BodyError::Json(format!(
                    "invalid UTF-8 at byte {at} (JSON text must be UTF-8)"
                ))
            );
        }
    }

    #[test]
    fn an_attack_repeated_in_a_body_is_found_under_every_key() {
        let policy = Policy::new(&GuardConfig::default()).expect("valid policy");
        let attack = "1' or '1'='1' -- x";
        let body = format!(
            r#"{{"note":"a clean note, twice","a":"{attack}","again":"a clean note, twice","b":"{attack}"}}"#
        );
        let found = json_findings(&policy, &body, &mut Report::default());
        for key in ["a", "b"] {
            assert!(found.iter().any(|(p, _)| p == key), "{key}: {found:?}");
        }
        assert!(!found.iter().any(|(p, _)| p == "note" || p == "again"));
    }

    #[test]
    fn a_clean_verdict_serves_only_the_same_value_at_the_same_location() {
        let mut clean = CleanInBody::default();
        let value = "a clean note of some length";
        let key = CleanInBody::key(Location::BodyValue, value).expect("short enough to remember");
        clean.remember(Location::BodyValue, value, key);
        assert!(clean.knows(Location::BodyValue, value, key));
        // A hash that matched by chance is not enough: the bytes are compared.
        assert!(!clean.knows(Location::BodyValue, "a clean note of some lengt!", key));
        assert!(!clean.knows(Location::BodyName, value, key));
        clean.forget();
        assert!(!clean.knows(Location::BodyValue, value, key));
    }

    #[test]
    fn a_body_clean_under_one_paranoia_level_is_scanned_again_under_another() {
        let at = |paranoia| {
            Policy::new(&GuardConfig {
                paranoia,
                ..GuardConfig::default()
            })
            .expect("valid policy")
        };
        // `sqli-numeric-logic` is a paranoia-2 rule, so level 1 finds the value clean.
        let body = r#"{"q":"1234567890 and 1"}"#;
        let mut report = Report::default();
        assert!(json_findings(&at(1), body, &mut report).is_empty());
        let found = json_findings(&at(2), body, &mut report);
        assert!(
            found.contains(&("q".to_owned(), rules::SQLI_NUMERIC_LOGIC.id)),
            "{found:?}"
        );
    }

    #[test]
    fn rules_above_the_policy_level_are_neither_recorded_nor_counted() {
        // `sqli-numeric-logic` is a paranoia-2 rule.
        for (paranoia, expected) in [(1, false), (2, true)] {
            let policy = Policy::new(&GuardConfig {
                paranoia,
                ..GuardConfig::default()
            })
            .expect("valid policy");
            let mut report = Report::default();
            policy.inspect_value(Location::QueryValue, "q", "1 and 1", &mut report);
            let id = rules::SQLI_NUMERIC_LOGIC.id;
            let counted = report.findings().iter().any(|f| f.rule == id);
            let recorded = report.hits.iter().any(|(rule, _)| rule.id == id);
            assert_eq!(
                (counted, recorded),
                (expected, expected),
                "paranoia {paranoia}"
            );
        }
    }
}
