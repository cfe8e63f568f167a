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

struct Combined {
    automaton: DFA,
    /// For each distinct pattern, the lists it belongs to.
    lists: Vec<u16>,
}

static COMBINED: LazyLock<Combined> = LazyLock::new(|| {
    let mut patterns: Vec<&str> = Vec::new();
    let mut lists: Vec<u16> = Vec::new();
    let segments = crate::path::SENSITIVE_FILES
        .iter()
        .filter_map(|name| name.split('/').max_by_key(|segment| segment.len()))
        .collect::<Vec<_>>();
    let all = LISTS
        .iter()
        .map(|(list, words)| (*list, *words))
        .chain([(List::SensitiveSegment, &segments[..])]);
    for (list, words) in all {
        for word in words {
            match patterns.iter().position(|p| p == word) {
                Some(i) => lists[i] |= 1 << list as u16,
                None => {
                    patterns.push(word);
                    lists.push(1 << list as u16);
                }
            }
        }
    }
    let automaton = DFA::builder()
        .match_kind(MatchKind::Standard)
        .prefilter(false)
        .build(&patterns)
        .expect("literal patterns build");
    Combined { automaton, lists }
});

/// Which lists occur in a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found(u16);

impl Found {
    /// For a view the combined search did not read: any list may occur.
    pub const UNKNOWN: Found = Found(u16::MAX);

    pub fn of(view: &[u8]) -> Found {
        let combined = &*COMBINED;
        let dfa = &combined.automaton;
        // Every state is entered byte by byte and every match state names all the patterns
        // that end there: stepping the DFA directly is the overlapping search without the
        // iterator around it.
        let Ok(mut state) = dfa.start_state(Anchored::No) else {
            return Found::UNKNOWN;
        };
        let mut found = 0;
        for &byte in view {
            state = dfa.next_state(Anchored::No, state, byte);
            if dfa.is_special(state) && dfa.is_match(state) {
                for i in 0..dfa.match_len(state) {
                    found |= combined.lists[dfa.match_pattern(state, i).as_usize()];
                }
            }
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
        let none = Found::of(b"leave the parcel at the door; ring twice");
        assert_eq!(none, Found(0));
        assert!(Found::UNKNOWN.has(List::ProbeCall));
    }
}
