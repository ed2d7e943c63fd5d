//! Classification of a finished run, in SPEC §2's order. Pure: no I/O, no
//! clock, so every path is a table test.

use crate::exit_policy::{Action, ExitPolicy};
use crate::runner::{RunReport, SpawnFailure};
use crate::state::{Outcome, Reason, Status};

/// What the loop does after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Sleep AGENT_IDLE_SLEEP, then run again.
    Idle,
    /// Sleep AGENT_IDLE_SLEEP with the backoff left as it was (an
    /// AGENT_EXIT_POLICY `skip`), then run again.
    Skip,
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
/// anything else, so a job that prints an auth error and exits 0 still
/// halts, whatever the rules say; a timeout stays a timeout; then the first
/// AGENT_EXIT_POLICY rule that holds the exit code; then exit 0; then
/// everything else counts as a failure and halts at `max_failures`
/// (0 = never) without sleeping. Rules apply to jobs that started: a
/// command that could not start keeps its own reason.
pub fn classify(
    report: &RunReport,
    auth_exit_code: i32,
    policy: &ExitPolicy,
    failures_before: u32,
    max_failures: u32,
) -> Classification {
    let started = report.spawn_failure.is_none();
    let action = if started && !report.timed_out {
        policy.action(report.exit_code)
    } else {
        None
    };
    let token_expired = report.pattern_matched
        || (started && report.exit_code == auth_exit_code)
        || action == Some(Action::TokenExpired);
    if token_expired {
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
    let success = match action {
        Some(action) => action == Action::Success,
        None => started && report.exit_code == 0 && !report.timed_out,
    };
    if action == Some(Action::Skip) {
        return Classification {
            outcome: Outcome::Skipped,
            reason: None,
            consecutive_failures: failures_before,
            next: Next::Skip,
        };
    }
    if success {
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
    if action == Some(Action::Halt) {
        return Classification {
            outcome,
            reason: Some(Reason::ExitPolicy),
            consecutive_failures,
            next: Next::Halt(Status::Unhealthy),
        };
    }
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
            let got = classify(&report, 3, &ExitPolicy::default(), before, 5);
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
        let got = classify(&report(1), 3, &ExitPolicy::default(), 1_000_000, 0);
        assert_eq!(got.next, Next::Backoff);
    }

    #[test]
    fn spawn_failure_with_auth_code_127_is_not_token_expiry() {
        let not_found = RunReport {
            spawn_failure: Some(SpawnFailure::NotFound),
            ..report(127)
        };
        assert_eq!(
            classify(&not_found, 127, &ExitPolicy::default(), 0, 5).outcome,
            Outcome::Failure
        );
    }

    #[test]
    fn exit_policy_in_spec_order() {
        let policy =
            ExitPolicy::parse("75=skip,3-5=failure,0-10=success,2=halt,9=token_expired").unwrap();
        let run = |report: RunReport, before: u32| classify(&report, 3, &policy, before, 5);
        // skip: counters and backoff unchanged, idle.
        let got = run(report(75), 2);
        assert_eq!(
            got,
            Classification {
                outcome: Outcome::Skipped,
                reason: None,
                consecutive_failures: 2,
                next: Next::Skip
            }
        );
        // The first rule wins: 4 is a failure although 0-10 says success.
        let got = run(report(4), 0);
        assert_eq!((got.outcome, got.next), (Outcome::Failure, Next::Backoff));
        assert_eq!(got.reason, Some(Reason::ExitCode));
        // A success rule for a non-zero code resets the failures.
        let got = run(report(7), 3);
        assert_eq!(
            (got.outcome, got.consecutive_failures),
            (Outcome::Success, 0)
        );
        // 2 is held by 0-10 first: success, not halt.
        assert_eq!(run(report(2), 0).outcome, Outcome::Success);
        // The auth exit code goes before the rules (3 is also in 3-5).
        let got = run(report(3), 1);
        assert_eq!(got.outcome, Outcome::TokenExpired);
        assert_eq!(got.reason, Some(Reason::ExitCode));
        // So does the pattern, even with a success rule for the code.
        let matched = RunReport {
            pattern_matched: true,
            ..report(0)
        };
        assert_eq!(run(matched, 0).outcome, Outcome::TokenExpired);
        // A timeout stays a timeout whatever the rules say of 143.
        let always = ExitPolicy::parse("0-255=skip").unwrap();
        let timed_out = RunReport {
            timed_out: true,
            ..report(143)
        };
        let got = classify(&timed_out, 3, &always, 0, 5);
        assert_eq!((got.outcome, got.next), (Outcome::Timeout, Next::Backoff));
        // A command that could not start keeps its reason.
        let not_found = RunReport {
            spawn_failure: Some(SpawnFailure::NotFound),
            ..report(127)
        };
        let got = classify(&not_found, 3, &always, 0, 5);
        assert_eq!(got.reason, Some(Reason::CommandNotFound));
    }

    #[test]
    fn exit_policy_halt_failure_and_token_expired() {
        let policy = ExitPolicy::parse("2=halt,0=failure,9=token_expired").unwrap();
        let got = classify(&report(2), 3, &policy, 0, 5);
        assert_eq!(
            got,
            Classification {
                outcome: Outcome::Failure,
                reason: Some(Reason::ExitPolicy),
                consecutive_failures: 1,
                next: Next::Halt(Status::Unhealthy)
            }
        );
        let got = classify(&report(0), 3, &policy, 0, 5);
        assert_eq!(
            (got.outcome, got.consecutive_failures, got.next),
            (Outcome::Failure, 1, Next::Backoff)
        );
        // A failure rule still reaches the max-failures halt.
        let got = classify(&report(0), 3, &policy, 4, 5);
        assert_eq!(got.reason, Some(Reason::MaxFailures));
        let got = classify(&report(9), 3, &policy, 1, 5);
        assert_eq!(
            (got.outcome, got.reason, got.next),
            (
                Outcome::TokenExpired,
                Some(Reason::ExitCode),
                Next::Halt(Status::TokenExpired)
            )
        );
    }
}
