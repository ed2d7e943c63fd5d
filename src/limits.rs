//! The process's descriptor budget (SPEC §6, 0.2): at start jobloop raises
//! its soft `RLIMIT_NOFILE` to the hard limit and notes how many descriptors
//! are already open, so the HTTP server can size its connection cap and
//! leave a reserve for the loop (the cap itself is `http::connection_cap`).
//!
//! A leaf module: it knows nothing of the loop or the server, only the
//! kernel's limit and `/proc/self/fd`.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Where `/proc` lists this process's open descriptors.
const FD_DIR: &str = "/proc/self/fd";

/// What a process may open, as measured at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptors {
    /// The soft `RLIMIT_NOFILE` in force after [`raise_nofile_limit`]:
    /// no descriptor number reaches it.
    pub limit: u64,
    /// Descriptors open when it was measured (inherited ones included:
    /// stdio, a systemd socket, whatever the parent leaked).
    pub open: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one and returns the limit
/// now in force with the descriptors open at this moment.
///
/// Never fails: if the limit cannot be raised (a hard limit of "unlimited",
/// which Linux refuses for this resource, or a seccomp filter) the soft
/// limit stays as it was and is what the budget is sized from. Call it
/// first thing, before any thread or runtime opens descriptors of its own.
///
/// The job inherits the raised soft limit, as it inherits the hard one.
pub fn raise_nofile_limit() -> Descriptors {
    let before = getrlimit(Resource::Nofile);
    let limit = match (before.current, before.maximum) {
        (Some(soft), Some(hard)) if soft < hard => {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            // No logging is set up this early; the caller logs the limit
            // it got, which tells the same story as an error would.
            if setrlimit(Resource::Nofile, raised).is_ok() {
                hard
            } else {
                soft
            }
        }
        (Some(soft), _) => soft,
        // An unlimited soft limit: Linux never reports one for NOFILE, but
        // if it did, the kernel's own ceiling still applies; take the
        // figure most systems use for it.
        (None, _) => NR_OPEN_DEFAULT,
    };
    Descriptors {
        limit,
        open: open_descriptors().unwrap_or(0),
    }
}

/// Linux's default `fs.nr_open`, the ceiling of any `RLIMIT_NOFILE`.
const NR_OPEN_DEFAULT: u64 = 1_048_576;

/// How many descriptors this process has open, from `/proc/self/fd`
/// (minus the one the listing itself uses); `None` without `/proc`.
pub fn open_descriptors() -> Option<u64> {
    let entries = std::fs::read_dir(FD_DIR).ok()?;
    let count = entries.filter(Result::is_ok).count() as u64;
    // The directory handle read_dir holds is listed too.
    Some(count.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let descriptors = raise_nofile_limit();
        let after = getrlimit(Resource::Nofile);
        assert_eq!(after.current, Some(descriptors.limit));
        assert_eq!(after.current, after.maximum);
        // stdin, stdout, stderr at least, and far fewer than the limit.
        assert!(descriptors.open >= 3, "{descriptors:?}");
        assert!(descriptors.open < descriptors.limit, "{descriptors:?}");
    }

    #[test]
    fn opening_a_file_counts_one_more_descriptor() {
        // Other tests of this binary open files concurrently: retry until
        // a quiet moment shows the exact difference.
        for _ in 0..50 {
            let Some(before) = open_descriptors() else {
                return;
            };
            let file = std::fs::File::open("/proc/self/status").unwrap();
            let during = open_descriptors().unwrap();
            drop(file);
            if during == before + 1 {
                return;
            }
        }
        panic!("never saw a file counted as one descriptor");
    }
}
