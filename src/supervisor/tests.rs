//! The loop driven without processes: a fake [`Runner`] plays scripted
//! children on tokio's paused clock, so sleeps, backoffs and timeouts take
//! no real time and their lengths can be asserted exactly.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

mod fake;
mod policy;
mod stop;

use super::{Ending, Supervisor, SupervisorParts};
use crate::backoff::BackoffPolicy;
use crate::command::{Command, ResumeAnswer};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::state::{Outcome, Reason, Snapshot, Status, StoredState};
use crate::statefile::{self, StateDir};
use fake::*;

/// A supervisor on a fake runner, with the ends the test holds.
struct Rig {
    settings: Settings,
    world: FakeRunner,
    dir: tempfile::TempDir,
    previous: Option<StoredState>,
    /// How the last [`Rig::run`] ended.
    ending: Option<Ending>,
}

struct Running {
    snapshots: watch::Receiver<Snapshot>,
    commands: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
}

impl Rig {
    /// The default settings, with small test directories; tests change
    /// the fields they need directly, not through flags.
    fn new() -> Rig {
        let mut raw = crate::config::RawSettings::defaults();
        raw.command = vec!["work".to_string(), "hard".to_string()];
        let mut settings = Settings::from_raw(&raw, |_| None).expect("valid settings");
        let dir = tempfile::tempdir().unwrap();
        settings.log_dir = dir.path().join("logs");
        settings.state_dir = dir.path().join("state");
        std::fs::create_dir_all(settings.log_dir.join("runs")).unwrap();
        std::fs::create_dir_all(&settings.state_dir).unwrap();
        settings.backoff = BackoffPolicy {
            start: Duration::from_secs(5),
            factor: 2.0,
            max: Duration::from_secs(300),
            jitter: 0.0,
        };
        settings.idle_sleep = Duration::from_secs(2);
        Rig {
            settings,
            world: FakeRunner::default(),
            dir,
            previous: None,
            ending: None,
        }
    }

    fn jobs(self, scripts: &[Script]) -> Rig {
        self.world.0.jobs.borrow_mut().extend(scripts);
        self
    }

    fn shells(self, scripts: &[Script]) -> Rig {
        self.world.0.shells.borrow_mut().extend(scripts);
        self
    }

    fn marker(&self, name: &str) -> bool {
        self.settings.state_dir.join(name).exists()
    }

    fn started(&self) -> Vec<String> {
        self.world.0.started.borrow().clone()
    }

    /// Runs the loop and `test` side by side until both are done; `test`
    /// must end with a shutdown (or the loop with a halt under
    /// AGENT_HALT_ACTION=exit).
    async fn run<F, Fut>(&mut self, test: F) -> Snapshot
    where
        F: FnOnce(Running) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (publisher, snapshots) =
            watch::channel(Snapshot::starting(std::time::SystemTime::now()));
        let (commands, inbox) = mpsc::channel(8);
        let metrics = Arc::new(Metrics::new());
        let supervisor = Supervisor::new(SupervisorParts {
            settings: Arc::new(self.settings.clone()),
            state_dir: StateDir::new(&self.settings.state_dir),
            metrics: metrics.clone(),
            publisher,
            commands: inbox,
            notifier: Notifier::disabled(),
            previous_state: self.previous.take(),
            runner: self.world.clone(),
            log_writer: crate::runlog::RunLogWriter::spawn().unwrap(),
        });
        let last = snapshots.clone();
        let (ending, ()) = tokio::join!(
            supervisor.run(),
            test(Running {
                snapshots,
                commands,
                metrics,
            })
        );
        self.ending = Some(ending);
        let last = last.borrow().clone();
        let _ = &self.dir;
        last
    }
}

impl Running {
    async fn until(&mut self, what: impl Fn(&Snapshot) -> bool) -> Snapshot {
        self.snapshots
            .wait_for(|s| what(s))
            .await
            .expect("the loop publishes")
            .clone()
    }

    async fn shutdown(&self) {
        self.commands.send(Command::Shutdown).await.unwrap();
    }

    async fn resume(&self) -> ResumeAnswer {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Resume {
                source: "test",
                reply: Some(reply),
            })
            .await
            .unwrap();
        answer.await.unwrap()
    }

    fn counted(&self, outcome: Outcome) -> bool {
        let line = format!(
            "jobloop_iterations_total{{outcome=\"{}\"}}",
            outcome.as_str()
        );
        self.metrics
            .render()
            .lines()
            .find(|l| l.starts_with(&line))
            .is_some_and(|l| !l.ends_with(" 0"))
    }
}

#[tokio::test(start_paused = true)]
async fn successes_sleep_the_idle_time_between_runs() {
    let mut rig = Rig::new().jobs(&[exits(0, 1), exits(0, 1), exits(0, 1)]);
    let last = rig
        .run(|mut loop_| async move {
            let began = Instant::now();
            let third = loop_
                .until(|s| s.iteration == 3 && s.status == Status::Idle)
                .await;
            // 3 runs of 1 s and 2 idle sleeps of 2 s.
            assert_eq!(began.elapsed(), Duration::from_secs(7));
            assert_eq!(third.last_outcome, Some(Outcome::Success));
            assert_eq!(third.consecutive_failures, 0);
            assert!(loop_.counted(Outcome::Success));
            loop_.shutdown().await;
        })
        .await;
    assert_eq!(last.status, Status::Stopped);
    assert_eq!(rig.started(), ["job work hard"; 3]);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_then_halt_and_a_resume_starts_again() {
    let mut rig = Rig::new().jobs(&[exits(1, 0), exits(1, 0), exits(1, 0)]);
    rig.settings.max_failures = 3;
    let state_dir = rig.settings.state_dir.clone();
    let last = rig
        .run(|mut loop_| async move {
            let began = Instant::now();
            let second = loop_
                .until(|s| s.status == Status::Backoff && s.iteration == 2)
                .await;
            assert_eq!(second.backoff_seconds, 10.0);
            assert_eq!(second.reason, Some(Reason::ExitCode));
            let halted = loop_.until(|s| s.status == Status::Unhealthy).await;
            // Backoffs of 5 s and 10 s; the third failure halts at once.
            assert_eq!(began.elapsed(), Duration::from_secs(15));
            assert_eq!(halted.reason, Some(Reason::MaxFailures));
            assert_eq!(halted.consecutive_failures, 3);
            assert_eq!(halted.backoff_seconds, 0.0);
            assert!(state_dir.join(statefile::UNHEALTHY).exists());
            // A halt lasts: an hour later nothing has run.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            assert_eq!(loop_.snapshots.borrow().iteration, 3);

            assert_eq!(loop_.resume().await, ResumeAnswer::Resumed);
            let again = loop_
                .until(|s| s.iteration == 4 && s.status == Status::Idle)
                .await;
            assert_eq!(again.consecutive_failures, 0);
            assert!(!state_dir.join(statefile::UNHEALTHY).exists());
            assert_eq!(loop_.resume().await, ResumeAnswer::NotHalted);
            loop_.shutdown().await;
        })
        .await;
    assert_eq!(last.status, Status::Stopped);
}

#[tokio::test(start_paused = true)]
async fn the_auth_exit_code_halts_as_token_expired() {
    let mut rig = Rig::new().jobs(&[exits(3, 0)]);
    rig.run(|mut loop_| async move {
        let halted = loop_.until(|s| s.status == Status::TokenExpired).await;
        assert_eq!(halted.reason, Some(Reason::ExitCode));
        assert_eq!(halted.last_outcome, Some(Outcome::TokenExpired));
        assert!(loop_.counted(Outcome::TokenExpired));
        loop_.shutdown().await;
    })
    .await;
    assert!(rig.marker(statefile::TOKEN_EXPIRED));
    assert!(!rig.marker(statefile::UNHEALTHY));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_counts_as_a_failure_and_backs_off() {
    let mut rig = Rig::new().jobs(&[exits(0, 3600)]);
    rig.settings.job_timeout = Some(Duration::from_secs(30));
    rig.run(|mut loop_| async move {
        let began = Instant::now();
        let failed = loop_.until(|s| s.status == Status::Backoff).await;
        assert_eq!(began.elapsed(), Duration::from_secs(30));
        assert_eq!(failed.last_outcome, Some(Outcome::Timeout));
        assert_eq!(failed.reason, Some(Reason::Timeout));
        loop_.shutdown().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_preflight_halts_before_any_job_and_recovery_retries_it() {
    let mut rig = Rig::new().shells(&[exits(1, 0), exits(1, 0), exits(0, 0)]);
    rig.settings.preflight_cmd = Some("check".into());
    rig.settings.recover_interval = Some(Duration::from_secs(60));
    rig.run(|mut loop_| async move {
        let began = Instant::now();
        let halted = loop_.until(|s| s.status == Status::Unhealthy).await;
        assert_eq!(halted.reason, Some(Reason::PreflightFailed));
        assert_eq!(halted.iteration, 0);
        // The recovery preflight fails once more, then passes.
        loop_.until(|s| s.iteration == 1).await;
        assert_eq!(began.elapsed(), Duration::from_secs(120));
        loop_.shutdown().await;
    })
    .await;
    assert_eq!(
        rig.started()[..4],
        ["sh check", "sh check", "sh check", "job work hard"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_during_a_job_stops_it_and_ends_stopped() {
    let mut rig = Rig::new().jobs(&[exits(0, 3600)]);
    let last = rig
        .run(|mut loop_| async move {
            loop_
                .until(|s| s.status == Status::Running && s.job_pid.is_some())
                .await;
            loop_.shutdown().await;
            let stopping = loop_.until(|s| s.status != Status::Running).await;
            assert_eq!(stopping.status, Status::Stopping);
            loop_.until(|s| s.status == Status::Stopped).await;
        })
        .await;
    assert_eq!(last.status, Status::Stopped);
    assert_eq!(last.iteration, 1);
    assert_eq!(last.last_batch_exit, Some(143));
    assert_eq!(last.job_pid, None);
    assert_eq!(rig.started(), ["job work hard"]);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_during_a_backoff_ends_the_sleep() {
    let mut rig = Rig::new().jobs(&[exits(1, 0)]);
    rig.settings.backoff.start = Duration::from_secs(3600);
    let last = rig
        .run(|mut loop_| async move {
            loop_.until(|s| s.status == Status::Backoff).await;
            let began = Instant::now();
            loop_.shutdown().await;
            loop_.until(|s| s.status == Status::Stopped).await;
            assert!(began.elapsed() < Duration::from_secs(1));
        })
        .await;
    assert_eq!(last.iteration, 1);
}

#[tokio::test(start_paused = true)]
async fn huge_limits_do_not_overflow() {
    let mut rig = Rig::new().jobs(&[exits(0, 1)]);
    rig.settings.job_timeout = Some(Duration::MAX);
    rig.settings.kill_grace = Duration::MAX;
    rig.settings.shutdown_grace = Duration::MAX;
    rig.settings.recover_interval = Some(Duration::MAX);
    rig.settings.backoff = BackoffPolicy {
        start: Duration::MAX,
        factor: 2.0,
        max: Duration::MAX,
        jitter: 0.0,
    };
    rig.world.0.jobs.borrow_mut().push_back(exits(3, 0));
    rig.run(|mut loop_| async move {
        loop_.until(|s| s.status == Status::TokenExpired).await;
        loop_.shutdown().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_previous_run_left_running_is_counted_as_interrupted() {
    let mut rig = Rig::new();
    rig.previous = Some(StoredState {
        status: Some(Status::Running),
        instance: Some("abc".into()),
        ..StoredState::default()
    });
    rig.run(|mut loop_| async move {
        loop_.until(|s| s.iteration == 1).await;
        let text = loop_.metrics.render();
        assert!(
            text.contains("jobloop_interrupted_iterations_total 1"),
            "{text}"
        );
        loop_.shutdown().await;
    })
    .await;
    assert_eq!(rig.started()[0], "stop leftovers of abc");
}

#[tokio::test(start_paused = true)]
async fn a_lack_of_processes_backs_off_without_counting_a_failure_or_halting() {
    let no = exits(NO_PROCESSES, 0);
    let mut rig = Rig::new().jobs(&[exits(1, 0), no, no, no, exits(0, 0)]);
    rig.settings.max_failures = 2;
    let last = rig
        .run(|mut loop_| async move {
            let began = Instant::now();
            let done = loop_
                .until(|s| s.iteration == 5 && s.status == Status::Idle)
                .await;
            // One failure and three spawn errors: backoffs 5, 10, 20, 40 s.
            assert_eq!(began.elapsed(), Duration::from_secs(75));
            assert_eq!(done.last_outcome, Some(Outcome::Success));
            let text = loop_.metrics.render();
            assert!(text.contains("jobloop_spawn_errors_total 3"), "{text}");
            assert!(text.contains("jobloop_iterations_total{outcome=\"failure\"} 1"));
            loop_.shutdown().await;
        })
        .await;
    assert_eq!(last.status, Status::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_spawn_error_leaves_the_failure_count_as_it_was() {
    let no = exits(NO_PROCESSES, 0);
    let mut rig = Rig::new().jobs(&[exits(1, 0), no, no, exits(1, 3600)]);
    rig.settings.max_failures = 2;
    rig.run(|mut loop_| async move {
        let third = loop_
            .until(|s| s.iteration == 3 && s.status == Status::Backoff)
            .await;
        assert_eq!(third.consecutive_failures, 1);
        assert_eq!(third.last_outcome, Some(Outcome::Failure));
        assert_eq!(third.reason, None);
        loop_.shutdown().await;
    })
    .await;
}
