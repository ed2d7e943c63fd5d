//! Fleet stop policies (SPEC §2 halt, §5): AGENT_STOP_MODE=drain lets the
//! running job finish, a second signal ends the drain, the whole shutdown
//! ends within AGENT_SHUTDOWN_GRACE + AGENT_KILL_GRACE + 5 s whatever the
//! job, its escaped grandchildren and the collector do, and
//! AGENT_HALT_ACTION=exit ends jobloop with 69 or 77 on a halt.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::otlp::BlackHole;
use crate::util::{self, Harness};

const SECS_10: Duration = Duration::from_secs(10);

/// A job that notes SIGTERM (in `got-term` and its output) and carries
/// on, writes its pid, and finishes on its own once `go` exists.
fn drainable_job(h: &Harness) -> String {
    let body = format!(
        "trap 'echo \"got TERM\"; echo term > \"{got}\"' TERM\n\
         echo $$ > '{pid}'\n\
         echo working\n\
         while [ ! -e '{go}' ]; do sleep 0.02; done\n\
         echo 'finished on its own'\n\
         exit 0",
        got = h.path("got-term").display(),
        pid = h.path("job.pid").display(),
        go = h.path("go").display(),
    );
    h.script("job.sh", &body).to_str().unwrap().to_string()
}

/// Shell lines that start a daemonised grandchild: its own session,
/// without the job's RUN_LOG (so only the subreaper sweep can find it),
/// output away from the job's pipe, its pid in `pid_file`, and `on_term`
/// as its SIGTERM trap (`''` ignores it).
fn escaped_grandchild(pid_file: &Path, on_term: &str) -> String {
    format!(
        "env -u RUN_LOG setsid sh -c 'trap \"{on_term}\" TERM; echo $$ > \"{}\"; \
         while :; do sleep 0.05; done' </dev/null >/dev/null 2>&1 &\n",
        pid_file.display()
    )
}

// See: SPEC §5 (0.2) AGENT_STOP_MODE=drain.
#[test]
fn a_drained_job_finishes_on_its_own_and_is_counted() {
    let mut h = Harness::new();
    h.env("AGENT_STOP_MODE", "drain")
        .env("AGENT_SHUTDOWN_GRACE", "30s");
    // The grandchild holds jobloop in its sweep of escaped processes
    // after the job, until `release` exists: time to scrape the count.
    let release = h.path("release");
    let job = drainable_job(&h);
    let body = format!(
        "{}exec '{job}'",
        escaped_grandchild(
            &h.path("grandchild.pid"),
            &format!(
                "while [ ! -e {} ]; do sleep 0.02; done; exit 0",
                release.display()
            )
        )
    );
    let wrapper = h.script("wrapper.sh", &body);
    h.start(&[], &[wrapper.to_str().unwrap()]);
    let job_pid = h.read_pid_file(&h.path("job.pid"), SECS_10);
    h.wait_status("running", SECS_10);
    h.signal(Signal::SIGTERM);
    let state = h.wait_status("stopping", SECS_10);
    assert_eq!(state["reason"], "draining", "{state}");
    let (code, body) = h.get("/readyz");
    assert_eq!(code, 503, "{body}");
    let (code, body) = h.get("/health");
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["reason"], "draining", "{body}");
    h.assert_holds(
        "the draining job runs on, not signalled",
        Duration::from_millis(300),
        |h| util::pid_alive(job_pid) && !h.path("got-term").exists(),
    );

    std::fs::write(h.path("go"), "").unwrap();
    h.wait_metric(
        "jobloop_iterations_total{outcome=\"success\"}",
        1.0,
        SECS_10,
    );
    assert_eq!(h.state().unwrap()["status"], "stopping");
    std::fs::write(&release, "").unwrap();
    let status = h.wait_exit(SECS_10);
    assert_eq!(status.code(), Some(0), "{}", h.stderr());
    assert!(!h.path("got-term").exists(), "the drained job got SIGTERM");
    let state = h.state().unwrap();
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["lastBatchExit"], 0, "{state}");
    assert_eq!(state["iteration"], 1, "no new job: {state}");
    let logs = h.run_logs();
    assert_eq!(logs.len(), 1);
    let output = String::from_utf8_lossy(&util::run_log_body(&logs[0])).to_string();
    assert!(output.contains("finished on its own"), "{output}");
    assert!(!output.contains("got TERM"), "{output}");
}

// See: SPEC §5, "if it is still running then, it gets SIGTERM, and SIGKILL
// after AGENT_KILL_GRACE".
#[test]
fn a_drain_whose_grace_runs_out_terminates_then_kills() {
    let mut h = Harness::new();
    h.env("AGENT_STOP_MODE", "drain")
        .env("AGENT_SHUTDOWN_GRACE", "700ms")
        .env("AGENT_KILL_GRACE", "500ms");
    let job = drainable_job(&h);
    h.start(&[], &[&job]);
    let job_pid = h.read_pid_file(&h.path("job.pid"), SECS_10);
    h.wait_status("running", SECS_10);
    let sent = Instant::now();
    h.signal(Signal::SIGTERM);
    h.wait_until("SIGTERM at the drain's end", SECS_10, |h| {
        h.path("got-term").exists()
    });
    let termed = sent.elapsed();
    let status = h.wait_exit(SECS_10);
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", h.stderr());
    assert!(
        termed >= Duration::from_millis(700),
        "SIGTERM {termed:?} after the signal, within the 700 ms drain"
    );
    // The job traps TERM and goes on: SIGKILL after the kill grace.
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_millis(1200 + 5000),
        "exit {took:?} after the signal"
    );
    assert!(!util::pid_alive(job_pid), "the job survived");
    let state = h.state().unwrap();
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["lastBatchExit"], 128 + 9, "killed: {state}");
}

// See: SPEC §5, "A second SIGTERM/SIGINT during the drain sends SIGTERM at
// once".
#[test]
fn a_second_signal_ends_the_drain_at_once() {
    let mut h = Harness::new();
    h.env("AGENT_STOP_MODE", "drain")
        .env("AGENT_SHUTDOWN_GRACE", "60s");
    // This job ends on SIGTERM.
    let job = h.script(
        "job.sh",
        &format!(
            "trap 'echo term > \"{}\"; exit 0' TERM\necho $$ > '{}'\n\
             while :; do sleep 0.02; done",
            h.path("got-term").display(),
            h.path("job.pid").display()
        ),
    );
    h.start(&[], &[job.to_str().unwrap()]);
    let job_pid = h.read_pid_file(&h.path("job.pid"), SECS_10);
    h.wait_status("running", SECS_10);
    h.signal(Signal::SIGTERM);
    h.wait_status("stopping", SECS_10);
    h.assert_holds(
        "no SIGTERM during the drain",
        Duration::from_millis(300),
        |h| !h.path("got-term").exists(),
    );
    let sent = Instant::now();
    h.signal(Signal::SIGINT);
    let status = h.wait_exit(SECS_10);
    assert_eq!(status.code(), Some(0), "{}", h.stderr());
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "took {:?} after the second signal",
        sent.elapsed()
    );
    assert!(
        h.path("got-term").exists(),
        "the second signal sent SIGTERM"
    );
    assert!(!util::pid_alive(job_pid), "the job survived");
    assert_eq!(h.state().unwrap()["status"], "stopped");
}

/// A job that ignores SIGTERM and leaves an escaped grandchild that ignores
/// it too, spans going to a collector that never answers; SIGTERM, and the
/// time jobloop takes to exit. Checks that nothing is left.
fn timed_shutdown(mode: &str, grace: &str, kill_grace: &str) -> Duration {
    let hole = BlackHole::new();
    let mut h = Harness::new();
    h.env("AGENT_STOP_MODE", mode)
        .env("AGENT_SHUTDOWN_GRACE", grace)
        .env("AGENT_KILL_GRACE", kill_grace)
        .otlp(&hole.endpoint(), "grpc");
    let grandchild = h.path("grandchild.pid");
    let job = h.script(
        "job.sh",
        &format!(
            "trap '' TERM\n{}echo $$ > '{}'\nwhile :; do sleep 0.05; done",
            escaped_grandchild(&grandchild, ""),
            h.path("job.pid").display()
        ),
    );
    h.start(&[], &[job.to_str().unwrap()]);
    let job_pid = h.read_pid_file(&h.path("job.pid"), SECS_10);
    let grandchild = h.read_pid_file(&grandchild, SECS_10);
    h.wait_status("running", SECS_10);
    let sent = Instant::now();
    h.signal(Signal::SIGTERM);
    let status = h.wait_exit(Duration::from_secs(30));
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{}", h.stderr());
    assert!(!util::pid_alive(job_pid), "{mode}: the job survived");
    assert!(
        !util::pid_alive(grandchild),
        "{mode}: the escaped grandchild survived"
    );
    assert_eq!(h.state().unwrap()["status"], "stopped");
    println!("fleet_stop: {mode}, graces {grace}/{kill_grace}: shutdown took {took:?}");
    took
}

// See: SPEC §5, "jobloop's whole shutdown ends within AGENT_SHUTDOWN_GRACE +
// AGENT_KILL_GRACE + 5 s". Before the one budget, the escaped grandchild
// got a fresh shutdown grace and the flush another: 3 + 3 + 3 s here.
#[test]
fn under_terminate_the_whole_shutdown_ends_within_the_budget() {
    let took = timed_shutdown("terminate", "3s", "300ms");
    let bound = Duration::from_millis(3000 + 300 + 5000);
    assert!(
        took < bound,
        "terminate: shutdown took {took:?} > {bound:?}"
    );
    assert!(
        took >= Duration::from_secs(3),
        "the job had its grace: {took:?}"
    );
}

#[test]
fn under_drain_the_whole_shutdown_ends_within_the_budget() {
    let took = timed_shutdown("drain", "300ms", "300ms");
    let bound = Duration::from_millis(300 + 300 + 5000);
    assert!(took < bound, "drain: shutdown took {took:?} > {bound:?}");
    assert!(
        took >= Duration::from_millis(600),
        "the job had its drain and kill grace: {took:?}"
    );
}

/// Starts a daemon under AGENT_HALT_ACTION=exit with small graces.
fn halting(env: &[(&str, &str)], job: &[&str]) -> Harness {
    let mut h = Harness::new();
    h.env("AGENT_HALT_ACTION", "exit")
        .env("AGENT_SHUTDOWN_GRACE", "300ms")
        .env("AGENT_KILL_GRACE", "300ms")
        .envs(env);
    h.start(&[], job);
    h
}

// See: SPEC §2 halt (0.2) AGENT_HALT_ACTION=exit, §5 exit codes.
#[test]
fn halt_exit_on_max_failures_exits_69_and_leaves_no_process_of_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().display().to_string();
    // Each run leaves a grandchild in its group that ignores SIGTERM.
    let job = format!(
        "sh -c 'trap \"\" TERM; echo $$ > \"{pids}/g.$JOBLOOP_ITERATION\"; \
         while :; do sleep 0.05; done' </dev/null >/dev/null 2>&1 &\n\
         while [ ! -s \"{pids}/g.$JOBLOOP_ITERATION\" ]; do sleep 0.01; done\nexit 1"
    );
    let mut h = halting(&[("AGENT_MAX_FAILURES", "2")], &["sh", "-c", &job]);
    let status = h.wait_exit(SECS_10);
    assert_eq!(status.code(), Some(69), "{}", h.stderr());
    assert!(h.marker("UNHEALTHY"));
    assert!(!h.marker("TOKEN_EXPIRED"));
    let state = h.state().unwrap();
    assert_eq!(state["status"], "unhealthy", "{state}");
    assert_eq!(state["reason"], "max-failures", "{state}");
    assert_eq!(state["iteration"], 2, "{state}");
    for n in [1, 2] {
        let pid = util::read_pid_file(&dir.path().join(format!("g.{n}")), SECS_10);
        assert!(!util::pid_alive(pid), "the grandchild of run {n} survived");
    }
}

#[test]
fn halt_exit_on_expired_credentials_exits_77() {
    let mut h = halting(&[], &["sh", "-c", "exit 3"]);
    let status = h.wait_exit(SECS_10);
    assert_eq!(status.code(), Some(77), "{}", h.stderr());
    assert!(h.marker("TOKEN_EXPIRED"));
    assert!(!h.marker("UNHEALTHY"));
    let state = h.state().unwrap();
    assert_eq!(state["status"], "token-expired", "{state}");
    assert_eq!(state["reason"], "exit-code", "{state}");
}

#[test]
fn halt_exit_on_a_failed_preflight_exits_69_before_any_job() {
    let mut h = halting(&[("AGENT_PREFLIGHT_CMD", "exit 1")], &["true"]);
    let status = h.wait_exit(SECS_10);
    assert_eq!(status.code(), Some(69), "{}", h.stderr());
    assert!(h.marker("UNHEALTHY"));
    let state = h.state().unwrap();
    assert_eq!(state["status"], "unhealthy", "{state}");
    assert_eq!(state["reason"], "preflight-failed", "{state}");
    assert_eq!(state["iteration"], 0, "{state}");
    assert!(h.run_logs().is_empty(), "no job ran");
}

// The exit-policy halt is an unhealthy halt like the others: 69.
#[test]
fn halt_exit_on_an_exit_policy_halt_exits_69() {
    let mut h = halting(&[("AGENT_EXIT_POLICY", "2=halt")], &["sh", "-c", "exit 2"]);
    let status = h.wait_exit(SECS_10);
    assert_eq!(status.code(), Some(69), "{}", h.stderr());
    assert!(h.marker("UNHEALTHY"));
    let state = h.state().unwrap();
    assert_eq!(state["status"], "unhealthy", "{state}");
    assert_eq!(state["reason"], "exit-policy", "{state}");
    assert_eq!(state["iteration"], 1, "{state}");
}

#[test]
fn halt_wait_stays_up() {
    let mut h = Harness::new();
    h.start(&[], &["sh", "-c", "exit 3"]);
    h.wait_status("token-expired", SECS_10);
    h.assert_holds("still up while halted", Duration::from_millis(300), |h| {
        h.get("/livez").0 == 200
    });
    assert_eq!(h.stop().code(), Some(0));
}

// See: SPEC §1: a bad value is one line naming the setting, exit 78.
#[test]
fn bad_stop_settings_exit_78_naming_the_setting_and_check_shows_them() {
    for (variable, flag, bad) in [
        ("AGENT_STOP_MODE", "--stop-mode", "gently"),
        ("AGENT_HALT_ACTION", "--halt-action", "explode"),
    ] {
        let output = util::jobloop(&["check", "--", "true"], &[(variable, bad)]);
        assert_eq!(output.status.code(), Some(78), "{variable}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(variable) && stderr.contains(flag),
            "{stderr}"
        );
        assert!(stderr.contains(bad), "{stderr}");
        let output = util::jobloop(&["run", flag, bad, "--", "true"], &[]);
        assert_eq!(output.status.code(), Some(78), "{flag}");
    }
    let output = util::jobloop(
        &["check", "--stop-mode", "drain", "--", "true"],
        &[("AGENT_HALT_ACTION", "exit")],
    );
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("AGENT_STOP_MODE=drain\n"), "{stdout}");
    assert!(stdout.contains("AGENT_HALT_ACTION=exit\n"), "{stdout}");
    let defaults = util::jobloop(&["check", "--", "true"], &[]);
    let stdout = String::from_utf8_lossy(&defaults.stdout);
    assert!(stdout.contains("AGENT_STOP_MODE=terminate\n"), "{stdout}");
    assert!(stdout.contains("AGENT_HALT_ACTION=wait\n"), "{stdout}");
}
