//! jobloop as the parent of last resort: child subreaper, zombie reaping,
//! finding the processes a job left behind, and what a finished child cost
//! ([`peek_exit`]).
//!
//! A job's daemonised grandchildren are re-parented to jobloop (it is a
//! child subreaper, or PID 1 in a container). They are reaped here, but only
//! by pid and never the child tokio owns, so tokio still sees its child's
//! exit status (a `waitpid(-1)` would steal it).

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::Usage;

/// What [`peek_exit`] saw of a child, without reaping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// It has not exited yet.
    Running,
    /// It has exited (a zombie, still to be reaped); what it cost.
    Exited(Usage),
    /// The kernel would not say (not our child any more, or an error):
    /// the caller waits for it the ordinary way.
    Unknown,
}

/// Looks at child `pid` without reaping it: once it has exited, its usage
/// from the kernel's rusage, the same figures `wait4` would give.
///
/// That is the child's own CPU and peak RSS together with those of the
/// descendants it waited for (the kernel adds a reaped child's usage to its
/// parent's); a daemonised grandchild that the job never waited for is not
/// in it. The zombie stays for tokio to reap, so tokio still sees the exit
/// status. glibc's `waitid` has no rusage argument; the system call has, so
/// it is made directly.
#[allow(unsafe_code)]
pub fn peek_exit(pid: u32) -> Peek {
    use nix::libc;
    // SAFETY: both are plain C structs of integers, for which all zero
    // bytes are a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waitid(2) with valid pointers to a siginfo_t and a rusage
    // that live across the call; WNOWAIT leaves the child as it is.
    let result = unsafe {
        libc::syscall(
            libc::SYS_waitid,
            libc::P_PID,
            pid,
            &mut info as *mut libc::siginfo_t,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            &mut usage as *mut libc::rusage,
        )
    };
    if result != 0 {
        return Peek::Unknown;
    }
    // SAFETY: the kernel filled (or, with WNOHANG and nothing to report,
    // left zeroed) the siginfo of a SIGCHLD, whose si_pid is valid.
    if unsafe { info.si_pid() } == 0 {
        return Peek::Running;
    }
    let time = |t: libc::timeval| {
        let seconds = u64::try_from(t.tv_sec).unwrap_or(0);
        let micros = u32::try_from(t.tv_usec).unwrap_or(0).min(999_999);
        std::time::Duration::new(seconds, micros * 1_000)
    };
    Peek::Exited(Usage {
        cpu: time(usage.ru_utime).saturating_add(time(usage.ru_stime)),
        // Linux gives ru_maxrss in KiB.
        max_rss_bytes: u64::try_from(usage.ru_maxrss)
            .unwrap_or(0)
            .saturating_mul(1024),
    })
}

/// Makes orphaned descendants re-parent to jobloop instead of init.
///
/// # Errors
///
/// When the kernel refuses (not Linux, or no permission).
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Reaps every exited child that is not `owned` (the child tokio waits
/// for). Returns how many were reaped.
pub fn reap_orphans(owned: Option<u32>) -> usize {
    let mut reaped = 0;
    loop {
        let peek = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        );
        let pid = match peek {
            Ok(WaitStatus::StillAlive) | Err(_) => return reaped,
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => return reaped,
            },
        };
        if owned == Some(pid.as_raw() as u32) {
            // The owned child is first in line; the others wait until tokio
            // has reaped it and the next SIGCHLD or sweep comes.
            return reaped;
        }
        if waitpid(pid, Some(WaitPidFlag::WNOHANG)).is_ok() {
            reaped += 1;
        } else {
            return reaped;
        }
    }
}

/// Living processes whose parent is jobloop, other than `owned`: the
/// descendants that escaped their process group and were re-parented here.
pub fn adopted_processes(owned: Option<u32>) -> Vec<Pid> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| Some(pid) != owned && pid != me)
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name, which may itself hold spaces
            // and parentheses: state, ppid, ...
            let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("Z");
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            ppid == Some(me) && state != "Z"
        })
        .map(|pid| Pid::from_raw(pid as i32))
        .collect()
}

/// Sends `signal` to every adopted process and the group each leads (the
/// shutdown sweep). Errors (already gone) are ignored.
pub fn signal_adopted(signal: Signal) {
    for pid in adopted_processes(None) {
        // An adopted process may lead a group of its own (setsid daemons).
        let _ = killpg(pid, signal);
        let _ = kill(pid, signal);
    }
}

/// Sends `signal` to the job's process group `pgid` and to the processes
/// that escaped it but still carry the job's `marker` variable
/// (`RUN_LOG=...`) in their environment, with their groups. Errors (already
/// gone) are ignored: the aim is that nothing of the job is left.
pub fn signal_job(pgid: u32, marker: Option<&str>, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid as i32), signal);
    if let Some(marker) = marker {
        for pid in processes_with_env(marker) {
            if let Ok(group) = nix::unistd::getpgid(Some(pid)) {
                if group != nix::unistd::getpgrp() {
                    let _ = killpg(group, signal);
                }
            }
            let _ = kill(pid, signal);
        }
    }
}

/// True while anything of the job lives: a member of its group, or an
/// escaped process carrying its `marker`.
pub fn job_alive(pgid: u32, marker: Option<&str>) -> bool {
    (killpg(Pid::from_raw(pgid as i32), None).is_ok() && group_has_living_member(pgid))
        || marker.is_some_and(|marker| !processes_with_env(marker).is_empty())
}

/// True when a process of group `pgid` is not a zombie. A signal reaches
/// a zombie too, but a zombie does nothing: an orphaned member that init
/// (or jobloop, a moment later) has yet to reap is no reason to kill.
fn group_has_living_member(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name: state, ppid, pgrp, ...
            let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().take(3).collect();
            matches!(fields[..], [state, _, group] if state != "Z" && group.parse() == Ok(pgid))
        })
}

/// Processes (other than jobloop) whose environment holds `entry`
/// (`NAME=value`), exactly.
pub fn processes_with_env(entry: &str) -> Vec<Pid> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&b| b == 0)
                    .any(|var| var == entry.as_bytes())
            })
        })
        .map(|pid| Pid::from_raw(pid as i32))
        .collect()
}

/// SIGKILLs each process and the process group it is in.
pub fn kill_with_groups(pids: &[Pid]) {
    for &pid in pids {
        if let Ok(group) = nix::unistd::getpgid(Some(pid)) {
            // Never jobloop's own group.
            if group != nix::unistd::getpgrp() {
                let _ = killpg(group, Signal::SIGKILL);
            }
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
}
