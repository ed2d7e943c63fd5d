//! jobloop's own log cannot be written: the reader of its stderr dies
//! (a broken pipe, as when `| logger` or a log shipper goes away), or
//! stderr is a full device (`/dev/full`). A monitoring side effect must not
//! stop the work (README Q1): the loop goes on, HTTP serves, SIGTERM still
//! stops it cleanly.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, binary, clean_env, Harness};

const SECS_20: Duration = Duration::from_secs(20);

fn command(h: &Harness) -> Command {
    let mut command = Command::new(binary());
    command.args(["run", "--", "true"]);
    clean_env(&mut command);
    command
        .env("AGENT_LOG_DIR", h.path("logs"))
        .env("AGENT_STATE_DIR", h.path("state"))
        .env("AGENT_LISTEN", format!("127.0.0.1:{}", h.port))
        .env("AGENT_IDLE_SLEEP", "10ms")
        .env("AGENT_LOG_LEVEL", "debug")
        .current_dir(h.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// Checks that a daemon whose log cannot be written keeps iterating and
/// serving, then stops cleanly on SIGTERM.
fn keeps_going(h: &Harness, child: &mut std::process::Child, what: &str) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let state = |h: &Harness| h.state().and_then(|s| s["iteration"].as_u64()).unwrap_or(0);
    let deadline = Instant::now() + SECS_20;
    let mut seen = 0;
    while Instant::now() < deadline && seen < 200 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what}: jobloop died: {status}");
        }
        seen = state(h);
        std::thread::sleep(Duration::from_millis(20));
    }
    if seen < 200 {
        let _ = child.kill();
        panic!("{what}: only {seen} iterations; the loop stalled");
    }
    let answered = util::http(h.port, "GET", "/metrics", &[]).map(|(code, _)| code);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + SECS_20;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: jobloop did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(answered.ok(), Some(200), "{what}: HTTP serves");
    assert_eq!(status.code(), Some(0), "{what}: clean stop");
    assert_eq!(h.state().unwrap()["status"], "stopped", "{what}");
    println!("faults_stderr: {what}: {seen}+ iterations, HTTP 200, exit 0");
}

// See: README Q1 "a monitoring side effect must not stop the work".
#[test]
fn a_broken_stderr_pipe_does_not_stop_the_loop() {
    let h = Harness::new();
    let mut child = command(&h)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start jobloop");
    // Read the first line, then go away like a dead log shipper.
    let mut stderr = child.stderr.take().unwrap();
    let mut first = [0u8; 64];
    let _ = stderr.read(&mut first).unwrap();
    drop(stderr);
    keeps_going(&h, &mut child, "stderr pipe closed by its reader");
}

#[test]
fn stderr_on_a_full_device_does_not_stop_the_loop() {
    let h = Harness::new();
    let full = match std::fs::OpenOptions::new().write(true).open("/dev/full") {
        Ok(file) => file,
        Err(e) => return crate::util::faults::skip(&format!("no /dev/full: {e}")),
    };
    let mut child = command(&h)
        .stderr(Stdio::from(full))
        .spawn()
        .expect("start jobloop");
    keeps_going(&h, &mut child, "stderr on /dev/full");
}
