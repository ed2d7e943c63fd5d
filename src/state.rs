//! The daemon's state: the one value every view (state.json, `/health`,
//! `/state`, metrics, `jobloop status`) is derived from, and the closed
//! sets of words that reach a file, a metric label or a span.
//!
//! A leaf: it imports nothing of the crate, so every other module may use
//! it. Only the supervisor changes a [`Snapshot`], and only through the
//! transitions in [`Status::can_become`]. Each enum that reaches a file, a
//! label or a span has one `as_str`, pinned to SPEC by the tests below;
//! [`StoredState`] is the typed form of a state.json read back.

mod busy;
mod stored;

use std::time::SystemTime;

use serde::{Serialize, Serializer};

pub use busy::Busy;
pub use stored::StoredState;

/// Where the daemon is in its life (state.json `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Started, preflight not yet passed.
    Starting,
    /// A job is running.
    Running,
    /// The last run succeeded; sleeping AGENT_IDLE_SLEEP.
    Idle,
    /// The last run failed; sleeping the backoff.
    Backoff,
    /// Halted: preflight failed or too many consecutive failures.
    Unhealthy,
    /// Halted: the credentials expired.
    TokenExpired,
    /// Shutting down: no new job, the running one is being stopped.
    Stopping,
    /// Shut down; the last state a state.json shows after a clean exit.
    Stopped,
}

impl Status {
    /// Every status, in SPEC order (for the `jobloop_state` gauge).
    pub const ALL: [Status; 8] = [
        Status::Starting,
        Status::Running,
        Status::Idle,
        Status::Backoff,
        Status::Unhealthy,
        Status::TokenExpired,
        Status::Stopping,
        Status::Stopped,
    ];

    /// The SPEC spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Idle => "idle",
            Status::Backoff => "backoff",
            Status::Unhealthy => "unhealthy",
            Status::TokenExpired => "token-expired",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
        }
    }

    /// Parses the SPEC spelling (for `jobloop status` and the start-up check).
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    /// True while the loop is halted and waits for a resume.
    pub fn is_halted(self) -> bool {
        matches!(self, Status::Unhealthy | Status::TokenExpired)
    }

    /// The exit code that ends jobloop in this halt under
    /// AGENT_HALT_ACTION=exit (SPEC §5): 77 (`EX_NOPERM`) for expired
    /// credentials, 69 (`EX_UNAVAILABLE`) for every unhealthy halt
    /// (max-failures, preflight-failed, exit-policy, and any reason added
    /// later); `None` for a status that is no halt. The one place the code
    /// of a halt is chosen.
    pub fn halt_exit_code(self) -> Option<u8> {
        match self {
            Status::TokenExpired => Some(77),
            Status::Unhealthy => Some(69),
            _ => None,
        }
    }

    /// True while the daemon can take work (readiness).
    pub fn is_ready(self) -> bool {
        matches!(self, Status::Running | Status::Idle | Status::Backoff)
    }

    /// The allowed transitions: `to` may follow `self`.
    ///
    /// Starting -> [Running, Unhealthy]; Running -> [Idle, Backoff, Unhealthy,
    /// TokenExpired]; Idle, Backoff -> Running; a halt -> [Running, the halt
    /// itself after a failed recovery]; anything but Stopped -> Stopping;
    /// Stopping -> Stopped.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        match (self, to) {
            (Stopped, _) => false,
            (_, Stopping) => self != Stopping,
            (Stopping, Stopped) => true,
            (Stopping, _) => false,
            (_, Stopped) => false,
            (Starting, Running | Unhealthy) => true,
            (Running, Idle | Backoff | Unhealthy | TokenExpired) => true,
            (Idle | Backoff, Running) => true,
            (Unhealthy | TokenExpired, Running) => true,
            _ => false,
        }
    }
}

/// Why the daemon is in its status (state.json `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The preflight command failed or timed out.
    PreflightFailed,
    /// AGENT_MAX_FAILURES consecutive failures.
    MaxFailures,
    /// The job exited with a failing (or the auth) exit code.
    ExitCode,
    /// The auth pattern matched the job's output.
    Pattern,
    /// The job ran longer than AGENT_JOB_TIMEOUT.
    Timeout,
    /// The command does not exist (exit code 127).
    CommandNotFound,
    /// The command exists but cannot be executed (exit code 126).
    NotExecutable,
    /// Stopping under AGENT_STOP_MODE=drain: the running job may finish
    /// on its own.
    Draining,
    /// An AGENT_EXIT_POLICY rule said `halt` for the job's exit code.
    ExitPolicy,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 9] = [
        Reason::PreflightFailed,
        Reason::MaxFailures,
        Reason::ExitCode,
        Reason::Pattern,
        Reason::Timeout,
        Reason::CommandNotFound,
        Reason::NotExecutable,
        Reason::Draining,
        Reason::ExitPolicy,
    ];

    /// Parses the SPEC spelling.
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }

    /// The SPEC spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PreflightFailed => "preflight-failed",
            Reason::MaxFailures => "max-failures",
            Reason::ExitCode => "exit-code",
            Reason::Pattern => "pattern",
            Reason::Timeout => "timeout",
            Reason::CommandNotFound => "command-not-found",
            Reason::NotExecutable => "not-executable",
            Reason::Draining => "draining",
            Reason::ExitPolicy => "exit-policy",
        }
    }
}

/// How one run ended (metric label `outcome`, span attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0 and no auth pattern.
    Success,
    /// Non-zero exit, killed by a signal, or could not be started.
    Failure,
    /// Stopped by jobloop after AGENT_JOB_TIMEOUT.
    Timeout,
    /// The auth exit code or the auth pattern.
    TokenExpired,
    /// An AGENT_EXIT_POLICY `skip` rule: neither a success nor a failure.
    Skipped,
}

impl Outcome {
    /// Every outcome (to pre-create metric series).
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Timeout,
        Outcome::TokenExpired,
        Outcome::Skipped,
    ];

    /// The SPEC spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Timeout => "timeout",
            Outcome::TokenExpired => "token_expired",
            Outcome::Skipped => "skipped",
        }
    }

    /// Parses the SPEC spelling.
    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
    }
}

/// How a preflight ended (metric label `result`, span attribute
/// `jobloop.preflight.result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightResult {
    /// Exit 0 within AGENT_PREFLIGHT_TIMEOUT.
    Success,
    /// Anything else, a failure to start included.
    Failure,
}

impl PreflightResult {
    /// Every result (to pre-create metric series).
    pub const ALL: [PreflightResult; 2] = [PreflightResult::Success, PreflightResult::Failure];

    /// The result of a preflight that `passed` or not.
    pub fn of(passed: bool) -> PreflightResult {
        if passed {
            PreflightResult::Success
        } else {
            PreflightResult::Failure
        }
    }

    /// The SPEC spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PreflightResult::Success => "success",
            PreflightResult::Failure => "failure",
        }
    }
}

/// The commands run after each iteration (metric label `hook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// AGENT_ROTATE_CMD.
    Rotate,
    /// AGENT_CLEANUP_CMD, run after the rotate command.
    Cleanup,
}

impl Hook {
    /// Every hook, in the order they run.
    pub const ALL: [Hook; 2] = [Hook::Rotate, Hook::Cleanup];

    /// The SPEC spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Rotate => "rotate",
            Hook::Cleanup => "cleanup",
        }
    }
}

/// Formats a time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

fn serialize_status<S: Serializer>(status: &Status, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(status.as_str())
}

fn serialize_reason<S: Serializer>(reason: &Option<Reason>, s: S) -> Result<S::Ok, S::Error> {
    match reason {
        Some(reason) => s.serialize_str(reason.as_str()),
        None => s.serialize_none(),
    }
}

fn serialize_time<S: Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => s.serialize_str(&rfc3339(*time)),
        None => s.serialize_none(),
    }
}

fn serialize_outcome<S: Serializer>(outcome: &Option<Outcome>, s: S) -> Result<S::Ok, S::Error> {
    match outcome {
        Some(outcome) => s.serialize_str(outcome.as_str()),
        None => s.serialize_none(),
    }
}

/// The state as published: state.json's keys, in the seed's spelling, plus
/// jobloop's additions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Current status.
    #[serde(serialize_with = "serialize_status")]
    pub status: Status,
    /// Why, where it applies.
    #[serde(serialize_with = "serialize_reason")]
    pub reason: Option<Reason>,
    /// Start of the running job (kept after it ends, like the seed).
    #[serde(serialize_with = "serialize_time")]
    pub current_batch_started_at: Option<SystemTime>,
    /// Consecutive failed runs.
    pub consecutive_failures: u32,
    /// End of the last finished run.
    #[serde(serialize_with = "serialize_time")]
    pub last_batch_at: Option<SystemTime>,
    /// Exit code of the last run (128+N for signal N).
    pub last_batch_exit: Option<i32>,
    /// Outcome of the last run.
    #[serde(serialize_with = "serialize_outcome")]
    pub last_outcome: Option<Outcome>,
    /// End of the last successful run.
    #[serde(serialize_with = "serialize_time")]
    pub last_success_at: Option<SystemTime>,
    /// Number of the current or last iteration; the first is 1.
    pub iteration: u64,
    /// The backoff being slept, else 0.
    pub backoff_seconds: f64,
    /// Run log of the current or last iteration.
    pub run_log: Option<String>,
    /// Trace id of the current or last iteration.
    pub trace_id: Option<String>,
    /// jobloop's own pid.
    pub pid: u32,
    /// The running job's pid, else null.
    pub job_pid: Option<u32>,
    /// jobloop's version.
    pub version: &'static str,
    /// Random id of this jobloop run, also in every child's
    /// `JOBLOOP_INSTANCE`: how a restart finds what this one left behind.
    pub instance: String,
    /// When the current status began.
    #[serde(serialize_with = "serialize_time_required")]
    pub status_since: SystemTime,
    /// Time jobs have run, for `jobloop_busy_seconds_total`; not a
    /// state.json key (an `Instant` means nothing outside this process).
    #[serde(skip)]
    pub busy: Busy,
}

fn serialize_time_required<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*time))
}

impl Snapshot {
    /// The state of a daemon that has just started.
    pub fn starting(now: SystemTime) -> Snapshot {
        Snapshot {
            status: Status::Starting,
            reason: None,
            current_batch_started_at: None,
            consecutive_failures: 0,
            last_batch_at: None,
            last_batch_exit: None,
            last_outcome: None,
            last_success_at: None,
            iteration: 0,
            backoff_seconds: 0.0,
            run_log: None,
            trace_id: None,
            pid: std::process::id(),
            job_pid: None,
            version: env!("CARGO_PKG_VERSION"),
            instance: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            status_since: now,
            busy: Busy::default(),
        }
    }

    /// The state as JSON bytes, newline-terminated (state.json, `/state`).
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes =
            serde_json::to_vec_pretty(self).expect("the snapshot has only plain fields");
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_match_the_spec() {
        let statuses: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            statuses,
            [
                "starting",
                "running",
                "idle",
                "backoff",
                "unhealthy",
                "token-expired",
                "stopping",
                "stopped"
            ]
        );
        let outcomes: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            outcomes,
            ["success", "failure", "timeout", "token_expired", "skipped"]
        );
        let results: Vec<_> = PreflightResult::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(results, ["success", "failure"]);
        let hooks: Vec<_> = Hook::ALL.iter().map(|h| h.as_str()).collect();
        assert_eq!(hooks, ["rotate", "cleanup"]);
        let reasons = [
            (Reason::PreflightFailed, "preflight-failed"),
            (Reason::MaxFailures, "max-failures"),
            (Reason::ExitCode, "exit-code"),
            (Reason::Pattern, "pattern"),
            (Reason::Timeout, "timeout"),
            (Reason::CommandNotFound, "command-not-found"),
            (Reason::NotExecutable, "not-executable"),
            (Reason::Draining, "draining"),
            (Reason::ExitPolicy, "exit-policy"),
        ];
        for (reason, text) in reasons {
            assert_eq!(reason.as_str(), text);
        }
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
    }

    #[test]
    fn stored_state_reads_back_what_was_written() {
        let mut snapshot = Snapshot::starting(SystemTime::UNIX_EPOCH);
        snapshot.status = Status::Running;
        snapshot.reason = Some(Reason::Timeout);
        snapshot.last_outcome = Some(Outcome::TokenExpired);
        snapshot.iteration = 7;
        snapshot.run_log = Some("/logs/runs/x.log".into());
        snapshot.last_batch_at = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5));
        let stored = StoredState::from_json(&snapshot.to_json()).unwrap();
        assert_eq!(stored.status, Some(Status::Running));
        assert_eq!(stored.reason, Some(Reason::Timeout));
        assert_eq!(stored.last_outcome, Some(Outcome::TokenExpired));
        assert_eq!(stored.iteration, Some(7));
        assert_eq!(stored.run_log.as_deref(), Some("/logs/runs/x.log"));
        assert_eq!(stored.last_batch_at, snapshot.last_batch_at);
        assert_eq!(stored.instance, Some(snapshot.instance.clone()));
        assert_eq!(stored.pid, Some(snapshot.pid));
        assert_eq!(stored.status_since, Some(SystemTime::UNIX_EPOCH));
    }

    #[test]
    fn stored_state_is_lenient_key_by_key() {
        let stored = StoredState::from_json(
            br#"{"status":"sleeping","pid":"12","iteration":3,"runLog":7,"extra":true}"#,
        )
        .unwrap();
        assert_eq!(stored.status, None);
        assert_eq!(stored.pid, None);
        assert_eq!(stored.iteration, Some(3));
        assert_eq!(stored.run_log, None);
        assert!(StoredState::from_json(b"[1]").is_err());
        assert_eq!(
            StoredState::from_json(b"{}").unwrap(),
            StoredState::default()
        );
    }

    #[test]
    fn transitions_follow_the_loop() {
        use Status::*;
        assert!(Starting.can_become(Running));
        assert!(Starting.can_become(Unhealthy));
        assert!(Running.can_become(TokenExpired));
        assert!(Idle.can_become(Running));
        assert!(Unhealthy.can_become(Running));
        assert!(Running.can_become(Stopping));
        assert!(Stopping.can_become(Stopped));
        assert!(!Idle.can_become(Backoff));
        assert!(!Starting.can_become(Idle));
        assert!(!Stopped.can_become(Running));
        assert!(!Stopping.can_become(Running));
        assert!(!Running.can_become(Stopped));
    }

    #[test]
    fn json_has_every_seed_key() {
        let json: serde_json::Value =
            serde_json::from_slice(&Snapshot::starting(SystemTime::UNIX_EPOCH).to_json()).unwrap();
        for key in [
            "status",
            "reason",
            "currentBatchStartedAt",
            "consecutiveFailures",
            "lastBatchAt",
            "lastBatchExit",
            "iteration",
            "backoffSeconds",
            "runLog",
            "traceId",
            "pid",
            "jobPid",
            "version",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["status"], "starting");
        assert_eq!(json["statusSince"], "1970-01-01T00:00:00.000Z");
        assert!(
            json.get("busy").is_none(),
            "busy time is not a state.json key"
        );
    }
}
