//! The admin token `POST /resume` needs, compared without leaking it
//! through timing, and the rejected attempts, logged without flooding.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// At most one log line per this long for rejected attempts.
pub const REJECTION_LOG_EVERY: Duration = Duration::from_secs(10);

/// The admin token, kept as its SHA-256 digest.
///
/// Comparing digests of equal length makes the comparison's time
/// independent of both the content and the length of the token: a plain
/// constant-time comparison of the strings still returns early when the
/// lengths differ, which tells an attacker the token's length. The digest of
/// the expected token is taken once, here, so no request spends time
/// proportional to its length either.
pub struct AdminToken {
    digest: [u8; 32],
    rejections: RejectionLog,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not even the digest: it allows guessing a weak token offline.
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The token `POST /resume` will accept.
    pub fn new(token: &str) -> AdminToken {
        AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
            rejections: RejectionLog::default(),
        }
    }

    /// Whether `given` is the token, in time that depends only on
    /// `given`'s length (which the caller sent, so knows anyway).
    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }

    /// Notes a rejected attempt from `peer`; logs it unless another was
    /// logged less than [`REJECTION_LOG_EVERY`] ago, and then says how
    /// many were not logged since.
    pub fn rejected(&self, peer: Option<SocketAddr>, why: &'static str) {
        if let Some(suppressed) = self.rejections.should_log(Instant::now()) {
            // Never the token given: a near miss tells much of the real one.
            tracing::warn!(
                peer = %peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string()),
                reason = why,
                suppressed,
                "POST /resume rejected: {why}"
            );
        }
    }
}

/// When the last rejection was logged, and how many were not since.
#[derive(Default)]
struct RejectionLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RejectionLog {
    /// `Some(count of those not logged since the last line)` when this one
    /// should be logged.
    fn should_log(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, suppressed) = &mut *state;
        if last.is_some_and(|at| now.saturating_duration_since(at) < REJECTION_LOG_EVERY) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = AdminToken::new("s3cret");
        assert!(token.matches("s3cret"));
        for wrong in ["", "s3cre", "s3crett", "S3cret", "s3cret ", "x"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn rejections_are_logged_once_per_window_with_the_count_left_out() {
        let log = RejectionLog::default();
        let start = Instant::now();
        assert_eq!(log.should_log(start), Some(0));
        for n in 1..=5 {
            assert_eq!(log.should_log(start + Duration::from_secs(n)), None);
        }
        assert_eq!(log.should_log(start + REJECTION_LOG_EVERY), Some(5));
        assert_eq!(log.should_log(start + REJECTION_LOG_EVERY), None);
        assert_eq!(log.should_log(start + REJECTION_LOG_EVERY * 3), Some(1));
    }
}
