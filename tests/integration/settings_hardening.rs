//! Hardening of the settings and of `status` (issue #12 items 2, 5 and 7):
//! durations over 100 years and timeouts of 0 are bad settings for `check`
//! and `run` alike; `check` hides the arguments of every command; `status`
//! caps what it reads, escapes what it prints, and takes `--url` wherever
//! AGENT_STATE_DIR is set.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::util::{jobloop, Harness};

/// Every duration setting: variable and flag.
const DURATIONS: [(&str, &str); 10] = [
    ("AGENT_BACKOFF_START", "--backoff-start"),
    ("AGENT_BACKOFF_MAX", "--backoff-max"),
    ("AGENT_IDLE_SLEEP", "--idle-sleep"),
    ("AGENT_JOB_TIMEOUT", "--job-timeout"),
    ("AGENT_KILL_GRACE", "--kill-grace"),
    ("AGENT_SHUTDOWN_GRACE", "--shutdown-grace"),
    ("AGENT_PREFLIGHT_TIMEOUT", "--preflight-timeout"),
    ("AGENT_RECOVER_INTERVAL", "--recover-interval"),
    ("AGENT_LOG_MAX_AGE", "--log-max-age"),
    ("AGENT_HOOK_TIMEOUT", "--hook-timeout"),
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `jobloop SUBCOMMAND [flags] -- true` with `env`, the log and state
/// directories inside `dir`.
fn settle(subcommand: &str, dir: &Path, env: &[(&str, &str)], flags: &[&str]) -> Output {
    let logs = dir.join("logs");
    let state = dir.join("state");
    let mut all_env = vec![
        ("AGENT_LOG_DIR", logs.to_str().unwrap()),
        ("AGENT_STATE_DIR", state.to_str().unwrap()),
        ("AGENT_LISTEN", "127.0.0.1:0"),
    ];
    all_env.extend_from_slice(env);
    let mut args = vec![subcommand];
    args.extend_from_slice(flags);
    args.extend(["--", "true"]);
    jobloop(&args, &all_env)
}

/// Asserts SPEC §1's rejection by both `check` and `run`: exit 78, one line
/// naming variable, flag and value with what is allowed, nothing created.
fn assert_rejected_by_check_and_run(
    env: &[(&str, &str)],
    flags: &[&str],
    (variable, flag, value): (&str, &str, &str),
    allowed: &str,
) {
    for subcommand in ["check", "run"] {
        let dir = tempfile::tempdir().unwrap();
        let output = settle(subcommand, dir.path(), env, flags);
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(78),
            "{subcommand} with {variable}={value:?}: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{subcommand}: one line: {stderr}");
        let prefix = format!("jobloop: invalid value '{value}' for {variable} ({flag}): ");
        assert!(lines[0].starts_with(&prefix), "{subcommand}: {}", lines[0]);
        assert!(lines[0].contains(allowed), "{subcommand}: {}", lines[0]);
        assert!(output.stdout.is_empty(), "{subcommand}: nothing on stdout");
        assert!(
            !dir.path().join("logs").exists() && !dir.path().join("state").exists(),
            "{subcommand} with {variable}={value:?} created nothing"
        );
    }
}

// See: issue #12 item 2, SPEC §1 "a duration over 100 years".
#[test]
fn every_duration_over_100_years_is_rejected_by_check_and_run() {
    for (variable, flag) in DURATIONS {
        // The backoff cap must be at least the start, so raise it first.
        let mut env = vec![(variable, "10000000000000000000")];
        if variable != "AGENT_BACKOFF_MAX" {
            env.push(("AGENT_BACKOFF_MAX", "100y"));
        }
        assert_rejected_by_check_and_run(
            &env,
            &[],
            (variable, flag, "10000000000000000000"),
            "up to 100 years",
        );
    }
    assert_rejected_by_check_and_run(
        &[],
        &["--job-timeout=101y"],
        ("AGENT_JOB_TIMEOUT", "--job-timeout", "101y"),
        "up to 100 years",
    );
}

// See: issue #12 item 2, "AGENT_HOOK_TIMEOUT=0 kills every hook at once".
#[test]
fn a_zero_hook_or_preflight_timeout_is_rejected_by_check_and_run() {
    for (variable, flag) in [
        ("AGENT_HOOK_TIMEOUT", "--hook-timeout"),
        ("AGENT_PREFLIGHT_TIMEOUT", "--preflight-timeout"),
    ] {
        for zero in ["0", "0s"] {
            assert_rejected_by_check_and_run(
                &[(variable, zero)],
                &[],
                (variable, flag, zero),
                "> 0",
            );
        }
    }
}

// Every value `check` accepts, `run` runs with (SPEC §1): the longest
// durations allowed do not crash the daemon.
#[test]
fn exactly_100_years_is_accepted_and_the_daemon_runs_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = settle("check", dir.path(), &[("AGENT_JOB_TIMEOUT", "100y")], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.lines().any(|l| l == "AGENT_JOB_TIMEOUT=100years"),
        "{stdout}"
    );

    let mut h = Harness::new();
    for variable in [
        "AGENT_JOB_TIMEOUT",
        "AGENT_HOOK_TIMEOUT",
        "AGENT_PREFLIGHT_TIMEOUT",
        "AGENT_RECOVER_INTERVAL",
        "AGENT_LOG_MAX_AGE",
        "AGENT_BACKOFF_MAX",
    ] {
        h.env(variable, "100y");
    }
    h.env("AGENT_PREFLIGHT_CMD", "true")
        .env("AGENT_ROTATE_CMD", "true")
        .env("AGENT_CLEANUP_CMD", "true");
    h.env("AGENT_IDLE_SLEEP", "1h");
    h.start(&[], &["true"]);
    let state = h.wait_status("idle", Duration::from_secs(20));
    assert_eq!(state["lastBatchExit"], 0, "{state}");
    assert_eq!(h.stop().code(), Some(0));
}

// See: issue #12 item 5: the commands' arguments may carry credentials.
#[test]
fn check_and_help_hide_the_arguments_of_the_preflight_rotate_and_cleanup_commands() {
    let env = [
        (
            "AGENT_PREFLIGHT_CMD",
            "/opt/check-tokens.sh --token pre-s3cret",
        ),
        ("AGENT_ROTATE_CMD", "/opt/rotate.sh rot-s3cret"),
        ("AGENT_CLEANUP_CMD", "KEY=clean-s3cret /opt/cleanup.sh -v"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let output = settle("check", dir.path(), &env, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    for expected in [
        "AGENT_PREFLIGHT_CMD=/opt/check-tokens.sh (2 arguments)",
        "AGENT_ROTATE_CMD=/opt/rotate.sh (1 arguments)",
        "AGENT_CLEANUP_CMD=(program hidden) (2 arguments)",
    ] {
        assert!(
            stdout.lines().any(|l| l == expected),
            "{expected}:\n{stdout}"
        );
    }
    let help = jobloop(&["run", "--help"], &env);
    assert_eq!(help.status.code(), Some(0));
    for output in [&stdout, &text(&help.stdout), &text(&help.stderr)] {
        assert!(
            !output.contains("s3cret"),
            "a command's argument leaks:\n{output}"
        );
    }
}

// See: issue #12 item 7: in the worker's container AGENT_STATE_DIR is set.
#[test]
fn status_url_works_where_agent_state_dir_is_set() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "1h");
    h.start(&[], &["true"]);
    h.wait_status("idle", Duration::from_secs(10));
    let url = format!("http://127.0.0.1:{}", h.port);
    let elsewhere = tempfile::tempdir().unwrap();
    let output = jobloop(
        &["status", "--url", &url],
        &[("AGENT_STATE_DIR", elsewhere.path().to_str().unwrap())],
    );
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("status:               idle"), "{stdout}");
    assert!(
        stdout.contains(&format!("GET {url}/state")),
        "the URL was asked: {stdout}"
    );

    // Without a flag, the variable still names the state directory.
    let state = h.path("state");
    let output = jobloop(&["status"], &[("AGENT_STATE_DIR", state.to_str().unwrap())]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("state.json"), "{stdout}");
    assert_eq!(h.stop().code(), Some(0));
}

/// A state whose strings carry terminal escapes: clear screen, set title,
/// bell, a C1 CSI and a right-to-left override.
fn hostile_state() -> String {
    serde_json::json!({
        "status": "idle\u{1b}[2J",
        "reason": "x\u{9b}31m",
        "runLog": "/logs/\u{1b}]0;pwned\u{7}\u{202e}gol.txt",
        "traceId": "\u{1b}[31mred",
        "iteration": 4,
        "version": "0.1.0",
    })
    .to_string()
}

/// Asserts that `output` holds no character a terminal would act on.
fn assert_inert(what: &str, output: &str) {
    let bad: Vec<char> = output
        .chars()
        .filter(|&c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c))
        .collect();
    assert!(bad.is_empty(), "{what} prints raw {bad:?}:\n{output:?}");
}

#[test]
fn status_escapes_control_characters_from_a_state_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), hostile_state()).unwrap();
    let state_dir = dir.path().to_str().unwrap();
    let output = jobloop(&["status", "--state-dir", state_dir], &[]);
    let stdout = text(&output.stdout);
    // A status word that is not the contract's is unknown: shown as `-`,
    // and not a running daemon (exit 1).
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert_inert("status", &stdout);
    assert!(stdout.contains("status:               -\n"), "{stdout}");
    assert!(stdout.contains(r"\u{7}\u{202e}gol.txt"), "{stdout}");

    let output = jobloop(&["status", "--json", "--state-dir", state_dir], &[]);
    let stdout = text(&output.stdout);
    assert_inert("status --json", &stdout);
    let parsed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let original: serde_json::Value = serde_json::from_str(&hostile_state()).unwrap();
    assert_eq!(parsed, original, "the escaped JSON is the same JSON");
}

/// Serves one connection on 127.0.0.1: reads the request head, answers
/// `response`, closes. Returns the base URL.
fn serve_once(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        // The client may hang up early (that is the point of a cap).
        let _ = stream.write_all(&response);
    });
    url
}

#[test]
fn status_escapes_control_characters_from_a_server_answer() {
    let body = hostile_state();
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let url = serve_once(answer.into_bytes());
    let output = jobloop(&["status", "--url", &url], &[]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert_inert("status --url", &stdout);
    assert!(stdout.contains(r"\u{1b}[31mred"), "{stdout}");

    let url = serve_once(b"HTTP/1.1 500 \x1b[2J\x1b]0;pwned\x07\r\n\r\n".to_vec());
    let output = jobloop(&["status", "--url", &url], &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_inert("status's error", &stderr);
    assert!(stderr.contains(r"500 \u{1b}[2J"), "{stderr}");
}

/// A valid state JSON of about 2 MiB.
fn oversized_state() -> String {
    serde_json::json!({"status": "idle", "padding": "x".repeat(2 << 20)}).to_string()
}

#[test]
fn status_refuses_a_state_file_over_1_mib_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), oversized_state()).unwrap();
    let output = jobloop(
        &["status", "--state-dir", dir.path().to_str().unwrap()],
        &[],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("larger than 1 MiB"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn status_refuses_an_answer_over_1_mib_with_one_line() {
    let body = oversized_state();
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let url = serve_once(answer.into_bytes());
    let output = jobloop(&["status", "--url", &url], &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("larger than 1 MiB"), "{stderr}");
    assert!(output.stdout.is_empty());
}
