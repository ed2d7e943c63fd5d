//! Absurd but valid settings (issue 6 item 8, its black-box half; the
//! property tests of the parsers are in `src/`): a backoff factor of 1000
//! with no failure limit, a 1 ms idle sleep with a 1-byte run-log limit.
//! The loop must not break, halt, stall or flood the disk.

use std::time::Duration;

use crate::util::Harness;

const SECS_60: Duration = Duration::from_secs(60);

// See: issue 6 item 8, "factor 1000, max 0 failures".
#[test]
fn factor_1000_and_no_failure_limit_back_off_at_the_cap_and_never_halt() {
    let mut h = Harness::new();
    h.env("AGENT_BACKOFF_FACTOR", "1000")
        .env("AGENT_MAX_FAILURES", "0")
        .env("AGENT_BACKOFF_START", "10ms")
        .env("AGENT_BACKOFF_MAX", "100ms");
    h.start(&[], &["false"]);
    let state = h.wait_iteration(20, SECS_60);
    h.wait_http();
    assert!(
        state["consecutiveFailures"].as_u64().unwrap() >= 19,
        "{state}"
    );
    let status = state["status"].as_str().unwrap();
    assert!(
        ["running", "backoff"].contains(&status),
        "0 = never halt: {state}"
    );
    assert!(
        state["backoffSeconds"].as_f64().unwrap() <= 0.1 + 1e-9,
        "the cap holds: {state}"
    );
    assert!(!h.marker("UNHEALTHY"));
    assert_eq!(h.scrape("jobloop_unhealthy"), 0.0);
    assert!(h.scrape("jobloop_backoff_seconds") <= 0.1 + 1e-9);
    assert_eq!(h.stop().code(), Some(0));
}

// See: issue 6 item 8, "a 1 ms idle sleep ... do not ... flood the disk".
#[test]
fn a_1_ms_idle_sleep_with_tight_retention_keeps_the_disk_bounded() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "1ms")
        .env("AGENT_LOG_KEEP", "20")
        .env("AGENT_RUN_LOG_MAX_BYTES", "1");
    let job = h.script("job.sh", "echo 'more than one byte of output'");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_iteration(500, SECS_60);
    let logs = h.run_logs();
    assert!(
        logs.len() <= 21,
        "retention keeps runs/ at AGENT_LOG_KEEP: {} files",
        logs.len()
    );
    let bytes: u64 = logs
        .iter()
        .map(|l| std::fs::metadata(l).map_or(0, |m| m.len()))
        .sum();
    assert!(bytes < 21 * 400, "runs/ holds {bytes} bytes");
    // The newest may be the run in progress; the one before it is done.
    let finished = crate::util::read(&logs[logs.len() - 2]);
    assert!(
        finished.contains("# jobloop truncated: dropped="),
        "the 1-byte limit is applied: {finished}"
    );
    h.wait_http();
    let deleted = h.scrape("jobloop_run_logs_deleted_total");
    assert!(deleted >= 450.0, "retention deleted {deleted}");
    let state_files = std::fs::read_dir(h.path("state")).unwrap().count();
    assert!(state_files <= 2, "the state dir holds {state_files} files");
    assert_eq!(h.stop().code(), Some(0));
    let stderr = h.stderr();
    let iterations = h.state().unwrap()["iteration"].as_u64().unwrap();
    let lines = stderr.lines().count() as u64;
    assert!(
        lines <= iterations + 10,
        "the daemon's log stays at about one line per run: {lines} lines, {iterations} runs"
    );
    println!(
        "faults_settings: 1 ms idle sleep: {iterations} runs, {} run logs kept ({bytes} bytes), \
         {deleted} deleted, {lines} log lines",
        logs.len()
    );
}
