//! Running a child to its end, with the whole stop policy in one place, and
//! the seam ([`Runner`], [`Child`]) through which the supervisor reaches
//! processes, so that its loop can be tested without any.
//!
//! The stop policy: after AGENT_JOB_TIMEOUT (or the preflight's or a hook's
//! limit) the child gets SIGTERM and AGENT_KILL_GRACE; when the auth
//! pattern matches and AGENT_AUTH_KILL is set, the same. At jobloop's
//! shutdown ([`StopPolicy::shutdown_step`]), counted from the first request:
//! under `terminate` SIGTERM at once and SIGKILL at the end of
//! AGENT_SHUTDOWN_GRACE, the second request SIGKILL at once; under `drain`
//! (the job only) nothing until the end of AGENT_SHUTDOWN_GRACE, then
//! SIGTERM and SIGKILL after AGENT_KILL_GRACE, the second request SIGTERM
//! at once (SIGKILL after AGENT_KILL_GRACE), the third SIGKILL at once. A
//! grace or limit too long to represent is no deadline.

use std::io;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::{reaper, JobSpec, Process, RunReport, SpawnFailure};

/// Most scans for a previous jobloop's leftovers at start.
const LEFTOVER_SCANS: u32 = 10;
/// Pause between two of those scans.
const LEFTOVER_SCAN_PAUSE: Duration = Duration::from_millis(10);

/// Where jobloop's shutdown stands: how many stop requests came so far
/// (signals, or the one a halt under AGENT_HALT_ACTION=exit makes) and when
/// the first came. Every deadline of the shutdown is counted from that one
/// instant, so the whole shutdown has one budget (SPEC §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shutdown {
    /// Stop requests so far; 0 = none.
    pub asked: u32,
    /// When the first came; `None` before it.
    pub began: Option<Instant>,
}

impl Shutdown {
    /// True once a shutdown was asked for.
    pub fn is_asked(&self) -> bool {
        self.asked > 0
    }

    /// One more request: the first sets the instant the budget counts from.
    pub fn ask(&mut self, now: Instant) {
        self.asked = self.asked.saturating_add(1);
        self.began.get_or_insert(now);
    }
}

/// The shutdown as the children see it.
pub type Shutdowns = watch::Receiver<Shutdown>;

/// What a child is to do at a shutdown request ([`StopPolicy::shutdown_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownStep {
    /// Let it run on its own (a drain); SIGTERM at `term_at` (`None` =
    /// never).
    Drain {
        /// When the drain's grace runs out.
        term_at: Option<Instant>,
    },
    /// SIGTERM now, SIGKILL at `kill_at` (`None` = never).
    Terminate {
        /// When the grace runs out.
        kill_at: Option<Instant>,
    },
    /// SIGKILL now.
    Kill,
}

/// The limits a child runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopPolicy {
    /// Longest the child may run; `None` = no limit.
    pub timeout: Option<Duration>,
    /// SIGTERM-to-SIGKILL grace after a timeout or an auth kill.
    pub kill_grace: Duration,
    /// Stop the child as soon as the auth pattern matches its output.
    pub auth_kill: bool,
    /// SIGTERM-to-SIGKILL grace at jobloop's shutdown, or under `drain`
    /// the time the child may still finish on its own.
    pub shutdown_grace: Duration,
    /// At a shutdown, let the child finish on its own first
    /// (AGENT_STOP_MODE=drain; the job only, never a hook or preflight).
    pub drain: bool,
    /// After the child exits, how long output still held open by a
    /// grandchild is read.
    pub drain_wait: Duration,
}

impl StopPolicy {
    /// What the child does now that `shutdown` stands as it does (its
    /// count just went up); `None` when no shutdown was asked for.
    pub fn shutdown_step(&self, shutdown: Shutdown, now: Instant) -> Option<ShutdownStep> {
        let began = shutdown.began.unwrap_or(now);
        let step = match (self.drain, shutdown.asked) {
            (_, 0) => return None,
            (false, 1) => ShutdownStep::Terminate {
                kill_at: began.checked_add(self.shutdown_grace),
            },
            (true, 1) => ShutdownStep::Drain {
                term_at: began.checked_add(self.shutdown_grace),
            },
            (true, 2) => ShutdownStep::Terminate {
                kill_at: now.checked_add(self.kill_grace),
            },
            _ => ShutdownStep::Kill,
        };
        Some(step)
    }

    /// When a child whose drain ran out at `term_at` gets SIGKILL.
    pub fn drain_kill_at(&self, term_at: Option<Instant>) -> Option<Instant> {
        term_at.and_then(|at| at.checked_add(self.kill_grace))
    }

    /// How many requests kill at once: 2 under `terminate`, 3 under
    /// `drain` (whose second only ends the drain).
    pub fn kill_now_at(&self) -> u32 {
        if self.drain {
            3
        } else {
            2
        }
    }
}

/// What happened during a run, for the caller's span (the names are the
/// span events of SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEvent {
    /// The child ran past its limit and is being stopped.
    Timeout,
    /// The auth pattern matched the child's output.
    AuthPatternMatched,
}

impl RunEvent {
    /// The span event name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunEvent::Timeout => "timeout",
            RunEvent::AuthPatternMatched => "auth_pattern_matched",
        }
    }
}

/// A started child.
// The supervisor runs on a current-thread runtime: the futures need not be
// Send, so plain `async fn` is the simplest form.
#[allow(async_fn_in_trait)]
pub trait Child {
    /// Its pid (and process group id).
    fn pid(&self) -> u32;

    /// Runs it to its end under `policy`, obeying `shutdowns`, and reports
    /// what happened. `on_event` hears of timeouts and auth matches.
    async fn run_to_end(
        self,
        policy: StopPolicy,
        shutdowns: Shutdowns,
        on_event: impl FnMut(RunEvent),
    ) -> RunReport;
}

/// Everything the supervisor does to processes.
#[allow(async_fn_in_trait)]
pub trait Runner {
    /// The started child.
    type Child: Child;

    /// Starts the job.
    ///
    /// # Errors
    ///
    /// When it cannot be started, with why.
    fn spawn_job(&self, spec: JobSpec<'_>) -> Result<Self::Child, (SpawnFailure, io::Error)>;

    /// Starts `sh -c COMMAND` (the preflight, a hook).
    ///
    /// # Errors
    ///
    /// When `sh` cannot be started.
    fn spawn_shell(&self, command: &str, instance: &str) -> io::Result<Self::Child>;

    /// Reaps exited orphans, never `owned`.
    fn reap_orphans(&self, owned: Option<u32>);

    /// Kills what a previous jobloop with this instance id left running;
    /// returns how many processes that was.
    fn stop_leftovers(&self, instance: &str) -> usize;

    /// At shutdown: stops the processes that escaped their job's group and
    /// were re-parented to jobloop, SIGTERM now then SIGKILL at `kill_at`
    /// (`None` = never), or once `kill_now_at` requests were made.
    async fn stop_adopted(&self, kill_at: Option<Instant>, kill_now_at: u32, shutdowns: Shutdowns);
}

/// The real processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Os;

impl Runner for Os {
    type Child = Process;

    fn spawn_job(&self, spec: JobSpec<'_>) -> Result<Process, (SpawnFailure, io::Error)> {
        Process::spawn_job(spec)
    }

    fn spawn_shell(&self, command: &str, instance: &str) -> io::Result<Process> {
        Process::spawn_shell(command, instance)
    }

    fn reap_orphans(&self, owned: Option<u32>) {
        reaper::reap_orphans(owned);
    }

    fn stop_leftovers(&self, instance: &str) -> usize {
        let entry = format!("{}={instance}", super::INSTANCE_VAR);
        // A process in the middle of an exec shows another environment for
        // a moment (a job forked by the killed jobloop but not yet exec'd
        // still has jobloop's own; a shell becoming `sleep` none), so one
        // scan can miss a left-over job: scanning until three scans in a
        // row find nothing catches it on a later pass. On a restart only,
        // and about 30 ms.
        let mut stopped = 0;
        let mut empty_scans = 0;
        for _ in 0..LEFTOVER_SCANS {
            let left = reaper::processes_with_env(&entry);
            if left.is_empty() {
                empty_scans += 1;
                if empty_scans == 3 {
                    break;
                }
            } else {
                empty_scans = 0;
                reaper::kill_with_groups(&left);
                stopped += left.len();
            }
            std::thread::sleep(LEFTOVER_SCAN_PAUSE);
        }
        stopped
    }

    async fn stop_adopted(&self, kill_at: Option<Instant>, kill_now_at: u32, shutdowns: Shutdowns) {
        reaper::reap_orphans(None);
        if reaper::adopted_processes(None).is_empty() {
            return;
        }
        tracing::info!("stopping processes left behind by earlier jobs");
        reaper::signal_adopted(Signal::SIGTERM);
        while kill_at.is_none_or(|at| Instant::now() < at) && shutdowns.borrow().asked < kill_now_at
        {
            reaper::reap_orphans(None);
            if reaper::adopted_processes(None).is_empty() {
                return;
            }
            // Shutdown only: a short poll is simpler than tracking every pid.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reaper::signal_adopted(Signal::SIGKILL);
        reaper::reap_orphans(None);
    }
}

impl Child for Process {
    fn pid(&self) -> u32 {
        Process::pid(self)
    }

    async fn run_to_end(
        mut self,
        policy: StopPolicy,
        mut shutdowns: Shutdowns,
        mut on_event: impl FnMut(RunEvent),
    ) -> RunReport {
        let deadline = policy
            .timeout
            .and_then(|limit| Instant::now().checked_add(limit));
        let mut auth_signal = self.take_auth_signal();
        let mut obeyed = 0;
        let mut listening = true;
        // Under a drain: when the job gets SIGTERM if it has not ended.
        let mut drain_ends = None;
        let status = loop {
            let shutdown = *shutdowns.borrow_and_update();
            if shutdown.asked > obeyed {
                obeyed = shutdown.asked;
                if let Some(step) = policy.shutdown_step(shutdown, Instant::now()) {
                    drain_ends = self.stop_for_shutdown(step, policy.shutdown_grace);
                }
            }
            tokio::select! {
                status = self.wait() => break status,
                _ = sleep_until(drain_ends), if !self.is_stopping() => {
                    tracing::warn!(pid = self.pid, kill_grace = ?policy.kill_grace,
                        "the drain's grace ran out: passing SIGTERM to the job");
                    self.stop_by(policy.drain_kill_at(drain_ends));
                    drain_ends = None;
                }
                _ = sleep_until(deadline), if !self.is_stopping() => {
                    tracing::warn!(pid = self.pid, limit = ?policy.timeout.unwrap_or_default(), "the run took too long; stopping it");
                    on_event(RunEvent::Timeout);
                    self.stop_for_timeout(policy.kill_grace);
                }
                matched = recv_once(&mut auth_signal) => {
                    if matched.is_err() { continue; }
                    on_event(RunEvent::AuthPatternMatched);
                    if policy.auth_kill && !self.is_stopping() {
                        tracing::warn!(pid = self.pid, "the auth pattern matched; stopping the job (AGENT_AUTH_KILL)");
                        self.stop_for_auth(policy.kill_grace);
                    }
                }
                changed = shutdowns.changed(), if listening => {
                    // Nobody can ask any more: run on under the other limits.
                    listening = changed.is_ok();
                }
            }
        };
        self.finish(status, policy.drain_wait, &mut shutdowns).await
    }
}

impl Process {
    /// Acts on a shutdown `step`; returns when a drain ends (`None` when
    /// not draining, or never).
    fn stop_for_shutdown(&mut self, step: ShutdownStep, grace: Duration) -> Option<Instant> {
        match step {
            ShutdownStep::Drain { term_at } => {
                tracing::info!(pid = self.pid, grace = ?grace,
                    "draining: the job may finish on its own; no new job");
                return term_at;
            }
            ShutdownStep::Terminate { kill_at } => {
                tracing::info!(pid = self.pid, "stopping: passing SIGTERM to the job");
                self.stop_by(kill_at);
            }
            ShutdownStep::Kill => {
                tracing::warn!(pid = self.pid, "another stop signal: killing the job now");
                self.kill_now();
            }
        }
        None
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for a one-shot signal once; afterwards (or without one) never.
async fn recv_once(receiver: &mut Option<oneshot::Receiver<()>>) -> Result<(), ()> {
    let Some(pending) = receiver.as_mut() else {
        return std::future::pending().await;
    };
    let result = pending.await.map_err(|_| ());
    *receiver = None;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(asked: u32) -> Shutdown {
        Shutdown {
            asked,
            began: (asked > 0).then(Instant::now),
        }
    }

    #[test]
    fn shutdown_steps_count_from_the_first_request() {
        let secs = Duration::from_secs;
        let mut policy = StopPolicy {
            timeout: None,
            kill_grace: secs(10),
            auth_kill: false,
            shutdown_grace: secs(25),
            drain: false,
            drain_wait: Duration::ZERO,
        };
        let began = Instant::now();
        let later = began + secs(7);
        let at = |asked| Shutdown {
            asked,
            began: Some(began),
        };
        assert_eq!(policy.shutdown_step(at(0), later), None);
        // terminate: the grace counts from the first request, not from
        // when the child heard of it.
        assert_eq!(
            policy.shutdown_step(at(1), later),
            Some(ShutdownStep::Terminate {
                kill_at: Some(began + secs(25))
            })
        );
        assert_eq!(policy.shutdown_step(at(2), later), Some(ShutdownStep::Kill));
        assert_eq!(policy.kill_now_at(), 2);

        policy.drain = true;
        assert_eq!(
            policy.shutdown_step(at(1), later),
            Some(ShutdownStep::Drain {
                term_at: Some(began + secs(25))
            })
        );
        assert_eq!(
            policy.drain_kill_at(Some(began + secs(25))),
            Some(began + secs(35))
        );
        // The second request ends the drain: SIGTERM now, the kill grace.
        assert_eq!(
            policy.shutdown_step(at(2), later),
            Some(ShutdownStep::Terminate {
                kill_at: Some(later + secs(10))
            })
        );
        assert_eq!(policy.shutdown_step(at(3), later), Some(ShutdownStep::Kill));
        assert_eq!(policy.kill_now_at(), 3);

        // Graces too long to represent are no deadlines.
        policy.shutdown_grace = Duration::MAX;
        assert_eq!(
            policy.shutdown_step(at(1), later),
            Some(ShutdownStep::Drain { term_at: None })
        );
        assert_eq!(policy.drain_kill_at(None), None);
    }

    /// One test, not several: a stopped child makes the runner reap
    /// orphans, which could take the exit status of a child of a test
    /// running beside it.
    #[tokio::test]
    async fn huge_limits_are_no_deadline_and_a_shutdown_stops_the_child() {
        let huge = StopPolicy {
            timeout: Some(Duration::MAX),
            kill_grace: Duration::MAX,
            auth_kill: true,
            shutdown_grace: Duration::MAX,
            drain: false,
            drain_wait: Duration::MAX,
        };
        let (_asker, shutdowns) = watch::channel(asked(0));
        let child = Os.spawn_shell("exit 3", "test").unwrap();
        let report = child.run_to_end(huge, shutdowns, |_| {}).await;
        assert_eq!(report.exit_code, 3);
        assert!(!report.timed_out && !report.killed);

        // Asked to stop before it started: SIGTERM at once, and the grace
        // too long to represent is no deadline (the shell dies of SIGTERM).
        let (_asker, shutdowns) = watch::channel(asked(1));
        let child = Os.spawn_shell("sleep 30", "test").unwrap();
        let report = child.run_to_end(huge, shutdowns, |_| {}).await;
        assert_eq!(report.exit_code, 128 + 15);
        assert!(!report.killed);

        // A second request kills at once.
        let (_asker, shutdowns) = watch::channel(asked(2));
        let child = Os.spawn_shell("trap '' TERM; sleep 30", "test").unwrap();
        let report = child.run_to_end(huge, shutdowns, |_| {}).await;
        assert_eq!(report.exit_code, 128 + 9);
        assert!(report.killed);
    }
}
