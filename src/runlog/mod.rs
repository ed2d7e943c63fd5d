//! Run logs on disk: one file per iteration under `AGENT_LOG_DIR/runs/`,
//! the listing retention reads and the deletion it decides.
//!
//! Names and the retention choice are values in [`crate::naming`]; this
//! module does the file work. Files are created new, 0640, and never
//! through a symlink. The loop reaches all of it through the
//! [`RunLogWriter`] thread, so a log directory that blocks never blocks
//! the loop.

mod writer;

pub use writer::{OpenRunLog, RunLogWriter, Sink, WriterError, Written, BUFFERS, CHUNK, GATE_VAR};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::naming::{
    select_for_deletion, sort_key, RetentionPolicy, RunLogEntry, RunLogName, RunLogNamer,
};

/// What one retention pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Run logs deleted.
    pub deleted: u64,
    /// `jobs/` links removed because their run log was deleted.
    pub links_removed: u64,
    /// Errors met (the pass goes on after each).
    pub errors: Vec<String>,
}

/// The header line: `# jobloop iteration=N trace_id=... span_id=... start=...`.
pub fn header(iteration: u64, trace_id: &str, span_id: &str, start: SystemTime) -> String {
    format!(
        "# jobloop iteration={iteration} trace_id={trace_id} span_id={span_id} start={}\n",
        crate::state::rfc3339(start)
    )
}

/// Creates the run log for a run started at `start` in `runs_dir`, with
/// `header` as its first line: a new file, 0640, never through a symlink,
/// with the next free suffix.
///
/// # Errors
///
/// When no name can be created (directory missing, not writable, full).
pub fn create(runs_dir: &Path, start: SystemTime, header: &str) -> io::Result<(PathBuf, File)> {
    create_next(&mut RunLogNamer::default(), runs_dir, start, header, None)
}

/// An unnamed file made ahead of time in a runs directory, to become the
/// next run log there (see [`create_next`]).
///
/// Making the inode can be most of what creating a file costs: ~150 µs on
/// the benchmark VM's ext4, which has no journal and so skips past every
/// inode freed in the last minute, and a round trip to the server on NFS,
/// against a few µs to write the header and link the file. The writer
/// thread makes the spare while the job starts, so that cost is not paid
/// between one job's exit and the next one's start.
#[derive(Debug)]
pub struct Spare {
    runs_dir: PathBuf,
    file: File,
}

impl Spare {
    /// Makes an unnamed file in `runs_dir`; `None` where the file system
    /// cannot (the run log is then created the ordinary way when due).
    pub fn make(runs_dir: &Path) -> Option<Spare> {
        open_unnamed(runs_dir).map(|file| Spare {
            runs_dir: runs_dir.to_path_buf(),
            file,
        })
    }
}

/// An unnamed file (O_TMPFILE) in `dir`, 0640, or `None` where the file
/// system does not allow it.
fn open_unnamed(dir: &Path) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_TMPFILE | nix::libc::O_CLOEXEC)
        .open(dir)
        .ok()
}

/// Creates the next run log named by `namer`, with its header; see
/// [`create`]. `spare`, when made in `runs_dir`, becomes the file.
///
/// The header is written into an unnamed file (O_TMPFILE) that is then
/// linked under its name, so a run log appears with its header or not at
/// all, even if jobloop is killed in between. Where the file system (or a
/// missing /proc) does not allow that, the file is created under its name
/// and the header written right after.
///
/// # Errors
///
/// When no name can be created.
pub fn create_next(
    namer: &mut RunLogNamer,
    runs_dir: &Path,
    start: SystemTime,
    header: &str,
    spare: Option<Spare>,
) -> io::Result<(PathBuf, File)> {
    let mut unnamed = match spare {
        Some(spare) if spare.runs_dir == runs_dir => Some(spare.file),
        _ => open_unnamed(runs_dir),
    };
    if let Some(file) = unnamed.as_mut() {
        file.write_all(header.as_bytes())?;
    }
    let mut used = None;
    let mut result = Err(io::Error::other("no free run-log name"));
    for (suffix, name) in namer.candidates(start) {
        let path = runs_dir.join(name);
        let created = match unnamed.take() {
            Some(file) => match link_unnamed(&file, &path) {
                Ok(()) => Ok(file),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    unnamed = Some(file);
                    Err(error)
                }
                // Linking through /proc is not possible here: go on with
                // named files.
                Err(_) => create_named(&path, header),
            },
            None => create_named(&path, header),
        };
        match created {
            Ok(file) => {
                used = Some(suffix);
                result = Ok((path, file));
                break;
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    if let Some(suffix) = used {
        namer.taken(suffix);
    }
    result
}

fn create_named(path: &Path, header: &str) -> io::Result<File> {
    let mut file = crate::files::create_new(path)?;
    file.write_all(header.as_bytes())?;
    Ok(file)
}

/// Gives an O_TMPFILE file the name `path`; fails with `AlreadyExists` if
/// anything (a symlink included) has that name.
fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let source = format!("/proc/self/fd/{}", file.as_raw_fd());
    nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        source.as_str(),
        nix::fcntl::AT_FDCWD,
        path,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// Lists the run logs in `runs_dir` (regular files with a run-log name;
/// links are judged as links and never followed).
pub fn scan(runs_dir: &Path) -> Vec<RunLogEntry> {
    let Ok(entries) = fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    let mut logs = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        // Longer names are no run log jobloop made (a suffix with leading
        // zeros): left alone, like any other file.
        let Some(name) = file_name
            .to_str()
            .filter(|name| sort_key(name).is_some())
            .and_then(RunLogName::new)
        else {
            continue;
        };
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        logs.push(RunLogEntry {
            name,
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            size: meta.len(),
        });
    }
    logs.sort_unstable_by(|a, b| sort_key(a.name.as_str()).cmp(&sort_key(b.name.as_str())));
    logs
}

/// Deletes the run logs `names` from `log_dir/runs`, then the `log_dir/jobs`
/// links that pointed at them.
pub fn delete(log_dir: &Path, names: &[String]) -> RetentionOutcome {
    let mut outcome = RetentionOutcome::default();
    let runs = log_dir.join("runs");
    let mut deleted_paths = Vec::new();
    for name in names {
        let path = runs.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {
                outcome.deleted += 1;
                deleted_paths.push(path);
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => outcome
                .errors
                .push(format!("cannot delete {}: {error}", path.display())),
        }
    }
    if !deleted_paths.is_empty() {
        outcome.links_removed =
            remove_links_to(&log_dir.join("jobs"), &deleted_paths, &mut outcome.errors);
    }
    outcome
}

/// Applies `policy` to `log_dir/runs` from a fresh listing.
pub fn enforce(
    log_dir: &Path,
    policy: &RetentionPolicy,
    protect: Option<&str>,
) -> RetentionOutcome {
    let logs = scan(&log_dir.join("runs"));
    let doomed = select_for_deletion(&logs, policy, SystemTime::now(), protect);
    delete(log_dir, &doomed)
}

/// Removes the symlinks in `jobs_dir` whose target is one of `deleted`.
fn remove_links_to(jobs_dir: &Path, deleted: &[PathBuf], errors: &mut Vec<String>) -> u64 {
    let Ok(entries) = fs::read_dir(jobs_dir) else {
        return 0;
    };
    let deleted: Vec<PathBuf> = deleted.iter().map(|p| normalize(p)).collect();
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        let Ok(target) = fs::read_link(&path) else {
            continue;
        };
        let absolute = if target.is_absolute() {
            target
        } else {
            jobs_dir.join(target)
        };
        if deleted.contains(&normalize(&absolute)) {
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(error) => {
                    errors.push(format!("cannot remove link {}: {error}", path.display()))
                }
            }
        }
    }
    removed
}

/// Makes a path absolute and resolves `.` and `..` by text alone, without
/// following any link.
fn normalize(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn create_adds_suffixes_and_skips_planted_links() {
        let dir = tempfile::tempdir().unwrap();
        let start = at(1_764_098_466);
        let (first, _) = create(dir.path(), start, "# h\n").unwrap();
        let (second, _) = create(dir.path(), start, "# h\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("20251125T192106Z-2.log"))
            .unwrap();
        let (third, _) = create(dir.path(), start, "# h\n").unwrap();
        assert_eq!(fs::read_to_string(&third).unwrap(), "# h\n");
        assert!(first.ends_with("20251125T192106Z.log"));
        assert!(second.ends_with("20251125T192106Z-1.log"));
        assert!(third.ends_with("20251125T192106Z-3.log"));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&first).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "mode {mode:o}");
    }

    #[test]
    fn a_spare_made_in_the_directory_becomes_the_run_log() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let start = at(1_764_098_466);
        let mut namer = RunLogNamer::default();
        let spare = Spare::make(dir.path()).expect("O_TMPFILE in a temp dir");
        let inode = spare.file.metadata().unwrap().ino();
        let (path, _) = create_next(&mut namer, dir.path(), start, "# h\n", Some(spare)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(fs::read_to_string(&path).unwrap(), "# h\n");
        // A spare made elsewhere is not used: the log is where it was asked.
        let stray = Spare::make(other.path()).unwrap();
        let (second, _) = create_next(&mut namer, dir.path(), start, "# h\n", Some(stray)).unwrap();
        assert!(second.starts_with(dir.path()), "{second:?}");
        assert_eq!(fs::read_dir(other.path()).unwrap().count(), 0);
    }

    #[test]
    fn enforce_removes_links_to_deleted_logs_only() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let jobs = dir.path().join("jobs");
        fs::create_dir_all(&runs).unwrap();
        fs::create_dir_all(&jobs).unwrap();
        fs::write(runs.join("20260101T000001Z.log"), "old").unwrap();
        fs::write(runs.join("20260101T000002Z.log"), "new").unwrap();
        std::os::unix::fs::symlink("../runs/20260101T000001Z.log", jobs.join("a.log")).unwrap();
        std::os::unix::fs::symlink(runs.join("20260101T000002Z.log"), jobs.join("b.log")).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), jobs.join("c.log")).unwrap();
        std::os::unix::fs::symlink(outside.path(), runs.join("20250101T000000Z.log")).unwrap();
        let policy = RetentionPolicy {
            keep: 1,
            max_age: None,
            max_bytes: 0,
        };
        let outcome = enforce(dir.path(), &policy, None);
        assert_eq!(outcome.deleted, 1, "{outcome:?}");
        assert_eq!(outcome.links_removed, 1);
        assert!(!jobs.join("a.log").exists());
        assert!(jobs.join("b.log").exists());
        assert!(fs::symlink_metadata(jobs.join("c.log")).is_ok());
        assert!(outside.path().exists());
    }
}
