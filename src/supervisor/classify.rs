//! Classification of a finished run, in SPEC §2's order. Pure: no I/O, no
//! clock, so every path is a table test.

use crate::runner::{RunReport, SpawnFailure};
use crate::state::{Outcome, Reason, Status};

/// What the loop does after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Sleep AGENT_IDLE_SLEEP, then run again.
    Idle,
    /// Sleep the backoff, then run again.
    Backoff,
    /// Stop starting jobs; stay up in this status until resumed.
    Halt(Status),
}

/// The verdict on one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// How the run ended.
    pub outcome: Outcome,
    /// Why, for state.json.
    pub reason: Option<Reason>,
    /// Consecutive failures after this run.
    pub consecutive_failures: u32,
    /// What the loop does next.
    pub next: Next,
}

/// Classifies a run.
///
/// SPEC §2: token expiry (auth exit code or pattern) is checked before
/// success, so a job that prints an auth error and exits 0 still halts;
/// then exit 0; then everything else counts as a failure and halts at
/// `max_failures` (0 = never) without sleeping.
pub fn classify(
    report: &RunReport,
    auth_exit_code: i32,
    failures_before: u32,
    max_failures: u32,
) -> Classification {
    let started = report.spawn_failure.is_none();
    if report.pattern_matched || (started && report.exit_code == auth_exit_code) {
        return Classification {
            outcome: Outcome::TokenExpired,
            reason: Some(if report.pattern_matched {
                Reason::Pattern
            } else {
                Reason::ExitCode
            }),
            consecutive_failures: failures_before,
            next: Next::Halt(Status::TokenExpired),
        };
    }
    if started && report.exit_code == 0 && !report.timed_out {
        return Classification {
            outcome: Outcome::Success,
            reason: None,
            consecutive_failures: 0,
            next: Next::Idle,
        };
    }
    let (outcome, reason) = match report.spawn_failure {
        Some(SpawnFailure::NotFound) => (Outcome::Failure, Reason::CommandNotFound),
        Some(SpawnFailure::NotExecutable) => (Outcome::Failure, Reason::NotExecutable),
        // The loop never classifies a Resource failure (it is not the
        // job's); should one come here, it is a plain failure.
        Some(SpawnFailure::Other | SpawnFailure::Resource) => (Outcome::Failure, Reason::ExitCode),
        None if report.timed_out => (Outcome::Timeout, Reason::Timeout),
        None => (Outcome::Failure, Reason::ExitCode),
    };
    let consecutive_failures = failures_before.saturating_add(1);
    if max_failures > 0 && consecutive_failures >= max_failures {
        return Classification {
            outcome,
            reason: Some(Reason::MaxFailures),
            consecutive_failures,
            next: Next::Halt(Status::Unhealthy),
        };
    }
    Classification {
        outcome,
        reason: Some(reason),
        consecutive_failures,
        next: Next::Backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(exit_code: i32) -> RunReport {
        RunReport {
            exit_code,
            ..RunReport::default()
        }
    }

    #[test]
    fn table_in_spec_order() {
        let matched = RunReport {
            pattern_matched: true,
            ..report(0)
        };
        let timed_out = RunReport {
            timed_out: true,
            ..report(143)
        };
        let not_found = RunReport {
            spawn_failure: Some(SpawnFailure::NotFound),
            ..report(127)
        };
        let not_executable = RunReport {
            spawn_failure: Some(SpawnFailure::NotExecutable),
            ..report(126)
        };
        let killed_matched = RunReport {
            pattern_matched: true,
            ..report(1)
        };
        type Row = (RunReport, u32, Outcome, Option<Reason>, u32, Next);
        let rows: Vec<Row> = vec![
            (
                report(3),
                2,
                Outcome::TokenExpired,
                Some(Reason::ExitCode),
                2,
                Next::Halt(Status::TokenExpired),
            ),
            (
                matched,
                0,
                Outcome::TokenExpired,
                Some(Reason::Pattern),
                0,
                Next::Halt(Status::TokenExpired),
            ),
            (
                killed_matched,
                4,
                Outcome::TokenExpired,
                Some(Reason::Pattern),
                4,
                Next::Halt(Status::TokenExpired),
            ),
            (report(0), 3, Outcome::Success, None, 0, Next::Idle),
            (
                report(1),
                0,
                Outcome::Failure,
                Some(Reason::ExitCode),
                1,
                Next::Backoff,
            ),
            (
                report(139),
                3,
                Outcome::Failure,
                Some(Reason::ExitCode),
                4,
                Next::Backoff,
            ),
            (
                report(1),
                4,
                Outcome::Failure,
                Some(Reason::MaxFailures),
                5,
                Next::Halt(Status::Unhealthy),
            ),
            (
                timed_out,
                0,
                Outcome::Timeout,
                Some(Reason::Timeout),
                1,
                Next::Backoff,
            ),
            (
                not_found,
                0,
                Outcome::Failure,
                Some(Reason::CommandNotFound),
                1,
                Next::Backoff,
            ),
            (
                not_executable,
                0,
                Outcome::Failure,
                Some(Reason::NotExecutable),
                1,
                Next::Backoff,
            ),
        ];
        for (index, (report, before, outcome, reason, after, next)) in rows.into_iter().enumerate()
        {
            let got = classify(&report, 3, before, 5);
            assert_eq!(
                got,
                Classification {
                    outcome,
                    reason,
                    consecutive_failures: after,
                    next
                },
                "row {index}"
            );
        }
    }

    #[test]
    fn max_failures_zero_never_halts() {
        let got = classify(&report(1), 3, 1_000_000, 0);
        assert_eq!(got.next, Next::Backoff);
    }

    #[test]
    fn spawn_failure_with_auth_code_127_is_not_token_expiry() {
        let not_found = RunReport {
            spawn_failure: Some(SpawnFailure::NotFound),
            ..report(127)
        };
        assert_eq!(classify(&not_found, 127, 0, 5).outcome, Outcome::Failure);
    }
}
