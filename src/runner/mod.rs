//! One child process at a time: the job (with its output streamed to the
//! run log and scanned), the preflight and the hooks.
//!
//! Every child runs in its own process group, so each signal jobloop sends
//! reaches the whole group. The runner knows nothing of state, metrics or
//! spans: it reports facts ([`RunReport`]) and the supervisor decides.

pub mod auth;
mod control;
mod output;
pub mod reaper;

pub use control::{Child, Os, RunEvent, Runner, Shutdown, ShutdownStep, Shutdowns, StopPolicy};
pub use output::OutputStats;

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use regex::bytes::Regex;
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use auth::AuthMatcher;

/// The variable that marks every process jobloop starts with the id of
/// the jobloop instance, so a restarted jobloop can find what a killed one
/// left running, without trusting a pid that may have been reused.
pub const INSTANCE_VAR: &str = "JOBLOOP_INSTANCE";

/// Variables of jobloop's own environment no child ever gets: the admin
/// token (and where its file is) would let any job resume a halt it caused,
/// and would sit in the job's `/proc/PID/environ` for its whole run.
pub const WITHHELD_VARS: [&str; 2] = ["AGENT_ADMIN_TOKEN", "AGENT_ADMIN_TOKEN_FILE"];

/// Pipe buffer asked of the kernel, so a chatty job blocks less often.
const PIPE_SIZE: i32 = 1 << 20;

/// Why a command could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnFailure {
    /// No such file (exit code 127, as the shell reports it).
    NotFound,
    /// Exists but cannot be executed (exit code 126).
    NotExecutable,
    /// Any other error from fork/exec (exit code 126).
    Other,
    /// jobloop itself lacks a resource to start it (EMFILE, ENFILE, EAGAIN,
    /// ENOMEM, for the pipe, the run log or the fork): not the job's
    /// failure; the supervisor retries after the backoff.
    Resource,
}

impl SpawnFailure {
    /// What `error`, from starting a command or making its pipe or run
    /// log, says about why.
    pub fn from_io(error: &io::Error) -> SpawnFailure {
        if is_resource_error(error) {
            return SpawnFailure::Resource;
        }
        match error.kind() {
            io::ErrorKind::NotFound => SpawnFailure::NotFound,
            io::ErrorKind::PermissionDenied => SpawnFailure::NotExecutable,
            _ if error.raw_os_error() == Some(nix::libc::ENOEXEC) => SpawnFailure::NotExecutable,
            _ => SpawnFailure::Other,
        }
    }

    /// The exit code a shell would have given.
    pub fn exit_code(self) -> i32 {
        match self {
            SpawnFailure::NotFound => 127,
            SpawnFailure::NotExecutable | SpawnFailure::Other | SpawnFailure::Resource => 126,
        }
    }

    /// What the operator should check.
    pub fn advice(self) -> &'static str {
        match self {
            SpawnFailure::NotFound => "check the command's path and PATH",
            SpawnFailure::NotExecutable => "check the file's execute permission and its #! line",
            SpawnFailure::Other => "check the command and the system's process limits",
            SpawnFailure::Resource => {
                "jobloop lacks processes, descriptors or memory; check its limits (ulimit -u, -n) and the host's"
            }
        }
    }
}

/// Whether `error` means jobloop ran out of a resource it needs to start a
/// child: descriptors (EMFILE, ENFILE), processes (EAGAIN) or memory
/// (ENOMEM).
pub fn is_resource_error(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::EAGAIN | nix::libc::ENOMEM)
    )
}

/// The facts of one finished run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Exit code, 128+N for signal N, 127/126 when it could not start.
    pub exit_code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// Set when the command could not be started.
    pub spawn_failure: Option<SpawnFailure>,
    /// jobloop stopped it after AGENT_JOB_TIMEOUT.
    pub timed_out: bool,
    /// jobloop stopped it because the auth pattern matched.
    pub auth_killed: bool,
    /// jobloop had to send SIGKILL.
    pub killed: bool,
    /// The auth pattern matched its output.
    pub pattern_matched: bool,
    /// Its output.
    pub output: OutputStats,
    /// What it cost, from the kernel at reaping; `None` when it did not
    /// start or the kernel would not say.
    pub usage: Option<Usage>,
}

/// What a finished child cost, as the kernel's rusage gives it at reaping:
/// the child itself and the descendants it waited for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident memory of the largest of them, in bytes.
    pub max_rss_bytes: u64,
}

/// What the job is started with.
pub struct JobSpec<'a> {
    /// Program and arguments.
    pub argv: &'a [String],
    /// Variables added to jobloop's environment (RUN_LOG, TRACEPARENT, ...).
    pub env: Vec<(&'static str, String)>,
    /// Where the output goes: the run log (header already written) on the
    /// writer thread; `None` if it could not be created.
    pub log: Option<crate::runlog::Sink>,
    /// Bytes of output written to the log; 0 = no limit.
    pub log_limit: u64,
    /// The auth pattern.
    pub pattern: Regex,
}

/// The exit code of a finished process, as the shell's `$?` gives it.
pub fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (255, None),
    }
}

/// The output pump of a job: a task copying the pipe to the run log.
struct Pump {
    task: JoinHandle<OutputStats>,
    stop: Option<oneshot::Sender<()>>,
    /// Ends the pump even while a blocked disk holds its buffers.
    halt: Option<oneshot::Sender<()>>,
    matched: Option<oneshot::Receiver<()>>,
}

/// A running child in its own process group.
pub struct Process {
    child: tokio::process::Child,
    pid: u32,
    pump: Option<Pump>,
    /// `RUN_LOG=<path>`: inherited by every descendant of a job, so those
    /// that escape its process group are still known to be its own.
    marker: Option<String>,
    exit: Option<ExitStatus>,
    /// Wakes [`Process::wait`] when a child exits, so that it can read the
    /// child's usage before tokio reaps it; `None` if it cannot be had
    /// (then tokio's own wait, without the usage).
    sigchld: Option<tokio::signal::unix::Signal>,
    usage: Option<Usage>,
    kill_at: Option<Instant>,
    term_sent: bool,
    kill_sent: bool,
    timed_out: bool,
    auth_killed: bool,
}

impl Process {
    /// Starts the job with its output piped to the run log.
    ///
    /// # Errors
    ///
    /// When the command cannot be started, with why.
    pub fn spawn_job(spec: JobSpec<'_>) -> Result<Process, (SpawnFailure, io::Error)> {
        let failed = |e: io::Error| (SpawnFailure::from_io(&e), e);
        let (reader, writer) = io::pipe().map_err(failed)?;
        let writer_for_stderr = writer.try_clone().map_err(failed)?;
        let mut command = Command::new(&spec.argv[0]);
        command
            .args(&spec.argv[1..])
            .env_remove("TRACEPARENT")
            .env_remove("TRACESTATE")
            .env_remove(WITHHELD_VARS[0])
            .env_remove(WITHHELD_VARS[1])
            .envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer_for_stderr))
            .process_group(0);
        let child = command.spawn().map_err(failed)?;
        // The parent's copies of the write end must be gone, or the pipe
        // never reports end of output.
        drop(command);
        let reader = std::os::fd::OwnedFd::from(reader);
        let _ = nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        let receiver = match pipe::Receiver::from_owned_fd(reader) {
            Ok(receiver) => receiver,
            Err(error) => {
                // The child runs already but its output cannot be watched:
                // stop it (tokio reaps it), and report jobloop's failure.
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ =
                        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                }
                return Err((SpawnFailure::from_io(&error), error));
            }
        };
        let (matched_tx, matched_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (halt_tx, halt_rx) = oneshot::channel();
        let matcher = AuthMatcher::new(spec.pattern);
        let task = tokio::spawn(output::pump(
            receiver,
            spec.log,
            spec.log_limit,
            matcher,
            matched_tx,
            stop_rx,
            halt_rx,
        ));
        let pid = child.id().expect("a just-spawned child has a pid");
        let marker = spec
            .env
            .iter()
            .find(|(k, _)| *k == "RUN_LOG")
            .map(|(k, v)| format!("{k}={v}"));
        let mut process = Process::new(
            child,
            pid,
            Some(Pump {
                task,
                stop: Some(stop_tx),
                halt: Some(halt_tx),
                matched: Some(matched_rx),
            }),
        );
        process.marker = marker;
        Ok(process)
    }

    /// Starts `sh -c COMMAND` with jobloop's stdout and stderr (preflight,
    /// hooks).
    ///
    /// # Errors
    ///
    /// When `sh` cannot be started.
    pub fn spawn_shell(shell_command: &str, instance: &str) -> io::Result<Process> {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(shell_command)
            .env_remove(WITHHELD_VARS[0])
            .env_remove(WITHHELD_VARS[1])
            .env(INSTANCE_VAR, instance)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pid = child.id().expect("a just-spawned child has a pid");
        Ok(Process::new(child, pid, None))
    }

    fn new(child: tokio::process::Child, pid: u32, pump: Option<Pump>) -> Process {
        Process {
            child,
            pid,
            pump,
            marker: None,
            exit: None,
            sigchld: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok(),
            usage: None,
            kill_at: None,
            term_sent: false,
            kill_sent: false,
            timed_out: false,
            auth_killed: false,
        }
    }

    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the child to exit, sending SIGKILL when a stop's grace runs
    /// out. Cancel-safe.
    async fn wait(&mut self) -> ExitStatus {
        let status = loop {
            if let Some(status) = self.exit {
                break status;
            }
            let deadline = self.kill_at.filter(|_| !self.kill_sent);
            // The usage is read while the child is a zombie: after tokio's
            // wait it would be gone. So tokio waits only for a child known
            // to have exited, and a SIGCHLD wakes the next look.
            let exited = match reaper::peek_exit(self.pid) {
                reaper::Peek::Running => self.sigchld.is_none(),
                reaper::Peek::Exited(usage) => {
                    self.usage = Some(usage);
                    true
                }
                reaper::Peek::Unknown => true,
            };
            tokio::select! {
                status = self.child.wait(), if exited => {
                    // A failed wait means the child is gone already; report
                    // it as killed rather than crash the loop.
                    self.exit = Some(status.unwrap_or_else(|_| {
                        use std::os::unix::process::ExitStatusExt;
                        ExitStatus::from_raw(9)
                    }));
                }
                open = next_signal(&mut self.sigchld), if !exited => {
                    if !open {
                        self.sigchld = None;
                    }
                }
                _ = sleep_until_opt(deadline) => self.kill_now(),
            }
        };
        // After a stop, what is left of the job (members of its group, and
        // descendants that escaped it) gets the rest of the grace to clean
        // up, then SIGKILL. A short poll: this path is rare and bounded.
        while self.term_sent && !self.kill_sent {
            reaper::reap_orphans(None);
            if !reaper::job_alive(self.pid, self.marker.as_deref()) {
                break;
            }
            match self.kill_at {
                Some(at) if Instant::now() < at => {
                    tokio::time::sleep((at - Instant::now()).min(Duration::from_millis(20))).await;
                }
                Some(_) => self.kill_now(),
                // A grace too long to represent is no deadline (#12): the
                // rest of the group gets all the time it takes.
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        status
    }

    /// Takes the signal that fires once when the auth pattern matches the
    /// job's output (`None` for a child without an output pump, or when
    /// already taken).
    fn take_auth_signal(&mut self) -> Option<oneshot::Receiver<()>> {
        self.pump.as_mut().and_then(|pump| pump.matched.take())
    }

    /// Asks the whole group (and what escaped it) to stop: SIGTERM now,
    /// SIGKILL after `grace` unless it is gone.
    fn stop(&mut self, grace: Duration) {
        // A grace too long to represent is no deadline at all (#12).
        self.stop_by(Instant::now().checked_add(grace));
    }

    /// Asks the whole group (and what escaped it) to stop: SIGTERM now,
    /// SIGKILL at `deadline` (`None` = never) unless it is gone; an
    /// earlier deadline already set stays.
    fn stop_by(&mut self, deadline: Option<Instant>) {
        self.kill_at = match (self.kill_at, deadline) {
            (Some(at), Some(deadline)) => Some(at.min(deadline)),
            (at, None) => at,
            (None, deadline) => deadline,
        };
        if !self.term_sent {
            self.term_sent = true;
            reaper::signal_job(self.pid, self.marker.as_deref(), Signal::SIGTERM);
        }
    }

    /// Marks the stop as a timeout and stops the child.
    fn stop_for_timeout(&mut self, grace: Duration) {
        self.timed_out = true;
        self.stop(grace);
    }

    /// Marks the stop as an auth kill and stops the child.
    fn stop_for_auth(&mut self, grace: Duration) {
        self.auth_killed = true;
        self.stop(grace);
    }

    /// Sends SIGKILL to the whole group and what escaped it, now.
    fn kill_now(&mut self) {
        self.kill_sent = true;
        self.term_sent = true;
        reaper::signal_job(self.pid, self.marker.as_deref(), Signal::SIGKILL);
    }

    /// True once jobloop has asked the child to stop.
    fn is_stopping(&self) -> bool {
        self.term_sent
    }

    /// Collects the report after [`wait`](Self::wait) returned `status`.
    ///
    /// Output still held open by a grandchild is read for at most
    /// `drain_wait` after the job exited; what the pipe already holds is
    /// still read, however slow the run log's disk, except once a shutdown
    /// is asked for. When jobloop stopped the job, whatever is left of its
    /// group and its escaped descendants is killed.
    async fn finish(
        mut self,
        status: ExitStatus,
        drain_wait: Duration,
        shutdowns: &mut Shutdowns,
    ) -> RunReport {
        if self.term_sent {
            reaper::signal_job(self.pid, self.marker.as_deref(), Signal::SIGKILL);
        }
        let (exit_code, signal) = exit_code(status);
        let mut report = RunReport {
            exit_code,
            signal,
            timed_out: self.timed_out,
            auth_killed: self.auth_killed,
            killed: self.kill_sent,
            usage: self.usage,
            ..RunReport::default()
        };
        if let Some(mut pump) = self.pump.take() {
            let stats = match tokio::time::timeout(drain_wait, &mut pump.task).await {
                Ok(joined) => joined,
                Err(_) => {
                    if let Some(stop) = pump.stop.take() {
                        let _ = stop.send(());
                    }
                    tokio::select! {
                        joined = &mut pump.task => joined,
                        () = shutdown_asked(shutdowns) => {
                            if let Some(halt) = pump.halt.take() {
                                let _ = halt.send(());
                            }
                            pump.task.await
                        }
                    }
                }
            };
            report.output = stats.unwrap_or_default();
            report.pattern_matched = report.output.pattern_matched;
        }
        report
    }
}

/// Resolves once a shutdown was asked for; never if nobody can ask.
async fn shutdown_asked(shutdowns: &mut Shutdowns) {
    while !shutdowns.borrow_and_update().is_asked() {
        if shutdowns.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits for the next delivery of `signal`; false once it can deliver no
/// more (the runtime is shutting down).
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> bool {
    match signal {
        Some(signal) => signal.recv().await.is_some(),
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
