//! state.json (SPEC §3): every key, atomic under a reader polling it
//! through fast iterations, and an interrupted iteration noticed at start.

use std::time::Duration;

use crate::util::{self, daemon, Harness};

const SECS_10: Duration = Duration::from_secs(10);

const STATUSES: [&str; 8] = [
    "starting",
    "running",
    "idle",
    "backoff",
    "unhealthy",
    "token-expired",
    "stopping",
    "stopped",
];

const KEYS: [&str; 15] = [
    "status",
    "reason",
    "currentBatchStartedAt",
    "consecutiveFailures",
    "lastBatchAt",
    "lastBatchExit",
    "lastOutcome",
    "lastSuccessAt",
    "iteration",
    "backoffSeconds",
    "runLog",
    "traceId",
    "pid",
    "jobPid",
    "version",
];

/// Checks every SPEC key's presence and type; returns a description of
/// the first problem.
fn check_shape(state: &serde_json::Value) -> Result<(), String> {
    let object = state.as_object().ok_or("not an object")?;
    for key in KEYS {
        if !object.contains_key(key) {
            return Err(format!("key {key} missing"));
        }
    }
    let status = state["status"].as_str().ok_or("status is not a string")?;
    if !STATUSES.contains(&status) {
        return Err(format!("unknown status {status}"));
    }
    let time_or_null = |key: &str| {
        state[key].is_null()
            || state[key]
                .as_str()
                .is_some_and(|t| util::rfc3339_ms(t).is_some())
    };
    for key in ["currentBatchStartedAt", "lastBatchAt", "lastSuccessAt"] {
        if !time_or_null(key) {
            return Err(format!("{key} is not an RFC 3339 UTC time: {}", state[key]));
        }
    }
    let checks = [
        (
            "reason",
            state["reason"].is_null() || state["reason"].is_string(),
        ),
        ("consecutiveFailures", state["consecutiveFailures"].is_u64()),
        (
            "lastBatchExit",
            state["lastBatchExit"].is_null() || state["lastBatchExit"].is_i64(),
        ),
        ("iteration", state["iteration"].is_u64()),
        ("backoffSeconds", state["backoffSeconds"].is_number()),
        (
            "runLog",
            state["runLog"].is_null() || state["runLog"].is_string(),
        ),
        (
            "traceId",
            state["traceId"].is_null() || state["traceId"].as_str().is_some_and(|t| t.len() == 32),
        ),
        ("pid", state["pid"].is_u64()),
        (
            "jobPid",
            state["jobPid"].is_null() || state["jobPid"].is_u64(),
        ),
        (
            "version",
            state["version"].as_str().is_some_and(|v| !v.is_empty()),
        ),
    ];
    for (key, ok) in checks {
        if !ok {
            return Err(format!("{key} has the wrong type: {}", state[key]));
        }
    }
    Ok(())
}

// See: SPEC §3, "rewritten atomically ... readable at any moment".
#[test]
fn state_json_parses_at_every_moment_while_a_reader_polls_200_fast_iterations() {
    let mut h = daemon(&[("AGENT_IDLE_SLEEP", "0")]);
    let file = h.path("state/state.json");
    let mut reads = 0u64;
    let mut last_iteration = 0;
    let mut statuses = std::collections::BTreeSet::new();
    // A reader as fast as it can go: no pause between reads.
    let reached = util::poll_every(Duration::ZERO, Duration::from_secs(90), || {
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && reads == 0 => return false,
            Err(e) => panic!("state.json unreadable after {reads} good reads: {e}"),
        };
        let state: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "state.json did not parse after {reads} good reads: {e}\n{}",
                String::from_utf8_lossy(&bytes)
            )
        });
        if let Err(problem) = check_shape(&state) {
            panic!("read {reads}: {problem}\n{state}");
        }
        let iteration = state["iteration"].as_u64().unwrap();
        assert!(iteration >= last_iteration, "iteration went back: {state}");
        last_iteration = iteration;
        statuses.insert(state["status"].as_str().unwrap().to_string());
        reads += 1;
        iteration >= 200
    });
    if !reached {
        h.fail(&format!(
            "200 iterations not reached in 90 s; last {last_iteration}"
        ));
    }
    assert!(reads >= 200, "only {reads} reads");
    assert!(
        statuses.contains("running"),
        "never saw a run: {statuses:?}"
    );
    assert_eq!(h.stop().code(), Some(0));
    let state = h.state().unwrap();
    assert_eq!(state["status"], "stopped");
    let mut names: Vec<String> = std::fs::read_dir(h.path("state"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["state.json"], "no temp file is left behind");
}

// See: SPEC §3, the keys of state.json.
#[test]
fn state_json_has_every_key_while_a_job_runs_and_after_it() {
    let mut h = Harness::new();
    let pid_file = h.path("job.pid");
    let job = h.script(
        "job.sh",
        &format!("echo $$ > '{}'\nexec sleep 30", pid_file.display()),
    );
    h.start(&[], &[job.to_str().unwrap()]);
    let job_pid = h.read_pid_file(&pid_file, SECS_10);
    let state = h.wait_status("running", SECS_10);
    check_shape(&state).unwrap_or_else(|p| panic!("{p}\n{state}"));
    assert_eq!(state["pid"], h.pid(), "{state}");
    assert_eq!(state["jobPid"], job_pid, "{state}");
    assert_eq!(state["iteration"], 1, "{state}");
    assert_eq!(state["version"], env!("CARGO_PKG_VERSION"), "{state}");
    assert!(state["currentBatchStartedAt"].is_string(), "{state}");
    assert!(
        state["lastBatchAt"].is_null(),
        "no run has ended yet: {state}"
    );
    assert_eq!(state["consecutiveFailures"], 0, "{state}");
    let log = &h.run_logs()[0];
    assert_eq!(state["runLog"], log.to_str().unwrap(), "{state}");
    let header = util::run_log_header(log);
    assert_eq!(state["traceId"].as_str(), Some(header.trace_id.as_str()));
    assert_eq!(
        util::rfc3339_ms(state["currentBatchStartedAt"].as_str().unwrap()).map(|ms| ms / 1000),
        Some(header.start_ms / 1000),
        "currentBatchStartedAt is the run's start"
    );
    assert_eq!(h.stop().code(), Some(0));
    let state = h.state().unwrap();
    check_shape(&state).unwrap_or_else(|p| panic!("{p}\n{state}"));
    assert_eq!(state["status"], "stopped", "{state}");
    assert!(state["jobPid"].is_null(), "{state}");
    assert_eq!(state["lastBatchExit"], 143, "stopped by SIGTERM: {state}");
}

// See: SPEC §3, "A state.json left at `running` by a jobloop that died is
// noticed at start".
#[test]
fn a_state_left_at_running_is_noticed_at_start_as_an_interrupted_iteration() {
    let mut h = Harness::new();
    let runs = h.path("logs/runs");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::create_dir_all(h.path("state")).unwrap();
    let old_log = runs.join("20200101T000000Z.log");
    std::fs::write(&old_log, "# jobloop iteration=7 trace_id=0123456789abcdef0123456789abcdef span_id=0123456789abcdef start=2020-01-01T00:00:00Z\npartial output\n").unwrap();
    let previous = serde_json::json!({
        "status": "running",
        "reason": null,
        "currentBatchStartedAt": "2020-01-01T00:00:00Z",
        "consecutiveFailures": 0,
        "lastBatchAt": null,
        "lastBatchExit": null,
        "iteration": 7,
        "backoffSeconds": 0,
        "runLog": old_log.to_str().unwrap(),
        "traceId": "0123456789abcdef0123456789abcdef",
        "pid": 999_999,
        "jobPid": null,
        "version": "0.0.0"
    });
    std::fs::write(h.path("state/state.json"), previous.to_string()).unwrap();
    h.env("AGENT_IDLE_SLEEP", "60s");
    h.start(&[], &["true"]);
    h.wait_status("idle", SECS_10);
    let stderr = h.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("interrupted"))
        .unwrap_or_else(|| panic!("no line about the interrupted iteration:\n{stderr}"));
    assert!(
        line.contains(old_log.to_str().unwrap()),
        "names the run log: {line}"
    );
    let text = util::read(&old_log);
    assert!(
        text.starts_with("# jobloop iteration=7 ")
            && text.contains("partial output\n# jobloop interrupted"),
        "the interrupted run log says so:\n{text}"
    );
    h.wait_http();
    let (code, scrape) = h.get("/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        util::metric(&scrape, "jobloop_interrupted_iterations_total"),
        Some(1.0),
        "{scrape}"
    );
}

#[test]
fn a_clean_previous_state_is_not_counted_as_interrupted() {
    let mut h = daemon(&[("AGENT_IDLE_SLEEP", "60s")]);
    h.wait_status("idle", SECS_10);
    assert_eq!(h.stop().code(), Some(0));
    h.start(&[], &["true"]);
    let state = h.wait_status("idle", SECS_10);
    assert_eq!(state["iteration"], 1, "a new daemon counts from 1: {state}");
    h.wait_http();
    let (_, scrape) = h.get("/metrics");
    assert_eq!(
        util::metric(&scrape, "jobloop_interrupted_iterations_total"),
        Some(0.0),
        "{scrape}"
    );
    assert!(!h.stderr().contains("interrupted"), "{}", h.stderr());
}

#[test]
fn a_job_left_running_by_a_killed_jobloop_is_stopped_by_the_next_one() {
    let mut h = Harness::new();
    let pid_file = h.path("job.pid");
    let job = h.script(
        "job.sh",
        &format!("echo $$ > '{}'\nexec sleep 60", pid_file.display()),
    );
    h.start(&[], &[job.to_str().unwrap()]);
    let orphan = h.read_pid_file(&pid_file, SECS_10);
    h.wait_status("running", SECS_10);
    h.kill();
    assert!(
        util::pid_alive(orphan),
        "the job outlived the SIGKILLed jobloop"
    );
    std::fs::remove_file(&pid_file).unwrap();
    h.env("AGENT_IDLE_SLEEP", "60s");
    h.start(&[], &["true"]);
    h.wait_until("the orphaned job to be stopped", SECS_10, |_| {
        !util::pid_alive(orphan)
    });
    h.wait_status("idle", SECS_10);
    assert!(h.stderr().contains("interrupted"), "{}", h.stderr());
}
