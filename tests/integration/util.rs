//! The test harness: a temp directory per test, the built `jobloop` binary
//! started with millisecond settings on a free loopback port, small shell
//! jobs written by the test, and polling with a deadline. On a timeout the
//! failure shows the daemon's stderr and state.json.

#![allow(dead_code)]

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
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
        if key.starts_with("AGENT_") || key.starts_with("OTEL_") || key == "NOTIFY_SOCKET"
            || key == "TRACEPARENT" || key == "WATCHDOG_USEC"
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
        let mut harness = Harness { dir, port, env: Vec::new(), child: None };
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
        let mut command = Command::new(binary());
        command.arg("run").args(extra).arg("--").args(job);
        clean_env(&mut command);
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command.current_dir(self.dir.path()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        self.child = Some(command.spawn().expect("start jobloop"));
        self
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
        let Ok(entries) = std::fs::read_dir(self.path("logs/runs")) else { return Vec::new() };
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

    /// Polls `condition` every 20 ms until it holds or `timeout` passes;
    /// then fails with the daemon's stderr and state.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut condition: impl FnMut(&Harness) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if condition(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        panic!(
            "timed out after {timeout:?} waiting for {what}\n--- state.json ---\n{}\n--- stderr ---\n{}",
            self.state().map(|s| s.to_string()).unwrap_or_else(|| "(none)".into()),
            self.stderr()
        );
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
        self.wait_until("the HTTP server", Duration::from_secs(10), |h| h.try_get("/state").is_ok());
    }

    /// `GET path`: (status code, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.stderr()))
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
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("started");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("jobloop did not exit within {timeout:?}\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
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
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
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
