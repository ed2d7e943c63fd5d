//! `jobloop status`: readable from a running daemon or its state file, with
//! exit codes a script can use (0 working, 1 halted or stopped, 2 unknown).

use std::time::Duration;

use crate::util::{jobloop, Harness};

#[test]
fn status_from_the_daemon_and_from_the_state_file() {
    let mut h = Harness::new();
    let job = h.script("job.sh", "exit 3");
    h.start(&[], &[job.to_str().unwrap()]);
    let state = h.wait_status("token-expired", Duration::from_secs(10));
    let url = format!("http://127.0.0.1:{}", h.port);
    let output = jobloop(&["status", "--url", &url], &[]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "halted: {text}");
    assert!(text.contains("token-expired (exit-code)"), "{text}");
    assert!(text.contains(state["traceId"].as_str().unwrap()), "{text}");
    assert!(text.contains(state["runLog"].as_str().unwrap()), "{text}");
    assert!(
        text.contains("last run:             token_expired exit=3"),
        "{text}"
    );
    assert!(h.stop().success());

    let dir = h.path("state");
    let output = jobloop(&["status", "--state-dir", dir.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "stopped: {text}");
    assert!(text.contains("status:               stopped"), "{text}");
}

#[test]
fn status_of_a_working_daemon_exits_zero() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "1h");
    h.start(&[], &["true"]);
    h.wait_status("idle", Duration::from_secs(10));
    let output = jobloop(
        &["status", "--url", &format!("http://127.0.0.1:{}", h.port)],
        &[],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let json = jobloop(
        &[
            "status",
            "--json",
            "--url",
            &format!("http://127.0.0.1:{}", h.port),
        ],
        &[],
    );
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["status"], "idle");
}

#[test]
fn status_without_a_daemon_or_state_exits_two() {
    let dir = tempfile::tempdir().unwrap();
    let output = jobloop(
        &["status", "--state-dir", dir.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let port = crate::util::free_port();
    let output = jobloop(
        &["status", "--url", &format!("http://127.0.0.1:{port}")],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach"));
}

#[test]
fn json_log_format_has_one_object_per_line_with_the_iteration_fields() {
    let mut h = Harness::new();
    h.env("AGENT_LOG_FORMAT", "json")
        .env("AGENT_IDLE_SLEEP", "1h");
    h.start(&[], &["true"]);
    h.wait_status("idle", Duration::from_secs(10));
    assert!(h.stop().success());
    let stderr = h.stderr();
    let mut finished = 0;
    for line in stderr.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if event["message"] == "iteration finished" {
            finished += 1;
            for key in [
                "iteration",
                "outcome",
                "exit_code",
                "duration_ms",
                "run_log",
                "trace_id",
            ] {
                assert!(!event[key].is_null(), "{key} missing in {line}");
            }
        }
    }
    assert_eq!(finished, 1, "{stderr}");
}
