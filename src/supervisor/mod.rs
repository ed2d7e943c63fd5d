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
use crate::config::{HaltAction, Settings};
use crate::metrics::Metrics;
use crate::naming::RunLogEntry;
use crate::notify::Notifier;
use crate::runlog::RunLogWriter;
use crate::runner::{Runner, Shutdown};
use crate::state::{Reason, Snapshot, Status, StoredState};
use crate::statefile::StateDir;
use crate::telemetry::{LoopSpan, SpanIds};
use classify::Next;

/// A shutdown was asked for, or a halt ends jobloop: unwind to
/// [`Supervisor::run`].
struct Stop;

/// Beyond AGENT_SHUTDOWN_GRACE + AGENT_KILL_GRACE, what the whole
/// shutdown may take (SPEC §5): the run log's close, the escaped
/// processes, the span flush, the exit.
pub const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// Kept at the end of the budget for the process to exit (HTTP server,
/// state writer) after the span flush.
const EXIT_RESERVE: Duration = Duration::from_millis(500);

/// Shortest and longest span flush (AGENT_SHUTDOWN_GRACE, within these),
/// budget permitting.
const FLUSH_MIN: Duration = Duration::from_secs(1);
const FLUSH_MAX: Duration = Duration::from_secs(10);

/// How the loop ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ending {
    /// The halt that ended it under AGENT_HALT_ACTION=exit; `None` after
    /// a shutdown.
    pub halt: Option<Status>,
    /// The end of the shutdown's one budget, counted from its first
    /// request (or the halt); `None` when too far to represent.
    pub deadline: Option<std::time::Instant>,
    /// The longest span flush without regard to the budget:
    /// AGENT_SHUTDOWN_GRACE within 1 to 10 s.
    pub flush_max: Duration,
}

impl Ending {
    /// jobloop's exit code: 0 after a shutdown, the halt's own code
    /// ([`Status::halt_exit_code`]) after a halt under
    /// AGENT_HALT_ACTION=exit.
    pub fn exit_code(&self) -> u8 {
        self.halt.and_then(Status::halt_exit_code).unwrap_or(0)
    }

    /// How long the span flush may take at `now`: `flush_max`, but no
    /// more than what is left of the budget less a moment to exit. Its
    /// floor of a second holds only within the budget: past it the flush
    /// gets nothing, so the bound of SPEC §5 holds whatever the collector
    /// does.
    pub fn flush_limit(&self, now: std::time::Instant) -> Duration {
        match self.deadline {
            None => self.flush_max,
            Some(deadline) => deadline
                .saturating_duration_since(now)
                .saturating_sub(EXIT_RESERVE)
                .min(self.flush_max),
        }
    }
}

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
    /// The shutdown (requests so far, when it began), shared with the
    /// running child.
    shutdowns: watch::Sender<Shutdown>,
    owned_child: Option<u32>,
    /// The child being attended drains at a shutdown (the job under
    /// AGENT_STOP_MODE=drain).
    child_drains: bool,
    /// The halt that ends jobloop (AGENT_HALT_ACTION=exit).
    exit_halt: Option<Status>,
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
            shutdowns: watch::Sender::new(Shutdown::default()),
            owned_child: None,
            child_drains: false,
            exit_halt: None,
            last_span: None,
            previous_state: parts.previous_state,
            runner: Rc::new(parts.runner),
            settings,
        }
    }

    /// Runs until a shutdown, then stops what is left and publishes
    /// `stopped`; or, under AGENT_HALT_ACTION=exit, until a halt, then
    /// stops what is left and keeps the halt published.
    pub async fn run(mut self) -> Ending {
        self.notice_interrupted();
        let _ = self.main_loop().await;
        if let Some(status) = self.exit_halt {
            self.notifier.stopping();
            self.stop_adopted().await;
            tracing::warn!(
                status = status.as_str(),
                exit_code = status.halt_exit_code().unwrap_or(0),
                "exiting on the halt (AGENT_HALT_ACTION=exit)"
            );
        } else {
            self.set_status(Status::Stopping);
            self.publish();
            self.notifier.stopping();
            self.stop_adopted().await;
            self.set_status(Status::Stopped);
            self.state.job_pid = None;
            self.publish();
            tracing::info!("stopped");
        }
        Ending {
            halt: self.exit_halt,
            deadline: self.shutdown_deadline().map(tokio::time::Instant::into_std),
            flush_max: self.settings.shutdown_grace.clamp(FLUSH_MIN, FLUSH_MAX),
        }
    }

    /// Asks for a shutdown (a signal, or the halt action): the first
    /// request starts the budget.
    fn ask_shutdown(&mut self) {
        let now = tokio::time::Instant::now();
        self.shutdowns.send_modify(|shutdown| shutdown.ask(now));
    }

    /// The end of the shutdown's budget: AGENT_SHUTDOWN_GRACE +
    /// AGENT_KILL_GRACE + [`SHUTDOWN_SLACK`] after its first request;
    /// `None` when too far to represent.
    fn shutdown_deadline(&self) -> Option<tokio::time::Instant> {
        let began = self
            .shutdowns
            .borrow()
            .began
            .unwrap_or_else(tokio::time::Instant::now);
        began
            .checked_add(self.settings.shutdown_grace)?
            .checked_add(self.settings.kill_grace)?
            .checked_add(SHUTDOWN_SLACK)
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
        self.shutdowns.borrow().is_asked()
    }

    /// Halts in `status` until a resume, a passing recovery preflight or a
    /// shutdown.
    async fn halt(&mut self, status: Status, reason: Reason) -> Result<(), Stop> {
        self.set_status(status);
        self.state.reason = Some(reason);
        self.state.backoff_seconds = 0.0;
        self.publish();
        self.mark_halt(status);
        if self.settings.halt_action == HaltAction::Exit {
            tracing::warn!(
                status = status.as_str(),
                reason = reason.as_str(),
                consecutive_failures = self.state.consecutive_failures,
                "halted: stopping what is left and exiting (AGENT_HALT_ACTION=exit)"
            );
            self.exit_halt = Some(status);
            self.ask_shutdown();
            return Err(Stop);
        }
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
