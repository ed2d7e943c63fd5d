//! Running a child to its end, with the whole stop policy in one place, and
//! the seam ([`Runner`], [`Child`]) through which the supervisor reaches
//! processes, so that its loop can be tested without any.
//!
//! The stop policy: after AGENT_JOB_TIMEOUT (or the preflight's or a hook's
//! limit) the child gets SIGTERM and AGENT_KILL_GRACE; when the auth
//! pattern matches and AGENT_AUTH_KILL is set, the same; at jobloop's
//! first shutdown request SIGTERM and AGENT_SHUTDOWN_GRACE; at the second,
//! SIGKILL at once. A grace or limit too long to represent is no deadline.

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

/// How many shutdowns were asked for so far: 1 stops the child with the
/// shutdown grace, 2 or more kill it at once.
pub type Shutdowns = watch::Receiver<u32>;

/// The limits a child runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopPolicy {
    /// Longest the child may run; `None` = no limit.
    pub timeout: Option<Duration>,
    /// SIGTERM-to-SIGKILL grace after a timeout or an auth kill.
    pub kill_grace: Duration,
    /// Stop the child as soon as the auth pattern matches its output.
    pub auth_kill: bool,
    /// SIGTERM-to-SIGKILL grace at jobloop's shutdown.
    pub shutdown_grace: Duration,
    /// After the child exits, how long output still held open by a
    /// grandchild is read.
    pub drain_wait: Duration,
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
    /// were re-parented to jobloop, SIGTERM then SIGKILL after `grace` (or
    /// at the second shutdown).
    async fn stop_adopted(&self, grace: Duration, shutdowns: Shutdowns);
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

    async fn stop_adopted(&self, grace: Duration, shutdowns: Shutdowns) {
        reaper::reap_orphans(None);
        if reaper::adopted_processes(None).is_empty() {
            return;
        }
        tracing::info!("stopping processes left behind by earlier jobs");
        reaper::signal_adopted(Signal::SIGTERM);
        let deadline = Instant::now().checked_add(grace);
        while deadline.is_none_or(|at| Instant::now() < at) && *shutdowns.borrow() < 2 {
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
        let status = loop {
            let asked = *shutdowns.borrow_and_update();
            if asked > obeyed {
                obeyed = asked;
                self.stop_for_shutdown(asked, policy.shutdown_grace);
            }
            tokio::select! {
                status = self.wait() => break status,
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
    fn stop_for_shutdown(&mut self, asked: u32, grace: Duration) {
        if asked >= 2 {
            tracing::warn!(pid = self.pid, "second stop signal: killing the job now");
            self.kill_now();
        } else {
            tracing::info!(pid = self.pid, grace = ?grace, "stopping: passing SIGTERM to the job");
            self.stop(grace);
        }
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
            drain_wait: Duration::MAX,
        };
        let (_asker, shutdowns) = watch::channel(0);
        let child = Os.spawn_shell("exit 3", "test").unwrap();
        let report = child.run_to_end(huge, shutdowns, |_| {}).await;
        assert_eq!(report.exit_code, 3);
        assert!(!report.timed_out && !report.killed);

        // Asked to stop before it started: SIGTERM at once, and the grace
        // too long to represent is no deadline (the shell dies of SIGTERM).
        let (_asker, shutdowns) = watch::channel(1);
        let child = Os.spawn_shell("sleep 30", "test").unwrap();
        let report = child.run_to_end(huge, shutdowns, |_| {}).await;
        assert_eq!(report.exit_code, 128 + 15);
        assert!(!report.killed);

        // A second request kills at once.
        let (_asker, shutdowns) = watch::channel(2);
        let child = Os.spawn_shell("trap '' TERM; sleep 30", "test").unwrap();
        let report = child.run_to_end(huge, shutdowns, |_| {}).await;
        assert_eq!(report.exit_code, 128 + 9);
        assert!(report.killed);
    }
}
