//! The child (SPEC §4): its environment, its own process group, the job
//! timeout with grandchildren, a job that ignores SIGTERM, AGENT_AUTH_KILL,
//! and commands that cannot be started.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::util::{self, Harness};

const SECS_10: Duration = Duration::from_secs(10);

/// The `duration_ms` of iteration `n` from the daemon's log.
fn duration_ms(h: &Harness, n: u64) -> u64 {
    h.iteration_field(n, "duration_ms")
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration for iteration {n}:\n{}", h.stderr()))
}

// See: SPEC §4, the job's environment.
#[test]
fn the_job_gets_jobloop_iteration_a_fresh_traceparent_and_the_inherited_environment() {
    let mut h = Harness::new();
    let inherited = "00-11111111111111111111111111111111-2222222222222222-01";
    let seen = h.path("seen");
    std::fs::create_dir(&seen).unwrap();
    h.env("TRACEPARENT", inherited)
        .env("JOBLOOP_TEST_VARIABLE", "passed on")
        .env("AGENT_IDLE_SLEEP", "10ms");
    let count = h.path("count");
    let job = h.script(
        "job.sh",
        &format!(
            "n=$(cat '{count}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{count}'\n\
             printf '%s\\n%s\\n%s\\n' \"$JOBLOOP_ITERATION\" \"$TRACEPARENT\" \"$JOBLOOP_TEST_VARIABLE\" > '{seen}'/$n\n\
             [ $n -ge 3 ] && exit 3\nexit 0",
            count = count.display(),
            seen = seen.display()
        ),
    );
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_status("token-expired", SECS_10);
    let logs = h.run_logs();
    assert_eq!(logs.len(), 3);
    for (n, log) in (1..=3u64).zip(&logs) {
        let text = util::read(&seen.join(n.to_string()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        assert_eq!(lines[0], n.to_string(), "JOBLOOP_ITERATION");
        assert_ne!(
            lines[1], inherited,
            "the inherited TRACEPARENT was passed on"
        );
        let header = util::run_log_header(log);
        let parts: Vec<&str> = lines[1].split('-').collect();
        assert_eq!(parts.len(), 4, "TRACEPARENT {:?}", lines[1]);
        assert_eq!(parts[0], "00", "version");
        assert_eq!(parts[1], header.trace_id, "trace id of run {n}");
        assert_eq!(parts[2], header.span_id, "span id of run {n}");
        assert!(parts[3].len() == 2 && parts[3].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(lines[2], "passed on");
    }
}

// See: SPEC §4, "It runs in its own process group".
#[test]
fn the_job_runs_in_its_own_process_group_and_state_shows_its_pid() {
    let mut h = Harness::new();
    let pid_file = h.path("job.pid");
    let job = h.script(
        "job.sh",
        &format!("echo $$ > '{}'\nexec sleep 30", pid_file.display()),
    );
    h.start(&[], &[job.to_str().unwrap()]);
    let job_pid = h.read_pid_file(&pid_file, SECS_10);
    let state = h.wait_status("running", SECS_10);
    assert_eq!(state["jobPid"], job_pid, "{state}");
    assert!(state["currentBatchStartedAt"]
        .as_str()
        .is_some_and(|t| util::rfc3339_ms(t).is_some()));
    assert_eq!(
        util::pgid_of(job_pid),
        Some(job_pid),
        "the job leads its group"
    );
    let daemon_pgid = util::pgid_of(h.pid() as i32).unwrap();
    assert_ne!(daemon_pgid, job_pid, "not jobloop's group");
    assert_eq!(h.stop().code(), Some(0));
    h.wait_until("the job to be gone", SECS_10, |_| !util::pid_alive(job_pid));
}

// See: SPEC §1 AGENT_JOB_TIMEOUT, §4: the whole group, and escaped
// descendants, are stopped.
#[test]
fn job_timeout_stops_the_job_its_grandchild_and_an_escaped_descendant() {
    let mut h = Harness::new();
    let grandchild = h.path("grandchild.pid");
    let escaped = h.path("escaped.pid");
    let job = h.script(
        "job.sh",
        &format!(
            "sleep 30 &\necho $! > '{g}'\n\
             setsid sh -c 'echo $$ > \"{e}\"; exec sleep 31' >/dev/null 2>&1 < /dev/null &\n\
             while [ ! -s '{e}' ]; do sleep 0.01; done\n\
             echo started\nsleep 30\necho never",
            g = grandchild.display(),
            e = escaped.display()
        ),
    );
    h.env("AGENT_JOB_TIMEOUT", "1s")
        .env("AGENT_KILL_GRACE", "2s")
        .env("AGENT_BACKOFF_START", "30s")
        .env("AGENT_BACKOFF_MAX", "30s");
    h.start(&[], &[job.to_str().unwrap()]);
    let grandchild = h.read_pid_file(&grandchild, SECS_10);
    let escaped = h.read_pid_file(&escaped, SECS_10);
    assert!(util::pid_alive(grandchild), "the grandchild started");
    assert_eq!(
        util::pgid_of(escaped),
        Some(escaped),
        "the escaped descendant runs in a group (and session) of its own"
    );
    let state = h.wait_status("backoff", SECS_10);
    assert_eq!(state["lastOutcome"], "timeout", "{state}");
    assert_eq!(state["reason"], "timeout", "{state}");
    assert_eq!(state["lastBatchExit"], 143, "SIGTERM: 128+15; {state}");
    assert_eq!(state["consecutiveFailures"], 1, "{state}");
    let took = duration_ms(&h, 1);
    assert!((1000..3000).contains(&took), "the run took {took} ms");
    h.wait_until(
        "the grandchild in the job's group to be gone",
        SECS_10,
        |_| !util::pid_alive(grandchild),
    );
    h.wait_until("the escaped descendant to be gone", SECS_10, |_| {
        !util::pid_alive(escaped)
    });
    assert!(!util::read(&h.run_logs()[0]).contains("never"));
}

// See: SPEC §1 AGENT_KILL_GRACE.
#[test]
fn a_job_that_ignores_sigterm_is_killed_after_the_kill_grace() {
    let mut h = Harness::new();
    let pid_file = h.path("job.pid");
    let job = h.script(
        "job.sh",
        &format!(
            "trap '' TERM\necho $$ > '{}'\nwhile :; do sleep 0.05; done",
            pid_file.display()
        ),
    );
    h.env("AGENT_JOB_TIMEOUT", "200ms")
        .env("AGENT_KILL_GRACE", "500ms")
        .env("AGENT_BACKOFF_START", "30s")
        .env("AGENT_BACKOFF_MAX", "30s");
    h.start(&[], &[job.to_str().unwrap()]);
    let job_pid = h.read_pid_file(&pid_file, SECS_10);
    let state = h.wait_status("backoff", SECS_10);
    assert_eq!(state["lastOutcome"], "timeout", "{state}");
    assert_eq!(state["lastBatchExit"], 137, "SIGKILL: 128+9; {state}");
    let took = duration_ms(&h, 1);
    assert!(
        (700..3000).contains(&took),
        "timeout 200 ms + grace 500 ms, took {took} ms"
    );
    assert!(!util::pid_alive(job_pid), "the job survived");
}

/// A job that records when it prints the auth line, then would sleep
/// `natural` seconds and write `late`.
fn auth_job(h: &Harness, natural: &str) -> std::path::PathBuf {
    h.script(
        "job.sh",
        &format!(
            "echo $$ > '{pid}'\ndate +%s%3N > '{at}'\necho 'error: invalid_api_key'\nsleep {natural}\ntouch '{late}'",
            pid = h.path("job.pid").display(),
            at = h.path("matched_at").display(),
            late = h.path("late").display(),
        ),
    )
}

// See: SPEC §1 AGENT_AUTH_KILL; issue 2: stopped within 100 ms of the line.
#[test]
fn auth_kill_stops_the_job_right_after_the_matching_line() {
    let mut h = Harness::new();
    h.env("AGENT_AUTH_KILL", "true")
        .env("AGENT_KILL_GRACE", "2s");
    let job = auth_job(&h, "1.5");
    h.start(&[], &[job.to_str().unwrap()]);
    let job_pid = h.read_pid_file(&h.path("job.pid"), SECS_10);
    let state = h.wait_status("token-expired", SECS_10);
    assert_eq!(state["reason"], "pattern", "{state}");
    let matched_at: i64 = util::read(&h.path("matched_at")).trim().parse().unwrap();
    let ended_at = util::rfc3339_ms(state["lastBatchAt"].as_str().unwrap()).unwrap();
    assert!(
        ended_at - matched_at < 400,
        "the run ended {} ms after the matching line",
        ended_at - matched_at
    );
    assert!(
        duration_ms(&h, 1) < 1000,
        "ended long before its natural end"
    );
    assert!(!util::pid_alive(job_pid), "the job is still running");
    // Past the job's natural end (1.5 s after the line) it never wrote `late`.
    h.assert_holds("the job never finishes", Duration::from_millis(1800), |h| {
        !h.path("late").exists()
    });
}

#[test]
fn without_auth_kill_a_matching_job_runs_to_its_end_and_then_halts() {
    let mut h = Harness::new();
    let job = auth_job(&h, "0.5");
    h.start(&[], &[job.to_str().unwrap()]);
    let state = h.wait_status("token-expired", SECS_10);
    assert_eq!(state["reason"], "pattern", "{state}");
    assert_eq!(state["lastBatchExit"], 0, "{state}");
    assert!(h.path("late").exists(), "the job ran to its end");
    assert!(duration_ms(&h, 1) >= 500);
}

/// Waits for a finished failed run in backoff after at least two runs and
/// returns that state snapshot.
fn failed_twice(h: &mut Harness) -> serde_json::Value {
    let mut snapshot = serde_json::Value::Null;
    h.wait_until("a second failed run", SECS_10, |h| {
        let state = h.state().unwrap_or_default();
        let ok = state["status"] == "backoff" && state["iteration"].as_u64() >= Some(2);
        if ok {
            snapshot = state;
        }
        ok
    });
    snapshot
}

// See: SPEC §4, "A command that cannot be started".
#[test]
fn a_command_that_does_not_exist_fails_with_127_and_the_loop_goes_on() {
    let mut h = Harness::new();
    let missing = h.path("no-such-program");
    h.env("AGENT_BACKOFF_START", "300ms")
        .env("AGENT_BACKOFF_MAX", "300ms")
        .env("AGENT_MAX_FAILURES", "0");
    h.start(&[], &[missing.to_str().unwrap(), "--flag"]);
    let state = failed_twice(&mut h);
    assert_eq!(state["lastBatchExit"], 127, "{state}");
    assert_eq!(state["reason"], "command-not-found", "{state}");
    assert_eq!(state["lastOutcome"], "failure", "{state}");
    let log = util::read(&h.run_logs()[0]);
    let line = log
        .lines()
        .find(|l| l.starts_with("# jobloop: cannot start"))
        .unwrap_or_else(|| panic!("no cannot-start line in the run log:\n{log}"));
    assert!(line.contains("no-such-program"), "{line}");
    assert!(
        h.stderr().contains("cannot start the job"),
        "{}",
        h.stderr()
    );
    assert_eq!(h.stop().code(), Some(0));
}

#[test]
fn a_command_not_on_path_fails_with_127() {
    let mut h = Harness::new();
    h.env("AGENT_BACKOFF_START", "300ms")
        .env("AGENT_BACKOFF_MAX", "300ms")
        .env("AGENT_MAX_FAILURES", "0");
    h.start(&[], &["jobloop-test-no-such-command"]);
    let state = failed_twice(&mut h);
    assert_eq!(state["lastBatchExit"], 127, "{state}");
    assert_eq!(state["reason"], "command-not-found", "{state}");
}

#[test]
fn a_command_that_is_not_executable_fails_with_126() {
    let mut h = Harness::new();
    let job = h.script("job.sh", "exit 0");
    std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o644)).unwrap();
    h.env("AGENT_BACKOFF_START", "300ms")
        .env("AGENT_BACKOFF_MAX", "300ms")
        .env("AGENT_MAX_FAILURES", "0");
    h.start(&[], &[job.to_str().unwrap()]);
    let state = failed_twice(&mut h);
    assert_eq!(state["lastBatchExit"], 126, "{state}");
    assert_eq!(state["reason"], "not-executable", "{state}");
    let log = util::read(&h.run_logs()[0]);
    assert!(log.contains("# jobloop: cannot start"), "{log}");
}

// A backgrounded grandchild that keeps the output pipe open must not hold
// the iteration until it exits.
#[test]
fn a_grandchild_holding_the_output_open_does_not_hold_the_iteration() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "30s");
    h.start(&[], &["sh", "-c", "sleep 20 & echo main done; exit 0"]);
    let state = h.wait_status("idle", SECS_10);
    assert_eq!(state["lastBatchExit"], 0, "{state}");
    assert!(duration_ms(&h, 1) < 5000, "waited for the grandchild");
    let body = util::run_log_body(&h.run_logs()[0]);
    assert!(body.starts_with(b"main done\n"), "{body:?}");
    assert_eq!(h.stop().code(), Some(0));
}

// A job that exits 0 when told to stop still timed out: never a success.
#[test]
fn a_timed_out_job_that_exits_0_on_sigterm_is_still_a_timeout() {
    let mut h = Harness::new();
    let pid_file = h.path("job.pid");
    let job = h.script(
        "job.sh",
        &format!(
            "trap 'exit 0' TERM\necho $$ > '{}'\nwhile :; do sleep 0.05; done",
            pid_file.display()
        ),
    );
    h.env("AGENT_JOB_TIMEOUT", "200ms")
        .env("AGENT_BACKOFF_START", "30s")
        .env("AGENT_BACKOFF_MAX", "30s");
    h.start(&[], &[job.to_str().unwrap()]);
    let state = h.wait_status("backoff", SECS_10);
    assert_eq!(state["lastOutcome"], "timeout", "{state}");
    assert_eq!(state["reason"], "timeout", "{state}");
    assert_eq!(state["consecutiveFailures"], 1, "{state}");
    assert!(state["lastSuccessAt"].is_null(), "{state}");
}

#[test]
fn auth_kill_uses_sigkill_after_the_kill_grace_when_the_job_ignores_sigterm() {
    let mut h = Harness::new();
    let pid_file = h.path("job.pid");
    let job = h.script(
        "job.sh",
        &format!(
            "trap '' TERM\necho $$ > '{}'\necho 'HTTP 401 Unauthorized'\nwhile :; do sleep 0.05; done",
            pid_file.display()
        ),
    );
    h.env("AGENT_AUTH_KILL", "true")
        .env("AGENT_KILL_GRACE", "300ms");
    h.start(&[], &[job.to_str().unwrap()]);
    let job_pid = h.read_pid_file(&pid_file, SECS_10);
    let state = h.wait_status("token-expired", SECS_10);
    assert_eq!(state["reason"], "pattern", "{state}");
    assert_eq!(state["lastBatchExit"], 137, "{state}");
    let took = duration_ms(&h, 1);
    assert!((300..3000).contains(&took), "took {took} ms");
    assert!(!util::pid_alive(job_pid));
}
