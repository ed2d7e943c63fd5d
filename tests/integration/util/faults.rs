//! Support of the fault tests (`faults/*.rs`): CI-aware skipping, tmpfs
//! mounts, /proc sampling (memory, zombies, processes left behind), a small
//! seeded random source, the loop's pace.
//!
//! A fault that cannot be injected on this machine (no root, no `mount`)
//! prints `SKIPPED: why` and the test returns, except under CI (`CI` set),
//! where it fails: CI runs as root and must inject every fault.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::Harness;

/// True under CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// True when `JOBLOOP_FULL_FAULTS=1` asks for the long variants.
pub fn full() -> bool {
    std::env::var("JOBLOOP_FULL_FAULTS").is_ok_and(|v| v == "1")
}

/// Reports a fault that cannot be injected here: `SKIPPED: why` outside CI,
/// a failure under CI.
pub fn skip(why: &str) {
    if in_ci() {
        panic!("cannot inject the fault, and CI is set so this is a failure: {why}");
    }
    println!("SKIPPED: {why}");
    eprintln!("SKIPPED: {why}");
}

/// Runs a command; `Err` with its output when it fails or cannot start.
pub fn sh(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{program} {args:?}: {}; {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{program}: {e}")),
    }
}

/// A tmpfs mounted by the test, unmounted (lazily) when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`1m`, `4m`) at `path` (created if needed),
    /// with `extra` mount options (`ro`).
    pub fn mount(path: &Path, size: &str, extra: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let mut options = format!("size={size},mode=0755");
        if !extra.is_empty() {
            options.push(',');
            options.push_str(extra);
        }
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &options,
                "tmpfs",
                path.to_str().unwrap(),
            ],
        )
        .map_err(|e| format!("cannot mount a tmpfs (needs root): {e}"))?;
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Remounts it with `options` (`ro`, `rw`).
    pub fn remount(&self, options: &str) {
        sh(
            "mount",
            &[
                "-o",
                &format!("remount,{options}"),
                self.path.to_str().unwrap(),
            ],
        )
        .unwrap_or_else(|e| panic!("remount {options}: {e}"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = sh("umount", &["-l", self.path.to_str().unwrap()]);
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`), if readable.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Current resident set of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS").unwrap_or(0)
}

/// Peak resident set of `pid` in KiB (the kernel's high-water mark).
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM").unwrap_or(0)
}

/// (pid, state, ppid, pgid) of every process in /proc.
pub fn processes() -> Vec<(i32, char, i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgid = fields.next()?.parse().ok()?;
            Some((pid, state, ppid, pgid))
        })
        .collect()
}

/// Zombie children of `parent`.
pub fn zombies_of(parent: i32) -> usize {
    processes()
        .iter()
        .filter(|(_, state, ppid, _)| *ppid == parent && *state == 'Z')
        .count()
}

/// The command line of a process, for failure messages.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Living processes (zombies excluded) whose environment contains `marker`
/// (e.g. the test's directory, which every job inherits through RUN_LOG),
/// other than `except`: what a job left behind.
pub fn processes_with_env(marker: &str, except: &[u32]) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    processes()
        .into_iter()
        .filter(|(pid, state, _, _)| {
            *pid != me && *state != 'Z' && !except.contains(&(*pid as u32))
        })
        .filter(|(pid, _, _, _)| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|var| var.starts_with(b"RUN_LOG=") && contains(var, marker.as_bytes()))
            })
        })
        .map(|(pid, _, _, _)| (pid, cmdline(pid)))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A xorshift64* generator: random moments that a printed seed replays.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `JOBLOOP_FAULT_SEED` or the clock; prints the seed.
    pub fn new(what: &str) -> Rng {
        let seed = std::env::var("JOBLOOP_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        println!("{what}: JOBLOOP_FAULT_SEED={seed}");
        Rng(seed)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        low + x % (high - low + 1)
    }
}

/// state.json's `iteration`, 0 when unreadable.
pub fn iteration(h: &Harness) -> u64 {
    h.state().and_then(|s| s["iteration"].as_u64()).unwrap_or(0)
}

/// Iterations per second of the running daemon over `window`, read from
/// state.json (no HTTP, so the measurement itself adds no load).
pub fn pace(h: &mut Harness, window: Duration) -> f64 {
    let first = iteration(h);
    let started = Instant::now();
    // The measurement window itself: a sleep that is the observation, not
    // a synchronisation.
    std::thread::sleep(window);
    let last = iteration(h);
    (last.saturating_sub(first)) as f64 / started.elapsed().as_secs_f64()
}

/// The umask of this process (and so of the daemons it starts).
pub fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Mode bits of a path (not following a final symlink).
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Living processes (zombies excluded) with the exact environment entry
/// `assignment` (`NAME=value`), other than `except`.
pub fn processes_with_var(assignment: &str, except: &[u32]) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    processes()
        .into_iter()
        .filter(|(pid, state, _, _)| {
            *pid != me && *state != 'Z' && !except.contains(&(*pid as u32))
        })
        .filter(|(pid, _, _, _)| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|var| var == assignment.as_bytes())
            })
        })
        .map(|(pid, _, _, _)| (pid, cmdline(pid)))
        .collect()
}
