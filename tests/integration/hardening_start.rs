//! Hardening of the start, the secrets and the spawn (issue #12 items 1, 3
//! and 4): whatever sits at state.json cannot hold or fool the start, a
//! leftover write probe cannot block it, the admin token reaches no child,
//! and a lack of processes is jobloop's own trouble, never the job's.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::faults::skip;
use crate::util::{self, binary, clean_env, Harness};

const SECS_10: Duration = Duration::from_secs(10);
const SECS_20: Duration = Duration::from_secs(20);

/// A previous state left at `running`: read back, it is counted as an
/// interrupted iteration, so a test can tell whether it was read.
fn running_state() -> String {
    serde_json::json!({
        "status": "running",
        "reason": null,
        "currentBatchStartedAt": "2020-01-01T00:00:00Z",
        "consecutiveFailures": 0,
        "iteration": 7,
        "backoffSeconds": 0,
        "runLog": null,
        "traceId": "0123456789abcdef0123456789abcdef",
        "pid": 999_999,
        "jobPid": null,
        "version": "0.0.0"
    })
    .to_string()
}

/// Starts a daemon on `true` with `state.json` prepared by `plant`, waits
/// for HTTP and a first iteration; returns it and the interrupted count.
fn start_with(plant: impl FnOnce(&std::path::Path)) -> (Harness, f64) {
    let mut h = Harness::new();
    std::fs::create_dir_all(h.path("state")).unwrap();
    plant(&h.path("state/state.json"));
    h.start(&[], &["true"]);
    let mut h = h.ready(1);
    let interrupted = h.scrape("jobloop_interrupted_iterations_total");
    h.wait_until("a real state.json", SECS_10, |h| h.state().is_some());
    (h, interrupted)
}

// See: issue #12 item 3 ("no blocking on FIFOs").
#[test]
fn a_fifo_at_state_json_neither_holds_the_start_nor_jobloop_status() {
    let (mut h, interrupted) = start_with(|path| {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    });
    assert_eq!(interrupted, 0.0);
    assert!(
        h.stderr().contains("FIFO"),
        "the odd state.json is logged:\n{}",
        h.stderr()
    );
    assert!(h.stop().success());

    // `jobloop status --state-dir` on a FIFO: one line, exit 2, no wait.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("state.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut status = Command::new(binary());
    status
        .args(["status", "--state-dir", dir.path().to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_env(&mut status);
    let mut child = status.spawn().unwrap();
    let mut exited = None;
    util::poll(SECS_10, || {
        exited = child.try_wait().unwrap();
        exited.is_some()
    });
    if exited.is_none() {
        let _ = child.kill();
        panic!("jobloop status waits on a FIFO at state.json");
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("FIFO"), "{stderr}");
}

// See: issue #12 item 3 ("no follow of symlinks").
#[test]
fn a_symlink_at_state_json_is_logged_not_followed_nor_written_through() {
    let target = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(target.path(), running_state()).unwrap();
    let (mut h, interrupted) = start_with(|path| {
        std::os::unix::fs::symlink(target.path(), path).unwrap();
    });
    assert_eq!(interrupted, 0.0, "the linked state was read");
    assert!(h.stderr().contains("symlink"), "{}", h.stderr());
    assert_eq!(util::read(target.path()), running_state());
    let meta = std::fs::symlink_metadata(h.path("state/state.json")).unwrap();
    assert!(meta.file_type().is_file(), "replaced by a real file");
    assert!(h.stop().success());
}

// See: issue #12 item 3 ("a size cap").
#[test]
fn a_100_mib_state_json_is_logged_and_treated_as_absent() {
    let (mut h, interrupted) = start_with(|path| {
        // A real state, then 100 MiB of JSON whitespace: valid, and read
        // whole it would count an interrupted iteration.
        let mut bytes = running_state().into_bytes();
        bytes.resize(100 << 20, b' ');
        std::fs::write(path, bytes).unwrap();
    });
    assert_eq!(interrupted, 0.0, "the huge state was read");
    assert!(h.stderr().contains("larger than 1 MiB"), "{}", h.stderr());
    assert!(h.stop().success());
}

// See: issue #12 item 3 ("the write probe cannot be blocked by a leftover").
#[test]
fn a_leftover_write_probe_does_not_block_a_start_as_pid_1() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    if !probe.is_ok_and(|out| out.status.success()) {
        return skip("unshare --pid --fork --mount-proc is not permitted here");
    }
    let mut h = Harness::new();
    let runs = h.path("logs/runs");
    std::fs::create_dir_all(&runs).unwrap();
    // What a jobloop killed as PID 1 left with the old fixed name.
    std::fs::write(runs.join(".jobloop-write-probe-1"), "").unwrap();
    let command = h.command(&[], &["true"]);
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = command
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(program)
        .args(args);
    clean_env(&mut unshare);
    unshare
        .envs(envs)
        .current_dir(h.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(h.path("stderr.log")).unwrap());
    h.spawn(unshare);
    h.wait_until("a first iteration as PID 1", SECS_20, |h| {
        h.state()
            .is_some_and(|s| s["pid"] == 1 && s["iteration"] == 1)
    });
    assert!(runs.join(".jobloop-write-probe-1").exists());
}

// See: issue #12 item 4 ("never reaches a child").
#[test]
fn the_admin_token_reaches_no_child() {
    const TOKEN: &str = "admin-8c1f0e7b6a5d";
    for by_file in [false, true] {
        let mut h = Harness::new();
        let dumps = h.path("dumps");
        std::fs::create_dir(&dumps).unwrap();
        // Written aside and renamed, so a dump cut short by the stop is
        // never read.
        let dump = |name: &str| {
            format!(
                "env > \"{d}/.{name}.$$\" && mv \"{d}/.{name}.$$\" \"{d}/{name}\"",
                d = dumps.display()
            )
        };
        let job = h.script(
            "job.sh",
            &format!("{}\nexit 0", dump("job-$JOBLOOP_ITERATION")),
        );
        let token_file = h.path("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        if by_file {
            h.env("AGENT_ADMIN_TOKEN_FILE", token_file.to_str().unwrap());
        } else {
            h.env("AGENT_ADMIN_TOKEN", TOKEN);
        }
        h.env("AGENT_PREFLIGHT_CMD", &dump("preflight"))
            .env("AGENT_ROTATE_CMD", &dump("rotate"))
            .env("AGENT_CLEANUP_CMD", &dump("cleanup"));
        h.start(&[], &[job.to_str().unwrap()]);
        let mut h = h.ready(2);
        h.wait_until("every dump", SECS_10, |_| {
            ["preflight", "rotate", "cleanup", "job-2"]
                .iter()
                .all(|name| dumps.join(name).exists())
        });
        // A wrong and a missing token: refused, and counted.
        let (code, _) = h.post("/resume", &[("Authorization", "Bearer nope")]);
        assert_eq!(code, 401);
        let (code, _) = h.post("/resume", &[]);
        assert_eq!(code, 401);
        assert_eq!(h.scrape("jobloop_resume_rejected_total"), 2.0);
        assert!(h.stop().success());
        for entry in std::fs::read_dir(&dumps).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            let env = util::read(&path);
            assert!(env.contains("JOBLOOP_INSTANCE="), "a real dump: {env}");
            for secret in [TOKEN, "AGENT_ADMIN_TOKEN", token_file.to_str().unwrap()] {
                assert!(
                    !env.contains(secret),
                    "{} has {secret} (by_file={by_file}):\n{env}",
                    path.display()
                );
            }
        }
    }
}

/// A uid no one else on the machine uses, for the process-limit test.
fn lonely_uid() -> u32 {
    60_000 + std::process::id() % 5_000
}

/// The process limit jobloop runs under in that test.
const NPROC: usize = 16;

/// Tasks (threads included, as RLIMIT_NPROC counts them) whose real uid
/// is `uid`.
fn tasks_of(uid: u32) -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut count = 0;
    for process in procs.flatten() {
        let Ok(tasks) = std::fs::read_dir(process.path().join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let real = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next())
                .and_then(|id| id.parse::<u32>().ok());
            if real == Some(uid) {
                count += 1;
            }
        }
    }
    count
}

// See: issue #12 item 1 ("not the job's failure: logged, counted, retried
// after the backoff, never a reason to halt").
#[test]
fn out_of_processes_the_loop_counts_spawn_errors_and_recovers_without_halting() {
    if !nix::unistd::geteuid().is_root() {
        return skip("setpriv needs root; root itself ignores RLIMIT_NPROC");
    }
    let uid = lonely_uid();
    let ids = [format!("--reuid={uid}"), format!("--regid={uid}")];
    let mut h = Harness::new();
    let dir = h.dir.path().to_owned();
    std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.env("AGENT_MAX_FAILURES", "1")
        .env("AGENT_BACKOFF_START", "20ms")
        .env("AGENT_BACKOFF_MAX", "100ms");
    // jobloop as `uid` under RLIMIT_NPROC: once the test's own sleepers
    // (same uid, started without the limit) fill it, every fork jobloop
    // tries fails with EAGAIN.
    let daemon = h.command(&[], &["true"]);
    let mut limited = Command::new("setpriv");
    limited
        .args(&ids)
        .args([
            "--clear-groups",
            "prlimit",
            &format!("--nproc={NPROC}"),
            "--",
        ])
        .arg(daemon.get_program())
        .args(daemon.get_args());
    clean_env(&mut limited);
    limited
        .envs(
            daemon
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(h.path("stderr.log")).unwrap());
    h.spawn(limited);
    let mut h = h.ready(2);

    let mut sleepers = Vec::new();
    let filled = util::poll(SECS_10, || {
        if tasks_of(uid) > NPROC {
            return true;
        }
        let sleeper = Command::new("setpriv")
            .args(&ids)
            .args(["--clear-groups", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        sleepers.push(sleeper);
        false
    });
    let free = |sleepers: &mut Vec<std::process::Child>| {
        for mut sleeper in sleepers.drain(..) {
            let _ = sleeper.kill();
            let _ = sleeper.wait();
        }
    };
    if !filled {
        free(&mut sleepers);
        h.fail("the process limit could not be filled");
    }
    h.wait_metric("jobloop_spawn_errors_total", 3.0, SECS_20);
    let failures = h.scrape("jobloop_iterations_total{outcome=\"failure\"}");
    h.wait_metric("jobloop_spawn_errors_total", 6.0, SECS_20);
    let state = h.state().unwrap();
    let stderr = h.stderr();
    let successes = h.scrape("jobloop_iterations_total{outcome=\"success\"}");
    free(&mut sleepers);
    assert_eq!(
        h.scrape("jobloop_iterations_total{outcome=\"failure\"}"),
        failures,
        "a spawn error counted as a failed iteration"
    );
    assert_eq!(failures, 0.0);
    assert_eq!(state["consecutiveFailures"], 0, "{state}");
    assert_ne!(state["status"], "unhealthy", "{state}");
    assert!(stderr.contains("lack of resources"), "logged:\n{stderr}");
    // Processes free again: the loop runs on by itself.
    h.wait_metric(
        "jobloop_iterations_total{outcome=\"success\"}",
        successes + 2.0,
        SECS_20,
    );
    assert!(h.stop().success(), "{}", h.stderr());
}
