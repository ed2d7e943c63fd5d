//! HTTP hardening (issue #12 items 1, 4, 8; SPEC §6, 0.2): connections can
//! never use up the descriptors the loop needs, and probes stay answered.
//!
//! The daemon runs under `prlimit --nofile=256:256` while the test holds
//! 600 idle connections (reopening those the server closes, as an attacker
//! would): the loop must keep iterating without a failure, and `/livez` and
//! `/readyz` must be answered 200 throughout. Before the fix the server
//! accepted up to 1,024 connections whatever the limit, and with 597 of
//! them held not one iteration was recorded in 10 s.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::{self, free_port, Harness};

const BINARY: &str = env!("CARGO_BIN_EXE_jobloop");
/// The soft and hard `RLIMIT_NOFILE` the daemon runs under.
const NOFILE: u32 = 256;
/// The descriptors jobloop is started with: stdin, stdout, stderr.
const STARTED_WITH: usize = 3;
/// Idle connections held against it.
const HELD: usize = 600;
/// Longest a probe may take to be answered during the flood.
const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// A daemon started as `prlimit --nofile=N:N -- jobloop run -- JOB`.
struct Limited {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Limited {
    fn start(nofile: u32, job: &[&str]) -> Limited {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(BINARY)
            .arg("run")
            .arg("--")
            .args(job)
            // Nothing of the developer's environment: only what is set here.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AGENT_LOG_DIR", dir.path().join("logs"))
            .env("AGENT_STATE_DIR", dir.path().join("state"))
            .env("AGENT_LISTEN", format!("127.0.0.1:{port}"))
            .env("AGENT_IDLE_SLEEP", "20ms")
            .env("AGENT_BACKOFF_START", "50ms")
            .env("AGENT_BACKOFF_MAX", "1s")
            .env("AGENT_KILL_GRACE", "2s")
            .env("AGENT_SHUTDOWN_GRACE", "5s")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .expect("run prlimit (util-linux) to start jobloop");
        Limited { dir, port, child }
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn state(&self) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.dir.path().join("state/state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn iteration(&self) -> u64 {
        self.state()
            .and_then(|s| s["iteration"].as_u64())
            .unwrap_or(0)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Polls `condition` every 20 ms for at most `timeout`.
    fn wait(&self, what: &str, timeout: Duration, mut condition: impl FnMut(&Limited) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if condition(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}\n--- state.json ---\n{:?}\n--- stderr ---\n{}",
            self.state(),
            self.stderr()
        );
    }

    /// How many descriptors the daemon has open.
    fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    /// How many of the daemon's descriptors are sockets.
    fn open_sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|entries| {
                entries
                    .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                    .filter(|target| target.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The soft and hard "Max open files" of the running daemon.
    fn nofile(&self) -> String {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .unwrap_or_default()
            .split_whitespace()
            .skip(3)
            .take(2)
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` with `Connection: close` and one deadline for all of it:
/// (status, body) or why not.
fn get(address: SocketAddr, path: &str, deadline: Duration) -> Result<(u16, String), String> {
    let until = Instant::now() + deadline;
    let mut stream = TcpStream::connect_timeout(&address, deadline).map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {deadline:?}"));
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("no answer within {deadline:?}"))
            }
            Err(e) => return Err(format!("{e} after {} bytes", response.len())),
        }
    }
    util::parse_response(&response)
        .ok_or_else(|| format!("closed without an answer ({} bytes)", response.len()))
}

/// The value of `series` in a Prometheus scrape, if present.
fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Connections that send nothing, kept open: each one the server closes
/// is reopened (at most 100 per round of 100 ms, so the test does not run
/// the machine out of ephemeral ports). Since the server makes the oldest
/// idle connection give way to each new one, the attacker never holds more
/// than the server's cap accepted at once; the rest wait in the kernel's
/// backlog or are being reopened.
struct Flood {
    stop: Arc<AtomicBool>,
    /// Connections open from our side right now.
    held: Arc<AtomicUsize>,
    /// Connections the server closed and we reopened.
    reopened: Arc<AtomicUsize>,
    /// How many of the first `n` connects succeeded (0 until all were tried).
    opened: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    const REOPEN_PER_ROUND: usize = 100;

    fn start(address: SocketAddr, n: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let reopened = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, held, reopened, opened) =
                (stop.clone(), held.clone(), reopened.clone(), opened.clone());
            std::thread::spawn(move || {
                let connect = || {
                    let stream =
                        TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
                    stream.set_nonblocking(true).ok()?;
                    Some(stream)
                };
                let mut connections: Vec<Option<TcpStream>> = (0..n).map(|_| connect()).collect();
                // A few connects time out while the accept queue churns.
                let open = connections.iter().flatten().count();
                held.store(open, Ordering::Relaxed);
                opened.store(open, Ordering::Relaxed);
                while !stop.load(Ordering::Relaxed) {
                    let mut budget = Self::REOPEN_PER_ROUND;
                    for slot in connections.iter_mut() {
                        if slot.as_ref().is_some_and(closed) {
                            *slot = None;
                        }
                        if slot.is_none() && budget > 0 {
                            budget -= 1;
                            *slot = connect();
                            if slot.is_some() {
                                reopened.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    held.store(connections.iter().flatten().count(), Ordering::Relaxed);
                    // Pacing of the attacker, not synchronisation.
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Flood {
            stop,
            held,
            reopened,
            opened,
            thread: Some(thread),
        }
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether the server closed `stream` (EOF, reset, or an answer to a
/// request never sent, which precedes a close).
fn closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

#[test]
fn six_hundred_idle_connections_against_256_descriptors_starve_neither_the_loop_nor_the_probes() {
    let daemon = Limited::start(NOFILE, &["sh", "-c", "echo working"]);
    daemon.wait("the first iterations", Duration::from_secs(20), |d| {
        d.iteration() >= 3
    });
    // jobloop raised the soft limit to the hard one: here both are 256.
    assert_eq!(daemon.nofile(), format!("{NOFILE}:{NOFILE}"));

    // Its sockets before the flood (the listener, the runtimes' wake-ups):
    // every socket above these during the flood is a connection.
    let sockets_at_rest = (0..10).map(|_| daemon.open_sockets()).min().unwrap_or(0);

    let flood = Flood::start(daemon.address(), HELD);
    daemon.wait("the flood's connections", Duration::from_secs(30), |_| {
        flood.opened.load(Ordering::Relaxed) >= HELD * 9 / 10
    });
    let opened = flood.opened.load(Ordering::Relaxed);
    let first = daemon.iteration();
    let started = Instant::now();

    // (b) 20 /livez and 20 /readyz during the flood, each answered 200.
    let mut slowest = Duration::ZERO;
    let mut held_min = usize::MAX;
    let mut daemon_fds_max = 0;
    let mut daemon_sockets_max = 0;
    let mut failures = Vec::new();
    for round in 0..20 {
        for path in ["/livez", "/readyz"] {
            held_min = held_min.min(flood.held());
            daemon_fds_max = daemon_fds_max.max(daemon.open_descriptors());
            daemon_sockets_max = daemon_sockets_max.max(daemon.open_sockets());
            let asked = Instant::now();
            match get(daemon.address(), path, PROBE_DEADLINE) {
                Ok((200, _)) => slowest = slowest.max(asked.elapsed()),
                other => failures.push(format!("round {round} {path}: {other:?}")),
            }
            // (a) never a failure in a row, sampled throughout.
            let state = daemon.state().expect("state.json");
            assert_eq!(
                state["consecutiveFailures"],
                0,
                "a run failed during the flood: {state}\n{}",
                daemon.stderr()
            );
        }
        // Probes come every 10 s from a kubelet; here a little faster.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        failures.is_empty(),
        "probes not answered 200 during the flood ({} held): {failures:#?}\n{}",
        flood.held(),
        daemon.stderr()
    );
    // (a) the loop kept iterating while the flood went on, at least until
    // the server had closed as many idle connections as the flood holds.
    daemon.wait(
        "ten more iterations and the flood reopened in full",
        Duration::from_secs(30),
        |d| d.iteration() >= first + 10 && flood.reopened.load(Ordering::Relaxed) >= HELD,
    );
    daemon_fds_max = daemon_fds_max.max(daemon.open_descriptors());
    daemon_sockets_max = daemon_sockets_max.max(daemon.open_sockets());
    let state = daemon.state().expect("state.json");
    assert_eq!(state["consecutiveFailures"], 0, "{state}");
    let last = daemon.iteration();
    let window = started.elapsed();
    held_min = held_min.min(flood.held());
    let reopened = flood.reopened.load(Ordering::Relaxed);
    // The reserve (64) was never touched by connections: at most the limit
    // less the reserve less what jobloop was started with (stdin, stdout,
    // stderr). The loop's own descriptors (run log, pipes, state.json's
    // temporary file) come and go inside the reserve, so they are not
    // counted here: the total only has to stay below the limit.
    let connections_max = daemon_sockets_max.saturating_sub(sockets_at_rest);
    assert!(
        connections_max <= NOFILE as usize - 64 - STARTED_WITH,
        "jobloop held {connections_max} connections ({daemon_fds_max} descriptors)"
    );
    assert!(
        daemon_fds_max < NOFILE as usize,
        "jobloop ran out of descriptors: {daemon_fds_max}"
    );
    drop(flood);

    let (code, scrape) = get(daemon.address(), "/metrics", PROBE_DEADLINE).unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        metric(&scrape, "jobloop_iterations_total{outcome=\"failure\"}").unwrap_or(0.0),
        0.0,
        "{scrape}"
    );
    for counter in [
        "jobloop_spawn_errors_total",
        "jobloop_run_log_write_errors_total",
        "jobloop_state_write_errors_total",
    ] {
        assert_eq!(metric(&scrape, counter).unwrap_or(0.0), 0.0, "{counter}");
    }
    assert!(
        metric(&scrape, "jobloop_iterations_total{outcome=\"success\"}").unwrap_or(0.0)
            >= last as f64 - 1.0
    );
    println!(
        "hardening_http: {HELD} idle connections ({opened} opened at once) kept up against RLIMIT_NOFILE {NOFILE} \
         (at least {held_min} open from the client's side, {reopened} reopened after the \
         server closed them; jobloop held at most {connections_max} connections and \
         {daemon_fds_max} descriptors): 40/40 probes \
         200, slowest {slowest:?}; iterations {first} -> {last} in {window:.1?}, 0 failures"
    );
}

#[test]
fn two_hundred_concurrent_livez_requests_all_answer_200() {
    let mut h = Harness::new();
    h.start(&[], &["true"]);
    h.wait_http();
    h.wait_iteration(2, Duration::from_secs(20));
    let address = SocketAddr::from(([127, 0, 0, 1], h.port));
    for attempt in 0..3 {
        // No probe in the last half second: the answer is not cached, so the
        // 200 checks meet while a ping is out.
        std::thread::sleep(Duration::from_millis(600));
        let mut connections: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        // All requests go out together, once every connection is open.
        for stream in &mut connections {
            stream
                .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .unwrap();
        }
        let started = Instant::now();
        let mut statuses = std::collections::BTreeMap::<String, usize>::new();
        for mut stream in connections {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut response = Vec::new();
            let status = match stream.read_to_end(&mut response) {
                Ok(_) => String::from_utf8_lossy(&response)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("closed")
                    .to_string(),
                Err(e) => e.to_string(),
            };
            *statuses.entry(status).or_default() += 1;
        }
        assert_eq!(
            statuses.get("200"),
            Some(&200),
            "attempt {attempt}: {statuses:?}\n{}",
            h.stderr()
        );
        println!(
            "hardening_http: 200 concurrent /livez: 200/200 answered 200 in {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn rejected_resume_attempts_are_logged_once_per_window_without_the_token() {
    let mut h = Harness::new();
    h.env("AGENT_ADMIN_TOKEN", "the-right-admin-token");
    h.start(&[], &["true"]);
    h.wait_http();
    for attempt in 0..5 {
        let wrong = format!("Bearer guess-{attempt}-of-the-admin-token");
        let (code, _) = h.post("/resume", &[("Authorization", &wrong)]);
        assert_eq!(code, 401);
    }
    let (code, _) = h.post("/resume", &[]);
    assert_eq!(code, 401);
    // The first rejection is logged at once; the other five fall in its
    // 10 s window and are only counted, for the next line.
    h.wait_until("the rejection's log line", Duration::from_secs(5), |h| {
        h.stderr().contains("POST /resume rejected")
    });
    let stderr = h.stderr();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("POST /resume rejected"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("127.0.0.1"), "{}", lines[0]);
    assert!(
        !stderr.contains("guess-"),
        "a token given was logged:\n{stderr}"
    );
    assert!(!stderr.contains("the-right-admin-token"), "{stderr}");
}
