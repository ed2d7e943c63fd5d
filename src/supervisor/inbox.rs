//! What the loop answers while it waits: liveness pings, resumes and
//! shutdowns from the command channel, SIGCHLD (orphans to reap) and
//! systemd's watchdog.
//!
//! Two ways to wait: [`Supervisor::wait`] for a sleep, which a shutdown
//! ends, and [`Supervisor::attend`] for a child, which a shutdown does not
//! end: it is passed on to the child (through the shutdown count) and the
//! runner's stop policy decides.

use std::future::Future;

use tokio::sync::oneshot;

use super::{Stop, Supervisor};
use crate::command::{Command, ResumeAnswer};
use crate::runner::Runner;
use crate::state::{Reason, Status};

/// What the loop must react to, after pings and housekeeping are handled.
pub(super) enum Event {
    Shutdown,
    Resume(&'static str, Option<oneshot::Sender<ResumeAnswer>>),
}

impl<R: Runner> Supervisor<R> {
    /// Waits for the next event, answering pings, reaping orphans and
    /// feeding systemd's watchdog meanwhile. Cancel-safe.
    pub(super) async fn next_event(&mut self) -> Event {
        loop {
            tokio::select! {
                command = self.commands.recv(), if !self.commands_closed => match command {
                    Some(Command::Ping(reply)) => { let _ = reply.send(()); }
                    Some(Command::Resume { source, reply }) => return Event::Resume(source, reply),
                    Some(Command::Shutdown) | None => {
                        // With every sender gone nobody can stop the loop
                        // any more: that counts as one shutdown, once, not
                        // as a stream of them.
                        self.commands_closed |= command.is_none();
                        self.ask_shutdown();
                        return Event::Shutdown;
                    }
                },
                _ = recv_signal(&mut self.sigchld) => {
                    self.runner.reap_orphans(self.owned_child);
                }
                _ = tick(&mut self.watchdog) => self.notifier.watchdog(),
            }
        }
    }

    /// Waits for `future`, answering commands; a shutdown ends the wait.
    pub(super) async fn wait<F: Future>(&mut self, future: F) -> Result<F::Output, Stop> {
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

    /// Waits for `future` (a child running to its end), answering
    /// commands. A shutdown does not end the wait: the child hears of it
    /// through the shutdown count, and the state says `stopping`.
    pub(super) async fn attend<F: Future>(&mut self, future: F) -> F::Output {
        tokio::pin!(future);
        loop {
            tokio::select! {
                biased;
                output = &mut future => return output,
                event = self.next_event() => match event {
                    Event::Shutdown => self.enter_stopping(),
                    Event::Resume(source, reply) => self.refuse_resume(source, reply),
                }
            }
        }
    }

    /// A shutdown request while a child runs: state `stopping`, with
    /// `reason: "draining"` while a draining job may still finish on its
    /// own (until a second request). A halt that ends jobloop keeps its
    /// status.
    fn enter_stopping(&mut self) {
        if self.exit_halt.is_some() {
            return;
        }
        let draining = self.child_drains && self.shutdowns.borrow().asked < 2;
        let reason = match self.state.reason {
            _ if draining => Some(Reason::Draining),
            Some(Reason::Draining) => None,
            other => other,
        };
        if self.state.status != Status::Stopping || self.state.reason != reason {
            self.set_status(Status::Stopping);
            self.state.reason = reason;
            self.publish();
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
}

/// The next tick of `interval`; without one, never.
pub(super) async fn tick(interval: &mut Option<tokio::time::Interval>) {
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
