//! Running a fleet (issue #10, items 3 and 4): AGENT_EXIT_POLICY rules and
//! the `skipped` outcome, the busy seconds an autoscaler reads, and what
//! each run costs (CPU and peak memory, on /metrics and on the span).

use std::time::Duration;

use crate::util::otlp::{grpc_receiver, otlp_env};
use crate::util::{self, jobloop, Harness};

const WAIT: Duration = Duration::from_secs(20);

/// A daemon running `body` (a shell script that may look at
/// `$JOBLOOP_ITERATION`) under `policy`, plus `env`.
fn policy_daemon(policy: &str, env: &[(&str, &str)], body: &str) -> Harness {
    let mut h = Harness::new();
    let job = h.script("job.sh", body);
    h.env("AGENT_EXIT_POLICY", policy).envs(env);
    h.start(&[], &[job.to_str().unwrap()]);
    h
}

fn outcomes(h: &Harness) -> [f64; 5] {
    ["success", "failure", "timeout", "token_expired", "skipped"].map(|outcome| {
        h.scrape(&format!(
            "jobloop_iterations_total{{outcome=\"{outcome}\"}}"
        ))
    })
}

#[test]
fn skip_never_halts_and_keeps_the_failures_as_they_were() {
    // One failure, five "no work" runs with 2 allowed failures, then a job
    // that runs on while the test looks.
    let mut h = policy_daemon(
        "75=skip",
        &[("AGENT_MAX_FAILURES", "2")],
        "case $JOBLOOP_ITERATION in 1) exit 1 ;; [2-6]) exit 75 ;; *) exec sleep 30 ;; esac",
    );
    h.wait_until("iteration 7 running", WAIT, |h| {
        h.state()
            .is_some_and(|s| s["iteration"] == 7 && s["status"] == "running")
    });
    let state = h.state().unwrap();
    assert_eq!(state["consecutiveFailures"], 1, "{state}");
    assert_eq!(state["lastOutcome"], "skipped", "{state}");
    assert_eq!(state["lastBatchExit"], 75, "{state}");
    assert_eq!(state["backoffSeconds"], 0.0, "{state}");
    assert!(!h.marker("UNHEALTHY"));
    assert_eq!(outcomes(&h), [0.0, 1.0, 0.0, 0.0, 5.0]);
    assert_eq!(h.scrape("jobloop_consecutive_failures"), 1.0);
    assert_eq!(h.scrape("jobloop_last_exit_code"), 75.0);
    assert!(h.stop().success());
}

#[test]
fn a_range_rule_and_the_first_rule_wins() {
    // 4 is in both rules: the first (failure) wins; 7 and 0 are skipped
    // (0-10), so exit 0 is no success here; 11 is in no rule: a failure.
    let mut h = policy_daemon(
        "3-5=failure,0-10=skip",
        &[],
        "case $JOBLOOP_ITERATION in 1) exit 4 ;; 2) exit 7 ;; 3) exit 0 ;; 4) exit 11 ;; \
         *) exec sleep 30 ;; esac",
    );
    h.wait_until("iteration 5 running", WAIT, |h| {
        h.state()
            .is_some_and(|s| s["iteration"] == 5 && s["status"] == "running")
    });
    assert_eq!(outcomes(&h), [0.0, 2.0, 0.0, 0.0, 2.0]);
    let state = h.state().unwrap();
    assert_eq!(state["consecutiveFailures"], 2, "{state}");
    assert_eq!(state["lastSuccessAt"], serde_json::Value::Null, "{state}");
    assert!(h.stop().success());
}

#[test]
fn the_auth_pattern_beats_a_success_rule() {
    let mut h = policy_daemon("0=success", &[], "echo 'invalid_api_key'; exit 0");
    let state = h.wait_status("token-expired", WAIT);
    assert_eq!(state["reason"], "pattern", "{state}");
    assert_eq!(state["lastOutcome"], "token_expired", "{state}");
    assert!(h.marker("TOKEN_EXPIRED"));
    assert_eq!(outcomes(&h), [0.0, 0.0, 0.0, 1.0, 0.0]);
    assert!(h.stop().success());
}

#[test]
fn a_halt_rule_halts_at_once_as_unhealthy() {
    let mut h = policy_daemon(
        "2=halt,75=token_expired",
        &[("AGENT_MAX_FAILURES", "5")],
        "exit 2",
    );
    let state = h.wait_status("unhealthy", WAIT);
    assert_eq!(state["reason"], "exit-policy", "{state}");
    assert_eq!(state["iteration"], 1, "{state}");
    assert_eq!(state["lastOutcome"], "failure", "{state}");
    assert_eq!(state["consecutiveFailures"], 1, "{state}");
    assert!(h.marker("UNHEALTHY"));
    assert_eq!(h.scrape("jobloop_unhealthy"), 1.0);
    assert_eq!(outcomes(&h), [0.0, 1.0, 0.0, 0.0, 0.0]);
    assert!(h.stop().success());
}

#[test]
fn a_token_expired_rule_halts_as_the_auth_exit_code_does() {
    let mut h = policy_daemon("75=token_expired", &[], "exit 75");
    let state = h.wait_status("token-expired", WAIT);
    assert_eq!(state["reason"], "exit-code", "{state}");
    assert!(h.marker("TOKEN_EXPIRED"));
    assert!(h.stop().success());
}

#[test]
fn a_failure_rule_for_exit_0_counts_toward_the_halt() {
    let mut h = policy_daemon("0=failure", &[("AGENT_MAX_FAILURES", "2")], "exit 0");
    let state = h.wait_status("unhealthy", WAIT);
    assert_eq!(state["reason"], "max-failures", "{state}");
    assert_eq!(state["consecutiveFailures"], 2, "{state}");
    assert_eq!(outcomes(&h), [0.0, 2.0, 0.0, 0.0, 0.0]);
    assert!(h.stop().success());
}

#[test]
fn bad_exit_policies_are_one_line_and_exit_78() {
    for (value, named) in [
        ("75=maybe", "75=maybe"),
        ("75=skip,", "''"),
        ("75=skip,,1=failure", "''"),
        ("5-3=skip", "5-3=skip"),
        ("256=skip", "256=skip"),
        ("75", "'75'"),
        ("=skip", "=skip"),
        ("x=skip", "x=skip"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let state = dir.path().join("state");
        let output = jobloop(
            &["run", "--", "true"],
            &[
                ("AGENT_LOG_DIR", logs.to_str().unwrap()),
                ("AGENT_STATE_DIR", state.to_str().unwrap()),
                ("AGENT_EXIT_POLICY", value),
            ],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{value}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{value}: {stderr}");
        assert!(
            lines[0].starts_with(&format!(
                "jobloop: invalid value '{value}' for AGENT_EXIT_POLICY (--exit-policy): bad rule"
            )),
            "{value}: {stderr}"
        );
        assert!(lines[0].contains(named), "{value}: {stderr}");
        assert!(
            !logs.exists() && !state.exists(),
            "{value}: nothing created"
        );
    }
    // The flag is checked the same way.
    let output = jobloop(
        &["run", "--exit-policy", "1-2=halt,3=nope", "--", "true"],
        &[],
    );
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad rule '3=nope'"));
}

#[test]
fn check_shows_the_rules() {
    let output = jobloop(
        &["check", "--", "true"],
        &[("AGENT_EXIT_POLICY", " 75=skip, 3-5=failure")],
    );
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l == "AGENT_EXIT_POLICY=75=skip,3-5=failure"),
        "{stdout}"
    );
    let output = jobloop(&["check", "--", "true"], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().any(|l| l == "AGENT_EXIT_POLICY=none"),
        "{stdout}"
    );
}

const BUSY: &str = "jobloop_busy_seconds_total";

#[test]
fn busy_seconds_grow_while_a_job_runs_and_stand_still_while_idle() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "1h");
    h.start(&[], &["sleep", "1.5"]);
    h.wait_http();
    let running = |h: &Harness| h.state().is_some_and(|s| s["status"] == "running");
    let mut first = 0.0;
    h.wait_until("busy seconds > 0 while the job runs", WAIT, |h| {
        first = h.scrape(BUSY);
        first > 0.0 && running(h)
    });
    let mut second = 0.0;
    h.wait_until("busy seconds growing while the job runs", WAIT, |h| {
        second = h.scrape(BUSY);
        second > first && running(h)
    });
    let state = h.state().unwrap();
    assert_eq!(state["iteration"], 1, "one job, scraped twice: {state}");
    assert_eq!(state["status"], "running", "{state}");

    h.wait_status("idle", WAIT);
    let idle = h.scrape(BUSY);
    assert!(
        (1.4..5.0).contains(&idle),
        "about the job's 1.5 s: {idle} (while running: {first}, {second})"
    );
    // Idle for an hour: the counter stands still scrape after scrape.
    h.assert_holds(
        "busy seconds standing still while idle",
        Duration::from_millis(600),
        |h| h.scrape(BUSY) == idle,
    );
    assert!(h.stop().success());
}

#[test]
fn a_job_and_its_waited_for_child_are_charged_cpu_and_memory() {
    let receiver = grpc_receiver();
    let mut h = Harness::new();
    // The child holds 64 MiB (`tail` keeps the last lines, here one line
    // of 64 MiB of zeros) and the job burns 0.35 s of CPU itself (its own
    // utime + stime in clock ticks, from /proc); the job waits for the
    // child, so the kernel charges both to the job.
    let job = h.script(
        "job.sh",
        "head -c 64M /dev/zero | tail > /dev/null &\n\
         while :; do\n\
           i=0; while [ $i -lt 20000 ]; do i=$((i + 1)); done\n\
           set -- $(cut -d' ' -f14,15 /proc/$$/stat)\n\
           [ $(($1 + $2)) -ge 35 ] && break\n\
         done\n\
         wait",
    );
    h.otlp(&receiver.endpoint, "grpc")
        .env("AGENT_IDLE_SLEEP", "1h");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_status("idle", WAIT);
    let cpu = h.scrape("jobloop_job_cpu_seconds_total");
    let rss = h.scrape("jobloop_job_max_rss_bytes");
    assert!(cpu >= 0.2, "cpu {cpu}");
    assert!(rss >= (64 << 20) as f64, "rss {rss}");
    h.wait_until("the iteration's span", WAIT, |_| {
        !receiver.received.iterations().is_empty()
    });
    let span = &receiver.received.iterations()[0];
    let attribute = |key: &str| -> f64 {
        span.attributes
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {:?}", span.attributes))
    };
    assert!((attribute("jobloop.job.cpu_seconds") - cpu).abs() < 1e-6);
    assert_eq!(attribute("jobloop.job.max_rss_bytes"), rss);
    assert_eq!(span.status_code, 1, "a success is Ok");
    assert!(h.stop().success());
}

#[test]
fn a_skipped_run_is_not_an_error_on_its_span() {
    let receiver = grpc_receiver();
    let mut env = otlp_env(&receiver.endpoint, "grpc").to_vec();
    env.push(("AGENT_IDLE_SLEEP", "1h"));
    let mut h = policy_daemon("75=skip", &env, "exit 75");
    h.wait_until("the iteration's span", WAIT, |_| {
        !receiver.received.iterations().is_empty()
    });
    let span = &receiver.received.iterations()[0];
    assert_eq!(span.attributes["jobloop.outcome"], "skipped");
    assert_ne!(span.status_code, 2, "not Error");
    assert!(h.stop().success());
}

#[test]
fn every_series_is_at_zero_at_the_first_scrape() {
    let mut h = Harness::new();
    // The preflight holds the loop back: nothing has run at the scrape.
    let gate = h.path("go");
    h.env(
        "AGENT_PREFLIGHT_CMD",
        &format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display()),
    );
    h.start(&[], &["true"]);
    h.wait_http();
    let (_, scrape) = util::http(h.port, "GET", "/metrics", &[]).unwrap();
    for outcome in ["success", "failure", "timeout", "token_expired", "skipped"] {
        let series = format!("jobloop_iterations_total{{outcome=\"{outcome}\"}}");
        assert_eq!(
            util::metric(&scrape, &series),
            Some(0.0),
            "{series}\n{scrape}"
        );
        let count = format!("jobloop_iteration_duration_seconds_count{{outcome=\"{outcome}\"}}");
        assert_eq!(util::metric(&scrape, &count), Some(0.0), "{count}");
    }
    for (series, value) in [
        ("jobloop_busy_seconds_total", 0.0),
        ("jobloop_job_cpu_seconds_total", 0.0),
        ("jobloop_job_max_rss_bytes", 0.0),
        ("jobloop_preflight_checks_total{result=\"success\"}", 0.0),
        ("jobloop_preflight_checks_total{result=\"failure\"}", 0.0),
        ("jobloop_hook_failures_total{hook=\"rotate\"}", 0.0),
        ("jobloop_hook_failures_total{hook=\"cleanup\"}", 0.0),
        ("jobloop_state{state=\"starting\"}", 1.0),
        ("jobloop_state{state=\"running\"}", 0.0),
        ("jobloop_state{state=\"stopped\"}", 0.0),
    ] {
        assert_eq!(
            util::metric(&scrape, series),
            Some(value),
            "{series}\n{scrape}"
        );
    }
    std::fs::write(&gate, "").unwrap();
    h.wait_iteration(1, WAIT);
    assert!(h.stop().success());
}
