//! A misbehaving job (issue 6 item 4): double-forked daemons, a job that
//! closes its output early and runs on, a flood of output (RSS of jobloop
//! sampled from /proc), one 50 MB line, a SIGSEGV, and a grandchild that
//! keeps the output pipe open after the job exits.
//!
//! CI writes 200 MB; `JOBLOOP_FULL_FAULTS=1` writes 1 GiB.

use std::time::{Duration, Instant};

use crate::util::faults::{full, peak_rss_kib, rss_kib};
use crate::util::{self, pid_alive, Harness};

const SECS_20: Duration = Duration::from_secs(20);

/// Memory jobloop may add while it streams a job's output: a few read
/// buffers, the pipe, the 1 MiB auth-matcher carry. Generous for a debug
/// build; an unbounded buffer of the output would exceed it by far.
const RSS_GROWTH_LIMIT_KIB: u64 = 48 * 1024;

/// Every pid written to `dir/<prefix>*` files.
fn pids_in(dir: &std::path::Path, prefix: &str) -> Vec<i32> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| util::read(&e.path()).trim().parse().ok())
        .collect()
}

/// A shell snippet that double-forks a daemon (setsid, out of the job's
/// process group, re-parented to jobloop) writing its pid to `pid_file`;
/// with `stubborn` it ignores SIGTERM.
fn double_fork(pid_file: &str, stubborn: bool) -> String {
    let trap = if stubborn { "trap \"\" TERM; " } else { "" };
    format!(
        "( setsid sh -c '{trap}echo $$ > \"{pid_file}\"; exec sleep 3600' \
         </dev/null >/dev/null 2>&1 & )\n"
    )
}

// See: issue 6 item 4, "a job that double-forks a daemon ... with AGENT_JOB_TIMEOUT".
#[test]
fn a_timed_out_job_takes_its_double_forked_daemons_with_it() {
    let mut h = Harness::new();
    let dir = h.dir.path().display().to_string();
    let job = h.script(
        "job.sh",
        &format!(
            "{}{}exec sleep 3600",
            double_fork(&format!("{dir}/meek.$JOBLOOP_ITERATION"), false),
            double_fork(&format!("{dir}/stubborn.$JOBLOOP_ITERATION"), true)
        ),
    );
    h.env("AGENT_JOB_TIMEOUT", "500ms")
        .env("AGENT_KILL_GRACE", "300ms")
        .env("AGENT_MAX_FAILURES", "1");
    h.start(&[], &[job.to_str().unwrap()]);
    let meek = h.read_pid_file(&h.path("meek.1"), SECS_20);
    let stubborn = h.read_pid_file(&h.path("stubborn.1"), SECS_20);
    assert!(
        pid_alive(meek) && pid_alive(stubborn),
        "the daemons started"
    );
    let state = h.wait_status("unhealthy", SECS_20);
    assert_eq!(state["lastOutcome"], "timeout", "{state}");
    h.wait_until(
        "the daemons to die with the timed-out job",
        Duration::from_secs(5),
        |_| !pid_alive(meek) && !pid_alive(stubborn),
    );
    assert_eq!(h.stop().code(), Some(0));
}

// See: issue 6 item 4, "... and at shutdown nothing of it survives"; SPEC §5.
#[test]
fn daemons_double_forked_by_finished_jobs_die_at_shutdown_even_if_they_ignore_sigterm() {
    let mut h = Harness::new();
    let dir = h.dir.path().display().to_string();
    let job = h.script(
        "job.sh",
        &format!(
            "{}{}exit 0",
            double_fork(&format!("{dir}/meek.$JOBLOOP_ITERATION"), false),
            double_fork(&format!("{dir}/stubborn.$JOBLOOP_ITERATION"), true)
        ),
    );
    h.env("AGENT_IDLE_SLEEP", "20ms")
        .env("AGENT_SHUTDOWN_GRACE", "1s");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_iteration(4, SECS_20);
    h.read_pid_file(&h.path("stubborn.3"), SECS_20);
    let stubborn = pids_in(h.dir.path(), "stubborn.");
    let daemons: Vec<i32> = pids_in(h.dir.path(), "meek.")
        .into_iter()
        .chain(stubborn.iter().copied())
        .collect();
    assert!(daemons.len() >= 6, "{daemons:?}");
    assert!(
        daemons.iter().all(|&p| pid_alive(p)),
        "the daemons outlive their jobs until shutdown"
    );
    let stopping = Instant::now();
    assert_eq!(h.stop().code(), Some(0), "{}", h.stderr());
    let took = stopping.elapsed();
    let survivors: Vec<i32> = daemons.iter().copied().filter(|&p| pid_alive(p)).collect();
    assert!(
        survivors.is_empty(),
        "daemons survived the shutdown: {survivors:?}"
    );
    println!(
        "faults_child: {} double-forked daemons ({} ignoring SIGTERM) stopped at shutdown in \
         {took:?}",
        daemons.len(),
        stubborn.len()
    );
    assert!(
        took < Duration::from_secs(4),
        "shutdown took {took:?} with a 1 s grace"
    );
}

// See: issue 6 item 4, "a job that closes stdout early and keeps running".
#[test]
fn a_job_that_closes_its_output_early_is_waited_for_until_it_exits() {
    let mut h = Harness::new();
    let done = h.path("done");
    let job = h.script(
        "job.sh",
        &format!(
            "echo before closing\nexec >&- 2>&-\nsleep 1\ntouch '{}'\nexit 7",
            done.display()
        ),
    );
    h.env("AGENT_MAX_FAILURES", "1");
    h.start(&[], &[job.to_str().unwrap()]);
    let state = h.wait_status("unhealthy", SECS_20);
    assert!(done.exists(), "the iteration ended only after the job did");
    assert_eq!(state["lastBatchExit"], 7, "the real exit code: {state}");
    assert_eq!(state["lastOutcome"], "failure", "{state}");
    let duration: u64 = h
        .iteration_field(1, "duration_ms")
        .and_then(|d| d.parse().ok())
        .expect("duration_ms in the iteration line");
    assert!(duration >= 1000, "ended at EOF, not at exit: {duration} ms");
    let body = util::run_log_body(&h.run_logs()[0]);
    assert_eq!(String::from_utf8_lossy(&body), "before closing\n");
    assert_eq!(h.stop().code(), Some(0));
}

/// Starts a job gated on a `go` file, returns jobloop's resident set (KiB)
/// measured while it waits.
fn gated(h: &mut Harness, body: &str) -> u64 {
    let go = h.path("go");
    let job = h.script(
        "job.sh",
        &format!(
            "while [ ! -e '{}' ]; do sleep 0.01; done\n{body}",
            go.display()
        ),
    );
    h.env("AGENT_IDLE_SLEEP", "60s");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_status("running", SECS_20);
    h.wait_http();
    let _ = h.get("/metrics");
    let baseline = rss_kib(h.pid());
    std::fs::write(go, "").unwrap();
    baseline
}

/// Samples jobloop's RSS until the run ends; returns (peak KiB, seconds).
fn sample_until_finished(h: &mut Harness, expected_status: &str) -> (u64, f64) {
    let started = Instant::now();
    let pid = h.pid();
    let mut peak = 0;
    h.wait_until(
        &format!("the run to end at status {expected_status}"),
        Duration::from_secs(600),
        |h| {
            peak = peak.max(rss_kib(pid));
            h.state().is_some_and(|s| s["status"] == expected_status)
        },
    );
    (peak.max(peak_rss_kib(pid)), started.elapsed().as_secs_f64())
}

// See: issue 6 item 4, "a job that writes 1 GB as fast as it can (memory of
// jobloop stays bounded: measure RSS)".
#[test]
fn a_flood_of_output_keeps_jobloop_memory_bounded() {
    let total: u64 = if full() { 1 << 30 } else { 200 << 20 };
    let limit: u64 = 64 << 20;
    let mut h = Harness::new();
    h.env("AGENT_RUN_LOG_MAX_BYTES", "64MiB");
    let baseline = gated(
        &mut h,
        &format!(
            "yes 'jobloop fault test: a line of output 0123456789 abcdefghijklmnopqrstuvwxyz' \
             | head -c {total}"
        ),
    );
    let (peak, seconds) = sample_until_finished(&mut h, "idle");
    let state = h.state().unwrap();
    assert_eq!(state["lastOutcome"], "success", "{state}");
    assert_eq!(
        h.scrape("jobloop_run_log_bytes_total"),
        total as f64,
        "every byte was read"
    );
    assert_eq!(h.scrape("jobloop_run_log_truncated_total"), 1.0);
    let log = &h.run_logs()[0];
    let body = util::run_log_body(log);
    let tail = format!(
        "# jobloop truncated: dropped={} limit={limit}\n",
        total - limit
    );
    assert!(
        body.ends_with(tail.as_bytes()),
        "the truncation line: {:?}",
        String::from_utf8_lossy(&body[body.len().saturating_sub(200)..])
    );
    assert!(body.len() as u64 <= limit + tail.len() as u64 + 1);
    let growth = peak.saturating_sub(baseline);
    println!(
        "faults_child: {} MiB of output in {seconds:.2} s ({:.0} MiB/s); jobloop RSS {} KiB \
         before, peak {} KiB (+{} KiB)",
        total >> 20,
        (total >> 20) as f64 / seconds,
        baseline,
        peak,
        growth
    );
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "jobloop's RSS grew by {growth} KiB while streaming {total} bytes"
    );
    assert_eq!(h.stop().code(), Some(0));
}

// See: issue 6 item 4, "a job that writes one 50 MB line".
#[test]
fn one_50_mb_line_is_logged_whole_and_its_end_still_matches_the_auth_pattern() {
    let size: u64 = 50 << 20;
    let mut h = Harness::new();
    h.env("AGENT_RUN_LOG_MAX_BYTES", "0");
    let baseline = gated(
        &mut h,
        &format!("head -c {size} /dev/zero | tr '\\0' a\necho ' invalid_api_key'"),
    );
    let (peak, seconds) = sample_until_finished(&mut h, "token-expired");
    let state = h.state().unwrap();
    assert_eq!(state["lastOutcome"], "token_expired", "{state}");
    assert_eq!(state["reason"], "pattern", "{state}");
    let log = &h.run_logs()[0];
    let body = util::run_log_body(log);
    assert_eq!(body.len() as u64, size + " invalid_api_key\n".len() as u64);
    assert!(body[..size as usize].iter().all(|&b| b == b'a'));
    assert!(body.ends_with(b"a invalid_api_key\n"));
    let growth = peak.saturating_sub(baseline);
    println!(
        "faults_child: one {} MiB line in {seconds:.2} s; jobloop RSS +{growth} KiB",
        size >> 20
    );
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "jobloop's RSS grew by {growth} KiB for one long line"
    );
    assert_eq!(h.stop().code(), Some(0));
}

// See: issue 6 item 4, "a job killed by SIGSEGV (exit code 139, outcome failure)".
#[test]
fn a_job_killed_by_sigsegv_exits_139_and_is_a_failure() {
    let mut h = Harness::new();
    let job = h.script(
        "job.sh",
        "ulimit -c 0\necho crashing\nkill -SEGV $$\nsleep 5",
    );
    h.env("AGENT_MAX_FAILURES", "1");
    h.start(&[], &[job.to_str().unwrap()]);
    let state = h.wait_status("unhealthy", SECS_20);
    assert_eq!(state["lastBatchExit"], 139, "{state}");
    assert_eq!(state["lastOutcome"], "failure", "{state}");
    assert_eq!(state["reason"], "max-failures", "{state}");
    h.wait_http();
    assert_eq!(h.scrape("jobloop_last_exit_code"), 139.0);
    assert_eq!(
        h.scrape("jobloop_iterations_total{outcome=\"failure\"}"),
        1.0
    );
    assert_eq!(h.iteration_field(1, "exit_code").as_deref(), Some("139"));
    assert_eq!(h.stop().code(), Some(0));
}

// See: issue 6 item 4, "a job that exits while its grandchild still holds
// the output pipe"; README: read for at most 1 s after the job exits.
#[test]
fn a_grandchild_holding_the_pipe_delays_the_iteration_by_at_most_about_a_second() {
    let mut h = Harness::new();
    let dir = h.dir.path().display().to_string();
    let job = h.script(
        "job.sh",
        &format!(
            "sleep 3600 &\necho $! > \"{dir}/grandchild.$JOBLOOP_ITERATION\"\n\
             echo job done\nexit 0"
        ),
    );
    h.env("AGENT_IDLE_SLEEP", "20ms")
        .env("AGENT_SHUTDOWN_GRACE", "1s");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_iteration(4, SECS_20);
    for n in 1..=3 {
        let duration: u64 = h
            .iteration_field(n, "duration_ms")
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("no duration for iteration {n}\n{}", h.stderr()));
        assert!(
            duration < 2000,
            "iteration {n} took {duration} ms after a job that exited at once"
        );
        let body = util::run_log_body(&h.run_logs()[n as usize - 1]);
        assert_eq!(String::from_utf8_lossy(&body), "job done\n");
    }
    let grandchildren = pids_in(h.dir.path(), "grandchild.");
    assert!(grandchildren.len() >= 3, "{grandchildren:?}");
    assert!(
        grandchildren.iter().all(|&p| pid_alive(p)),
        "the grandchildren run on after their iterations (README)"
    );
    assert_eq!(h.stop().code(), Some(0));
    let survivors: Vec<i32> = grandchildren
        .iter()
        .copied()
        .filter(|&p| pid_alive(p))
        .collect();
    assert!(
        survivors.is_empty(),
        "grandchildren survived the shutdown: {survivors:?}"
    );
}

// See: SPEC §5 "a running job gets SIGTERM at once ..., then SIGKILL after
// AGENT_SHUTDOWN_GRACE; processes that escaped the group ... are stopped
// too": an escaped daemon that cleans up on SIGTERM gets the grace as
// well, even when its job exits at once.
#[test]
fn at_shutdown_an_escaped_daemon_gets_the_grace_to_clean_up() {
    let mut h = Harness::new();
    let dir = h.dir.path().display().to_string();
    let daemon = h.script(
        "daemon.sh",
        &format!(
            "trap 'sleep 1; echo cleaned > \"{dir}/cleaned\"; exit 0' TERM\n\
             echo $$ > \"{dir}/daemon.pid\"\n\
             while :; do sleep 0.1; done"
        ),
    );
    let job = h.script(
        "job.sh",
        &format!(
            "( setsid '{}' </dev/null >/dev/null 2>&1 & )\nexec sleep 3600",
            daemon.display()
        ),
    );
    h.env("AGENT_SHUTDOWN_GRACE", "10s");
    h.start(&[], &[job.to_str().unwrap()]);
    let daemon_pid = h.read_pid_file(&h.path("daemon.pid"), SECS_20);
    h.wait_status("running", SECS_20);
    let stopping = Instant::now();
    assert_eq!(h.stop().code(), Some(0));
    let took = stopping.elapsed();
    assert!(!pid_alive(daemon_pid), "the daemon is stopped");
    assert!(
        h.path("cleaned").exists(),
        "the escaped daemon was killed before it could clean up (shutdown took {took:?} \
         with a 10 s grace)\n{}",
        h.stderr()
    );
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The fewest descriptors seen over ~100 ms. One look lands anywhere in a
/// run (pipes, the run log and a connection open or not: 16 to 22 here), so
/// a leak shows as a floor that rises, not as one look above another.
fn fd_floor(pid: u32) -> usize {
    (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(2));
            fd_count(pid)
        })
        .min()
        .unwrap_or(0)
}

// See: issue 6 item 4. A long-lived supervisor must not leak: over many
// runs that succeed, fail, time out and leave a grandchild holding the
// pipe, jobloop's descriptors and threads stay where they were.
#[test]
fn descriptors_and_threads_do_not_leak_over_mixed_runs() {
    let mut h = Harness::new();
    let job = h.script(
        "job.sh",
        "case $((JOBLOOP_ITERATION % 4)) in\n\
           0) exit 0 ;;\n\
           1) echo failing; exit 1 ;;\n\
           2) exec sleep 5 ;;\n\
           3) sleep 0.05 & echo held; exit 0 ;;\n\
         esac",
    );
    h.env("AGENT_IDLE_SLEEP", "1ms")
        .env("AGENT_MAX_FAILURES", "0")
        .env("AGENT_BACKOFF_START", "1ms")
        .env("AGENT_BACKOFF_MAX", "1ms")
        .env("AGENT_JOB_TIMEOUT", "50ms")
        .env("AGENT_KILL_GRACE", "50ms");
    h.start(&[], &[job.to_str().unwrap()]);
    let pid = h.pid();
    let (early_at, late_at) = if crate::util::faults::full() {
        (40, 2000)
    } else {
        (40, 240)
    };
    h.wait_iteration(early_at, SECS_20);
    h.wait_http();
    let _ = h.get("/metrics");
    let fds_early = fd_floor(pid);
    let threads_early = crate::util::faults::status_kib(pid, "Threads").unwrap_or(0);
    h.wait_iteration(late_at, Duration::from_secs(300));
    let _ = h.get("/metrics");
    let fds_late = fd_floor(pid);
    let threads_late = crate::util::faults::status_kib(pid, "Threads").unwrap_or(0);
    let timeouts = h.scrape("jobloop_iterations_total{outcome=\"timeout\"}");
    println!(
        "faults_child: {late_at} mixed runs ({timeouts} timeouts): fds {fds_early} -> \
         {fds_late}, threads {threads_early} -> {threads_late}"
    );
    assert!(
        timeouts >= (late_at / 4 - 5) as f64,
        "the mix ran: {timeouts} timeouts"
    );
    assert!(
        fds_late <= fds_early + 2,
        "descriptors leak: {fds_early} after {early_at} runs, {fds_late} after {late_at}"
    );
    assert!(
        threads_late <= threads_early + 2,
        "threads leak: {threads_early} -> {threads_late}"
    );
    assert_eq!(h.stop().code(), Some(0));
}
