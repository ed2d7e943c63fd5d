//! The loop (SPEC §2): each classification path with state.json and the
//! markers checked, the backoff sequence, halts, resumes and the preflight.

use std::time::Duration;

use crate::util::{self, daemon, Harness};

const SECS_10: Duration = Duration::from_secs(10);

/// A job script that counts its runs in `count` and then runs the shell
/// `case` arms in `arms` on `$n` (the run number, from 1).
fn counting_job(h: &Harness, arms: &str) -> String {
    let count = h.path("count");
    let body = format!(
        "n=$(cat '{count}' 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > '{count}'\ncase $n in\n{arms}\nesac",
        count = count.display()
    );
    h.script("job.sh", &body).to_str().unwrap().to_string()
}

/// Asserts which marker files exist.
fn assert_markers(h: &Harness, unhealthy: bool, token_expired: bool) {
    assert_eq!(
        h.marker("UNHEALTHY"),
        unhealthy,
        "UNHEALTHY marker; state {:?}",
        h.state()
    );
    assert_eq!(
        h.marker("TOKEN_EXPIRED"),
        token_expired,
        "TOKEN_EXPIRED marker; state {:?}",
        h.state()
    );
}

/// Checks that no further iteration starts for a while.
fn assert_no_more_runs(h: &mut Harness, iterations: u64) {
    h.assert_holds("no new job while halted", Duration::from_millis(400), |h| {
        h.state()
            .is_some_and(|s| s["iteration"].as_u64() == Some(iterations))
            && h.run_logs().len() as u64 == iterations
    });
}

// See: SPEC §2, classify step 2.
#[test]
fn a_job_that_exits_0_makes_the_loop_idle_with_no_markers() {
    let mut h = daemon(&[("AGENT_IDLE_SLEEP", "30s")]);
    let state = h.wait_status("idle", SECS_10);
    assert_eq!(state["iteration"], 1, "{state}");
    assert_eq!(state["lastBatchExit"], 0, "{state}");
    assert_eq!(state["lastOutcome"], "success", "{state}");
    assert_eq!(state["consecutiveFailures"], 0, "{state}");
    assert_eq!(state["backoffSeconds"], 0.0, "{state}");
    assert!(state["reason"].is_null(), "{state}");
    assert!(state["jobPid"].is_null(), "{state}");
    assert!(
        state["lastSuccessAt"]
            .as_str()
            .is_some_and(|t| util::rfc3339_ms(t).is_some()),
        "{state}"
    );
    assert!(
        state["lastBatchAt"]
            .as_str()
            .is_some_and(|t| util::rfc3339_ms(t).is_some()),
        "{state}"
    );
    assert_markers(&h, false, false);
    assert_eq!(h.stop().code(), Some(0));
}

// See: SPEC §2, classify step 3 (below the limit).
#[test]
fn a_failing_job_backs_off_with_the_failure_counted_and_no_markers() {
    let mut h = Harness::new();
    h.env("AGENT_BACKOFF_START", "30s")
        .env("AGENT_BACKOFF_MAX", "60s");
    h.start(&[], &["sh", "-c", "exit 7"]);
    let state = h.wait_status("backoff", SECS_10);
    assert_eq!(state["iteration"], 1, "{state}");
    assert_eq!(state["lastBatchExit"], 7, "{state}");
    assert_eq!(state["lastOutcome"], "failure", "{state}");
    assert_eq!(state["consecutiveFailures"], 1, "{state}");
    assert_eq!(state["backoffSeconds"], 30.0, "{state}");
    assert_eq!(state["reason"], "exit-code", "{state}");
    assert!(state["lastSuccessAt"].is_null(), "{state}");
    assert_markers(&h, false, false);
    assert_eq!(h.stop().code(), Some(0));
}

#[test]
fn a_job_killed_by_a_signal_is_a_failure_with_exit_128_plus_the_signal() {
    let mut h = Harness::new();
    h.env("AGENT_BACKOFF_START", "30s")
        .env("AGENT_BACKOFF_MAX", "60s");
    h.start(&[], &["sh", "-c", "kill -9 $$"]);
    let state = h.wait_status("backoff", SECS_10);
    assert_eq!(state["lastBatchExit"], 137, "{state}");
    assert_eq!(state["lastOutcome"], "failure", "{state}");
    assert_eq!(state["consecutiveFailures"], 1, "{state}");
    assert_markers(&h, false, false);
}

// See: SPEC §2, classify step 3 (the limit reached) and BASELINE Q5.
#[test]
fn max_failures_halts_as_unhealthy_with_the_unhealthy_marker_only() {
    let mut h = Harness::new();
    std::fs::create_dir_all(h.path("state")).unwrap();
    h.env("AGENT_MAX_FAILURES", "3")
        .env("AGENT_BACKOFF_START", "10ms")
        .env("AGENT_BACKOFF_MAX", "10ms");
    h.start(&[], &["sh", "-c", "exit 1"]);
    let state = h.wait_status("unhealthy", SECS_10);
    assert_eq!(state["reason"], "max-failures", "{state}");
    assert_eq!(state["consecutiveFailures"], 3, "{state}");
    assert_eq!(state["iteration"], 3, "{state}");
    assert_eq!(state["lastBatchExit"], 1, "{state}");
    assert_eq!(state["lastOutcome"], "failure", "{state}");
    assert_eq!(state["backoffSeconds"], 0.0, "{state}");
    assert_markers(&h, true, false);
    assert_no_more_runs(&mut h, 3);
    assert_eq!(h.stop().code(), Some(0));
}

#[test]
fn max_failures_zero_never_halts() {
    let mut h = Harness::new();
    h.env("AGENT_MAX_FAILURES", "0")
        .env("AGENT_BACKOFF_START", "5ms")
        .env("AGENT_BACKOFF_MAX", "5ms");
    h.start(&[], &["sh", "-c", "exit 1"]);
    h.wait_until("eight failures", SECS_10, |h| {
        let state = h.state().unwrap_or_default();
        assert_ne!(
            state["status"], "unhealthy",
            "halted with max-failures 0: {state}"
        );
        assert!(
            !h.marker("UNHEALTHY"),
            "UNHEALTHY marker with max-failures 0"
        );
        state["consecutiveFailures"].as_u64().unwrap_or(0) >= 8
    });
    assert_markers(&h, false, false);
    assert_eq!(h.stop().code(), Some(0));
}

// See: SPEC §2, classify step 1; BASELINE §2 "job exits 3".
#[test]
fn exit_code_3_halts_as_token_expired_with_the_token_marker_only() {
    let mut h = Harness::new();
    std::fs::create_dir_all(h.path("state")).unwrap();
    h.start(&[], &["sh", "-c", "exit 3"]);
    let state = h.wait_status("token-expired", SECS_10);
    assert_eq!(state["reason"], "exit-code", "{state}");
    assert_eq!(state["lastBatchExit"], 3, "{state}");
    assert_eq!(state["lastOutcome"], "token_expired", "{state}");
    assert_eq!(state["iteration"], 1, "{state}");
    assert_markers(&h, false, true);
    assert_no_more_runs(&mut h, 1);
    assert_eq!(h.stop().code(), Some(0));
}

// See: BASELINE §2 "prints `OAuth token expired`, exits 0".
#[test]
fn the_auth_pattern_with_exit_0_halts_as_token_expired() {
    let mut h = Harness::new();
    h.start(&[], &["sh", "-c", "echo 'OAuth token expired'; exit 0"]);
    let state = h.wait_status("token-expired", SECS_10);
    assert_eq!(state["reason"], "pattern", "{state}");
    assert_eq!(state["lastBatchExit"], 0, "{state}");
    assert_eq!(state["lastOutcome"], "token_expired", "{state}");
    assert_markers(&h, false, true);
    assert_no_more_runs(&mut h, 1);
}

// Token-expired comes before failure: no backoff, no failure counted as a halt reason.
#[test]
fn the_auth_pattern_with_exit_1_halts_as_token_expired_not_backoff() {
    let mut h = Harness::new();
    h.env("AGENT_BACKOFF_START", "30s")
        .env("AGENT_BACKOFF_MAX", "30s");
    h.start(
        &[],
        &["sh", "-c", "echo 'authentication failed' >&2; exit 1"],
    );
    let state = h.wait_status("token-expired", SECS_10);
    assert_eq!(state["reason"], "pattern", "{state}");
    assert_eq!(state["lastBatchExit"], 1, "{state}");
    assert_eq!(state["backoffSeconds"], 0.0, "{state}");
    assert_markers(&h, false, true);
}

#[test]
fn a_custom_auth_exit_code_replaces_3() {
    let mut h = Harness::new();
    h.env("AGENT_AUTH_EXIT_CODE", "42")
        .env("AGENT_BACKOFF_START", "10ms")
        .env("AGENT_BACKOFF_MAX", "10ms");
    let job = counting_job(&h, "1) exit 3;;\n*) exit 42;;");
    h.start(&[], &[&job]);
    let state = h.wait_status("token-expired", SECS_10);
    assert_eq!(
        state["iteration"], 2,
        "exit 3 was an ordinary failure: {state}"
    );
    assert_eq!(state["lastBatchExit"], 42, "{state}");
    assert_eq!(state["reason"], "exit-code", "{state}");
}

/// Runs a job that prints `text` and exits 0, and returns its final status
/// (`token-expired` or `idle`).
fn outcome_of_output(text: &str) -> String {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "30s");
    let payload = h.path("output.txt");
    std::fs::write(&payload, text).unwrap();
    h.start(&[], &["cat", payload.to_str().unwrap()]);
    h.wait_until("the first run classified", SECS_10, |h| {
        h.state()
            .is_some_and(|s| s["status"] == "idle" || s["status"] == "token-expired")
    });
    h.state().unwrap()["status"].as_str().unwrap().to_string()
}

// See: BASELINE Q3; the default pattern is case-insensitive.
#[test]
fn the_default_auth_pattern_is_case_insensitive() {
    for text in [
        "Authentication failed\n",
        "HTTP 401 Unauthorized\n",
        "AUTHENTICATION FAILED for user\n",
        "oauth token expired\n",
        "Error: INVALID_API_KEY\n",
    ] {
        assert_eq!(outcome_of_output(text), "token-expired", "output {text:?}");
    }
}

#[test]
fn the_auth_pattern_matches_within_one_line_only() {
    assert_eq!(
        outcome_of_output("OAuth token\nexpired\n"),
        "idle",
        "words on two lines"
    );
    assert_eq!(outcome_of_output("all good\n"), "idle");
}

// See: issue 2, "a pattern split across a read boundary matches". The line
// is 65530 bytes of filler, then the auth text written after a pause, so
// the daemon's reads see the line in two pieces around the 64 KiB mark.
#[test]
fn an_auth_pattern_split_across_a_64k_read_boundary_matches() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "30s");
    let job = h.script(
        "job.sh",
        "head -c 65530 /dev/zero | tr '\\0' x\nprintf 'invalid_a'\nsleep 0.3\nprintf 'pi_key more text\\n'\nexit 0",
    );
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_until("the first run classified", SECS_10, |h| {
        h.state()
            .is_some_and(|s| s["status"] == "idle" || s["status"] == "token-expired")
    });
    let state = h.state().unwrap();
    assert_eq!(state["status"], "token-expired", "{state}");
    assert_eq!(state["reason"], "pattern", "{state}");
    let body = util::run_log_body(&h.run_logs()[0]);
    assert_eq!(body.len(), 65530 + "invalid_api_key more text\n".len());
}

#[test]
fn an_auth_pattern_straddling_exactly_64k_without_pauses_matches() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "30s");
    let job = h.script(
        "job.sh",
        "{ head -c 65530 /dev/zero | tr '\\0' y; printf 'OAuth token has expired\\n'; head -c 200000 /dev/zero | tr '\\0' z; }\nexit 0",
    );
    h.start(&[], &[job.to_str().unwrap()]);
    let state = h.wait_status("token-expired", SECS_10);
    assert_eq!(state["reason"], "pattern", "{state}");
}

// See: SPEC §2, the backoff sequence; issue 2: start=100ms, factor 2,
// max 400ms gives gaps of about 100, 200, 400, 400 ms, then a halt at the
// 5th failure without sleeping.
#[test]
fn the_backoff_sequence_is_100_200_400_400_ms_then_a_halt() {
    let mut h = Harness::new();
    h.env("AGENT_BACKOFF_START", "100ms")
        .env("AGENT_BACKOFF_FACTOR", "2")
        .env("AGENT_BACKOFF_MAX", "400ms")
        .env("AGENT_MAX_FAILURES", "5");
    h.start(&[], &["sh", "-c", "exit 1"]);
    let state = h.wait_status("unhealthy", SECS_10);
    assert_eq!(state["reason"], "max-failures", "{state}");
    assert_no_more_runs(&mut h, 5);
    let headers = h.headers();
    assert_eq!(headers.len(), 5);
    let iterations: Vec<u64> = headers.iter().map(|x| x.iteration).collect();
    assert_eq!(iterations, [1, 2, 3, 4, 5]);
    let gaps: Vec<i64> = headers
        .windows(2)
        .map(|w| w[1].start_ms - w[0].start_ms)
        .collect();
    for (gap, expected) in gaps.iter().zip([100, 200, 400, 400]) {
        assert!(
            *gap >= expected && *gap < expected + 300,
            "gaps {gaps:?} (ms) should be about [100, 200, 400, 400]"
        );
    }
    assert_markers(&h, true, false);
}

// See: BASELINE §2 "fail, fail, ok, fail, fail": a success resets the backoff.
#[test]
fn a_success_resets_the_failure_count_and_the_backoff() {
    let mut h = Harness::new();
    h.env("AGENT_BACKOFF_START", "200ms")
        .env("AGENT_BACKOFF_FACTOR", "3")
        .env("AGENT_BACKOFF_MAX", "10s")
        .env("AGENT_IDLE_SLEEP", "10ms")
        .env("AGENT_MAX_FAILURES", "3");
    let job = counting_job(&h, "3) exit 0;;\n*) exit 1;;");
    h.start(&[], &[&job]);
    h.wait_iteration(5, SECS_10);
    let headers = h.headers();
    // Run 1 fails (200 ms), 2 fails (600 ms), 3 succeeds (idle 10 ms),
    // 4 fails: the backoff starts over at 200 ms, not 1800 ms.
    let gap = headers[4].start_ms - headers[3].start_ms;
    assert!((200..800).contains(&gap), "gap after the reset: {gap} ms");
    let state = h.wait_status("unhealthy", SECS_10);
    assert_eq!(
        state["iteration"], 6,
        "halts at the 3rd failure after the success: {state}"
    );
}

// See: SPEC §2 preflight; BASELINE Q9.
#[test]
fn a_failing_preflight_halts_as_unhealthy_before_any_job() {
    let mut h = Harness::new();
    std::fs::create_dir_all(h.path("state")).unwrap();
    std::fs::write(h.path("state/TOKEN_EXPIRED"), "").unwrap();
    h.env("AGENT_PREFLIGHT_CMD", "echo checking tokens; exit 1");
    h.start(&[], &["sh", "-c", "touch ran; exit 0"]);
    let state = h.wait_status("unhealthy", SECS_10);
    assert_eq!(state["reason"], "preflight-failed", "{state}");
    assert_eq!(state["iteration"], 0, "{state}");
    assert_markers(&h, true, false);
    assert_no_more_runs(&mut h, 0);
    assert!(!h.path("ran").exists(), "the job never ran");
    assert_eq!(h.stop().code(), Some(0));
}

#[test]
fn stale_markers_are_removed_after_a_passing_preflight() {
    let mut h = Harness::new();
    std::fs::create_dir_all(h.path("state")).unwrap();
    std::fs::write(h.path("state/UNHEALTHY"), "").unwrap();
    std::fs::write(h.path("state/TOKEN_EXPIRED"), "").unwrap();
    h.env("AGENT_PREFLIGHT_CMD", "test -d /")
        .env("AGENT_IDLE_SLEEP", "30s");
    h.start(&[], &["true"]);
    h.wait_status("idle", SECS_10);
    assert_markers(&h, false, false);
}

#[test]
fn stale_markers_are_removed_at_start_without_a_preflight() {
    let mut h = Harness::new();
    std::fs::create_dir_all(h.path("state")).unwrap();
    std::fs::write(h.path("state/UNHEALTHY"), "").unwrap();
    std::fs::write(h.path("state/TOKEN_EXPIRED"), "").unwrap();
    h.env("AGENT_IDLE_SLEEP", "30s");
    h.start(&[], &["true"]);
    h.wait_status("idle", SECS_10);
    assert_markers(&h, false, false);
}

// See: SPEC §2 halt, AGENT_RECOVER_INTERVAL.
#[test]
fn recover_interval_resumes_when_the_preflight_passes_again() {
    let mut h = Harness::new();
    let flag = h.path("flag");
    h.env(
        "AGENT_PREFLIGHT_CMD",
        &format!("test -f '{}'", flag.display()),
    )
    .env("AGENT_RECOVER_INTERVAL", "100ms")
    .env("AGENT_IDLE_SLEEP", "30s");
    h.start(&[], &["true"]);
    let state = h.wait_status("unhealthy", SECS_10);
    assert_eq!(state["reason"], "preflight-failed", "{state}");
    // Several recovery preflights fail while the flag is missing.
    h.assert_holds(
        "halted while the flag is missing",
        Duration::from_millis(400),
        |h| h.state().is_some_and(|s| s["status"] == "unhealthy") && h.marker("UNHEALTHY"),
    );
    std::fs::write(&flag, "").unwrap();
    let state = h.wait_status("idle", SECS_10);
    assert_eq!(state["iteration"], 1, "{state}");
    assert!(state["reason"].is_null(), "{state}");
    assert_markers(&h, false, false);
    assert_eq!(h.stop().code(), Some(0));
}

#[test]
fn recover_interval_leaves_a_token_expired_halt_with_counters_reset() {
    let mut h = Harness::new();
    let flag = h.path("flag");
    std::fs::write(&flag, "").unwrap();
    h.env(
        "AGENT_PREFLIGHT_CMD",
        &format!("test -f '{}'", flag.display()),
    )
    .env("AGENT_RECOVER_INTERVAL", "100ms")
    .env("AGENT_IDLE_SLEEP", "30s");
    // Run 1: the credentials expire and the preflight starts failing too.
    let job = counting_job(
        &h,
        &format!("1) rm -f '{}'; exit 3;;\n*) exit 0;;", flag.display()),
    );
    h.start(&[], &[&job]);
    h.wait_status("token-expired", SECS_10);
    h.assert_holds(
        "halted while the preflight fails",
        Duration::from_millis(400),
        |h| h.state().is_some_and(|s| s["status"] == "token-expired") && h.marker("TOKEN_EXPIRED"),
    );
    std::fs::write(&flag, "").unwrap();
    let state = h.wait_status("idle", SECS_10);
    assert_eq!(state["iteration"], 2, "{state}");
    assert_eq!(state["consecutiveFailures"], 0, "{state}");
    assert_markers(&h, false, false);
}

// See: SPEC §2, "once before the first iteration, and after every iteration".
#[test]
fn rotate_and_cleanup_commands_run_at_start_and_after_each_iteration_and_failures_are_not_fatal() {
    let mut h = Harness::new();
    let hooks = h.path("hooks.txt");
    h.env(
        "AGENT_ROTATE_CMD",
        &format!("echo rotate >> '{}'; exit 1", hooks.display()),
    )
    .env(
        "AGENT_CLEANUP_CMD",
        &format!("echo cleanup >> '{}'", hooks.display()),
    )
    .env("AGENT_MAX_FAILURES", "2")
    .env("AGENT_BACKOFF_START", "10ms")
    .env("AGENT_BACKOFF_MAX", "10ms");
    h.start(&[], &["sh", "-c", "exit 1"]);
    h.wait_status("unhealthy", SECS_10);
    // Start, after run 1, after run 2: three rounds, rotate before cleanup.
    let expected = "rotate\ncleanup\n".repeat(3);
    h.wait_until("three hook rounds", SECS_10, |h| {
        util::read(&h.path("hooks.txt")) == expected
    });
    assert_eq!(h.state().unwrap()["iteration"], 2);
}

// See: issue 2 deliverable 8: one line per iteration on stderr.
#[test]
fn each_iteration_logs_one_line_with_its_outcome_exit_code_run_log_and_trace_id() {
    let mut h = Harness::new();
    h.env("AGENT_MAX_FAILURES", "2")
        .env("AGENT_BACKOFF_START", "10ms")
        .env("AGENT_BACKOFF_MAX", "10ms");
    h.start(&[], &["sh", "-c", "exit 4"]);
    h.wait_status("unhealthy", SECS_10);
    let lines = h.iteration_lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let logs = h.run_logs();
    for (n, log) in (1..=2u64).zip(&logs) {
        let header = util::run_log_header(log);
        assert_eq!(h.iteration_field(n, "outcome").as_deref(), Some("failure"));
        assert_eq!(h.iteration_field(n, "exit_code").as_deref(), Some("4"));
        assert!(h
            .iteration_field(n, "duration_ms")
            .is_some_and(|d| d.parse::<u64>().is_ok()));
        assert_eq!(
            h.iteration_field(n, "run_log").as_deref(),
            Some(log.to_str().unwrap())
        );
        assert_eq!(h.iteration_field(n, "trace_id"), Some(header.trace_id));
    }
}

// See: SPEC §1, "fractions allowed" for the factor.
#[test]
fn a_fractional_backoff_factor_grows_the_backoff_by_that_fraction() {
    let mut h = Harness::new();
    h.env("AGENT_BACKOFF_START", "100ms")
        .env("AGENT_BACKOFF_FACTOR", "1.5")
        .env("AGENT_BACKOFF_MAX", "10s")
        .env("AGENT_MAX_FAILURES", "4");
    h.start(&[], &["sh", "-c", "exit 1"]);
    h.wait_status("unhealthy", SECS_10);
    let headers = h.headers();
    let gaps: Vec<i64> = headers
        .windows(2)
        .map(|w| w[1].start_ms - w[0].start_ms)
        .collect();
    assert_eq!(gaps.len(), 3);
    for (gap, expected) in gaps.iter().zip([100, 150, 225]) {
        assert!(
            *gap >= expected && *gap < expected + 300,
            "gaps {gaps:?} (ms) should be about [100, 150, 225]"
        );
    }
}

// See: issue 2, "invalid UTF-8 and NUL bytes pass through untouched";
// the pattern is matched bytewise, like `LC_ALL=C grep`.
#[test]
fn the_auth_pattern_matches_across_invalid_utf8_in_the_same_line() {
    assert_eq!(
        outcome_of_output("\u{0}x OAuth \u{fffd} token expired\n"),
        "token-expired"
    );
    let mut h = Harness::new();
    let payload = h.path("output.bin");
    std::fs::write(&payload, b"\xff\xfe OAuth \xc3\x28 \0 expired\n").unwrap();
    h.start(&[], &["cat", payload.to_str().unwrap()]);
    let state = h.wait_status("token-expired", SECS_10);
    assert_eq!(state["reason"], "pattern", "{state}");
}

// See: SPEC §1 AGENT_AUTH_PATTERN: a user's regex replaces the default,
// case-sensitive unless it says (?i), anchors at line ends.
#[test]
fn a_custom_auth_pattern_replaces_the_default_and_anchors_per_line() {
    let run = |pattern: &str, text: &str| {
        let mut h = Harness::new();
        h.env("AGENT_AUTH_PATTERN", pattern)
            .env("AGENT_IDLE_SLEEP", "30s");
        let payload = h.path("output.txt");
        std::fs::write(&payload, text).unwrap();
        h.start(&[], &["cat", payload.to_str().unwrap()]);
        h.wait_until("the first run classified", SECS_10, |h| {
            h.state()
                .is_some_and(|s| s["status"] == "idle" || s["status"] == "token-expired")
        });
        h.state().unwrap()["status"].as_str().unwrap().to_string()
    };
    assert_eq!(run("TOKEN_GONE", "x TOKEN_GONE y\n"), "token-expired");
    assert_eq!(
        run("TOKEN_GONE", "x token_gone y\n"),
        "idle",
        "case-sensitive"
    );
    assert_eq!(
        run("TOKEN_GONE", "invalid_api_key\n"),
        "idle",
        "default replaced"
    );
    assert_eq!(
        run("^FATAL auth$", "one\nFATAL auth\ntwo\n"),
        "token-expired"
    );
    assert_eq!(run("^FATAL auth$", "one\nFATAL auth!\ntwo\n"), "idle");
}

// See: SPEC §1 AGENT_PREFLIGHT_TIMEOUT.
#[test]
fn a_preflight_that_runs_too_long_fails() {
    let mut h = daemon(&[
        ("AGENT_PREFLIGHT_CMD", "sleep 30"),
        ("AGENT_PREFLIGHT_TIMEOUT", "200ms"),
    ]);
    let state = h.wait_status("unhealthy", SECS_10);
    assert_eq!(state["reason"], "preflight-failed", "{state}");
    assert_eq!(state["iteration"], 0, "{state}");
}

// See: SPEC §1, hook failures are "never fatal"; AGENT_HOOK_TIMEOUT.
#[test]
fn a_hook_that_hangs_is_stopped_and_the_loop_goes_on() {
    let mut h = daemon(&[
        ("AGENT_ROTATE_CMD", "sleep 30"),
        ("AGENT_HOOK_TIMEOUT", "100ms"),
        ("AGENT_IDLE_SLEEP", "10ms"),
    ]);
    let state = h.wait_iteration(3, SECS_10);
    assert_ne!(state["status"], "unhealthy", "{state}");
    assert_eq!(state["lastBatchExit"], 0, "{state}");
    assert_eq!(h.stop().code(), Some(0));
}

// See: SPEC §1 AGENT_LOG_FORMAT=json.
#[test]
fn the_json_log_format_writes_one_json_object_per_line() {
    let mut h = Harness::new();
    h.env("AGENT_LOG_FORMAT", "json")
        .env("AGENT_IDLE_SLEEP", "30s");
    h.start(&[], &["sh", "-c", "exit 0"]);
    h.wait_status("idle", SECS_10);
    assert_eq!(h.stop().code(), Some(0));
    let stderr = h.stderr();
    let mut finished = 0;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value.to_string().contains("iteration finished") {
            finished += 1;
            let text = value.to_string();
            let log = h.run_logs()[0].to_str().unwrap().to_string();
            assert!(text.contains(&log), "names the run log: {text}");
            assert!(text.contains("success"), "names the outcome: {text}");
        }
    }
    assert_eq!(finished, 1, "{stderr}");
}

// See: SPEC §2, "marker UNHEALTHY, state unhealthy, halt, *without* sleeping".
#[test]
fn the_failure_that_reaches_max_failures_halts_without_sleeping_the_backoff() {
    let mut h = Harness::new();
    h.env("AGENT_MAX_FAILURES", "1")
        .env("AGENT_BACKOFF_START", "60s")
        .env("AGENT_BACKOFF_MAX", "60s");
    h.start(&[], &["sh", "-c", "exit 1"]);
    let state = h.wait_status("unhealthy", Duration::from_secs(5));
    assert_eq!(state["reason"], "max-failures", "{state}");
    assert_eq!(state["backoffSeconds"], 0.0, "{state}");
    assert!(h.marker("UNHEALTHY"));
}

// See: SPEC §3 status `starting`: the preflight runs before any job.
#[test]
fn the_status_is_starting_while_the_preflight_runs() {
    let mut h = Harness::new();
    let flag = h.path("release");
    h.env(
        "AGENT_PREFLIGHT_CMD",
        &format!("while [ ! -f '{}' ]; do sleep 0.02; done", flag.display()),
    )
    .env("AGENT_IDLE_SLEEP", "30s");
    h.start(&[], &["true"]);
    let state = h.wait_status("starting", SECS_10);
    assert_eq!(state["iteration"], 0, "{state}");
    h.assert_holds(
        "no job before the preflight passes",
        Duration::from_millis(200),
        |h| h.run_logs().is_empty(),
    );
    std::fs::write(&flag, "").unwrap();
    let state = h.wait_status("idle", SECS_10);
    assert_eq!(state["iteration"], 1, "{state}");
}

#[test]
fn the_auth_pattern_matches_a_last_line_without_a_newline() {
    assert_eq!(
        outcome_of_output("ok\nerror: invalid_api_key"),
        "token-expired"
    );
}
