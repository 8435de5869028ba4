//! Keyword matching that cannot stall (SPEC §11): every keyword of a tenant is compiled once per
//! snapshot into one Aho-Corasick automaton, and a request's text is scanned once, whatever the
//! keyword count.
//!
//! ```text
//!  tenant document ─► lower-cased, de-duplicated keywords ─► one automaton (per snapshot)
//!  request text ─► lower-cased (first MAX_SCAN_BYTES) ─► one pass ─► keywords seen ─► per-scenario counts
//! ```
//!
//! Matching is case-insensitive as Unicode lower-casing is (the text and the keywords are both
//! lower-cased), a substring test, counting distinct keywords. The pass visits each match state
//! of the automaton at most once, so a text full of repeats of a keyword costs no more than one.

use std::collections::HashMap;

use aho_corasick::automaton::Automaton;
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, MatchKind};

/// Most bytes of a request's text that are scanned for keywords (the rest is ignored).
pub const MAX_SCAN_BYTES: usize = 1024 * 1024;

/// Up to this many distinct keywords, each is looked for with a vectorised substring search
/// (faster than the automaton for a few keywords, and still linear in the text).
const FEW_KEYWORDS: usize = 16;

/// A tenant's keywords, compiled.
#[derive(Debug)]
pub struct Matcher {
    /// `None` when the tenant has no keyword at all, or few enough for plain searches.
    nfa: Option<NFA>,
    /// The keywords themselves when there are at most [`FEW_KEYWORDS`].
    few: Vec<String>,
    /// Number of distinct keywords (patterns).
    patterns: usize,
    /// Per scenario (same order as the tenant's scenarios): its distinct keywords' pattern ids.
    scenarios: Vec<Vec<u32>>,
}

/// What one scan found: distinct keywords matched per scenario.
#[derive(Debug)]
pub struct Hits {
    /// Per scenario, how many of its distinct keywords the text contains.
    pub per_scenario: Vec<usize>,
}

impl Matcher {
    /// Compiles the keywords of each scenario (`keywords[i]`: scenario i's).
    pub fn new<'a, I, K>(keywords: I) -> Matcher
    where
        I: IntoIterator<Item = K>,
        K: IntoIterator<Item = &'a String>,
    {
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut patterns: Vec<String> = Vec::new();
        let scenarios: Vec<Vec<u32>> = keywords
            .into_iter()
            .map(|ks| {
                let mut mine: Vec<u32> = ks
                    .into_iter()
                    .map(|k| k.to_lowercase())
                    .filter(|k| !k.is_empty())
                    .map(|k| {
                        *ids.entry(k.clone()).or_insert_with(|| {
                            patterns.push(k);
                            (patterns.len() - 1) as u32
                        })
                    })
                    .collect();
                mine.sort_unstable();
                mine.dedup();
                mine
            })
            .collect();
        let few_enough = patterns.len() <= FEW_KEYWORDS;
        let nfa = if patterns.is_empty() || few_enough {
            None
        } else {
            match NFA::builder()
                .match_kind(MatchKind::Standard)
                .build(&patterns)
            {
                Ok(nfa) => Some(nfa),
                Err(e) => {
                    // Only absurd pattern sets (over the crate's state limit) fail; such a tenant
                    // then matches nothing rather than stalling requests.
                    tracing::warn!(error = %e, patterns = patterns.len(), "cannot compile keywords");
                    None
                }
            }
        };
        Matcher {
            nfa,
            patterns: patterns.len(),
            few: if few_enough { patterns } else { Vec::new() },
            scenarios,
        }
    }

    /// Whether scenario `i` has keywords (a scenario without never matches an LLM request).
    pub fn has_keywords(&self, i: usize) -> bool {
        self.scenarios.get(i).is_some_and(|k| !k.is_empty())
    }

    /// Number of distinct keywords of scenario `i`.
    pub fn keyword_count(&self, i: usize) -> usize {
        self.scenarios.get(i).map_or(0, Vec::len)
    }

    /// Scans `text` (its first [`MAX_SCAN_BYTES`]) once.
    pub fn scan(&self, text: &str) -> Hits {
        if self.patterns == 0 {
            let per_scenario = vec![0; self.scenarios.len()];
            return Hits { per_scenario };
        }
        let mut end = text.len().min(MAX_SCAN_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let lower = text[..end].to_lowercase();
        let mut seen = vec![0u64; self.patterns.div_ceil(64)];
        let Some(nfa) = &self.nfa else {
            for (p, k) in self.few.iter().enumerate() {
                if lower.contains(k.as_str()) {
                    seen[p / 64] |= 1 << (p % 64);
                }
            }
            return self.count(&seen);
        };
        let mut visited: std::collections::HashSet<aho_corasick::automaton::StateID> =
            Default::default();
        let Ok(mut sid) = nfa.start_state(Anchored::No) else {
            return self.count(&seen);
        };
        let mut last_match = None;
        for &b in lower.as_bytes() {
            sid = nfa.next_state(Anchored::No, sid, b);
            if nfa.is_match(sid) && last_match != Some(sid) {
                last_match = Some(sid);
                if visited.insert(sid) {
                    for i in 0..nfa.match_len(sid) {
                        let p = nfa.match_pattern(sid, i).as_usize();
                        seen[p / 64] |= 1 << (p % 64);
                    }
                }
            }
        }
        self.count(&seen)
    }

    /// Distinct keywords seen per scenario.
    fn count(&self, seen: &[u64]) -> Hits {
        let per_scenario = self
            .scenarios
            .iter()
            .map(|ks| {
                ks.iter()
                    .filter(|&&p| seen[p as usize / 64] & (1 << (p % 64)) != 0)
                    .count()
            })
            .collect();
        Hits { per_scenario }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(keywords: &[&[&str]]) -> Matcher {
        let owned: Vec<Vec<String>> = keywords
            .iter()
            .map(|ks| ks.iter().map(|k| k.to_string()).collect())
            .collect();
        Matcher::new(owned.iter())
    }

    #[test]
    fn counts_distinct_keywords_per_scenario_case_insensitively() {
        let m = m(&[&["he", "she", "HERS"], &["xyz"], &[], &["ÉTÉ"]]);
        let hits = m.scan("uSHERS in the summer (été)");
        assert_eq!(hits.per_scenario, vec![3, 0, 0, 1]);
        assert!(!m.has_keywords(2));
        assert_eq!(m.keyword_count(0), 3);
    }

    #[test]
    fn repeats_and_duplicates_count_once() {
        let m = m(&[&["a", "A", "aa"], &["a"]]);
        let hits = m.scan(&"a".repeat(10_000));
        assert_eq!(hits.per_scenario, vec![2, 1]);
    }

    #[test]
    fn many_keywords_use_the_automaton_and_agree_with_few() {
        let many: Vec<String> = (0..100).map(|i| format!("w{i:03}")).collect();
        let owned = [many.clone(), vec!["w042".to_string(), "zzz".to_string()]];
        let m = Matcher::new(owned.iter());
        assert!(m.nfa.is_some());
        assert_eq!(m.scan("W042 and w099").per_scenario, vec![2, 1]);
    }

    #[test]
    fn the_automaton_counts_overlapping_keywords() {
        let mut ks: Vec<String> = ["he", "she", "hers"].map(String::from).to_vec();
        ks.extend((0..20).map(|i| format!("filler{i}")));
        let owned = [ks, vec!["hers".to_string()]];
        let m = Matcher::new(owned.iter());
        assert!(m.nfa.is_some());
        assert_eq!(m.scan("ushers").per_scenario, vec![3, 1]);
    }

    #[test]
    fn only_the_first_scan_bytes_are_read() {
        let m = m(&[&["needle"]]);
        let mut text = "x".repeat(MAX_SCAN_BYTES);
        text.push_str("needle");
        assert_eq!(m.scan(&text).per_scenario, vec![0]);
        assert_eq!(m.scan("a needle").per_scenario, vec![1]);
    }
}
