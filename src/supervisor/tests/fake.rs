//! The fake [`Runner`] of the loop tests: scripted children that exit,
//! time out or hang on tokio's paused clock, and a record of what the loop
//! asked of them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use crate::runner::{
    Child, JobSpec, RunEvent, RunReport, Runner, ShutdownStep, Shutdowns, SpawnFailure, StopPolicy,
    Usage,
};

/// Peak memory every scripted child reports.
pub(super) const FAKE_RSS: u64 = 8 << 20;

/// What one scripted child does.
#[derive(Debug, Clone, Copy)]
pub(super) struct Script {
    /// How long it runs before it exits on its own.
    pub(super) runs: Duration,
    /// Its exit code then.
    pub(super) exit_code: i32,
    /// It ignores SIGTERM: only SIGKILL (or its own end) ends it.
    pub(super) ignores_term: bool,
}

/// The exit code that makes the fake runner fail to start the job with
/// EAGAIN, as fork does at the process limit.
pub(super) const NO_PROCESSES: i32 = i32::MIN;

pub(super) fn exits(exit_code: i32, after_secs: u64) -> Script {
    Script {
        runs: Duration::from_secs(after_secs),
        exit_code,
        ignores_term: false,
    }
}

/// A job that runs `after_secs`, then exits 0, whatever SIGTERM says.
pub(super) fn deaf(after_secs: u64) -> Script {
    Script {
        ignores_term: true,
        ..exits(0, after_secs)
    }
}

/// How long a fake child takes to act on its SIGTERM.
pub(super) const TERM_TAKES: Duration = Duration::from_secs(1);

/// The scripts still to play and what was started, shared with the test.
#[derive(Default)]
pub(super) struct World {
    pub(super) jobs: RefCell<VecDeque<Script>>,
    pub(super) shells: RefCell<VecDeque<Script>>,
    pub(super) started: RefCell<Vec<String>>,
    /// Each stop of adopted processes: when it began and when it was to
    /// SIGKILL them (`None` = never), as the loop asked.
    pub(super) adopted: RefCell<Vec<(Instant, Option<Instant>)>>,
    /// When each job ended, and its exit code.
    pub(super) ended: RefCell<Vec<(Instant, i32)>>,
}

#[derive(Clone, Default)]
pub(super) struct FakeRunner(pub(super) Rc<World>);

pub(super) struct FakeChild {
    pub(super) pid: u32,
    pub(super) script: Script,
    /// Where a job records its end; `None` for a shell.
    pub(super) world: Option<Rc<World>>,
}

impl Child for FakeChild {
    fn pid(&self) -> u32 {
        self.pid
    }

    /// Plays the script under the policy's shutdown steps (the real
    /// runner's): SIGTERM ends it [`TERM_TAKES`] later with 143 unless it
    /// ignores it; SIGKILL ends it at once with 137; a timeout ends it as
    /// if by SIGTERM.
    async fn run_to_end(
        self,
        policy: StopPolicy,
        shutdowns: Shutdowns,
        on_event: impl FnMut(RunEvent),
    ) -> RunReport {
        let world = self.world.clone();
        let report = self.play(policy, shutdowns, on_event).await;
        if let Some(world) = world {
            let ended = (Instant::now(), report.exit_code);
            world.ended.borrow_mut().push(ended);
        }
        report
    }
}

impl FakeChild {
    async fn play(
        self,
        policy: StopPolicy,
        mut shutdowns: Shutdowns,
        mut on_event: impl FnMut(RunEvent),
    ) -> RunReport {
        let limit = policy.timeout.unwrap_or(Duration::MAX);
        let timed_out = self.script.runs > limit;
        let mut ends = Instant::now().checked_add(self.script.runs.min(limit));
        let mut exit_code = self.script.exit_code;
        let mut term_sent = false;
        let mut drain_ends = None;
        let mut kill_at = None;
        let mut obeyed = 0;
        let term = |ends: &mut Option<Instant>, exit_code: &mut i32| {
            if !self.script.ignores_term {
                let acted = Instant::now() + TERM_TAKES;
                *ends = Some(ends.map_or(acted, |at| at.min(acted)));
                *exit_code = 143;
            }
        };
        let killed = RunReport {
            exit_code: 137,
            killed: true,
            ..RunReport::default()
        };
        loop {
            let shutdown = *shutdowns.borrow_and_update();
            if shutdown.asked > obeyed {
                obeyed = shutdown.asked;
                match policy.shutdown_step(shutdown, Instant::now()) {
                    Some(ShutdownStep::Drain { term_at }) => drain_ends = term_at,
                    Some(ShutdownStep::Terminate { kill_at: at }) => {
                        term_sent = true;
                        kill_at = min(kill_at, at);
                        term(&mut ends, &mut exit_code);
                    }
                    Some(ShutdownStep::Kill) => return killed,
                    None => {}
                }
            }
            tokio::select! {
                _ = sleep_until(ends) => break,
                _ = sleep_until(drain_ends), if !term_sent => {
                    term_sent = true;
                    kill_at = min(kill_at, policy.drain_kill_at(drain_ends));
                    term(&mut ends, &mut exit_code);
                }
                _ = sleep_until(kill_at) => return killed,
                _ = shutdowns.changed() => {}
            }
        }
        if timed_out && !term_sent {
            on_event(RunEvent::Timeout);
            return RunReport {
                exit_code: 143,
                timed_out: true,
                ..RunReport::default()
            };
        }
        // As the kernel would report it: half the run time on a CPU.
        RunReport {
            exit_code,
            usage: Some(Usage {
                cpu: self.script.runs / 2,
                max_rss_bytes: FAKE_RSS,
            }),
            ..RunReport::default()
        }
    }
}

/// The earlier of two deadlines, `None` being never.
fn min(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Runner for FakeRunner {
    type Child = FakeChild;

    fn spawn_job(&self, spec: JobSpec<'_>) -> Result<FakeChild, (SpawnFailure, io::Error)> {
        let mut started = self.0.started.borrow_mut();
        started.push(format!("job {}", spec.argv.join(" ")));
        let script = self.0.jobs.borrow_mut().pop_front().unwrap_or(exits(0, 1));
        if script.exit_code == NO_PROCESSES {
            let error = io::Error::from_raw_os_error(nix::libc::EAGAIN);
            return Err((SpawnFailure::from_io(&error), error));
        }
        Ok(FakeChild {
            pid: 1000 + started.len() as u32,
            script,
            world: Some(self.0.clone()),
        })
    }

    fn spawn_shell(&self, command: &str, _instance: &str) -> io::Result<FakeChild> {
        let mut started = self.0.started.borrow_mut();
        started.push(format!("sh {command}"));
        let script = self
            .0
            .shells
            .borrow_mut()
            .pop_front()
            .unwrap_or(exits(0, 0));
        Ok(FakeChild {
            pid: 1000 + started.len() as u32,
            script,
            world: None,
        })
    }

    fn reap_orphans(&self, _owned: Option<u32>) {}

    fn stop_leftovers(&self, instance: &str) -> usize {
        self.0
            .started
            .borrow_mut()
            .push(format!("stop leftovers of {instance}"));
        0
    }

    async fn stop_adopted(
        &self,
        kill_at: Option<Instant>,
        _kill_now_at: u32,
        _shutdowns: Shutdowns,
    ) {
        self.0.adopted.borrow_mut().push((Instant::now(), kill_at));
    }
}
