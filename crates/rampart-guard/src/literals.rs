//! One search for the literal lists of every detector at once. Most values hold none of the
//! literals the detectors look for: a single pass over the base view tells which lists occur,
//! and a detector searches its own list (for its leftmost-longest matches and their
//! positions) only when its list is among them.

use std::sync::LazyLock;

use aho_corasick::automaton::Automaton;
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind};

/// The lists searched on the base view or on views that are often the base unchanged.
#[derive(Debug, Clone, Copy)]
pub(crate) enum List {
    ShellPath,
    CodeCall,
    SensitiveFile,
    Wrapper,
    SystemDir,
    ProbeCall,
    Sink,
    ScriptMarker,
    /// For each sensitive file, the longest part of its name between separators: a view that
    /// holds none of them cannot spell a sensitive name however its debris is read.
    SensitiveSegment,
    /// `on` and the start of a DOM event's name: every event handler attribute begins so.
    EventHandler,
    StyleAttribute,
    /// What a traversal and a hex spelling of one start with.
    DotDot,
    HexPrefix,
    /// `&#` and `&` before each named entity the markup view decodes.
    Entity,
    /// The two-character comment starts and operators of SQL.
    SqlPair,
    /// The words the bare SQL gate lets through.
    SqlWord,
}

const LISTS: &[(List, &[&str])] = &[
    (List::ShellPath, crate::cmdi::SHELL_PATHS),
    (List::CodeCall, crate::cmdi::CODE_CALLS),
    (List::SensitiveFile, crate::path::SENSITIVE_FILES),
    (List::Wrapper, crate::path::WRAPPERS),
    (List::SystemDir, crate::path::SYSTEM_DIRS),
    (List::ProbeCall, crate::xss::JS_PROBE_CALLS),
    (List::Sink, crate::xss::JS_SINKS),
    (List::ScriptMarker, crate::misc::NOSQL_SCRIPT_PARTS),
];

/// The combined search as a table of its own, read with one lookup per byte: the automaton
/// of `aho-corasick`, copied out so the loop has no more to do than index and compare.
struct Combined {
    /// Each byte's class: the bytes of the patterns have one each, all others share class 0.
    classes: [u8; 256],
    /// `transitions[state + class]` is the next state. States are premultiplied by the
    /// number of classes, and the states where patterns end come first. Each step waits on
    /// the one before: the index is the sum and no more (a bounds check branches beside the
    /// chain; a mask to a fixed length would lengthen it).
    transitions: Box<[u32]>,
    start: u32,
    /// The states below this one are those where patterns end.
    matches_below: u32,
    /// The number of classes, to turn a state into its index in `lists` and `depths`.
    stride: u32,
    /// For each state where patterns end, the lists those patterns belong to.
    lists: Box<[u16]>,
    /// For each state, the length of the pattern start it stands for.
    depths: Box<[u8]>,
}

/// Every list with its words.
fn lists() -> Vec<(List, Vec<String>)> {
    let segments = crate::path::SENSITIVE_FILES
        .iter()
        .filter_map(|name| name.split('/').max_by_key(|segment| segment.len()))
        .map(str::to_owned)
        .collect();
    let entities = crate::decode::NAMED_ENTITIES
        .iter()
        .map(|(name, _)| format!("&{name}"))
        .chain(["&#".to_owned()])
        .collect();
    let handlers = crate::xss::EVENT_STEMS
        .iter()
        .map(|stem| format!("on{stem}"))
        .collect();
    LISTS
        .iter()
        .map(|(list, words)| (*list, words.iter().map(|&w| w.to_owned()).collect()))
        .chain([
            (List::SensitiveSegment, segments),
            (List::EventHandler, handlers),
            (List::StyleAttribute, vec!["style".to_owned()]),
            (List::DotDot, vec!["..".to_owned()]),
            (List::HexPrefix, vec!["0x".to_owned()]),
            (List::Entity, entities),
            (
                List::SqlPair,
                ["--", "/*", "||", "&&", "@@"].map(str::to_owned).to_vec(),
            ),
            (List::SqlWord, crate::sqli::gate_words()),
        ])
        .collect()
}

static COMBINED: LazyLock<Combined> = LazyLock::new(|| {
    let mut patterns: Vec<String> = Vec::new();
    let mut pattern_lists: Vec<u16> = Vec::new();
    for (list, words) in lists() {
        for word in words {
            match patterns.iter().position(|p| *p == word) {
                Some(i) => pattern_lists[i] |= 1 << list as u16,
                None => {
                    patterns.push(word);
                    pattern_lists.push(1 << list as u16);
                }
            }
        }
    }
    let dfa = DFA::builder()
        .match_kind(MatchKind::Standard)
        .prefilter(false)
        .build(&patterns)
        .expect("literal patterns build");

    // One representative byte per class: from any state, every byte outside the patterns
    // leads where any other such byte does.
    let mut classes = [0u8; 256];
    let mut representatives = vec![0u8];
    for pattern in &patterns {
        for &b in pattern.as_bytes() {
            if classes[usize::from(b)] == 0 {
                classes[usize::from(b)] = representatives.len() as u8;
                representatives.push(b);
            }
        }
    }
    representatives[0] = (0..=255u8)
        .find(|&b| classes[usize::from(b)] == 0)
        .expect("some byte is in no pattern");

    // Every state reachable from the start, then numbered with the matching ones first.
    let start = dfa
        .start_state(Anchored::No)
        .expect("the unanchored search has a start");
    // Breadth first, so a state is first reached by the shortest text that leads to it: the
    // pattern start it stands for, whose length is its depth.
    let mut states = vec![start];
    let mut depths = vec![0u8];
    let mut index = std::collections::HashMap::from([(start, 0usize)]);
    let mut next = Vec::new();
    let mut i = 0;
    while i < states.len() {
        for &b in &representatives {
            let target = dfa.next_state(Anchored::No, states[i], b);
            let target = *index.entry(target).or_insert_with(|| {
                states.push(target);
                depths.push(depths[i] + 1);
                states.len() - 1
            });
            next.push(target);
        }
        i += 1;
    }
    let lists_of = |state| {
        (0..dfa.match_len(state))
            .map(|m| pattern_lists[dfa.match_pattern(state, m).as_usize()])
            .fold(0, |acc, lists| acc | lists)
    };
    let mut order: Vec<usize> = (0..states.len()).collect();
    order.sort_by_key(|&s| !dfa.is_match(states[s]));
    let mut number = vec![0u32; states.len()];
    for (n, &s) in order.iter().enumerate() {
        number[s] = n as u32;
    }
    let stride = representatives.len();
    let mut transitions = vec![0u32; states.len() * stride].into_boxed_slice();
    for s in 0..states.len() {
        let row = number[s] as usize * stride;
        for class in 0..stride {
            transitions[row + class] = number[next[s * stride + class]] * stride as u32;
        }
    }
    let matching = order
        .iter()
        .take_while(|&&s| dfa.is_match(states[s]))
        .count();
    Combined {
        classes,
        transitions,
        start: number[0] * stride as u32,
        matches_below: (matching * stride) as u32,
        stride: stride as u32,
        lists: order[..matching]
            .iter()
            .map(|&s| lists_of(states[s]))
            .collect(),
        depths: order.iter().map(|&s| depths[s]).collect(),
    }
});

/// Views at least this long are searched in two halves.
const SPLIT_FROM: usize = 32;

impl Combined {
    #[inline(always)]
    fn step(&self, state: u32, byte: u8) -> u32 {
        let class = u32::from(self.classes[usize::from(byte)]);
        self.transitions[(state + class) as usize]
    }

    /// The lists of the patterns that end where the search entered this state.
    #[inline(always)]
    fn lists(&self, state: u32) -> u16 {
        if state < self.matches_below {
            self.lists[(state / self.stride) as usize]
        } else {
            0
        }
    }

    fn depth(&self, state: u32) -> u8 {
        self.depths[(state / self.stride) as usize]
    }

    /// The lists found in `text`, searched from `state`. Every state is entered byte by byte
    /// and every matching state names the lists of all the patterns that end there: the
    /// overlapping search without the iterator around it.
    #[inline(always)]
    fn search(&self, mut state: u32, text: &[u8]) -> u16 {
        let mut found = 0;
        // Two bytes a step, with one test for both: patterns end in few places.
        let mut pairs = text.chunks_exact(2);
        for pair in &mut pairs {
            let first = self.step(state, pair[0]);
            state = self.step(first, pair[1]);
            if first.min(state) < self.matches_below {
                found |= self.lists(first) | self.lists(state);
            }
        }
        for &byte in pairs.remainder() {
            state = self.step(state, byte);
            found |= self.lists(state);
        }
        found
    }
}

/// Which lists occur in a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found(u16);

impl Found {
    /// For a view the combined search did not read: any list may occur.
    pub const UNKNOWN: Found = Found(u16::MAX);

    pub fn of(view: &[u8]) -> Found {
        let combined = &*COMBINED;
        if view.len() < SPLIT_FROM {
            return Found(combined.search(combined.start, view));
        }
        // Each byte's step waits on the one before: two halves searched side by side make two
        // chains of lookups that run at once.
        let (front, back) = view.split_at(view.len() / 2);
        let (mut in_front, mut in_back) = (combined.start, combined.start);
        let mut found = 0;
        for (&a, &b) in front.iter().zip(back) {
            in_front = combined.step(in_front, a);
            in_back = combined.step(in_back, b);
            if in_front.min(in_back) < combined.matches_below {
                found |= combined.lists(in_front) | combined.lists(in_back);
            }
        }
        found |= combined.search(in_back, &back[front.len()..]);
        // A pattern that starts in the front and ends in the back: the front's search goes on
        // while the pattern start it stands for began in the front.
        for (read, &b) in back.iter().enumerate() {
            if usize::from(combined.depth(in_front)) <= read {
                break;
            }
            in_front = combined.step(in_front, b);
            found |= combined.lists(in_front);
        }
        Found(found)
    }

    pub fn has(self, list: List) -> bool {
        self.0 & (1 << list as u16) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_found_by_their_literals_only() {
        let found = Found::of(b"see /etc/passwd via php://filter");
        assert!(found.has(List::SensitiveFile) && found.has(List::Wrapper));
        assert!(found.has(List::SystemDir));
        assert!(!found.has(List::CodeCall) && !found.has(List::Sink));
        let attributes = Found::of(b"\" onmouseover=x style=y");
        assert!(attributes.has(List::EventHandler) && attributes.has(List::StyleAttribute));
        assert!(!Found::of(b"london, once more").has(List::EventHandler));
        assert!(Found::of(b"1union select 1").has(List::SqlWord));
        assert!(Found::of(b"exec master..xp_cmdshell").has(List::SqlWord));
        assert!(!Found::of(b"(khtml, like gecko) chrome/126.0").has(List::SqlWord));
        let none = Found::of(b"leave the parcel at the gate; ring twice");
        assert_eq!(none, Found(0));
        assert!(Found::UNKNOWN.has(List::ProbeCall));
    }

    #[test]
    fn every_list_has_a_bit_of_its_own() {
        let lists = lists();
        for (list, _) in &lists {
            assert!((*list as u32) < u16::BITS, "{list:?} has no bit in Found");
        }
        let bits = lists
            .iter()
            .fold(0u32, |bits, (list, _)| bits | 1 << *list as u32);
        assert_eq!(bits.count_ones() as usize, lists.len());
    }

    /// The lists one of whose words occurs in the view, searched word by word.
    fn found_word_by_word(view: &[u8]) -> Found {
        let mut found = 0;
        for (list, words) in lists() {
            if words
                .iter()
                .any(|w| memchr::memmem::find(view, w.as_bytes()).is_some())
            {
                found |= 1 << list as u16;
            }
        }
        Found(found)
    }

    #[test]
    fn the_combined_search_finds_what_a_search_word_by_word_finds_in_the_shared_corpus() {
        let mut with_lists = 0;
        for payload in crate::eval::shared_corpus_payloads() {
            let view = crate::decode::base(&payload);
            let found = Found::of(view.as_bytes());
            assert_eq!(found, found_word_by_word(view.as_bytes()), "{view:?}");
            with_lists += usize::from(found != Found(0));
        }
        // Enough views hold words that the search was put to the test.
        assert!(
            with_lists > 5_000,
            "{with_lists} views hold words of the lists"
        );
    }

    #[test]
    fn a_word_is_found_wherever_it_falls_against_the_halves_of_a_long_view() {
        for (list, words) in lists() {
            for word in words {
                for before in 0..48 {
                    let view = format!("{}{word}{}", "~".repeat(before), "~".repeat(40));
                    assert!(Found::of(view.as_bytes()).has(list), "{view:?}");
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Pieces of the words glued together, so one word's start follows another's part and
        /// the search must fall back from a partial match to the right place.
        #[test]
        fn the_combined_search_finds_what_a_search_word_by_word_finds(
            pieces in proptest::collection::vec((0usize..1000, 0usize..40, 0usize..40), 1..8)
        ) {
            let words: Vec<String> = lists().into_iter().flat_map(|(_, words)| words).collect();
            let mut view = Vec::new();
            for (word, from, to) in pieces {
                let word = words[word % words.len()].as_bytes();
                let (from, to) = (from.min(word.len()), to.min(word.len()));
                view.extend_from_slice(&word[from.min(to)..from.max(to)]);
            }
            proptest::prop_assert_eq!(Found::of(&view), found_word_by_word(&view));
        }
    }
}
