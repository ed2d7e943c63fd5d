//! The children of the loop: the job of each iteration, the preflight and
//! the rotate and cleanup hooks. Each is started through the [`Runner`] and
//! run to its end by [`Supervisor::run_child`], the one place that hands a
//! child to the runner's stop policy; what is left here is what the loop
//! makes of the result: state, metrics, the span, the run log.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::classify::{classify, Next};
use super::{Stop, Supervisor};
use crate::config::StopMode;
use crate::runlog::{self, Written};
use crate::runner::{self, Child, JobSpec, RunEvent, RunReport, Runner, StopPolicy};
use crate::state::{Hook, Outcome, PreflightResult, Status};
use crate::telemetry::{LoopSpan, SpanIds};

/// After the job exits, how long output still held open by a grandchild is
/// read before the iteration ends.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Once a shutdown is asked for, how long the loop still waits for a run
/// log to be closed (its byte counts); a blocked disk must not hold
/// jobloop's exit hostage.
const CLOSE_WAIT_AT_SHUTDOWN: Duration = Duration::from_secs(1);

impl<R: Runner> Supervisor<R> {
    /// The limits of a child that may run `timeout`; only the job drains
    /// (a preflight or hook is stopped at once at a shutdown).
    pub(super) fn stop_policy(
        &self,
        timeout: Option<Duration>,
        drain_wait: Duration,
        job: bool,
    ) -> StopPolicy {
        StopPolicy {
            timeout,
            kill_grace: self.settings.kill_grace,
            auth_kill: self.settings.auth_kill,
            shutdown_grace: self.settings.shutdown_grace,
            drain: job && self.settings.stop_mode == StopMode::Drain,
            drain_wait,
        }
    }

    /// Runs a started child to its end under `policy`, answering commands
    /// meanwhile; `on_event` hears of timeouts and auth matches.
    async fn run_child(
        &mut self,
        child: R::Child,
        policy: StopPolicy,
        on_event: impl FnMut(RunEvent),
    ) -> RunReport {
        self.owned_child = Some(child.pid());
        self.child_drains = policy.drain;
        let shutdowns = self.shutdowns.subscribe();
        let report = self
            .attend(child.run_to_end(policy, shutdowns, on_event))
            .await;
        self.owned_child = None;
        self.child_drains = false;
        report
    }

    /// Runs `sh -c command` to its end; `None` when `sh` cannot start.
    async fn run_shell(&mut self, command: &str, timeout: Duration) -> std::io::Result<RunReport> {
        let child = self.runner.spawn_shell(command, &self.state.instance)?;
        let policy = self.stop_policy(Some(timeout), Duration::ZERO, false);
        Ok(self.run_child(child, policy, |_| {}).await)
    }

    /// Runs the preflight, if one is set. Returns whether it passed.
    pub(super) async fn preflight(&mut self) -> Result<bool, Stop> {
        let Some(command) = self.settings.preflight_cmd.clone() else {
            return Ok(true);
        };
        let span = LoopSpan::preflight();
        tracing::info!("preflight: running AGENT_PREFLIGHT_CMD");
        let started = Instant::now();
        let passed = match self
            .run_shell(&command, self.settings.preflight_timeout)
            .await
        {
            Ok(report) => {
                if report.timed_out {
                    tracing::error!(limit = ?self.settings.preflight_timeout, "preflight timed out");
                } else if report.exit_code != 0 {
                    tracing::error!(
                        exit_code = report.exit_code,
                        "preflight failed; see its output above"
                    );
                }
                report.exit_code == 0 && !report.timed_out
            }
            Err(error) => {
                tracing::error!(%error, "cannot start the preflight with /bin/sh");
                false
            }
        };
        let result = PreflightResult::of(passed);
        self.metrics.record_preflight(result);
        span.set_str("jobloop.preflight.result", result.as_str());
        span.set_int(
            "jobloop.preflight.duration_ms",
            i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        );
        if passed {
            span.set_ok();
            tracing::info!("preflight passed");
        } else {
            span.set_error("preflight failed");
        }
        if self.shutting_down() {
            return Err(Stop);
        }
        Ok(passed)
    }

    /// Runs the rotate and cleanup commands that are set (SPEC §2).
    pub(super) async fn run_hooks(&mut self) -> Result<(), Stop> {
        for hook in Hook::ALL {
            let command = match hook {
                Hook::Rotate => self.settings.rotate_cmd.clone(),
                Hook::Cleanup => self.settings.cleanup_cmd.clone(),
            };
            let Some(command) = command else { continue };
            let passed = match self.run_shell(&command, self.settings.hook_timeout).await {
                Ok(report) => {
                    if report.exit_code != 0 {
                        tracing::warn!(
                            hook = hook.as_str(),
                            exit_code = report.exit_code,
                            timed_out = report.timed_out,
                            "hook failed; carrying on"
                        );
                    }
                    report.exit_code == 0
                }
                Err(error) => {
                    tracing::warn!(hook = hook.as_str(), %error, "cannot start the hook with /bin/sh; carrying on");
                    false
                }
            };
            if !passed {
                self.metrics.record_hook_failure(hook);
            }
            if self.shutting_down() {
                return Err(Stop);
            }
        }
        Ok(())
    }

    /// One run of the job, from its run log to its classification.
    pub(super) async fn iteration(&mut self) -> Result<Next, Stop> {
        let iteration = self.state.iteration.saturating_add(1);
        let started_wall = SystemTime::now();
        let started = Instant::now();
        let span = LoopSpan::iteration(iteration);
        let ids = span.ids();

        let (run_log, log, log_error) = self.open_run_log(iteration, &ids, started_wall).await?;
        self.state.iteration = iteration;
        let (sink, written) = log.map(|log| (log.sink, log.written)).unzip();
        let run_log_text = run_log.display().to_string();
        self.set_status(Status::Running);
        self.state.reason = None;
        self.state.current_batch_started_at = Some(started_wall);
        self.state.run_log = Some(run_log_text.clone());
        self.state.trace_id = Some(ids.trace_id.clone());
        self.state.backoff_seconds = 0.0;
        self.state.job_pid = None;

        let spec = JobSpec {
            argv: &self.settings.command,
            env: vec![
                ("RUN_LOG", run_log_text.clone()),
                ("JOBLOOP_ITERATION", iteration.to_string()),
                ("TRACEPARENT", ids.traceparent()),
                (runner::INSTANCE_VAR, self.state.instance.clone()),
            ],
            log: sink,
            log_limit: self.settings.run_log_max_bytes,
            pattern: self.settings.auth_pattern.clone(),
        };
        let mut job_pid = None;
        // Out of descriptors or memory for the run log: the job would not
        // start either, and it is no fault of the job's.
        let spawned = match log_error {
            Some(error) => Err((runner::SpawnFailure::Resource, error)),
            None => self.runner.spawn_job(spec),
        };
        let report = match spawned {
            Ok(child) => {
                let pid = child.pid();
                job_pid = Some(pid);
                self.state.job_pid = Some(pid);
                // Busy time is the job's alone (SPEC §7): from its start to
                // its reaping, not the preflight, hooks or sleeps.
                self.state.busy.start(Instant::now().into_std());
                self.publish();
                tracing::debug!(iteration, pid, run_log = %run_log_text, trace_id = %ids.trace_id, "job started");
                let policy = self.stop_policy(self.settings.job_timeout, DRAIN_WAIT, true);
                let report = self
                    .run_child(child, policy, |event| span.event(event.as_str()))
                    .await;
                self.state.busy.stop(Instant::now().into_std());
                report
            }
            Err((runner::SpawnFailure::Resource, error)) => {
                return self
                    .spawn_error(&span, &run_log, written, error, started_wall)
                    .await;
            }
            Err((failure, error)) => {
                self.publish();
                let program = &self.settings.command[0];
                tracing::error!(iteration, program = %program, %error, advice = failure.advice(),
                    run_log = %run_log_text, trace_id = %ids.trace_id, "cannot start the job");
                self.log_writer.append(
                    &run_log,
                    format!(
                        "# jobloop: cannot start '{program}': {error} ({})\n",
                        failure.advice()
                    ),
                );
                RunReport {
                    exit_code: failure.exit_code(),
                    spawn_failure: Some(failure),
                    ..RunReport::default()
                }
            }
        };
        let mut report = report;
        let closed = match written {
            Some(written) => self.run_log_closed(written).await,
            None => None,
        };
        if let Some(closed) = &closed {
            report.output.bytes_written = closed.bytes_written;
            if report.output.write_error.is_none() {
                report.output.write_error.clone_from(&closed.write_error);
            }
        }
        self.runner.reap_orphans(None);
        let duration = started.elapsed();
        let ended = SystemTime::now();
        let verdict = classify(
            &report,
            self.settings.auth_exit_code,
            &self.settings.exit_policy,
            self.state.consecutive_failures,
            self.settings.max_failures,
        );

        self.record_output(&report);
        if let Some(usage) = report.usage {
            self.metrics
                .record_job_usage(usage.cpu, usage.max_rss_bytes);
        }
        // The run's ids become the exemplar of its counter and bucket.
        let trace = crate::metrics::RunTrace {
            trace_id: &ids.trace_id,
            span_id: &ids.span_id,
        };
        self.metrics
            .observe_iteration(verdict.outcome, duration.as_secs_f64(), Some(trace));
        self.annotate_span(
            &span,
            &report,
            verdict.outcome,
            verdict.consecutive_failures,
            job_pid,
            &run_log,
        );
        if let Some(closed) = &closed {
            self.index_run_log(&run_log, ended, closed.size);
        }

        self.state.last_batch_at = Some(ended);
        self.state.last_batch_exit = Some(report.exit_code);
        self.state.last_outcome = Some(verdict.outcome);
        self.state.consecutive_failures = verdict.consecutive_failures;
        self.state.reason = verdict.reason;
        self.state.job_pid = None;
        if verdict.outcome == Outcome::Success {
            self.state.last_success_at = Some(ended);
        }
        tracing::info!(
            iteration,
            outcome = verdict.outcome.as_str(),
            exit_code = report.exit_code,
            duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            consecutive_failures = verdict.consecutive_failures,
            run_log = %run_log_text,
            trace_id = %ids.trace_id,
            "iteration finished"
        );
        self.last_span = Some(ids);
        drop(span);

        if self.shutting_down() {
            self.publish();
            return Err(Stop);
        }
        self.after_run(verdict.next);
        self.publish();
        Ok(verdict.next)
    }

    /// jobloop could not start the job for lack of its own resources
    /// (SPEC §7 `jobloop_spawn_errors_total`): logged and counted, then the
    /// backoff and another try. Not the job's failure, so no outcome is
    /// counted and `consecutiveFailures`, `lastOutcome` stay as they were;
    /// never a halt. The note goes to the run log if one was made.
    async fn spawn_error(
        &mut self,
        span: &LoopSpan,
        run_log: &Path,
        written: Option<oneshot::Receiver<Written>>,
        error: std::io::Error,
        started_wall: SystemTime,
    ) -> Result<Next, Stop> {
        let failure = runner::SpawnFailure::Resource;
        self.metrics.spawn_errors.inc();
        tracing::error!(iteration = self.state.iteration, %error, advice = failure.advice(),
            "jobloop cannot start the job for lack of resources; retrying after the backoff");
        if let Some(written) = written {
            self.log_writer.append(
                run_log,
                format!(
                    "# jobloop: cannot start the job: {error} ({})\n",
                    failure.advice()
                ),
            );
            if let Some(closed) = self.run_log_closed(written).await {
                self.index_run_log(run_log, started_wall, closed.size);
            }
        }
        span.set_error("jobloop could not start the job");
        self.state.job_pid = None;
        self.state.current_batch_started_at = None;
        if self.shutting_down() {
            self.publish();
            return Err(Stop);
        }
        self.after_run(Next::Backoff);
        self.publish();
        Ok(Next::Backoff)
    }

    /// Creates the run log with its header, on the writer thread, answering
    /// commands meanwhile (a shutdown ends the wait). When it cannot be
    /// created the run goes on unlogged (its output is still scanned), and
    /// the error is logged and counted; the error is handed back when it is
    /// a lack of resources, which stops this start (see
    /// [`Self::spawn_error`]).
    async fn open_run_log(
        &mut self,
        iteration: u64,
        ids: &SpanIds,
        start: SystemTime,
    ) -> Result<(PathBuf, Option<runlog::OpenRunLog>, Option<std::io::Error>), Stop> {
        let header = runlog::header(iteration, &ids.trace_id, &ids.span_id, start);
        let writer = self.log_writer.clone();
        let runs_dir = self.runs_dir.clone();
        let fallback = self
            .runs_dir
            .join(format!("{}.log", crate::naming::base_name(start)));
        Ok(
            match self.wait(writer.create(&runs_dir, start, header)).await? {
                Ok(log) => (log.path.clone(), Some(log), None),
                Err(error) if runner::is_resource_error(&error) => (fallback, None, Some(error)),
                Err(error) => {
                    self.metrics.run_log_write_errors.inc();
                    tracing::error!(iteration, dir = %self.runs_dir.display(), %error,
                        "cannot create the run log; running the job without one");
                    (fallback, None, None)
                }
            },
        )
    }

    /// Waits until the writer thread closed the run log and says what it
    /// wrote, answering commands meanwhile; once a shutdown is asked for,
    /// at most [`CLOSE_WAIT_AT_SHUTDOWN`] (then `None`).
    async fn run_log_closed(&mut self, written: oneshot::Receiver<Written>) -> Option<Written> {
        let mut shutdowns = self.shutdowns.subscribe();
        let bound = async move {
            while !shutdowns.borrow_and_update().is_asked() {
                if shutdowns.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            tokio::time::sleep(CLOSE_WAIT_AT_SHUTDOWN).await;
        };
        let closed = self
            .attend(async move {
                tokio::select! {
                    written = written => written.ok(),
                    () = bound => None,
                }
            })
            .await;
        if closed.is_none() {
            tracing::warn!(
                "the run log is still being written (a slow or blocked disk); its byte counts are not known"
            );
        }
        closed
    }

    fn record_output(&self, report: &RunReport) {
        let output = &report.output;
        self.metrics.run_log_bytes.inc_by(output.bytes_read);
        if output.bytes_dropped > 0 {
            self.metrics.run_log_truncated.inc();
        }
        if output.write_error.is_some() {
            self.metrics.run_log_write_errors.inc();
        }
    }

    /// The attributes and status of SPEC §8 on the iteration's span.
    fn annotate_span(
        &self,
        span: &LoopSpan,
        report: &RunReport,
        outcome: Outcome,
        consecutive_failures: u32,
        job_pid: Option<u32>,
        run_log: &Path,
    ) {
        span.set_str("jobloop.outcome", outcome.as_str());
        span.set_int("process.exit.code", i64::from(report.exit_code));
        if let Some(pid) = job_pid {
            span.set_int("process.pid", i64::from(pid));
        }
        let program = Path::new(&self.settings.command[0]);
        let executable = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        span.set_str("process.executable.name", executable);
        span.set_str("log.file.path", run_log.display().to_string());
        span.set_str(
            "log.file.name",
            run_log
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        span.set_int(
            "jobloop.consecutive_failures",
            i64::from(consecutive_failures),
        );
        span.set_int(
            "jobloop.output.bytes",
            i64::try_from(report.output.bytes_read).unwrap_or(i64::MAX),
        );
        if let Some(usage) = report.usage {
            span.set_f64("jobloop.job.cpu_seconds", usage.cpu.as_secs_f64());
            span.set_int(
                "jobloop.job.max_rss_bytes",
                i64::try_from(usage.max_rss_bytes).unwrap_or(i64::MAX),
            );
        }
        if report.killed || report.auth_killed || report.timed_out {
            span.event("killed");
        }
        match outcome {
            // SPEC §8: a skip is no error (the job said "nothing to do").
            Outcome::Success | Outcome::Skipped => span.set_ok(),
            Outcome::Failure => span.set_error("the job failed"),
            Outcome::Timeout => span.set_error("the job timed out"),
            Outcome::TokenExpired => span.set_error("the credentials expired"),
        }
    }
}
