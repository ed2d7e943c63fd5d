//! The loop's housekeeping: the UNHEALTHY / TOKEN_EXPIRED markers, the
//! retention of `runs/` (with an in-memory index, so a pass costs no
//! directory listing), and the processes left behind, by a previous
//! jobloop at start or by earlier jobs at shutdown.
//!
//! Retention decides here and deletes on the run-log writer thread
//! ([`crate::runlog::RunLogWriter`]): a log directory that blocks delays
//! the deletes, never the loop.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Stop, Supervisor};
use crate::naming::{self, RunLogEntry, RunLogName};
use crate::runner::Runner;
use crate::state::Status;
use crate::statefile;

/// How often the in-memory run-log index is rebuilt from disk, to see
/// files that others added or removed.
const RESCAN_EVERY: u64 = 256;

/// Least time escaped processes get between SIGTERM and SIGKILL at a
/// shutdown, budget permitting.
const ADOPTED_FLOOR: Duration = Duration::from_secs(1);

/// Kept at the end of the shutdown's budget for the span flush (about a
/// second) and the exit.
const FLUSH_RESERVE: Duration = Duration::from_millis(1500);

impl<R: Runner> Supervisor<R> {
    /// SPEC §3: a state.json left at `running` means the previous jobloop
    /// died during a run. Count it, say so, and stop what it left.
    pub(super) fn notice_interrupted(&mut self) {
        let Some(previous) = self.previous_state.take() else {
            return;
        };
        let previous_pid = previous.pid.unwrap_or(0);
        // Whatever a previous jobloop on this state directory started and
        // left running (it may have died before state.json named its job)
        // carries its instance id in the environment.
        if let Some(instance) = previous.instance.as_deref().filter(|id| !id.is_empty()) {
            let left = self.runner.stop_leftovers(instance);
            if left > 0 {
                tracing::warn!(
                    processes = left,
                    previous_pid,
                    "stopped what the previous jobloop left running"
                );
            }
        }
        if previous.status != Some(Status::Running) {
            return;
        }
        self.metrics.interrupted_iterations.inc();
        let run_log = previous.run_log.as_deref().unwrap_or("");
        tracing::warn!(
            iteration = previous.iteration.unwrap_or(0),
            previous_pid,
            run_log,
            trace_id = previous.trace_id.as_deref().unwrap_or(""),
            "the previous jobloop died during an iteration; counting it as interrupted"
        );
        // Only a run log of ours: a tampered state.json must not make
        // jobloop write elsewhere.
        if Path::new(run_log).parent() == Some(self.runs_dir.as_path()) {
            self.log_writer.append(
                Path::new(run_log),
                "# jobloop interrupted: the daemon stopped before this run ended\n".into(),
            );
        }
    }

    /// The marker of the halt `status` present, the other absent.
    pub(super) fn mark_halt(&mut self, status: Status) {
        let (present, absent) = match status {
            Status::TokenExpired => (statefile::TOKEN_EXPIRED, statefile::UNHEALTHY),
            _ => (statefile::UNHEALTHY, statefile::TOKEN_EXPIRED),
        };
        self.set_marker(absent, false);
        self.set_marker(present, true);
    }

    fn set_marker(&mut self, name: &str, present: bool) {
        if let Err(error) = self.state_dir.set_marker(name, present) {
            self.metrics.state_write_errors.inc();
            tracing::error!(marker = name, dir = %self.state_dir.path().display(), %error,
                "cannot update a marker file");
        }
    }

    /// Both markers absent: the loop runs.
    pub(super) fn clear_markers(&mut self) {
        self.set_marker(statefile::UNHEALTHY, false);
        self.set_marker(statefile::TOKEN_EXPIRED, false);
    }

    /// Retention of `runs/`, then the rotate and cleanup commands (SPEC §2).
    pub(super) async fn maintain(&mut self) -> Result<(), Stop> {
        self.enforce_retention().await?;
        self.run_hooks().await
    }

    async fn enforce_retention(&mut self) -> Result<(), Stop> {
        if self.state.iteration.is_multiple_of(RESCAN_EVERY) {
            self.rescan_run_logs().await?;
        }
        let protect = self
            .state
            .run_log
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .and_then(|n| n.to_str())
            .map(str::to_string);
        let doomed = naming::select_for_deletion(
            &self.run_logs,
            &self.settings.retention,
            SystemTime::now(),
            protect.as_deref(),
        );
        if doomed.is_empty() {
            return Ok(());
        }
        // Doomed names are the oldest: usually a short prefix.
        self.run_logs
            .retain(|entry| !doomed.iter().any(|name| entry.name.is(name)));
        let metrics = self.metrics.clone();
        self.log_writer
            .delete(&self.settings.log_dir, doomed, move |outcome| {
                metrics.run_logs_deleted.inc_by(outcome.deleted);
                for error in &outcome.errors {
                    tracing::warn!(%error, "retention");
                }
                tracing::debug!(
                    deleted = outcome.deleted,
                    links_removed = outcome.links_removed,
                    "retention"
                );
            });
        Ok(())
    }

    /// Rebuilds the run-log index from disk (on the writer thread, after
    /// what it was asked before), answering commands meanwhile.
    pub(super) async fn rescan_run_logs(&mut self) -> Result<(), Stop> {
        let writer = self.log_writer.clone();
        let runs_dir = self.runs_dir.clone();
        match self.wait(writer.scan(&runs_dir)).await? {
            Ok(logs) => self.run_logs = logs,
            Err(error) => tracing::warn!(%error, "retention: cannot list the run logs"),
        }
        Ok(())
    }

    /// Adds the run log just closed, `size` bytes, to the index.
    pub(super) fn index_run_log(&mut self, run_log: &Path, ended: SystemTime, size: u64) {
        let name = run_log.file_name().and_then(|n| n.to_str());
        if let Some(name) = name.and_then(RunLogName::new) {
            self.run_logs.push(RunLogEntry {
                name,
                modified: ended,
                size,
            });
        }
    }

    /// At shutdown: stop the processes that escaped their job's group and
    /// were re-parented to jobloop (SPEC §5), answering commands meanwhile.
    /// They get what is left of the shutdown's budget: SIGKILL when the
    /// job's own stop would have ended (the two graces after the first
    /// request), but at least [`ADOPTED_FLOOR`] after their SIGTERM, and
    /// never later than [`FLUSH_RESERVE`] before the budget's end.
    pub(super) async fn stop_adopted(&mut self) {
        let runner = self.runner.clone();
        let shutdowns = self.shutdowns.subscribe();
        let now = Instant::now();
        let began = self.shutdowns.borrow().began.unwrap_or(now);
        let jobs_end = began
            .checked_add(self.settings.shutdown_grace)
            .and_then(|at| at.checked_add(self.settings.kill_grace));
        let floor = now.checked_add(ADOPTED_FLOOR);
        // `None` is "never": the later of two is never if either is.
        let kill_at = jobs_end.zip(floor).map(|(a, b)| a.max(b));
        let latest = self
            .shutdown_deadline()
            .map(|end| end.checked_sub(FLUSH_RESERVE).unwrap_or(end));
        let kill_at = match (kill_at, latest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let kill_now_at = self
            .stop_policy(None, std::time::Duration::ZERO, true)
            .kill_now_at();
        self.attend(runner.stop_adopted(kill_at, kill_now_at, shutdowns))
            .await;
    }
}
