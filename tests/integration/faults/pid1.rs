//! jobloop as PID 1 (issue 6 item 5), run under
//! `unshare --pid --fork --mount-proc` as in a container without an init:
//! the orphans its jobs leave are reaped (no zombies pile up over 100
//! iterations), and SIGTERM, which the kernel drops for a PID 1 without a
//! handler (the seed's Q10), stops it cleanly.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::faults::{processes, skip, zombies_of};
use crate::util::{self, binary, clean_env, Harness};

// See: issue 6 item 5; SPEC §4 "reaps zombies when it is PID 1".
#[test]
fn as_pid_1_jobloop_reaps_orphans_over_100_iterations_and_stops_on_sigterm() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return skip(&format!(
                "unshare --pid --fork --mount-proc is not permitted here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Err(e) => return skip(&format!("no unshare: {e}")),
    }

    let h = Harness::new();
    let count = h.path("orphans");
    // Each run leaves two orphans that exit a moment after the job: one in
    // the job's group, one daemonised with setsid.
    let job = h.script(
        "job.sh",
        &format!(
            "( sleep 0.03 </dev/null >/dev/null 2>&1 & )\n\
             ( setsid sh -c 'sleep 0.02' </dev/null >/dev/null 2>&1 & )\n\
             echo $JOBLOOP_ITERATION >> '{}'\n\
             exit 0",
            count.display()
        ),
    );
    let stderr = std::fs::File::create(h.path("stderr.log")).unwrap();
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", binary(), "run", "--"])
        .arg(&job);
    clean_env(&mut command);
    command
        .env("AGENT_LOG_DIR", h.path("logs"))
        .env("AGENT_STATE_DIR", h.path("state"))
        .env("AGENT_LISTEN", format!("127.0.0.1:{}", h.port))
        .env("AGENT_IDLE_SLEEP", "10ms")
        .env("AGENT_SHUTDOWN_GRACE", "3s")
        .current_dir(h.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut unshare = command.spawn().expect("start unshare");
    let unshare_pid = unshare.id() as i32;
    // jobloop's pid outside the namespace: unshare's child.
    let mut host_pid = 0;
    let found = util::poll(Duration::from_secs(10), || {
        host_pid = processes()
            .iter()
            .find(|p| p.2 == unshare_pid)
            .map_or(0, |p| p.0);
        host_pid > 0
            && std::fs::read_link(format!("/proc/{host_pid}/exe"))
                .is_ok_and(|exe| exe.to_string_lossy().contains("jobloop"))
    });
    if !found {
        let _ = unshare.kill();
        panic!(
            "timed out after 10s waiting for jobloop under unshare\n--- stderr ---\n{}",
            h.stderr()
        );
    }
    let fail = |what: &str, h: &Harness| -> ! {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(host_pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!(
            "{what}\n--- state.json ---\n{:?}\n--- stderr ---\n{}",
            h.state(),
            h.stderr()
        );
    };

    let mut most_zombies = 0;
    let mut samples = 0;
    let reached = util::poll(Duration::from_secs(60), || {
        most_zombies = most_zombies.max(zombies_of(host_pid));
        samples += 1;
        crate::util::faults::iteration(&h) >= 100
    });
    if !reached {
        fail("100 iterations did not come", &h);
    }
    let state = h.state().unwrap();
    if state["pid"] != 1 {
        fail(
            &format!("jobloop is not PID 1 in its namespace: {state}"),
            &h,
        );
    }
    let orphans = util::read(&count).lines().count() * 2;
    // Those of the last runs may still be running or just exited: give the
    // reaper a moment, then count what is left.
    let mut left = usize::MAX;
    util::poll(Duration::from_secs(5), || {
        left = zombies_of(host_pid);
        left == 0
    });
    println!(
        "faults_pid1: {} iterations as PID 1, {orphans} orphans, at most {most_zombies} \
         zombies at once over {samples} samples, {left} at the end",
        crate::util::faults::iteration(&h)
    );
    if most_zombies > 6 || left > 2 {
        fail(
            &format!("zombies accumulate: at most {most_zombies} at once, {left} left"),
            &h,
        );
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut exited = None;
    util::poll(Duration::from_secs(10), || {
        exited = unshare.try_wait().unwrap();
        exited.is_some()
    });
    let Some(status) = exited else {
        fail("PID 1 jobloop ignored SIGTERM", &h);
    };
    assert_eq!(status.code(), Some(0), "{}", h.stderr());
    assert_eq!(h.state().unwrap()["status"], "stopped");
    assert!(h.stderr().contains("stopped"), "{}", h.stderr());
}
