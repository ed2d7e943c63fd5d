//! Settings (SPEC §1): every bad value stops jobloop with exactly one line
//! on stderr and exit 78 before anything is created; flags beat variables;
//! fatal start-up errors exit 1 with one line.

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::util::{self, jobloop, Harness};

/// Runs `jobloop run` with the log and state directories inside a fresh
/// temp dir, plus `env` and `flags`; returns the output and the temp dir.
fn run_with(env: &[(&str, &str)], flags: &[&str], job: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let state = dir.path().join("state");
    let port = format!("127.0.0.1:{}", util::free_port());
    let mut all_env = vec![
        ("AGENT_LOG_DIR", logs.to_str().unwrap()),
        ("AGENT_STATE_DIR", state.to_str().unwrap()),
        ("AGENT_LISTEN", port.as_str()),
    ];
    all_env.retain(|(k, _)| !env.iter().any(|(key, _)| key == k));
    all_env.extend_from_slice(env);
    let mut args = vec!["run"];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(job);
    let output = jobloop(&args, &all_env);
    (output, dir)
}

/// Asserts the SPEC §1 rejection: exit 78, exactly one stderr line naming
/// the variable, the flag and the value, nothing created.
fn assert_rejected(output: &Output, dir: &Path, variable: &str, flag: &str, value: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(78),
        "exit code for {variable}={value:?}; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one line for {variable}={value:?}:\n{stderr}"
    );
    let prefix = format!("jobloop: invalid value '{value}' for {variable} ({flag}): ");
    assert!(
        lines[0].starts_with(&prefix) && lines[0].len() > prefix.len(),
        "line names the variable, flag, value and what is allowed: {:?}",
        lines[0]
    );
    assert!(output.stdout.is_empty(), "nothing on stdout");
    assert!(
        !dir.join("logs").exists(),
        "no log dir created for {variable}"
    );
    assert!(
        !dir.join("state").exists(),
        "no state dir created for {variable}"
    );
}

/// Rejects one bad variable value with the job `true`.
fn assert_env_rejected(variable: &str, flag: &str, value: &str) {
    let (output, dir) = run_with(&[(variable, value)], &[], &["true"]);
    assert_rejected(&output, dir.path(), variable, flag, value);
}

// See: SPEC §1, the bad-settings examples.
#[test]
fn a_backoff_factor_of_zero_is_rejected_with_one_line_and_exit_78() {
    assert_env_rejected("AGENT_BACKOFF_FACTOR", "--backoff-factor", "0");
}

#[test]
fn a_backoff_factor_below_one_is_rejected() {
    assert_env_rejected("AGENT_BACKOFF_FACTOR", "--backoff-factor", "0.5");
}

#[test]
fn a_backoff_max_below_the_backoff_start_is_rejected() {
    let (output, dir) = run_with(
        &[("AGENT_BACKOFF_START", "5s"), ("AGENT_BACKOFF_MAX", "1s")],
        &[],
        &["true"],
    );
    assert_rejected(
        &output,
        dir.path(),
        "AGENT_BACKOFF_MAX",
        "--backoff-max",
        "1s",
    );
}

#[test]
fn an_idle_sleep_of_soon_is_rejected() {
    assert_env_rejected("AGENT_IDLE_SLEEP", "--idle-sleep", "soon");
}

#[test]
fn an_invalid_auth_regex_is_rejected() {
    assert_env_rejected("AGENT_AUTH_PATTERN", "--auth-pattern", "(unclosed");
}

#[test]
fn a_listen_address_of_nowhere_is_rejected() {
    assert_env_rejected("AGENT_LISTEN", "--listen", "nowhere");
}

#[test]
fn an_empty_command_is_rejected_with_exit_78_and_one_line() {
    for job in [&[][..], &[""][..]] {
        let (output, dir) = run_with(&[], &[], job);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "job {job:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("jobloop: "), "{stderr}");
        assert!(stderr.contains("COMMAND"), "names the command: {stderr}");
        assert!(!dir.path().join("logs").exists());
        assert!(!dir.path().join("state").exists());
    }
}

#[test]
fn every_other_setting_rejects_a_bad_value_with_one_line_and_exit_78() {
    let cases = [
        ("AGENT_MAX_FAILURES", "--max-failures", "-1"),
        ("AGENT_MAX_FAILURES", "--max-failures", "five"),
        ("AGENT_BACKOFF_START", "--backoff-start", "later"),
        ("AGENT_BACKOFF_FACTOR", "--backoff-factor", "double"),
        ("AGENT_BACKOFF_MAX", "--backoff-max", "-3"),
        ("AGENT_BACKOFF_JITTER", "--backoff-jitter", "1.5"),
        ("AGENT_BACKOFF_JITTER", "--backoff-jitter", "-0.1"),
        ("AGENT_AUTH_EXIT_CODE", "--auth-exit-code", "three"),
        ("AGENT_AUTH_EXIT_CODE", "--auth-exit-code", "256"),
        ("AGENT_AUTH_PATTERN", "--auth-pattern", "a[z-a]"),
        ("AGENT_AUTH_KILL", "--auth-kill", "maybe"),
        ("AGENT_JOB_TIMEOUT", "--job-timeout", "forever"),
        ("AGENT_KILL_GRACE", "--kill-grace", "1 fortnight"),
        ("AGENT_SHUTDOWN_GRACE", "--shutdown-grace", "x"),
        ("AGENT_PREFLIGHT_TIMEOUT", "--preflight-timeout", "abc"),
        ("AGENT_RECOVER_INTERVAL", "--recover-interval", "often"),
        ("AGENT_LOG_KEEP", "--log-keep", "all"),
        ("AGENT_LOG_MAX_AGE", "--log-max-age", "old"),
        ("AGENT_LOG_MAX_BYTES", "--log-max-bytes", "lots"),
        ("AGENT_LOG_MAX_BYTES", "--log-max-bytes", "5XB"),
        ("AGENT_RUN_LOG_MAX_BYTES", "--run-log-max-bytes", "big"),
        ("AGENT_HOOK_TIMEOUT", "--hook-timeout", "never"),
        ("AGENT_LISTEN", "--listen", "127.0.0.1:99999"),
        ("AGENT_LOG_FORMAT", "--log-format", "xml"),
    ];
    for (variable, flag, value) in cases {
        assert_env_rejected(variable, flag, value);
    }
}

#[test]
fn a_bad_flag_value_is_rejected_the_same_way_as_a_bad_variable() {
    let (output, dir) = run_with(&[], &["--idle-sleep", "soon"], &["true"]);
    assert_rejected(
        &output,
        dir.path(),
        "AGENT_IDLE_SLEEP",
        "--idle-sleep",
        "soon",
    );
}

#[test]
fn an_unknown_flag_is_a_usage_error_with_exit_2() {
    let (output, dir) = run_with(&[], &["--no-such-flag"], &["true"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    assert!(!dir.path().join("logs").exists());
    assert!(!dir.path().join("state").exists());
}

/// The effective value of `variable` printed by `jobloop check`.
fn checked(env: &[(&str, &str)], flags: &[&str], variable: &str) -> String {
    let mut args = vec!["check"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "true"]);
    let output = jobloop(&args, env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "check exit code; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let prefix = format!("{variable}=");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{variable} not printed by check:\n{stdout}"))
        .to_string()
}

#[test]
fn a_flag_beats_the_variable_and_the_variable_beats_the_default() {
    assert_eq!(checked(&[], &[], "AGENT_IDLE_SLEEP"), "2s");
    assert_eq!(
        checked(&[("AGENT_IDLE_SLEEP", "7s")], &[], "AGENT_IDLE_SLEEP"),
        "7s"
    );
    assert_eq!(
        checked(
            &[("AGENT_IDLE_SLEEP", "7s")],
            &["--idle-sleep", "3s"],
            "AGENT_IDLE_SLEEP"
        ),
        "3s"
    );
    assert_eq!(
        checked(
            &[("AGENT_MAX_FAILURES", "9")],
            &["--max-failures=4"],
            "AGENT_MAX_FAILURES"
        ),
        "4"
    );
}

#[test]
fn a_good_flag_overrides_a_bad_variable() {
    assert_eq!(
        checked(
            &[("AGENT_BACKOFF_FACTOR", "0")],
            &["--backoff-factor", "3"],
            "AGENT_BACKOFF_FACTOR"
        ),
        "3"
    );
}

#[test]
fn check_prints_every_setting_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let state = dir.path().join("state");
    let output = jobloop(
        &["check", "--", "true"],
        &[
            ("AGENT_LOG_DIR", logs.to_str().unwrap()),
            ("AGENT_STATE_DIR", state.to_str().unwrap()),
        ],
    );
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "AGENT_MAX_FAILURES",
        "AGENT_BACKOFF_START",
        "AGENT_BACKOFF_FACTOR",
        "AGENT_BACKOFF_MAX",
        "AGENT_BACKOFF_JITTER",
        "AGENT_IDLE_SLEEP",
        "AGENT_AUTH_EXIT_CODE",
        "AGENT_AUTH_PATTERN",
        "AGENT_AUTH_KILL",
        "AGENT_JOB_TIMEOUT",
        "AGENT_KILL_GRACE",
        "AGENT_SHUTDOWN_GRACE",
        "AGENT_PREFLIGHT_CMD",
        "AGENT_PREFLIGHT_TIMEOUT",
        "AGENT_RECOVER_INTERVAL",
        "AGENT_LOG_DIR",
        "AGENT_STATE_DIR",
        "AGENT_LOG_KEEP",
        "AGENT_LOG_MAX_AGE",
        "AGENT_LOG_MAX_BYTES",
        "AGENT_RUN_LOG_MAX_BYTES",
        "AGENT_ROTATE_CMD",
        "AGENT_CLEANUP_CMD",
        "AGENT_LISTEN",
        "AGENT_LOG_FORMAT",
        "AGENT_LOG_LEVEL",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{variable}="))),
            "{variable} missing from check:\n{stdout}"
        );
    }
    assert!(!logs.exists() && !state.exists(), "check creates nothing");
}

#[test]
fn durations_accept_bare_seconds_and_humantime_and_sizes_accept_binary_units() {
    assert_eq!(
        checked(&[("AGENT_BACKOFF_START", "5")], &[], "AGENT_BACKOFF_START"),
        "5s"
    );
    assert_eq!(
        checked(&[("AGENT_BACKOFF_MAX", "300")], &[], "AGENT_BACKOFF_MAX"),
        "5m"
    );
    assert_eq!(
        checked(&[("AGENT_IDLE_SLEEP", "500ms")], &[], "AGENT_IDLE_SLEEP"),
        "500ms"
    );
    assert_eq!(
        checked(&[("AGENT_JOB_TIMEOUT", "1h 30m")], &[], "AGENT_JOB_TIMEOUT"),
        "1h 30m"
    );
    assert_eq!(
        checked(
            &[("AGENT_RUN_LOG_MAX_BYTES", "64KiB")],
            &[],
            "AGENT_RUN_LOG_MAX_BYTES"
        ),
        "64KiB"
    );
    assert_eq!(
        checked(
            &[("AGENT_LOG_MAX_BYTES", "1048576")],
            &[],
            "AGENT_LOG_MAX_BYTES"
        ),
        "1MiB"
    );
}

// The flag beats the variable in the running daemon too, not only in `check`.
#[test]
fn a_max_failures_flag_beats_the_variable_in_the_running_loop() {
    let mut h = Harness::new();
    h.env("AGENT_MAX_FAILURES", "1")
        .env("AGENT_BACKOFF_START", "10ms")
        .env("AGENT_BACKOFF_MAX", "10ms");
    h.start(&["--max-failures", "3"], &["sh", "-c", "exit 1"]);
    let state = h.wait_status("unhealthy", Duration::from_secs(10));
    assert_eq!(state["consecutiveFailures"], 3, "{state}");
    assert_eq!(state["iteration"], 3, "{state}");
}

/// Asserts a fatal start-up error: exit 1, one `jobloop: ` line.
fn assert_fatal(output: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what}: exit code; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: exactly one line:\n{stderr}");
    assert!(lines[0].starts_with("jobloop: "), "{what}: {stderr}");
}

// The directories that are, or lie under, a regular file: see
// faults::disk::a_log_dir_or_state_dir_that_is_a_file_is_one_line_and_exit_1.

#[test]
fn a_listen_port_that_is_taken_is_fatal_at_start_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (output, dir) = run_with(&[("AGENT_LISTEN", address.as_str())], &[], &["true"]);
    assert_fatal(&output, "port taken");
    let state = dir.path().join("state").join("state.json");
    if let Ok(text) = std::fs::read_to_string(&state) {
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_ne!(value["status"], "running", "no job was started: {value}");
    }
    let runs = dir.path().join("logs").join("runs");
    let count = std::fs::read_dir(&runs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 0, "no job ran");
}
