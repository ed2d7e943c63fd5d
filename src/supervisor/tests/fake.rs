//! The fake [`Runner`] of the loop tests: scripted children that exit,
//! time out or hang on tokio's paused clock, and a record of what the loop
//! asked of them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use crate::runner::{
    Child, JobSpec, RunEvent, RunReport, Runner, Shutdowns, SpawnFailure, StopPolicy, Usage,
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
}

/// The exit code that makes the fake runner fail to start the job with
/// EAGAIN, as fork does at the process limit.
pub(super) const NO_PROCESSES: i32 = i32::MIN;

pub(super) fn exits(exit_code: i32, after_secs: u64) -> Script {
    Script {
        runs: Duration::from_secs(after_secs),
        exit_code,
    }
}

/// The scripts still to play and what was started, shared with the test.
#[derive(Default)]
pub(super) struct World {
    pub(super) jobs: RefCell<VecDeque<Script>>,
    pub(super) shells: RefCell<VecDeque<Script>>,
    pub(super) started: RefCell<Vec<String>>,
}

#[derive(Clone, Default)]
pub(super) struct FakeRunner(pub(super) Rc<World>);

pub(super) struct FakeChild {
    pub(super) pid: u32,
    pub(super) script: Script,
}

impl Child for FakeChild {
    fn pid(&self) -> u32 {
        self.pid
    }

    /// Plays the script; like the real runner, a timeout or a shutdown
    /// ends it as if by SIGTERM (exit 143).
    async fn run_to_end(
        self,
        policy: StopPolicy,
        mut shutdowns: Shutdowns,
        mut on_event: impl FnMut(RunEvent),
    ) -> RunReport {
        let limit = policy.timeout.unwrap_or(Duration::MAX);
        let ends = tokio::time::sleep(self.script.runs.min(limit));
        tokio::pin!(ends);
        loop {
            if *shutdowns.borrow_and_update() > 0 {
                // A job takes a moment to act on its SIGTERM.
                tokio::time::sleep(Duration::from_secs(1)).await;
                return RunReport {
                    exit_code: 143,
                    ..RunReport::default()
                };
            }
            tokio::select! {
                _ = &mut ends => break,
                _ = shutdowns.changed() => {}
            }
        }
        if self.script.runs > limit {
            on_event(RunEvent::Timeout);
            return RunReport {
                exit_code: 143,
                timed_out: true,
                ..RunReport::default()
            };
        }
        // As the kernel would report it: half the run time on a CPU.
        RunReport {
            exit_code: self.script.exit_code,
            usage: Some(Usage {
                cpu: self.script.runs / 2,
                max_rss_bytes: FAKE_RSS,
            }),
            ..RunReport::default()
        }
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

    async fn stop_adopted(&self, _grace: Duration, _shutdowns: Shutdowns) {}
}
