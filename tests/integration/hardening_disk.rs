//! Disk hardening (issue #12 item 6; SPEC §3, 0.2): a log directory that
//! blocks delays the job's output, never the loop's answers.
//!
//! The stall is the daemon's test seam `JOBLOOP_TEST_RUN_LOG_GATE`: a FIFO
//! that the run-log writer thread reads one byte from before each write of
//! the job's output (end of file: open for good). Left unopened, it blocks
//! the writer exactly where a hung NFS or FUSE mount would block `write(2)`.
//! A seam rather than a real FUSE mount: it needs no root, no /dev/fuse and
//! no package, so the test runs (never skips) wherever the others run.
//!
//! While stalled, the job must be held (its pipe full: back-pressure, not
//! memory), `/livez` must answer 200 within its deadline again and again,
//! SIGHUP and `POST /resume` must be answered, and SIGTERM must stop
//! jobloop within its grace. Once the gate opens, every byte must be in
//! the run log, in order.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{run_log_body, Harness};

const WAIT: Duration = Duration::from_secs(20);
/// `/livez`'s own deadline for the loop's answer (lib.rs).
const LIVEZ_DEADLINE: Duration = Duration::from_secs(2);
/// Blocks of output the job writes: 8 MiB, far more than the writer's
/// buffers and the pipe hold together.
const BLOCKS: usize = 128;
const BLOCK: usize = 65_536;

/// A daemon whose run-log writer is stalled on an unopened FIFO, running a
/// job that writes `BLOCKS` numbered blocks and counts them in `progress`.
fn stalled(grace: &str) -> Harness {
    let mut h = Harness::new();
    let gate = h.path("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let progress = h.path("progress");
    let done = h.path("done");
    let job = h.script(
        "job.sh",
        &format!(
            "i=0\nwhile [ $i -lt {BLOCKS} ]; do head -c {BLOCK} /dev/zero; i=$((i+1)); printf '%d\\n' $i; echo $i > '{p}'; done\ntouch '{d}'",
            p = progress.display(),
            d = done.display()
        ),
    );
    h.env("JOBLOOP_TEST_RUN_LOG_GATE", gate.to_str().unwrap())
        .env("AGENT_ADMIN_TOKEN", "let-me-in")
        .env("AGENT_IDLE_SLEEP", "60s")
        .env("AGENT_SHUTDOWN_GRACE", grace);
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_status("running", WAIT);
    // Held: the count of blocks written stops moving, short of the end.
    let read_progress = |h: &Harness| {
        std::fs::read_to_string(h.path("progress"))
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    h.wait_until("the job writes", WAIT, |h| read_progress(h) > 0);
    let mut last = read_progress(&h);
    let mut still_since = Instant::now();
    h.wait_until("the job held by its full pipe", WAIT, |h| {
        let now = read_progress(h);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        still_since.elapsed() > Duration::from_millis(500)
    });
    assert!(
        last < BLOCKS && !h.path("done").exists(),
        "the job was not held: {last} of {BLOCKS} blocks written"
    );
    h
}

/// `/livez` answers 200 within its deadline.
fn assert_live(h: &mut Harness) {
    let asked = Instant::now();
    let (code, body) = h.get("/livez");
    let took = asked.elapsed();
    eprintln!("hardening_disk: /livez {code} in {took:?}");
    if code != 200 || took > LIVEZ_DEADLINE {
        h.fail(&format!("/livez answered {code} in {took:?}: {body}"));
    }
}

/// What the job wrote: every block, then its number, in order.
fn expected_output() -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCKS * (BLOCK + 4));
    for i in 1..=BLOCKS {
        out.extend(std::iter::repeat_n(0u8, BLOCK));
        out.extend_from_slice(format!("{i}\n").as_bytes());
    }
    out
}

#[test]
fn a_blocked_log_directory_holds_the_job_not_the_loop() {
    let mut h = stalled("5s");
    for _ in 0..10 {
        assert_live(&mut h);
    }
    h.signal(Signal::SIGHUP);
    h.wait_until("SIGHUP answered", WAIT, |h| {
        h.stderr()
            .lines()
            .any(|line| line.contains("SIGHUP") && line.contains("not halted"))
    });
    let (code, body) = h.post("/resume", &[("Authorization", "Bearer let-me-in")]);
    assert_eq!(code, 409, "the loop answers /resume: {body}");
    let (code, _) = h.get("/metrics");
    assert_eq!(code, 200);
    for _ in 0..5 {
        assert_live(&mut h);
    }
    assert!(!h.path("done").exists(), "still held after the probes");

    // Unstall: the FIFO's writer opens and closes, the gate stays open.
    drop(
        std::fs::OpenOptions::new()
            .write(true)
            .open(h.path("gate"))
            .unwrap(),
    );
    let state = h.wait_status("idle", WAIT);
    assert_eq!(state["lastBatchExit"], 0, "{state}");
    assert!(h.path("done").exists());
    let run_log = std::path::PathBuf::from(state["runLog"].as_str().unwrap());
    let body = run_log_body(&run_log);
    let expected = expected_output();
    assert_eq!(body.len(), expected.len(), "every byte in the run log");
    assert!(body == expected, "the run log holds the output in order");
    assert_eq!(
        h.scrape("jobloop_run_log_bytes_total"),
        expected.len() as f64
    );
    assert_eq!(h.scrape("jobloop_run_log_write_errors_total"), 0.0);
    assert_live(&mut h);
    assert_eq!(h.stop().code(), Some(0));
}

#[test]
fn sigterm_stops_jobloop_within_its_grace_while_the_log_directory_blocks() {
    let grace = Duration::from_secs(5);
    let mut h = stalled("5s");
    assert_live(&mut h);
    let asked = Instant::now();
    h.signal(Signal::SIGTERM);
    let status = h.wait_exit(grace);
    assert_eq!(status.code(), Some(0), "{}", h.stderr());
    let took = asked.elapsed();
    eprintln!("hardening_disk: jobloop exited {took:?} after SIGTERM (grace {grace:?})");
    assert!(took <= grace);
    let state = h.state().unwrap();
    assert_eq!(state["status"], "stopped", "{state}");
}

#[test]
fn output_already_in_the_pipe_outlasts_the_drain_wait_on_a_slow_disk() {
    let mut h = Harness::new();
    let gate = h.path("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let done = h.path("done");
    // 768 KiB: fits in the 1 MiB pipe alone, so the job exits
    // while the disk is still stalled.
    let job = h.script(
        "job.sh",
        &format!(
            "head -c 786432 /dev/zero; echo end; touch '{}'",
            done.display()
        ),
    );
    h.env("JOBLOOP_TEST_RUN_LOG_GATE", gate.to_str().unwrap())
        .env("AGENT_IDLE_SLEEP", "60s");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_until("the job exited", WAIT, |h| h.path("done").exists());
    // state.json says so once its writer thread got to it (an fsync on a
    // loaded disk can take longer than the job did).
    h.wait_status("running", WAIT);
    // Stalled for longer than the 1 s drain wait after the job's exit: the
    // run waits for its log, answering meanwhile.
    h.assert_holds(
        "the run waits for its log",
        Duration::from_millis(1500),
        |h| h.get("/livez").0 == 200 && h.state().is_some_and(|s| s["status"] == "running"),
    );
    drop(std::fs::OpenOptions::new().write(true).open(&gate).unwrap());
    let state = h.wait_status("idle", WAIT);
    let run_log = std::path::PathBuf::from(state["runLog"].as_str().unwrap());
    let body = run_log_body(&run_log);
    assert_eq!(body.len(), 786_432 + 4, "every byte in the run log");
    assert!(body.ends_with(b"\0end\n"));
    assert_eq!(h.stop().code(), Some(0));
}
