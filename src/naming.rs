//! Run-log names and retention, as values: no I/O, no clock.
//!
//! A leaf, so that `config` (the retention settings), `runlog` (the files)
//! and the supervisor (the in-memory index) share one definition. Names
//! are the UTC start time (`20261125T192106Z.log`) with a `-1`, `-2` ...
//! suffix when the name is taken, so fast iterations never overwrite each
//! other (the seed's `>` did, BASELINE Q2). Retention is a pure selection
//! over (name, mtime, size).

use std::time::{Duration, SystemTime};

/// How many suffixes are tried for one second's name before giving up.
pub const MAX_SUFFIX: u32 = 10_000;

/// Retention limits of `runs/`; zero means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Run logs kept, newest first; 0 = no count limit.
    pub keep: usize,
    /// Older run logs are deleted.
    pub max_age: Option<Duration>,
    /// Total bytes of `runs/`; 0 = no limit.
    pub max_bytes: u64,
}

/// A run log as retention sees it. The index holds one per kept log
/// (AGENT_LOG_KEEP, 1,000 by default), so it is small and holds no heap
/// memory of its own: a `String` per name plus the slack of the index
/// rebuilt on another thread came to ~290 bytes per log, +0.3 MiB resident
/// once retention began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLogEntry {
    /// File name in `runs/`.
    pub name: RunLogName,
    /// Last modification.
    pub modified: SystemTime,
    /// Size in bytes.
    pub size: u64,
}

/// A run log's file name, stored inline: the longest one jobloop makes,
/// `YYYYMMDDTHHMMSSZ-4294967295.log`, is 31 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RunLogName {
    bytes: [u8; RunLogName::MAX],
    len: u8,
}

impl RunLogName {
    const MAX: usize = 31;

    /// `name`, if it is short enough to be one jobloop makes.
    pub fn new(name: &str) -> Option<RunLogName> {
        let mut bytes = [0; RunLogName::MAX];
        bytes
            .get_mut(..name.len())?
            .copy_from_slice(name.as_bytes());
        Some(RunLogName {
            bytes,
            len: u8::try_from(name.len()).ok()?,
        })
    }

    /// Whether this is `name`: compared as bytes, without checking UTF-8
    /// again (retention asks it of every kept log, every iteration).
    pub fn is(&self, name: &str) -> bool {
        &self.bytes[..usize::from(self.len)] == name.as_bytes()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .expect("built from a str, cut at its end")
    }
}

impl std::fmt::Debug for RunLogName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The file name of a run started at `start`, without suffix.
pub fn base_name(start: SystemTime) -> String {
    // "2026-11-25T19:21:06Z" -> "20261125T192106Z"
    humantime::format_rfc3339_seconds(start)
        .to_string()
        .replace(['-', ':'], "")
}

/// The sort key of a run-log name: its timestamp and suffix, or `None` if
/// the name is not a run log's.
pub fn sort_key(name: &str) -> Option<(&str, u32)> {
    let stem = name.strip_suffix(".log")?;
    let (stamp, suffix) = match stem.split_once('-') {
        Some((stamp, suffix)) => (stamp, suffix.parse().ok()?),
        None => (stem, 0),
    };
    let valid = stamp.len() == 16
        && stamp.as_bytes()[8] == b'T'
        && stamp.ends_with('Z')
        && stamp[..8].bytes().all(|b| b.is_ascii_digit())
        && stamp[9..15].bytes().all(|b| b.is_ascii_digit());
    valid.then_some((stamp, suffix))
}

/// Names run logs, remembering the last suffix used within the current
/// second so that many runs in one second cost one attempt each, not one
/// per name already taken.
#[derive(Debug, Default)]
pub struct RunLogNamer {
    base: String,
    next_suffix: u32,
}

impl RunLogNamer {
    /// The candidate names for a run started at `start`, in the order to
    /// try them: `(suffix, name)`. Call [`taken`](Self::taken) with the
    /// suffix that was created.
    pub fn candidates(&mut self, start: SystemTime) -> impl Iterator<Item = (u32, String)> + '_ {
        let base = base_name(start);
        if base != self.base {
            self.base = base;
            self.next_suffix = 0;
        }
        (self.next_suffix..MAX_SUFFIX).map(|suffix| (suffix, self.name(suffix)))
    }

    /// Remembers that `suffix` of the current second is used.
    pub fn taken(&mut self, suffix: u32) {
        self.next_suffix = suffix.saturating_add(1);
    }

    fn name(&self, suffix: u32) -> String {
        if suffix == 0 {
            format!("{}.log", self.base)
        } else {
            format!("{}-{suffix}.log", self.base)
        }
    }
}

/// Picks the run logs to delete. `entries` must be sorted oldest first
/// (as `runlog::scan` returns them and the supervisor appends new runs);
/// the newest is never picked, nor is `protect`.
pub fn select_for_deletion(
    entries: &[RunLogEntry],
    policy: &RetentionPolicy,
    now: SystemTime,
    protect: Option<&str>,
) -> Vec<String> {
    let mut doomed = Vec::new();
    let mut kept_bytes = 0u64;
    let mut kept = 0usize;
    for (index, entry) in entries.iter().rev().enumerate() {
        let protected = index == 0 || protect.is_some_and(|name| entry.name.is(name));
        let too_many = policy.keep > 0 && kept >= policy.keep;
        let too_old = policy.max_age.is_some_and(|age| {
            now.duration_since(entry.modified)
                .is_ok_and(|elapsed| elapsed > age)
        });
        let too_big =
            policy.max_bytes > 0 && kept_bytes.saturating_add(entry.size) > policy.max_bytes;
        if !protected && (too_many || too_old || too_big) {
            doomed.push(entry.name.as_str().to_string());
        } else {
            kept += 1;
            kept_bytes = kept_bytes.saturating_add(entry.size);
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn entry(name: &str, age_from: u64, size: u64) -> RunLogEntry {
        RunLogEntry {
            name: RunLogName::new(name).unwrap(),
            modified: at(age_from),
            size,
        }
    }

    #[test]
    fn run_log_names_are_kept_inline_up_to_the_longest_jobloop_makes() {
        let longest = format!("20260101T000000Z-{}.log", u32::MAX);
        assert_eq!(RunLogName::new(&longest).unwrap().as_str(), longest);
        assert!(RunLogName::new(&longest).unwrap().is(&longest));
        assert!(!RunLogName::new(&longest)
            .unwrap()
            .is("20260101T000000Z.log"));
        assert_eq!(
            RunLogName::new("20260101T000000Z.log").unwrap().as_str(),
            "20260101T000000Z.log"
        );
        assert!(RunLogName::new("20260101T000000Z-000000000001.log").is_none());
    }

    #[test]
    fn names_are_utc_compact() {
        assert_eq!(base_name(at(1_764_098_466)), "20251125T192106Z");
    }

    #[test]
    fn namer_goes_on_from_the_last_suffix_and_restarts_each_second() {
        let mut namer = RunLogNamer::default();
        let first: Vec<_> = namer.candidates(at(10)).take(2).collect();
        assert_eq!(first[0], (0, "19700101T000010Z.log".to_string()));
        assert_eq!(first[1], (1, "19700101T000010Z-1.log".to_string()));
        namer.taken(1);
        assert_eq!(
            namer.candidates(at(10)).next(),
            Some((2, "19700101T000010Z-2.log".to_string()))
        );
        assert_eq!(
            namer.candidates(at(11)).next(),
            Some((0, "19700101T000011Z.log".to_string()))
        );
    }

    #[test]
    fn sort_key_orders_suffixes_after_the_plain_name() {
        let mut names = vec![
            "20260101T000000Z-2.log",
            "20260101T000000Z.log",
            "20260101T000000Z-10.log",
            "20260101T000000Z-1.log",
            "20251231T235959Z.log",
        ];
        names.sort_by_key(|n| sort_key(n));
        assert_eq!(
            names,
            [
                "20251231T235959Z.log",
                "20260101T000000Z.log",
                "20260101T000000Z-1.log",
                "20260101T000000Z-2.log",
                "20260101T000000Z-10.log"
            ]
        );
        assert_eq!(sort_key("notes.txt"), None);
        assert_eq!(sort_key("2026.log"), None);
        assert_eq!(sort_key("20260101T000000Z-x.log"), None);
    }

    #[test]
    fn retention_by_count_age_and_bytes() {
        let logs = vec![
            entry("20260101T000001Z.log", 100, 10),
            entry("20260101T000002Z.log", 200, 10),
            entry("20260101T000003Z.log", 300, 10),
            entry("20260101T000004Z.log", 400, 10),
        ];
        let none = RetentionPolicy {
            keep: 0,
            max_age: None,
            max_bytes: 0,
        };
        assert!(select_for_deletion(&logs, &none, at(1000), None).is_empty());
        let by_count = RetentionPolicy { keep: 2, ..none };
        assert_eq!(
            select_for_deletion(&logs, &by_count, at(1000), None),
            ["20260101T000002Z.log", "20260101T000001Z.log"]
        );
        let by_age = RetentionPolicy {
            max_age: Some(Duration::from_secs(850)),
            ..none
        };
        assert_eq!(
            select_for_deletion(&logs, &by_age, at(1000), None),
            ["20260101T000001Z.log"]
        );
        let by_bytes = RetentionPolicy {
            max_bytes: 25,
            ..none
        };
        assert_eq!(
            select_for_deletion(&logs, &by_bytes, at(1000), None),
            ["20260101T000002Z.log", "20260101T000001Z.log"]
        );
    }

    #[test]
    fn retention_never_picks_the_newest_or_the_protected() {
        let logs = vec![
            entry("20260101T000001Z.log", 0, 100),
            entry("20260101T000002Z.log", 0, 100),
        ];
        let strict = RetentionPolicy {
            keep: 0,
            max_age: Some(Duration::from_secs(1)),
            max_bytes: 1,
        };
        assert_eq!(
            select_for_deletion(&logs, &strict, at(1000), None),
            ["20260101T000001Z.log"]
        );
        assert!(
            select_for_deletion(&logs, &strict, at(1000), Some("20260101T000001Z.log")).is_empty()
        );
    }

    #[test]
    fn retention_does_not_overflow_on_huge_sizes() {
        let logs = vec![
            entry("20260101T000001Z.log", 0, u64::MAX),
            entry("20260101T000002Z.log", 0, u64::MAX),
        ];
        let by_bytes = RetentionPolicy {
            keep: 0,
            max_age: None,
            max_bytes: 10,
        };
        assert_eq!(
            select_for_deletion(&logs, &by_bytes, at(0), None),
            ["20260101T000001Z.log"]
        );
    }
}
