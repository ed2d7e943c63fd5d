//! Signals and shutdown (SPEC §5): SIGTERM/SIGINT during a job, the
//! shutdown grace, a second signal, escaped descendants, SIGHUP leaving a
//! halt.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{self, daemon, Harness};

const SECS_10: Duration = Duration::from_secs(10);

/// A job that writes its pid, then loops in short sleeps; `trap` is put
/// first.
fn looping_job(h: &Harness, trap: &str) -> String {
    let body = format!(
        "{trap}\necho $$ > '{}'\nwhile :; do sleep 0.05; done",
        h.path("job.pid").display()
    );
    h.script("job.sh", &body).to_str().unwrap().to_string()
}

// See: SPEC §5, SIGTERM: stopping, the job gets SIGTERM, stopped, exit 0.
#[test]
fn sigterm_during_a_job_passes_sigterm_to_it_and_stops_cleanly() {
    let mut h = Harness::new();
    let got_term = h.path("got-term");
    let job = looping_job(
        &h,
        &format!(
            "trap 'echo term > \"{}\"; sleep 0.3; exit 0' TERM",
            got_term.display()
        ),
    );
    h.start(&[], &[&job]);
    let job_pid = h.read_pid_file(&h.path("job.pid"), SECS_10);
    h.wait_status("running", SECS_10);
    h.signal(Signal::SIGTERM);
    let state = h.wait_status("stopping", SECS_10);
    assert_eq!(state["iteration"], 1, "{state}");
    let status = h.wait_exit(SECS_10);
    assert_eq!(status.code(), Some(0), "{}", h.stderr());
    assert_eq!(util::read(&got_term), "term\n", "the job got SIGTERM");
    let state = h.state().unwrap();
    assert_eq!(state["status"], "stopped", "{state}");
    assert!(state["jobPid"].is_null(), "{state}");
    assert_eq!(
        state["iteration"], 1,
        "no new job after the signal: {state}"
    );
    assert_eq!(h.run_logs().len(), 1);
    assert!(!util::pid_alive(job_pid), "the job outlived jobloop");
}

#[test]
fn sigint_stops_like_sigterm() {
    let mut h = Harness::new();
    let job = looping_job(&h, "");
    h.start(&[], &[&job]);
    let job_pid = h.read_pid_file(&h.path("job.pid"), SECS_10);
    h.wait_status("running", SECS_10);
    h.signal(Signal::SIGINT);
    assert_eq!(h.wait_exit(SECS_10).code(), Some(0), "{}", h.stderr());
    assert_eq!(h.state().unwrap()["status"], "stopped");
    assert!(!util::pid_alive(job_pid), "the job outlived jobloop");
}

// See: SPEC §1 AGENT_SHUTDOWN_GRACE.
#[test]
fn a_job_that_ignores_sigterm_is_killed_after_the_shutdown_grace() {
    let mut h = Harness::new();
    h.env("AGENT_SHUTDOWN_GRACE", "400ms");
    let job = looping_job(&h, "trap '' TERM");
    h.start(&[], &[&job]);
    let job_pid = h.read_pid_file(&h.path("job.pid"), SECS_10);
    h.wait_status("running", SECS_10);
    let sent = Instant::now();
    h.signal(Signal::SIGTERM);
    let status = h.wait_exit(SECS_10);
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", h.stderr());
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(4),
        "exit {took:?} after SIGTERM with a 400 ms grace"
    );
    let state = h.state().unwrap();
    assert_eq!(state["status"], "stopped", "{state}");
    assert!(!util::pid_alive(job_pid), "the job survived");
}

// See: SPEC §5, "A second SIGTERM/SIGINT stops the job at once".
#[test]
fn a_second_sigterm_kills_the_job_at_once() {
    let mut h = Harness::new();
    h.env("AGENT_SHUTDOWN_GRACE", "60s");
    let job = looping_job(&h, "trap '' TERM");
    h.start(&[], &[&job]);
    let job_pid = h.read_pid_file(&h.path("job.pid"), SECS_10);
    h.wait_status("running", SECS_10);
    h.signal(Signal::SIGTERM);
    h.wait_status("stopping", SECS_10);
    h.assert_holds(
        "the job still runs in its grace",
        Duration::from_millis(200),
        |_| util::pid_alive(job_pid),
    );
    let sent = Instant::now();
    h.signal(Signal::SIGTERM);
    let status = h.wait_exit(SECS_10);
    assert_eq!(status.code(), Some(0), "{}", h.stderr());
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(h.state().unwrap()["status"], "stopped");
    assert!(!util::pid_alive(job_pid), "the job survived");
}

#[test]
fn sigterm_during_the_idle_sleep_stops_at_once() {
    let mut h = daemon(&[("AGENT_IDLE_SLEEP", "60s")]);
    h.wait_status("idle", SECS_10);
    let sent = Instant::now();
    assert_eq!(h.stop().code(), Some(0));
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(h.state().unwrap()["status"], "stopped");
    assert_eq!(h.run_logs().len(), 1, "no new job");
}

#[test]
fn sigterm_while_halted_stops_cleanly() {
    let mut h = Harness::new();
    h.start(&[], &["sh", "-c", "exit 3"]);
    h.wait_status("token-expired", SECS_10);
    assert_eq!(h.stop().code(), Some(0));
    assert_eq!(h.state().unwrap()["status"], "stopped");
}

// See: SPEC §5, "processes that escaped the group ... are stopped too".
#[test]
fn shutdown_stops_a_daemonised_grandchild_left_by_a_finished_job() {
    let mut h = Harness::new();
    let escaped = h.path("escaped.pid");
    h.env("AGENT_IDLE_SLEEP", "60s");
    let job = h.script(
        "job.sh",
        &format!(
            "setsid sh -c 'echo $$ > \"{e}\"; exec sleep 60' >/dev/null 2>&1 < /dev/null &\n\
             while [ ! -s '{e}' ]; do sleep 0.01; done\nexit 0",
            e = escaped.display()
        ),
    );
    h.start(&[], &[job.to_str().unwrap()]);
    let escaped = h.read_pid_file(&escaped, SECS_10);
    h.wait_status("idle", SECS_10);
    assert!(util::pid_alive(escaped), "the daemonised grandchild runs");
    assert_eq!(
        util::pgid_of(escaped),
        Some(escaped),
        "it left the job's group"
    );
    assert_eq!(h.stop().code(), Some(0));
    h.wait_until("the escaped grandchild to be gone", SECS_10, |_| {
        !util::pid_alive(escaped)
    });
}

// See: SPEC §2 halt, §5 SIGHUP.
#[test]
fn sighup_leaves_a_token_expired_halt() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "60s");
    let count = h.path("count");
    let job = h.script(
        "job.sh",
        &format!(
            "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{c}'\n[ $n -eq 1 ] && exit 3\nexit 0",
            c = count.display()
        ),
    );
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_status("token-expired", SECS_10);
    assert!(h.marker("TOKEN_EXPIRED"));
    h.signal(Signal::SIGHUP);
    let state = h.wait_status("idle", SECS_10);
    assert_eq!(state["iteration"], 2, "{state}");
    assert!(state["reason"].is_null(), "{state}");
    assert!(!h.marker("TOKEN_EXPIRED") && !h.marker("UNHEALTHY"));
    assert_eq!(h.stop().code(), Some(0));
}

#[test]
fn sighup_leaves_an_unhealthy_halt_with_the_failure_count_reset() {
    let mut h = Harness::new();
    h.env("AGENT_MAX_FAILURES", "2")
        .env("AGENT_BACKOFF_START", "10ms")
        .env("AGENT_BACKOFF_MAX", "10ms");
    h.start(&[], &["sh", "-c", "exit 1"]);
    let state = h.wait_status("unhealthy", SECS_10);
    assert_eq!(state["iteration"], 2, "{state}");
    assert!(h.marker("UNHEALTHY"));
    h.signal(Signal::SIGHUP);
    // Reset: runs 3 and 4 fail again before the next halt, not run 3 alone.
    h.wait_until("a second halt after run 4", SECS_10, |h| {
        h.state()
            .is_some_and(|s| s["iteration"] == 4 && s["status"] == "unhealthy")
    });
    let state = h.state().unwrap();
    assert_eq!(state["consecutiveFailures"], 2, "{state}");
    assert_eq!(state["reason"], "max-failures", "{state}");
    assert!(h.marker("UNHEALTHY"));
}

#[test]
fn sighup_while_not_halted_changes_nothing() {
    let mut h = daemon(&[("AGENT_IDLE_SLEEP", "60s")]);
    h.wait_status("idle", SECS_10);
    h.signal(Signal::SIGHUP);
    h.assert_holds(
        "still idle after one run",
        Duration::from_millis(300),
        |h| {
            h.state()
                .is_some_and(|s| s["status"] == "idle" && s["iteration"] == 1)
        },
    );
    assert_eq!(h.stop().code(), Some(0));
}

#[test]
fn sigterm_during_a_long_preflight_stops_cleanly() {
    let mut h = Harness::new();
    let marker = h.path("preflight.pid");
    h.env(
        "AGENT_PREFLIGHT_CMD",
        &format!("echo $$ > '{}'; exec sleep 60", marker.display()),
    )
    .env("AGENT_SHUTDOWN_GRACE", "5s");
    h.start(&[], &["true"]);
    let preflight = h.read_pid_file(&marker, SECS_10);
    let sent = Instant::now();
    assert_eq!(h.stop().code(), Some(0), "{}", h.stderr());
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(h.state().unwrap()["status"], "stopped");
    assert!(h.run_logs().is_empty(), "no job after a stopped preflight");
    assert!(!util::pid_alive(preflight), "the preflight survived");
}

#[test]
fn sigterm_during_a_backoff_stops_at_once() {
    let mut h = Harness::new();
    h.env("AGENT_BACKOFF_START", "60s")
        .env("AGENT_BACKOFF_MAX", "60s");
    h.start(&[], &["sh", "-c", "exit 1"]);
    h.wait_status("backoff", SECS_10);
    let sent = Instant::now();
    assert_eq!(h.stop().code(), Some(0));
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "took {:?}",
        sent.elapsed()
    );
    let state = h.state().unwrap();
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["iteration"], 1, "{state}");
}
