//! The supervisor loop: preflight, then run → classify → idle sleep,
//! backoff or halt, over and over (SPEC §2). It owns the [`Snapshot`] and is
//! the only writer of it; state.json, the markers, the metrics, `/health`
//! and the spans are all derived from what it publishes.
//!
//! While it waits (on a job, a sleep, a halt, a hook) it keeps answering
//! its command channel: liveness pings, resumes, shutdowns. So `/livez`
//! measures the loop itself, and a long job or a halt never looks stuck.

pub mod classify;
pub mod state;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::runlog::{self, RunLogEntry};
use crate::runner::{self, reaper, JobSpec, Process, RunReport};
use crate::statefile::{self, StateDir};
use crate::telemetry::{LoopSpan, SpanIds};
use classify::{classify, Next};
use state::{Outcome, Reason, Snapshot, Status};

/// After the job exits, how long output still held open by a grandchild is
/// read before the iteration ends.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// How often the in-memory run-log index is rebuilt from disk, to see
/// files that others added or removed.
const RESCAN_EVERY: u64 = 256;

/// Requests to the loop, from the HTTP server and the signal handlers.
#[derive(Debug)]
pub enum Command {
    /// Liveness: answered as soon as the loop sees it.
    Ping(oneshot::Sender<()>),
    /// Leave a halt (`POST /resume`, SIGHUP).
    Resume {
        /// Who asked, for the log.
        source: &'static str,
        /// Where to send the answer, if anyone waits for it.
        reply: Option<oneshot::Sender<ResumeAnswer>>,
    },
    /// SIGTERM / SIGINT: the first stops gracefully, the second at once.
    Shutdown,
}

/// The answer to [`Command::Resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAnswer {
    /// The halt is left; the loop runs again.
    Resumed,
    /// The loop was not halted.
    NotHalted,
}

/// What the loop must react to, after pings and housekeeping are handled.
enum Event {
    Shutdown,
    Resume(&'static str, Option<oneshot::Sender<ResumeAnswer>>),
}

/// A shutdown was asked for: unwind to [`Supervisor::run`].
struct Stop;

/// What the supervisor is started with.
pub struct SupervisorParts {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// Where state.json and the markers live.
    pub state_dir: StateDir,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Where snapshots are published.
    pub publisher: watch::Sender<Snapshot>,
    /// Commands from HTTP and signals.
    pub commands: mpsc::Receiver<Command>,
    /// systemd notifications.
    pub notifier: Notifier,
    /// The state.json a previous jobloop left, if any.
    pub previous_state: Option<serde_json::Value>,
}

/// The loop and everything it owns.
pub struct Supervisor {
    settings: Arc<Settings>,
    state: Snapshot,
    backoff: crate::backoff::Backoff,
    next_sleep: Duration,
    commands: mpsc::Receiver<Command>,
    publisher: watch::Sender<Snapshot>,
    metrics: Arc<Metrics>,
    state_dir: StateDir,
    runs_dir: PathBuf,
    run_logs: Vec<RunLogEntry>,
    namer: runlog::RunLogNamer,
    notifier: Notifier,
    watchdog: Option<tokio::time::Interval>,
    sigchld: Option<tokio::signal::unix::Signal>,
    rng: fastrand::Rng,
    shutdowns: u32,
    owned_child: Option<u32>,
    last_span: Option<SpanIds>,
    previous_state: Option<serde_json::Value>,
}

impl Supervisor {
    /// Builds the supervisor; call from inside the runtime that will run it.
    pub fn new(parts: SupervisorParts) -> Supervisor {
        let settings = parts.settings;
        let state = parts.publisher.borrow().clone();
        let watchdog = parts.notifier.watchdog_interval().map(|every| {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        Supervisor {
            backoff: crate::backoff::Backoff::new(settings.backoff),
            next_sleep: Duration::ZERO,
            runs_dir: settings.log_dir.join("runs"),
            run_logs: Vec::new(),
            namer: runlog::RunLogNamer::default(),
            state,
            commands: parts.commands,
            publisher: parts.publisher,
            metrics: parts.metrics,
            state_dir: parts.state_dir,
            notifier: parts.notifier,
            watchdog,
            sigchld: signal(SignalKind::child()).ok(),
            rng: fastrand::Rng::new(),
            shutdowns: 0,
            owned_child: None,
            last_span: None,
            previous_state: parts.previous_state,
            settings,
        }
    }

    /// Runs until a shutdown, then stops what is left and publishes
    /// `stopped`.
    pub async fn run(mut self) {
        self.notice_interrupted();
        let _ = self.main_loop().await;
        self.set_status(Status::Stopping);
        self.publish();
        self.notifier.stopping();
        self.stop_adopted().await;
        self.set_status(Status::Stopped);
        self.state.job_pid = None;
        self.publish();
        tracing::info!("stopped");
    }

    async fn main_loop(&mut self) -> Result<(), Stop> {
        let passed = self.preflight().await?;
        self.notifier.ready(self.state.status.as_str());
        self.rescan_run_logs();
        if !passed {
            self.maintain().await?;
            self.halt(Status::Unhealthy, Reason::PreflightFailed)
                .await?;
        } else {
            self.clear_markers();
            self.maintain().await?;
        }
        loop {
            let next = self.iteration().await?;
            self.maintain().await?;
            match next {
                // tokio rounds a zero sleep up to its 1 ms timer tick.
                Next::Idle if self.settings.idle_sleep.is_zero() => {}
                Next::Idle => {
                    self.wait(tokio::time::sleep(self.settings.idle_sleep))
                        .await?
                }
                Next::Backoff => self.sleep_backoff().await?,
                Next::Halt(status) => {
                    let reason = self.state.reason.unwrap_or(Reason::MaxFailures);
                    self.halt(status, reason).await?;
                }
            }
        }
    }

    /// SPEC §3: a state.json left at `running` means the previous jobloop
    /// died during a run. Count it, say so, and stop what it left.
    fn notice_interrupted(&mut self) {
        let Some(previous) = self.previous_state.take() else {
            return;
        };
        // Whatever a previous jobloop on this state directory started and
        // left running (it may have died before state.json named its job)
        // carries its instance id in the environment.
        if let Some(instance) = previous["instance"].as_str().filter(|id| !id.is_empty()) {
            let left = reaper::processes_with_env(&format!("{}={instance}", runner::INSTANCE_VAR));
            if !left.is_empty() {
                tracing::warn!(
                    processes = left.len(),
                    previous_pid = previous["pid"].as_u64().unwrap_or(0),
                    "stopping what the previous jobloop left running"
                );
                reaper::kill_with_groups(&left);
            }
        }
        if previous["status"] != "running" {
            return;
        }
        self.metrics.interrupted_iterations.inc();
        let run_log = previous["runLog"].as_str().unwrap_or("");
        tracing::warn!(
            iteration = previous["iteration"].as_u64().unwrap_or(0),
            previous_pid = previous["pid"].as_u64().unwrap_or(0),
            run_log,
            trace_id = previous["traceId"].as_str().unwrap_or(""),
            "the previous jobloop died during an iteration; counting it as interrupted"
        );
        // Only a run log of ours: a tampered state.json must not make
        // jobloop write elsewhere.
        if Path::new(run_log).parent() == Some(self.runs_dir.as_path()) {
            crate::files::append_line(
                Path::new(run_log),
                "# jobloop interrupted: the daemon stopped before this run ended\n",
            );
        }
    }

    fn set_status(&mut self, to: Status) {
        let from = self.state.status;
        if from == to {
            return;
        }
        debug_assert!(from.can_become(to), "transition {from:?} -> {to:?}");
        self.state.status = to;
        self.state.status_since = SystemTime::now();
        self.notifier.status(to.as_str());
    }

    fn publish(&mut self) {
        self.metrics.observe(&self.state);
        self.publisher.send_replace(self.state.clone());
    }

    /// Waits for the next event, answering pings, reaping orphans and
    /// feeding systemd's watchdog meanwhile. Cancel-safe.
    async fn next_event(&mut self) -> Event {
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Ping(reply)) => { let _ = reply.send(()); }
                    Some(Command::Resume { source, reply }) => return Event::Resume(source, reply),
                    Some(Command::Shutdown) | None => {
                        self.shutdowns += 1;
                        return Event::Shutdown;
                    }
                },
                _ = recv_signal(&mut self.sigchld) => {
                    reaper::reap_orphans(self.owned_child);
                }
                _ = tick(&mut self.watchdog) => self.notifier.watchdog(),
            }
        }
    }

    /// Waits for `future`, answering commands; a shutdown ends the wait.
    async fn wait<F: Future>(&mut self, future: F) -> Result<F::Output, Stop> {
        tokio::pin!(future);
        loop {
            tokio::select! {
                biased;
                output = &mut future => return Ok(output),
                event = self.next_event() => match event {
                    Event::Shutdown => return Err(Stop),
                    Event::Resume(source, reply) => self.refuse_resume(source, reply),
                }
            }
        }
    }

    fn refuse_resume(&self, source: &'static str, reply: Option<oneshot::Sender<ResumeAnswer>>) {
        tracing::info!(
            source,
            status = self.state.status.as_str(),
            "resume asked for, but the loop is not halted"
        );
        if let Some(reply) = reply {
            let _ = reply.send(ResumeAnswer::NotHalted);
        }
    }

    /// Runs a child to its end, answering commands: a timeout or an auth
    /// match stops it with AGENT_KILL_GRACE, a shutdown with
    /// AGENT_SHUTDOWN_GRACE, a second shutdown kills it at once.
    async fn drive(
        &mut self,
        process: &mut Process,
        timeout: Option<Duration>,
        span: Option<&LoopSpan>,
    ) -> std::process::ExitStatus {
        let deadline = timeout.map(|limit| tokio::time::Instant::now() + limit);
        let kill_grace = self.settings.kill_grace;
        let auth_kill = self.settings.auth_kill;
        if self.shutdowns > 0 {
            self.stop_for_shutdown(process);
        }
        let mut auth_signal = process.take_auth_signal();
        loop {
            tokio::select! {
                status = process.wait() => return status,
                _ = sleep_until(deadline), if !process.is_stopping() => {
                    tracing::warn!(pid = process.pid(), limit = ?timeout.unwrap_or_default(), "the run took too long; stopping it");
                    if let Some(span) = span { span.event("timeout"); }
                    process.stop_for_timeout(kill_grace);
                }
                matched = recv_once(&mut auth_signal) => {
                    if matched.is_err() { continue; }
                    if let Some(span) = span { span.event("auth_pattern_matched"); }
                    if auth_kill && !process.is_stopping() {
                        tracing::warn!(pid = process.pid(), "the auth pattern matched; stopping the job (AGENT_AUTH_KILL)");
                        process.stop_for_auth(kill_grace);
                    }
                }
                event = self.next_event() => match event {
                    Event::Shutdown => self.stop_for_shutdown(process),
                    Event::Resume(source, reply) => self.refuse_resume(source, reply),
                }
            }
        }
    }

    fn stop_for_shutdown(&mut self, process: &mut Process) {
        if self.state.status != Status::Stopping {
            self.set_status(Status::Stopping);
            self.publish();
        }
        if self.shutdowns >= 2 {
            tracing::warn!(
                pid = process.pid(),
                "second stop signal: killing the job now"
            );
            process.kill_now();
        } else {
            tracing::info!(pid = process.pid(), grace = ?self.settings.shutdown_grace,
                "stopping: passing SIGTERM to the job");
            process.stop(self.settings.shutdown_grace);
        }
    }

    /// Runs the preflight, if one is set. Returns whether it passed.
    async fn preflight(&mut self) -> Result<bool, Stop> {
        let Some(command) = self.settings.preflight_cmd.clone() else {
            return Ok(true);
        };
        let span = LoopSpan::preflight();
        tracing::info!("preflight: running AGENT_PREFLIGHT_CMD");
        let started = Instant::now();
        let passed = match Process::spawn_shell(&command, &self.state.instance) {
            Ok(mut process) => {
                self.owned_child = Some(process.pid());
                let status = self
                    .drive(&mut process, Some(self.settings.preflight_timeout), None)
                    .await;
                self.owned_child = None;
                let report = process.finish(status, Duration::ZERO).await;
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
        let result = if passed { "success" } else { "failure" };
        self.metrics
            .preflight_checks
            .with_label_values(&[result])
            .inc();
        span.set_str("jobloop.preflight.result", result);
        span.set_int(
            "jobloop.preflight.duration_ms",
            started.elapsed().as_millis() as i64,
        );
        if passed {
            span.set_ok()
        } else {
            span.set_error("preflight failed")
        }
        if passed {
            tracing::info!("preflight passed");
        }
        if self.shutdowns > 0 {
            return Err(Stop);
        }
        Ok(passed)
    }

    /// Halts in `status` until a resume, a passing recovery preflight or a
    /// shutdown.
    async fn halt(&mut self, status: Status, reason: Reason) -> Result<(), Stop> {
        self.set_status(status);
        self.state.reason = Some(reason);
        self.state.backoff_seconds = 0.0;
        self.publish();
        let (present, absent) = match status {
            Status::TokenExpired => (statefile::TOKEN_EXPIRED, statefile::UNHEALTHY),
            _ => (statefile::UNHEALTHY, statefile::TOKEN_EXPIRED),
        };
        self.set_marker(absent, false);
        self.set_marker(present, true);
        tracing::warn!(
            status = status.as_str(),
            reason = reason.as_str(),
            consecutive_failures = self.state.consecutive_failures,
            "halted: no new job until POST /resume, SIGHUP{}",
            if self.settings.recover_interval.is_some() {
                " or a passing recovery preflight"
            } else {
                ""
            }
        );
        let mut recover = self.settings.recover_interval.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        let source = loop {
            tokio::select! {
                _ = tick(&mut recover) => {
                    if self.preflight().await? {
                        break "recovery preflight";
                    }
                }
                event = self.next_event() => match event {
                    Event::Shutdown => return Err(Stop),
                    Event::Resume(source, reply) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(ResumeAnswer::Resumed);
                        }
                        break source;
                    }
                }
            }
        };
        self.clear_markers();
        self.state.consecutive_failures = 0;
        self.state.reason = None;
        self.backoff.reset();
        tracing::info!(source, "resumed: leaving the halt, counters reset");
        Ok(())
    }

    fn set_marker(&mut self, name: &str, present: bool) {
        if let Err(error) = self.state_dir.set_marker(name, present) {
            self.metrics.state_write_errors.inc();
            tracing::error!(marker = name, dir = %self.state_dir.path().display(), %error,
                "cannot update a marker file");
        }
    }

    fn clear_markers(&mut self) {
        self.set_marker(statefile::UNHEALTHY, false);
        self.set_marker(statefile::TOKEN_EXPIRED, false);
    }

    async fn sleep_backoff(&mut self) -> Result<(), Stop> {
        let sleep = self.next_sleep;
        let span = LoopSpan::backoff(
            self.last_span.as_ref(),
            sleep.as_secs_f64(),
            self.state.iteration,
        );
        tracing::info!(backoff = ?sleep, consecutive_failures = self.state.consecutive_failures, "backing off before the next run");
        let result = self.wait(tokio::time::sleep(sleep)).await;
        drop(span);
        result
    }

    /// One run of the job, from its run log to its classification.
    async fn iteration(&mut self) -> Result<Next, Stop> {
        self.state.iteration += 1;
        let iteration = self.state.iteration;
        let started_wall = SystemTime::now();
        let started = Instant::now();
        let span = LoopSpan::iteration(iteration);
        let ids = span.ids();

        let (run_log, log_file) = self.open_run_log(iteration, &ids, started_wall);
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
            log: log_file,
            log_limit: self.settings.run_log_max_bytes,
            pattern: self.settings.auth_pattern.clone(),
        };
        let mut job_pid = None;
        let report = match Process::spawn_job(spec) {
            Ok(mut process) => {
                let pid = process.pid();
                job_pid = Some(pid);
                self.owned_child = Some(pid);
                self.state.job_pid = Some(pid);
                self.publish();
                tracing::debug!(iteration, pid, run_log = %run_log_text, trace_id = %ids.trace_id, "job started");
                let status = self
                    .drive(&mut process, self.settings.job_timeout, Some(&span))
                    .await;
                self.owned_child = None;
                process.finish(status, DRAIN_WAIT).await
            }
            Err((failure, error)) => {
                self.publish();
                let program = &self.settings.command[0];
                tracing::error!(iteration, program = %program, %error, advice = failure.advice(),
                    run_log = %run_log_text, trace_id = %ids.trace_id, "cannot start the job");
                crate::files::append_line(
                    &run_log,
                    &format!(
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
        reaper::reap_orphans(None);
        let duration = started.elapsed();
        let ended = SystemTime::now();
        let verdict = classify(
            &report,
            self.settings.auth_exit_code,
            self.state.consecutive_failures,
            self.settings.max_failures,
        );

        self.record_output(&report);
        self.metrics
            .record_run(verdict.outcome, duration.as_secs_f64());
        self.annotate_span(
            &span,
            &report,
            verdict.outcome,
            verdict.consecutive_failures,
            job_pid,
            &run_log,
        );
        if let Ok(meta) = std::fs::symlink_metadata(&run_log) {
            if let Some(name) = run_log.file_name().and_then(|n| n.to_str()) {
                self.run_logs.push(RunLogEntry {
                    name: name.to_string(),
                    modified: ended,
                    size: meta.len(),
                });
            }
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
            duration_ms = duration.as_millis() as u64,
            consecutive_failures = verdict.consecutive_failures,
            run_log = %run_log_text,
            trace_id = %ids.trace_id,
            "iteration finished"
        );
        self.last_span = Some(ids);
        drop(span);

        if self.shutdowns > 0 {
            self.publish();
            return Err(Stop);
        }
        match verdict.next {
            Next::Idle => {
                self.backoff.reset();
                self.set_status(Status::Idle);
            }
            Next::Backoff => {
                self.next_sleep = self.backoff.next_sleep(self.rng.f64());
                self.state.backoff_seconds = self.next_sleep.as_secs_f64();
                self.set_status(Status::Backoff);
            }
            Next::Halt(_) => {}
        }
        self.publish();
        Ok(verdict.next)
    }

    /// Creates the run log with its header. When it cannot be created the
    /// run goes on unlogged (its output is still scanned), and the error is
    /// logged and counted.
    fn open_run_log(
        &mut self,
        iteration: u64,
        ids: &SpanIds,
        start: SystemTime,
    ) -> (PathBuf, Option<std::fs::File>) {
        let header = runlog::header(iteration, &ids.trace_id, &ids.span_id, start);
        match self.namer.create(&self.runs_dir, start, &header) {
            Ok((path, file)) => (path, Some(file)),
            Err(error) => {
                self.metrics.run_log_write_errors.inc();
                let path = self
                    .runs_dir
                    .join(format!("{}.log", runlog::base_name(start)));
                tracing::error!(iteration, dir = %self.runs_dir.display(), %error,
                    "cannot create the run log; running the job without one");
                (path, None)
            }
        }
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
        span.set_int("jobloop.output.bytes", report.output.bytes_read as i64);
        if report.killed || report.auth_killed || report.timed_out {
            span.event("killed");
        }
        match outcome {
            Outcome::Success => span.set_ok(),
            Outcome::Failure => span.set_error("the job failed"),
            Outcome::Timeout => span.set_error("the job timed out"),
            Outcome::TokenExpired => span.set_error("the credentials expired"),
        }
    }

    /// Retention of `runs/`, then the rotate and cleanup commands (SPEC §2).
    async fn maintain(&mut self) -> Result<(), Stop> {
        if self.state.iteration.is_multiple_of(RESCAN_EVERY) {
            self.rescan_run_logs();
        }
        let protect = self
            .state
            .run_log
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .and_then(|n| n.to_str())
            .map(str::to_string);
        let doomed = runlog::select_for_deletion(
            &self.run_logs,
            &self.settings.retention,
            SystemTime::now(),
            protect.as_deref(),
        );
        if !doomed.is_empty() {
            let outcome = runlog::delete(&self.settings.log_dir, &doomed);
            // Doomed names are the oldest: usually a short prefix.
            self.run_logs.retain(|entry| !doomed.contains(&entry.name));
            self.metrics.run_logs_deleted.inc_by(outcome.deleted);
            for error in &outcome.errors {
                tracing::warn!(%error, "retention");
            }
            tracing::debug!(
                deleted = outcome.deleted,
                links_removed = outcome.links_removed,
                "retention"
            );
        }
        let hooks = [
            ("rotate", self.settings.rotate_cmd.clone()),
            ("cleanup", self.settings.cleanup_cmd.clone()),
        ];
        for (hook, command) in hooks {
            let Some(command) = command else { continue };
            let passed = match Process::spawn_shell(&command, &self.state.instance) {
                Ok(mut process) => {
                    self.owned_child = Some(process.pid());
                    let status = self
                        .drive(&mut process, Some(self.settings.hook_timeout), None)
                        .await;
                    self.owned_child = None;
                    let report = process.finish(status, Duration::ZERO).await;
                    if report.exit_code != 0 {
                        tracing::warn!(
                            hook,
                            exit_code = report.exit_code,
                            timed_out = report.timed_out,
                            "hook failed; carrying on"
                        );
                    }
                    report.exit_code == 0
                }
                Err(error) => {
                    tracing::warn!(hook, %error, "cannot start the hook with /bin/sh; carrying on");
                    false
                }
            };
            if !passed {
                self.metrics.hook_failures.with_label_values(&[hook]).inc();
            }
            if self.shutdowns > 0 {
                return Err(Stop);
            }
        }
        Ok(())
    }

    fn rescan_run_logs(&mut self) {
        self.run_logs = runlog::scan(&self.runs_dir);
    }

    /// At shutdown: stop the processes that escaped their job's group and
    /// were re-parented to jobloop (SPEC §5).
    async fn stop_adopted(&mut self) {
        reaper::reap_orphans(None);
        if reaper::adopted_processes(None).is_empty() {
            return;
        }
        tracing::info!("stopping processes left behind by earlier jobs");
        reaper::signal_adopted(Signal::SIGTERM);
        let deadline = Instant::now() + self.settings.shutdown_grace;
        while Instant::now() < deadline && self.shutdowns < 2 {
            reaper::reap_orphans(None);
            if reaper::adopted_processes(None).is_empty() {
                return;
            }
            // Shutdown only: a short poll is simpler than tracking every pid.
            let _ = tokio::time::timeout(Duration::from_millis(20), self.next_event()).await;
        }
        reaper::signal_adopted(Signal::SIGKILL);
        reaper::reap_orphans(None);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
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

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
