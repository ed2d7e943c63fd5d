//! HTTP over TCP against the real daemon: every path and status of SPEC §6
//! in each state, /resume with its tokens, idle connections that must not
//! slow the loop, and a taken port.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{daemon, jobloop, Harness};

const WAIT: Duration = Duration::from_secs(15);

/// (GET /health, /readyz, /livez) status codes.
fn probes(h: &Harness) -> (u16, u16, u16) {
    (h.get("/health").0, h.get("/readyz").0, h.get("/livez").0)
}

#[test]
fn probes_in_running_idle_backoff_and_halts() {
    // running
    let mut h = Harness::new();
    let job = h.script("job.sh", "sleep 30");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_status("running", WAIT);
    assert_eq!(probes(&h), (200, 200, 200), "running");
    let (code, body) = h.get("/state");
    assert_eq!(code, 200);
    assert!(body.contains("\"status\": \"running\""), "{body}");
    drop(h);

    // idle
    let mut h = daemon(&[("AGENT_IDLE_SLEEP", "1h")]);
    h.wait_status("idle", WAIT);
    assert_eq!(probes(&h), (200, 200, 200), "idle");
    drop(h);

    // backoff
    let mut h = Harness::new();
    h.env("AGENT_BACKOFF_START", "1h")
        .env("AGENT_BACKOFF_MAX", "1h");
    h.start(&[], &["false"]);
    h.wait_status("backoff", WAIT);
    assert_eq!(probes(&h), (200, 200, 200), "backoff");
    drop(h);

    // unhealthy
    let mut h = Harness::new();
    h.env("AGENT_MAX_FAILURES", "1");
    h.start(&[], &["false"]);
    h.wait_status("unhealthy", WAIT);
    assert_eq!(probes(&h), (503, 503, 200), "unhealthy: live but not ready");
    let (_, verbose) = h.get("/readyz?verbose");
    assert!(
        verbose.contains("[-]state failed: halted (unhealthy)"),
        "{verbose}"
    );
    drop(h);

    // token-expired
    let mut h = Harness::new();
    let job = h.script("job.sh", "exit 3");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_status("token-expired", WAIT);
    assert_eq!(probes(&h), (503, 503, 200), "token-expired");
    let (code, body) = h.get("/health");
    assert_eq!(code, 503);
    assert!(body.contains("\"reason\": \"exit-code\""), "{body}");
}

#[test]
fn probes_while_stopping() {
    let mut h = Harness::new();
    let job = h.script("job.sh", "trap '' TERM\nsleep 30");
    h.env("AGENT_SHUTDOWN_GRACE", "30s");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_status("running", WAIT);
    h.signal(Signal::SIGTERM);
    h.wait_status("stopping", WAIT);
    assert_eq!(probes(&h), (200, 503, 200), "stopping: alive, not ready");
    h.signal(Signal::SIGTERM);
    assert!(h.wait_exit(WAIT).success());
    assert_eq!(h.state().unwrap()["status"], "stopped");
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let mut h = daemon(&[("AGENT_IDLE_SLEEP", "1h")]);
    h.wait_http();
    assert_eq!(h.get("/nope").0, 404);
    assert_eq!(h.post("/metrics", &[]).0, 405);
    assert_eq!(h.post("/health", &[]).0, 405);
    assert_eq!(h.get("/resume").0, 405);
    let (code, body) = h.get("/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("# TYPE jobloop_iterations_total counter"));
}

#[test]
fn resume_over_tcp_checks_the_token_and_leaves_the_halt() {
    let mut h = Harness::new();
    let flag = h.path("ok");
    let job = h.script("job.sh", &format!("test -f {}", flag.display()));
    h.env("AGENT_MAX_FAILURES", "2")
        .env("AGENT_ADMIN_TOKEN", "let-me-in");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_status("unhealthy", WAIT);
    assert!(h.path("state/UNHEALTHY").exists());
    assert_eq!(h.post("/resume", &[]).0, 401);
    assert_eq!(
        h.post("/resume", &[("Authorization", "Bearer nope")]).0,
        401
    );
    std::fs::write(&flag, "").unwrap();
    let (code, body) = h.post("/resume", &[("Authorization", "Bearer let-me-in")]);
    assert_eq!(code, 200, "{body}");
    h.wait_status("idle", WAIT);
    assert!(
        !h.path("state/UNHEALTHY").exists(),
        "marker removed on resume"
    );
    assert_eq!(h.state().unwrap()["consecutiveFailures"], 0);
    assert_eq!(
        h.post("/resume", &[("Authorization", "Bearer let-me-in")])
            .0,
        409,
        "not halted"
    );
}

#[test]
fn resume_without_a_configured_token_is_forbidden() {
    let mut h = Harness::new();
    h.env("AGENT_MAX_FAILURES", "1");
    h.start(&[], &["false"]);
    h.wait_status("unhealthy", WAIT);
    assert_eq!(
        h.post("/resume", &[("Authorization", "Bearer anything")]).0,
        403
    );
    assert_eq!(h.state().unwrap()["status"], "unhealthy");
}

fn time_iterations(h: &mut Harness, count: u64) -> Duration {
    let first = h.state().and_then(|s| s["iteration"].as_u64()).unwrap_or(0);
    let started = Instant::now();
    h.wait_until("iterations", Duration::from_secs(60), |h| {
        h.state().and_then(|s| s["iteration"].as_u64()).unwrap_or(0) >= first + count
    });
    started.elapsed()
}

// See: issue 3 "200 idle connections held open while the loop keeps iterating".
#[test]
fn idle_connections_do_not_slow_the_loop() {
    let mut h = daemon(&[("AGENT_IDLE_SLEEP", "20ms")]);
    h.wait_status("idle", WAIT);
    let unloaded = time_iterations(&mut h, 20);
    let held: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", h.port)).expect("connect"))
        .collect();
    let loaded = time_iterations(&mut h, 20);
    assert!(
        loaded < unloaded * 3 + Duration::from_millis(500),
        "20 iterations: {loaded:?} with 200 idle connections, {unloaded:?} without"
    );
    assert_eq!(h.get("/livez").0, 200, "still answering");
    drop(held);
}

#[test]
fn a_taken_port_is_a_one_line_fatal_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let logs = dir.path().join("logs");
    let state = dir.path().join("state");
    let output = jobloop(
        &["run", "--", "true"],
        &[
            ("AGENT_LISTEN", &listen),
            ("AGENT_LOG_DIR", logs.to_str().unwrap()),
            ("AGENT_STATE_DIR", state.to_str().unwrap()),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("jobloop:"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&listen) && lines[0].contains("in use"),
        "{stderr}"
    );
    assert!(
        !logs
            .join("runs")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "no job ran"
    );
}

/// Nice value and name of each thread of `pid`.
fn thread_priorities(pid: u32) -> Vec<(String, i64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let after_name = &stat[stat.rfind(')').map_or(0, |at| at + 2)..];
        // Fields from "state" on: nice is the 17th (field 19 of stat).
        let nice = after_name
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        threads.push((name.trim().to_string(), nice));
    }
    threads
}

// See: SPEC §6 "the HTTP server can never slow down or stop the loop".
#[test]
fn the_http_thread_yields_the_cpu_to_the_loop() {
    let mut h = daemon(&[("AGENT_IDLE_SLEEP", "1h")]);
    h.wait_status("idle", WAIT);
    let threads = thread_priorities(h.pid());
    let nice_of = |name: &str| {
        threads
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, nice)| *nice)
    };
    assert_eq!(
        nice_of("jobloop"),
        Some(19),
        "the HTTP thread runs niced: {threads:?}"
    );
    assert_eq!(
        nice_of("jobloop-loop"),
        Some(0),
        "the loop keeps its priority: {threads:?}"
    );
    assert_eq!(nice_of("jobloop-state"), Some(0), "{threads:?}");
}
