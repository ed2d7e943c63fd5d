//! The streaming auth-pattern matcher: fed the job's output chunk by chunk,
//! it says whether the pattern matched any line so far.
//!
//! Lines are matched whole, like the seed's `grep`, whatever the chunking: a
//! line split over two reads is joined before it is searched. Complete lines
//! of a chunk are searched in one pass (the regex is built multi-line and
//! `.` stops at a newline), so the cost is one scan of the output. A line
//! longer than [`MAX_CARRY`] keeps only its last `MAX_CARRY` bytes for the
//! search. The matcher keeps no text after a match: nothing it saw can leak.

use regex::bytes::Regex;

/// Longest unfinished line kept for the search.
pub const MAX_CARRY: usize = 1 << 20;

/// Searches a stream of output for the auth pattern.
#[derive(Debug)]
pub struct AuthMatcher {
    regex: Regex,
    carry: Vec<u8>,
    carry_searched: bool,
    matched: bool,
}

impl AuthMatcher {
    /// A matcher with nothing seen yet.
    pub fn new(regex: Regex) -> AuthMatcher {
        AuthMatcher {
            regex,
            carry: Vec::new(),
            carry_searched: true,
            matched: false,
        }
    }

    /// True once any line matched.
    pub fn is_matched(&self) -> bool {
        self.matched
    }

    /// Feeds the next chunk; returns true if the pattern has matched.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.matched || chunk.is_empty() {
            return self.matched;
        }
        match memchr::memrchr(b'\n', chunk) {
            None => self.keep(chunk),
            Some(last) => {
                let complete = &chunk[..last];
                if self.carry.is_empty() {
                    self.search(complete);
                } else {
                    let first = memchr::memchr(b'\n', chunk).expect("chunk has a newline");
                    self.carry.extend_from_slice(&chunk[..first]);
                    let joined = std::mem::take(&mut self.carry);
                    self.search(&joined);
                    if first < last {
                        self.search(&complete[first + 1..]);
                    }
                }
                self.carry.clear();
                self.keep(&chunk[last + 1..]);
            }
        }
        if self.matched {
            self.carry = Vec::new();
        }
        self.matched
    }

    /// Searches the unfinished last line now (the writer paused, or the
    /// stream ended); returns true if the pattern has matched.
    pub fn search_pending(&mut self) -> bool {
        if !self.matched && !self.carry_searched {
            self.carry_searched = true;
            let pending = std::mem::take(&mut self.carry);
            self.search(&pending);
            self.carry = pending;
        }
        self.matched
    }

    fn keep(&mut self, tail: &[u8]) {
        if tail.is_empty() {
            return;
        }
        self.carry_searched = false;
        if tail.len() >= MAX_CARRY {
            self.carry.clear();
            self.carry
                .extend_from_slice(&tail[tail.len() - MAX_CARRY..]);
            return;
        }
        let overflow = (self.carry.len() + tail.len()).saturating_sub(MAX_CARRY);
        if overflow > 0 {
            self.carry.drain(..overflow);
        }
        self.carry.extend_from_slice(tail);
    }

    fn search(&mut self, text: &[u8]) {
        if !self.matched && self.regex.is_match(text) {
            self.matched = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn matcher(pattern: &str) -> AuthMatcher {
        AuthMatcher::new(crate::config::build_auth_pattern(pattern).unwrap())
    }

    fn default_matcher() -> AuthMatcher {
        matcher(crate::config::DEFAULT_AUTH_PATTERN)
    }

    fn feed_all(m: &mut AuthMatcher, chunks: &[&[u8]]) -> bool {
        for chunk in chunks {
            m.feed(chunk);
        }
        m.search_pending()
    }

    #[test]
    fn matches_case_insensitively() {
        for line in [
            "Authentication failed",
            "HTTP 401 Unauthorized",
            "OAuth token expired",
            "invalid_api_key",
        ] {
            assert!(
                feed_all(&mut default_matcher(), &[format!("x\n{line}\n").as_bytes()]),
                "{line}"
            );
        }
    }

    #[test]
    fn does_not_match_across_lines() {
        assert!(!feed_all(
            &mut default_matcher(),
            &[b"OAuth token\nexpired\n"]
        ));
    }

    #[test]
    fn matches_across_chunk_boundaries() {
        let text = b"first line\nsome OAuth token has expired now\nlast\n";
        for split in 0..text.len() {
            let (a, b) = text.split_at(split);
            assert!(
                feed_all(&mut default_matcher(), &[a, b]),
                "split at {split}"
            );
        }
        let bytewise: Vec<&[u8]> = text.chunks(1).collect();
        assert!(feed_all(&mut default_matcher(), &bytewise));
    }

    #[test]
    fn matches_across_a_64k_read_boundary() {
        let mut output = vec![b'x'; 65_536 - 10];
        output.extend_from_slice(b"OAuth token expired\n");
        let (a, b) = output.split_at(65_536);
        assert!(feed_all(&mut default_matcher(), &[a, b]));
    }

    #[test]
    fn unfinished_last_line_matches_at_the_end() {
        assert!(feed_all(
            &mut default_matcher(),
            &[b"ok\ninvalid_api", b"_key"]
        ));
    }

    #[test]
    fn invalid_utf8_and_nul_do_not_stop_the_search() {
        assert!(feed_all(
            &mut default_matcher(),
            &[b"\xff\xfe\x00bin\n\x00 401 \xffunauthorized\n"]
        ));
    }

    #[test]
    fn anchors_are_per_line() {
        assert!(feed_all(
            &mut matcher("^FATAL auth$"),
            &[b"a\nFATAL auth\nb\n"]
        ));
        assert!(!feed_all(
            &mut matcher("^FATAL auth$"),
            &[b"a FATAL auth\n"]
        ));
    }

    #[test]
    fn very_long_line_keeps_its_tail() {
        let mut m = default_matcher();
        let filler = vec![b'y'; MAX_CARRY];
        m.feed(&filler);
        m.feed(&filler);
        m.feed(b"OAuth expired");
        assert!(m.search_pending());
    }

    #[test]
    fn no_match_in_ordinary_output() {
        assert!(!feed_all(
            &mut default_matcher(),
            &[b"all good\n", b"200 OK\n"]
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// The verdict of a plain per-line search, the reference.
        fn reference(output: &[u8]) -> bool {
            let regex =
                crate::config::build_auth_pattern(crate::config::DEFAULT_AUTH_PATTERN).unwrap();
            output
                .split(|&b| b == b'\n')
                .any(|line| regex.is_match(line))
        }

        fn output() -> impl Strategy<Value = Vec<u8>> {
            let pieces = prop::collection::vec(
                prop_oneof![
                    Just(b"OAuth token expired".to_vec()),
                    Just(b"HTTP 401 Unauthorized".to_vec()),
                    Just(b"401".to_vec()),
                    Just(b"unauthorized".to_vec()),
                    Just(b"\n".to_vec()),
                    Just(b"\xff\x00".to_vec()),
                    prop::collection::vec(any::<u8>(), 0..40),
                ],
                0..12,
            );
            pieces.prop_map(|p| p.concat())
        }

        proptest! {
            #[test]
            fn any_chunking_gives_the_per_line_verdict(
                output in output(),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            ) {
                let mut points: Vec<usize> = cuts.iter().map(|i| i.index(output.len() + 1)).collect();
                points.sort_unstable();
                let mut m = default_matcher();
                let mut start = 0;
                for point in points {
                    m.feed(&output[start..point]);
                    start = point;
                }
                m.feed(&output[start..]);
                prop_assert_eq!(m.search_pending(), reference(&output));
            }
        }
    }
}
