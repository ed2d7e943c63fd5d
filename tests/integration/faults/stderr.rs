//! jobloop's own log cannot be written: the reader of its stderr dies
//! (a broken pipe, as when `| logger` or a log shipper goes away), or
//! stderr is a full device (`/dev/full`). A monitoring side effect must not
//! stop the work (README Q1): the loop goes on, HTTP serves, SIGTERM still
//! stops it cleanly.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{self, Harness};

const SECS_20: Duration = Duration::from_secs(20);

/// The daemon on a fast `true` loop at debug level (so it writes a lot),
/// with stderr still to be chosen.
fn command(h: &mut Harness) -> Command {
    h.env("AGENT_IDLE_SLEEP", "10ms")
        .env("AGENT_LOG_LEVEL", "debug");
    h.command(&[], &["true"])
}

/// Checks that a daemon whose log cannot be written keeps iterating and
/// serving, then stops cleanly on SIGTERM. A daemon that dies fails the
/// wait, whose message shows how it exited.
fn keeps_going(h: &mut Harness, what: &str) {
    let mut seen = 0;
    h.wait_until(&format!("{what}: 200 iterations"), SECS_20, |h| {
        seen = h.state().and_then(|s| s["iteration"].as_u64()).unwrap_or(0);
        seen >= 200
    });
    let answered = util::http(h.port, "GET", "/metrics", &[]).map(|(code, _)| code);
    h.signal(nix::sys::signal::Signal::SIGTERM);
    let status = h.wait_exit(SECS_20);
    assert_eq!(answered.ok(), Some(200), "{what}: HTTP serves");
    assert_eq!(status.code(), Some(0), "{what}: clean stop");
    assert_eq!(h.state().unwrap()["status"], "stopped", "{what}");
    println!("faults_stderr: {what}: {seen}+ iterations, HTTP 200, exit 0");
}

// See: README Q1 "a monitoring side effect must not stop the work".
#[test]
fn a_broken_stderr_pipe_does_not_stop_the_loop() {
    let mut h = Harness::new();
    let mut command = command(&mut h);
    command.stderr(Stdio::piped());
    h.spawn(command);
    // Read the first line, then go away like a dead log shipper.
    let mut stderr = h.child().stderr.take().unwrap();
    let mut first = [0u8; 64];
    let _ = stderr.read(&mut first).unwrap();
    drop(stderr);
    keeps_going(&mut h, "stderr pipe closed by its reader");
}

#[test]
fn stderr_on_a_full_device_does_not_stop_the_loop() {
    let mut h = Harness::new();
    let full = match std::fs::OpenOptions::new().write(true).open("/dev/full") {
        Ok(file) => file,
        Err(e) => return crate::util::faults::skip(&format!("no /dev/full: {e}")),
    };
    let mut command = command(&mut h);
    command.stderr(Stdio::from(full));
    h.spawn(command);
    keeps_going(&mut h, "stderr on /dev/full");
}
