//! The supervisor loop: preflight, then run → classify → idle sleep,
//! backoff or halt, over and over (SPEC §2). It owns the [`Snapshot`] and is
//! the only writer of it; state.json, the markers, the metrics, `/health`
//! and the spans are all derived from what it publishes.
//!
//! While it waits (on a job, a sleep, a halt, a hook) it keeps answering
//! its command channel: liveness pings, resumes, shutdowns. So `/livez`
//! measures the loop itself, and a long job or a halt never looks stuck.
//!
//! The rooms: this file is the state machine (what happens next);
//! `inbox` the commands it answers while it waits; `children` the job,
//! the preflight and the hooks, each run to its end by one function;
//! `housekeeping` the markers, retention and leftover processes;
//! [`classify`] the verdict on a run. Processes are reached only through
//! [`Runner`], so the tests drive the loop with a fake one on tokio's
//! paused clock.

mod children;
pub mod classify;
mod housekeeping;
mod inbox;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::backoff::Backoff;
use crate::command::{Command, ResumeAnswer};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::naming::RunLogEntry;
use crate::notify::Notifier;
use crate::runlog::RunLogWriter;
use crate::runner::Runner;
use crate::state::{Reason, Snapshot, Status, StoredState};
use crate::statefile::StateDir;
use crate::telemetry::{LoopSpan, SpanIds};
use classify::Next;

/// A shutdown was asked for: unwind to [`Supervisor::run`].
struct Stop;

/// What the supervisor is started with.
pub struct SupervisorParts<R> {
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
    pub previous_state: Option<StoredState>,
    /// The processes: [`crate::runner::Os`], or a fake in tests.
    pub runner: R,
    /// The thread that does the disk work in AGENT_LOG_DIR.
    pub log_writer: RunLogWriter,
}

/// The loop and everything it owns.
pub struct Supervisor<R: Runner> {
    settings: Arc<Settings>,
    state: Snapshot,
    backoff: Backoff,
    next_sleep: Duration,
    commands: mpsc::Receiver<Command>,
    /// Every command sender is gone.
    commands_closed: bool,
    publisher: watch::Sender<Snapshot>,
    metrics: Arc<Metrics>,
    state_dir: StateDir,
    runs_dir: PathBuf,
    run_logs: Vec<RunLogEntry>,
    log_writer: RunLogWriter,
    notifier: Notifier,
    watchdog: Option<tokio::time::Interval>,
    sigchld: Option<tokio::signal::unix::Signal>,
    rng: fastrand::Rng,
    /// Shutdown requests so far, shared with the running child.
    shutdowns: watch::Sender<u32>,
    owned_child: Option<u32>,
    last_span: Option<SpanIds>,
    previous_state: Option<StoredState>,
    runner: Rc<R>,
}

impl<R: Runner> Supervisor<R> {
    /// Builds the supervisor; call from inside the runtime that will run it.
    pub fn new(parts: SupervisorParts<R>) -> Supervisor<R> {
        let settings = parts.settings;
        let state = parts.publisher.borrow().clone();
        let watchdog = parts.notifier.watchdog_interval().map(|every| {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        Supervisor {
            backoff: Backoff::new(settings.backoff),
            next_sleep: Duration::ZERO,
            runs_dir: settings.log_dir.join("runs"),
            run_logs: Vec::new(),
            log_writer: parts.log_writer,
            state,
            commands: parts.commands,
            commands_closed: false,
            publisher: parts.publisher,
            metrics: parts.metrics,
            state_dir: parts.state_dir,
            notifier: parts.notifier,
            watchdog,
            sigchld: signal(SignalKind::child()).ok(),
            rng: fastrand::Rng::new(),
            shutdowns: watch::Sender::new(0),
            owned_child: None,
            last_span: None,
            previous_state: parts.previous_state,
            runner: Rc::new(parts.runner),
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
        self.rescan_run_logs().await?;
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
                Next::Idle | Next::Skip if self.settings.idle_sleep.is_zero() => {}
                Next::Idle | Next::Skip => {
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

    /// After a run: the status it leads to, and the backoff to sleep.
    fn after_run(&mut self, next: Next) {
        match next {
            Next::Idle => {
                self.backoff.reset();
                self.set_status(Status::Idle);
            }
            // SPEC §2: a skip leaves the backoff where it was, so the next
            // failure backs off as if the skipped runs had not happened.
            Next::Skip => self.set_status(Status::Idle),
            Next::Backoff => {
                self.next_sleep = self.backoff.next_sleep(self.rng.f64());
                self.state.backoff_seconds = self.next_sleep.as_secs_f64();
                self.set_status(Status::Backoff);
            }
            Next::Halt(_) => {}
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

    fn shutting_down(&self) -> bool {
        *self.shutdowns.borrow() > 0
    }

    /// Halts in `status` until a resume, a passing recovery preflight or a
    /// shutdown.
    async fn halt(&mut self, status: Status, reason: Reason) -> Result<(), Stop> {
        self.set_status(status);
        self.state.reason = Some(reason);
        self.state.backoff_seconds = 0.0;
        self.publish();
        self.mark_halt(status);
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
            // An interval too long to represent never ticks (#12).
            let first = tokio::time::Instant::now()
                .checked_add(every)
                .unwrap_or_else(far_future);
            let mut interval = tokio::time::interval_at(first, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        let source = loop {
            tokio::select! {
                _ = inbox::tick(&mut recover) => {
                    if self.preflight().await? {
                        break "recovery preflight";
                    }
                }
                event = self.next_event() => match event {
                    inbox::Event::Shutdown => return Err(Stop),
                    inbox::Event::Resume(source, reply) => {
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
}

/// About thirty years from now: tokio's own stand-in for "never".
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}
