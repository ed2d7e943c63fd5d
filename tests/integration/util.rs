//! The test harness: a temp directory per test, the built `jobloop` binary
//! started with millisecond settings on a free loopback port, small shell
//! jobs written by the test, and polling with a deadline.
//!
//! Every wait goes through [`poll`], the one polling loop. The waits on a
//! daemon ([`Harness::wait_until`] and its named wrappers `wait_status`,
//! `wait_iteration`, `wait_http`, `wait_metric`, `wait_exit`) fail with what
//! was waited for, the daemon's state.json and its stderr (ripgrep's and
//! Horust's test helpers do the same), so a timeout in CI explains itself.
//! Submodules: [`otlp`] (trace collectors) and [`faults`] (fault-injection
//! support).

#![allow(dead_code)]

pub mod faults;
pub mod otlp;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_jobloop")
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `jobloop ARGS` to completion with `env` (and a clean AGENT_*/OTEL_*
/// environment).
pub fn jobloop(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    command.args(args).stdin(Stdio::null());
    clean_env(&mut command);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run jobloop")
}

/// Removes the variables that would change the daemon's behaviour, so the
/// developer's own environment cannot leak into a test.
pub fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("AGENT_")
            || key.starts_with("OTEL_")
            || key == "NOTIFY_SOCKET"
            || key == "TRACEPARENT"
            || key == "WATCHDOG_USEC"
        {
            command.env_remove(key);
        }
    }
}

/// One daemon under test and its directory.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Harness {
    /// A fresh directory and port, with fast defaults: 50 ms backoff and
    /// idle sleep, logs and state inside the directory.
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut harness = Harness {
            dir,
            port,
            env: Vec::new(),
            child: None,
        };
        let logs = harness.path("logs");
        let state = harness.path("state");
        harness
            .env("AGENT_LOG_DIR", logs.to_str().unwrap())
            .env("AGENT_STATE_DIR", state.to_str().unwrap())
            .env("AGENT_LISTEN", &format!("127.0.0.1:{port}"))
            .env("AGENT_BACKOFF_START", "50ms")
            .env("AGENT_BACKOFF_MAX", "1s")
            .env("AGENT_IDLE_SLEEP", "50ms")
            .env("AGENT_KILL_GRACE", "2s")
            .env("AGENT_SHUTDOWN_GRACE", "5s");
        harness
    }

    /// A path inside the test directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sets (or replaces) a variable for the daemon.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Harness {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Writes an executable `/bin/sh` script and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Starts `jobloop run [extra...] -- job...`; stderr goes to `stderr.log`.
    pub fn start(&mut self, extra: &[&str], job: &[&str]) -> &mut Harness {
        let stderr = std::fs::File::create(self.path("stderr.log")).unwrap();
        let mut command = self.command(extra, job);
        command.stderr(stderr);
        self.spawn(command)
    }

    /// The command [`Harness::start`] runs, for a test that needs to change
    /// it (stderr to a pipe or a full device) before [`Harness::spawn`].
    pub fn command(&self, extra: &[&str], job: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command.arg("run").args(extra).arg("--").args(job);
        clean_env(&mut command);
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// Starts `command` as the daemon under test.
    pub fn spawn(&mut self, mut command: Command) -> &mut Harness {
        self.child = Some(command.spawn().expect("start jobloop"));
        self
    }

    /// The daemon's process, e.g. to take a piped stderr.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("started")
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("started").id()
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    /// state.json, if it exists and parses.
    pub fn state(&self) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.path("state/state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The run logs, oldest first.
    pub fn run_logs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.path("logs/runs")) else {
            return Vec::new();
        };
        let mut logs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        logs.sort_by_key(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let stem = name.trim_end_matches(".log").to_string();
            match stem.split_once('-') {
                Some((stamp, n)) => (stamp.to_string(), n.parse::<u32>().unwrap_or(0)),
                None => (stem, 0),
            }
        });
        logs
    }

    /// Polls `condition` until it holds; after `timeout`, kills the daemon
    /// and fails with `what`, state.json and stderr.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Harness) -> bool,
    ) {
        if !poll(timeout, || condition(self)) {
            self.fail(&format!("timed out after {timeout:?} waiting for {what}"));
        }
    }

    /// Kills the daemon and fails with `message` and what it left: its exit
    /// status, state.json and stderr.
    pub fn fail(&mut self, message: &str) -> ! {
        let status = match self.child.as_mut().map(|c| c.try_wait()) {
            None => "never started".to_string(),
            Some(Ok(None)) => "still running (killed now)".to_string(),
            Some(Ok(Some(status))) => format!("exited: {status}"),
            Some(Err(e)) => format!("unknown: {e}"),
        };
        self.kill();
        panic!("{message}\n{}", self.diagnostics(&status));
    }

    /// The daemon's status, state.json and stderr, for a failure message.
    fn diagnostics(&self, status: &str) -> String {
        format!(
            "--- daemon ---\n{status}\n--- state.json ---\n{}\n--- stderr ---\n{}",
            self.state()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "(none)".into()),
            self.stderr()
        )
    }

    /// Waits until state.json's status is `status`.
    pub fn wait_status(&mut self, status: &str, timeout: Duration) -> serde_json::Value {
        self.wait_until(&format!("status {status}"), timeout, |h| {
            h.state().is_some_and(|s| s["status"] == status)
        });
        self.state().unwrap()
    }

    /// Waits until the HTTP server answers.
    pub fn wait_http(&mut self) {
        self.wait_until("the HTTP server", Duration::from_secs(10), |h| {
            h.try_get("/state").is_ok()
        });
    }

    /// `GET path`: (status code, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.stderr()))
    }

    fn try_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http(self.port, "GET", path, &[])
    }

    /// `POST path` with headers: (status code, body).
    pub fn post(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        http(self.port, "POST", path, headers).unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Waits for the daemon to exit (after a signal), at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut exited = None;
        let child = self.child.as_mut().expect("started");
        poll(timeout, || {
            exited = child.try_wait().expect("wait for jobloop");
            exited.is_some()
        });
        match exited {
            Some(status) => status,
            None => self.fail(&format!("jobloop did not exit within {timeout:?}")),
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(15))
    }

    /// SIGKILL, no questions asked.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 client for loopback: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(parse_response(&response).unwrap_or((0, String::new())))
}

/// An HTTP/1.1 answer's status and body, if it has a status line.
pub fn parse_response(response: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

impl Harness {
    /// Sets each `(key, value)` of `env`.
    pub fn envs(&mut self, env: &[(&str, &str)]) -> &mut Harness {
        for (key, value) in env {
            self.env(key, value);
        }
        self
    }

    /// Waits until the HTTP server answers and `n` iterations finished:
    /// the daemon is ready for a test to look at.
    pub fn ready(mut self, n: u64) -> Harness {
        self.wait_http();
        self.wait_iteration(n, Duration::from_secs(20));
        self
    }

    /// Scrapes `/metrics` and returns the value of `series` (0 when absent
    /// or when the server does not answer).
    pub fn scrape(&self, series: &str) -> f64 {
        http(self.port, "GET", "/metrics", &[])
            .ok()
            .and_then(|(_, body)| metric(&body, series))
            .unwrap_or(0.0)
    }

    /// Waits until `series` on `/metrics` is at least `value`.
    pub fn wait_metric(&mut self, series: &str, value: f64, timeout: Duration) {
        self.wait_until(&format!("{series} >= {value}"), timeout, |h| {
            h.scrape(series) >= value
        });
    }
}

/// The daemon builder of the tests: a fresh [`Harness`] with `env` on top
/// of its fast defaults, started on a `true` loop. Chain
/// [`Harness::ready`] to wait for HTTP and the first iterations.
pub fn daemon(env: &[(&str, &str)]) -> Harness {
    let mut h = Harness::new();
    h.envs(env);
    h.start(&[], &["true"]);
    h
}

/// The one polling loop of the tests: calls `condition` every 10 ms until it
/// returns true (then `true`) or `timeout` passes (then `false`). Callers
/// fail with their own diagnostics: [`Harness::wait_until`] for a daemon,
/// [`wait_for`] otherwise; a caller that collects what it saw (processes
/// left behind, messages) may use the result directly.
pub fn poll(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    poll_every(Duration::from_millis(10), timeout, condition)
}

/// [`poll`] with another pause between calls: zero for a reader that must
/// look as often as it can, or whose `condition` blocks for a while itself
/// (a socket read with a timeout).
pub fn poll_every(
    interval: Duration,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
}

/// The value of a metric line `name{labels} value` in a scrape, if present.
pub fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Reads a file's text or "".
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Helpers for the loop, run-log, process, signal and state-file tests.
// ---------------------------------------------------------------------------

/// The parsed first line of a run log:
/// `# jobloop iteration=N trace_id=<32 hex> span_id=<16 hex> start=<RFC 3339>`.
#[derive(Debug, Clone)]
pub struct RunLogHeader {
    pub iteration: u64,
    pub trace_id: String,
    pub span_id: String,
    pub start: String,
    /// `start` as milliseconds since the Unix epoch.
    pub start_ms: i64,
}

/// Reads and checks a run log's header line; panics with the line when it
/// does not have the SPEC §3 form.
pub fn run_log_header(path: &Path) -> RunLogHeader {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..end]).to_string();
    parse_header(&line)
        .unwrap_or_else(|| panic!("bad run-log header in {}: {line:?}", path.display()))
}

/// Parses a header line, `None` unless every field has its exact form.
pub fn parse_header(line: &str) -> Option<RunLogHeader> {
    let rest = line.strip_prefix("# jobloop ")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() != 4 {
        return None;
    }
    let iteration = fields[0].strip_prefix("iteration=")?.parse().ok()?;
    let trace_id = fields[1].strip_prefix("trace_id=")?;
    let span_id = fields[2].strip_prefix("span_id=")?;
    let start = fields[3].strip_prefix("start=")?;
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && s.bytes().any(|b| b != b'0')
    };
    if !lower_hex(trace_id, 32) || !lower_hex(span_id, 16) {
        return None;
    }
    let start_ms = rfc3339_ms(start)?;
    Some(RunLogHeader {
        iteration,
        trace_id: trace_id.to_string(),
        span_id: span_id.to_string(),
        start: start.to_string(),
        start_ms,
    })
}

/// The bytes of a run log after its header line.
pub fn run_log_body(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => bytes[end + 1..].to_vec(),
        None => Vec::new(),
    }
}

/// Milliseconds since the epoch of a UTC RFC 3339 time
/// (`2026-01-02T03:04:05Z` or with a fraction); `None` for any other form,
/// offsets other than `Z` included (humantime's strict parser).
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339(text).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

/// The run-log name stamp (`YYYYMMDDTHHMMSSZ`) of a time: its RFC 3339 form
/// in whole seconds without the separators.
pub fn utc_stamp(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

/// The run-log name stamp (`YYYYMMDDTHHMMSSZ`) of milliseconds since the epoch.
pub fn stamp_of_ms(ms: i64) -> String {
    let ms = u64::try_from(ms).expect("a time after 1970");
    utc_stamp(std::time::UNIX_EPOCH + Duration::from_millis(ms))
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// The process group of a live process, from /proc.
pub fn pgid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Waits for `condition` when no daemon is involved (a daemon's test
/// uses [`Harness::wait_until`], whose failure shows the daemon's state).
pub fn wait_for(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    if !poll(timeout, condition) {
        panic!("timed out after {timeout:?} waiting for {what} (no daemon under test)");
    }
}

/// Waits for a file holding a pid (written by a job) and returns the pid.
pub fn read_pid_file(path: &Path, timeout: Duration) -> i32 {
    let mut pid = 0;
    wait_for(&format!("a pid in {}", path.display()), timeout, || {
        pid = read(path).trim().parse().unwrap_or(0);
        pid > 0
    });
    pid
}

impl Harness {
    /// Waits for a file holding a pid (written by a job) and returns the pid.
    pub fn read_pid_file(&mut self, path: &Path, timeout: Duration) -> i32 {
        let mut pid = 0;
        self.wait_until(&format!("a pid in {}", path.display()), timeout, |_| {
            pid = read(path).trim().parse().unwrap_or(0);
            pid > 0
        });
        pid
    }

    /// Whether the marker file `name` (UNHEALTHY, TOKEN_EXPIRED) exists.
    pub fn marker(&self, name: &str) -> bool {
        self.path("state").join(name).exists()
    }

    /// Waits until state.json's `iteration` is at least `n`.
    pub fn wait_iteration(&mut self, n: u64, timeout: Duration) -> serde_json::Value {
        self.wait_until(&format!("iteration {n}"), timeout, |h| {
            h.state()
                .is_some_and(|s| s["iteration"].as_u64().unwrap_or(0) >= n)
        });
        self.state().unwrap()
    }

    /// Checks that `condition` holds at every poll for `window`: an
    /// observation over time (e.g. "no further job starts"), never a
    /// synchronisation. Fails with the daemon's stderr and state.
    pub fn assert_holds(
        &mut self,
        what: &str,
        window: Duration,
        mut condition: impl FnMut(&Harness) -> bool,
    ) {
        if poll(window, || !condition(self)) {
            self.fail(&format!("{what} stopped holding"));
        }
    }

    /// The daemon's `iteration finished` log lines, in order.
    pub fn iteration_lines(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| l.contains("iteration finished"))
            .map(str::to_string)
            .collect()
    }

    /// The value of `key=value` (quotes removed) in the `iteration finished`
    /// line of iteration `n`.
    pub fn iteration_field(&self, n: u64, key: &str) -> Option<String> {
        let needle = format!("iteration={n} ");
        let line = self
            .iteration_lines()
            .into_iter()
            .find(|l| l.contains(&needle))?;
        log_field(&line, key)
    }

    /// The run-log headers, oldest first.
    pub fn headers(&self) -> Vec<RunLogHeader> {
        self.run_logs().iter().map(|p| run_log_header(p)).collect()
    }
}

/// The value of `key=value` in a text log line, surrounding quotes removed.
pub fn log_field(line: &str, key: &str) -> Option<String> {
    let needle = format!(" {key}=");
    let start = line.find(&needle)? + needle.len();
    let rest = &line[start..];
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()?.to_string()
    } else {
        rest.split_whitespace().next()?.to_string()
    };
    Some(value)
}

// The harness's own promises: a wait that times out says what it waited
// for and shows the daemon's state.json and stderr.
/// Runs `program ARGS` with `input` on its standard input and waits for it.
pub fn run_with_input(program: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    child
        .stdin
        .take()
        .expect("a piped stdin")
        .write_all(input.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write to {program}: {e}"));
    child.wait_with_output().unwrap()
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::time::Duration;

    use super::{poll, poll_every, Harness};

    /// The message of the panic `f` raises.
    fn panic_message(f: impl FnOnce()) -> String {
        let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("it panics");
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn a_timed_out_wait_names_its_goal_and_shows_state_json_and_stderr() {
        let mut h = Harness::new();
        h.start(&[], &["true"]);
        h.wait_iteration(1, Duration::from_secs(20));
        let message = panic_message(|| {
            h.wait_until(
                "a condition that never holds",
                Duration::from_millis(50),
                |_| false,
            )
        });
        assert!(
            message.contains("waiting for a condition that never holds"),
            "{message}"
        );
        assert!(message.contains("--- state.json ---\n{"), "{message}");
        assert!(message.contains("\"iteration\""), "{message}");
        assert!(message.contains("--- stderr ---\n"), "{message}");
        assert!(message.contains("iteration finished"), "{message}");
        assert!(message.contains("still running (killed now)"), "{message}");
    }

    #[test]
    fn poll_returns_as_soon_as_the_condition_holds_and_false_after_the_timeout() {
        let mut calls = 0;
        assert!(poll(Duration::from_secs(10), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
        let started = std::time::Instant::now();
        assert!(!poll_every(
            Duration::ZERO,
            Duration::from_millis(30),
            || false
        ));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
