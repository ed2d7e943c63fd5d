//! `AGENT_STATE_DIR`: state.json and the UNHEALTHY / TOKEN_EXPIRED markers.
//!
//! state.json is replaced atomically (temp file, fsync, rename), so a
//! reader sees the old or the new state, complete, at any moment. The temp
//! file is created new with O_NOFOLLOW: a symlink planted at its name is
//! removed, never written through. Writes happen on a thread of their own,
//! always of the newest snapshot, so a slow disk never holds up the loop.
//!
//! state.json is read back (at start, and by `jobloop status`) with
//! [`read_state_file`], which trusts nothing about what sits at that name:
//! a symlink is not followed, a FIFO or a device is not waited on, and a
//! file larger than [`MAX_STATE_BYTES`] is not read.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::state::{Snapshot, StoredState};

/// Name of the state file.
pub const STATE_FILE: &str = "state.json";
/// Marker present while halted as unhealthy.
pub const UNHEALTHY: &str = "UNHEALTHY";
/// Marker present while halted for expired credentials.
pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";

/// Largest state.json read back. A real one is about 1 KiB.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// Why a state file was not read.
#[derive(Debug, thiserror::Error)]
pub enum StateReadError {
    /// Nothing at that name.
    #[error("{path} does not exist")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A symlink, FIFO, socket, device or directory, not a file.
    #[error("{path} is a {kind}, not a regular file; not read")]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// Larger than [`MAX_STATE_BYTES`].
    #[error("{path} is larger than 1 MiB ({size} bytes); not a jobloop state, not read")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Open or read failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Reads the state file at `path`, if it is a regular file of at most
/// [`MAX_STATE_BYTES`].
///
/// The open never blocks and never follows a symlink (O_NONBLOCK,
/// O_NOFOLLOW): a FIFO left at the name would otherwise hold the caller
/// until a writer comes, for ever at start. The type and the size are taken
/// from the open descriptor, so nothing can be swapped in between; the read
/// is capped as well, for a file that grows while it is read.
///
/// # Errors
///
/// [`StateReadError`], naming the file and what is wrong with it.
pub fn read_state_file(path: &Path) -> Result<Vec<u8>, StateReadError> {
    let io_error = |source: io::Error| StateReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(nix::libc::ENOENT) => StateReadError::Missing {
                path: path.to_path_buf(),
            },
            // O_NOFOLLOW on a symlink.
            Some(nix::libc::ELOOP) => StateReadError::NotAFile {
                path: path.to_path_buf(),
                kind: "symlink",
            },
            _ => io_error(error),
        })?;
    let meta = file.metadata().map_err(io_error)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let kind = if kind.is_fifo() {
            "FIFO"
        } else if kind.is_dir() {
            "directory"
        } else if kind.is_socket() {
            "socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "device"
        } else {
            "special file"
        };
        return Err(StateReadError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let too_large = |size| StateReadError::TooLarge {
        path: path.to_path_buf(),
        size,
    };
    if meta.len() > MAX_STATE_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory at `dir` (not created yet).
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (0750) if needed.
    ///
    /// # Errors
    ///
    /// When it cannot be created.
    pub fn create(&self) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&self.dir)
    }

    /// Replaces state.json with `contents`, atomically and durably.
    ///
    /// # Errors
    ///
    /// When any step fails; state.json is then left as it was.
    pub fn write_state(&self, contents: &[u8]) -> io::Result<()> {
        let temp = self.dir.join(format!("{STATE_FILE}.tmp"));
        // The temp name is free after every complete write: removed only
        // when something is there (a crash's leftover, a planted link).
        let mut file = match crate::files::create_new(&temp) {
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&temp)?;
                crate::files::create_new(&temp)?
            }
            created => created?,
        };
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, self.dir.join(STATE_FILE))
    }

    /// Reads state.json back, typed, if there is a readable one. Anything
    /// odd (not a regular file, too large, not a state) is logged and taken
    /// as no state at all: a fresh start is always possible.
    pub fn read_state(&self) -> Option<StoredState> {
        let path = self.dir.join(STATE_FILE);
        let bytes = match read_state_file(&path) {
            Ok(bytes) => bytes,
            Err(StateReadError::Missing { .. }) => return None,
            Err(error) => {
                tracing::warn!(%error, "ignoring the previous state.json; starting as if there were none");
                return None;
            }
        };
        match StoredState::from_json(&bytes) {
            Ok(state) => Some(state),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error,
                    "the previous state.json is not a jobloop state; starting as if there were none");
                None
            }
        }
    }

    /// Makes the marker `name` present or absent.
    ///
    /// # Errors
    ///
    /// When it cannot be created or removed.
    pub fn set_marker(&self, name: &str, present: bool) -> io::Result<()> {
        let path = self.dir.join(name);
        if present {
            match crate::files::create_new(&path) {
                Ok(_) => Ok(()),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(error) => Err(error),
            }
        } else {
            match fs::remove_file(&path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            }
        }
    }
}

/// How long the writer waits after a change for the next one, so that
/// both go to disk in one write: short beside anything that reads
/// state.json, long beside the loop's turn from one job to the next
/// (~0.2 ms).
const COALESCE: Duration = Duration::from_millis(1);

/// The least time from one write's start to the next one's. A write
/// (new file, fsync, rename over the old) costs ~0.3 ms of CPU on a small
/// VM's ext4, most of it making and freeing an inode: a loop of
/// millisecond jobs would spend a tenth of a core on state.json alone,
/// and with the vCPUs shared, the job's turnaround pays for it. State
/// a few milliseconds apart reaches the disk as the later one.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// How long to wait, at `now`, before writing a change: [`COALESCE`],
/// or longer to keep [`MIN_INTERVAL`] since the last write began.
fn pause_before_write(last_write: Option<Instant>, now: Instant) -> Duration {
    let spaced = last_write
        .and_then(|at| at.checked_add(MIN_INTERVAL))
        .map_or(Duration::ZERO, |allowed| {
            allowed.saturating_duration_since(now)
        });
    spaced.max(COALESCE)
}

/// The thread that writes each new snapshot to state.json.
pub struct StateWriter {
    thread: JoinHandle<()>,
}

impl StateWriter {
    /// Starts writing every snapshot published on `snapshots`; stops after
    /// writing the last one once the sender is gone. `on_error` is called
    /// on every failed write (the caller counts them), from the writer's
    /// thread.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn spawn(
        dir: StateDir,
        mut snapshots: watch::Receiver<Snapshot>,
        on_error: impl Fn() + Send + 'static,
    ) -> io::Result<StateWriter> {
        let thread = std::thread::Builder::new().name("jobloop-state".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime without drivers always builds");
            runtime.block_on(async move {
                let mut failing = false;
                let mut last_write: Option<Instant> = None;
                loop {
                    let closed = snapshots.changed().await.is_err();
                    if !closed {
                        // Changes a moment apart (a job's end and, idle
                        // sleep 0, the next one's start) are written once,
                        // as the newer: one fsync instead of two.
                        std::thread::sleep(pause_before_write(last_write, Instant::now()));
                    }
                    last_write = Some(Instant::now());
                    let json = snapshots.borrow_and_update().to_json();
                    match dir.write_state(&json) {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!(dir = %dir.path().display(), "state.json is written again");
                        }
                        Ok(()) => {}
                        Err(error) => {
                            on_error();
                            // Logged once per failing spell, not per write.
                            if !failing {
                                tracing::error!(dir = %dir.path().display(), %error,
                                    "cannot write state.json; the in-memory state and HTTP stay right");
                            }
                            failing = true;
                        }
                    }
                    if closed {
                        return;
                    }
                }
            });
        })?;
        Ok(StateWriter { thread })
    }

    /// Waits until the last snapshot is written.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_wait_a_moment_and_keep_their_spacing() {
        let now = Instant::now();
        assert_eq!(pause_before_write(None, now), COALESCE);
        // Long after the last write: only the moment that merges changes.
        assert_eq!(
            pause_before_write(Some(now), now + MIN_INTERVAL * 3),
            COALESCE
        );
        // 4 ms after the last write began: the rest of the interval.
        let last = now;
        let at = now + Duration::from_millis(4);
        assert_eq!(
            pause_before_write(Some(last), at),
            MIN_INTERVAL - Duration::from_millis(4)
        );
    }

    #[test]
    fn write_replaces_and_removes_a_planted_temp_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(victim.path(), dir.path().join("state.json.tmp")).unwrap();
        let state = StateDir::new(dir.path());
        state.write_state(b"{\"status\":\"idle\"}\n").unwrap();
        assert_eq!(fs::read_to_string(victim.path()).unwrap(), "");
        assert_eq!(
            state.read_state().unwrap().status,
            Some(crate::state::Status::Idle)
        );
    }

    #[test]
    fn writer_reports_failed_writes_through_its_callback() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let missing = StateDir::new(dir.path().join("not-created"));
        let errors = Arc::new(AtomicU32::new(0));
        let counted = errors.clone();
        let (publisher, snapshots) =
            watch::channel(Snapshot::starting(std::time::SystemTime::now()));
        let writer = StateWriter::spawn(missing, snapshots, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        publisher.send_modify(|state| state.iteration = 1);
        drop(publisher);
        writer.join();
        assert!(errors.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn odd_state_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let state = StateDir::new(dir.path());
        assert!(matches!(
            read_state_file(&path),
            Err(StateReadError::Missing { .. })
        ));

        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let refused = read_state_file(&path).unwrap_err();
        assert!(refused.to_string().contains("FIFO"), "{refused}");
        assert!(state.read_state().is_none());
        fs::remove_file(&path).unwrap();

        let real = dir.path().join("elsewhere.json");
        fs::write(&real, b"{\"status\":\"idle\"}").unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        let refused = read_state_file(&path).unwrap_err();
        assert!(refused.to_string().contains("symlink"), "{refused}");
        assert!(state.read_state().is_none());
        fs::remove_file(&path).unwrap();

        fs::create_dir(&path).unwrap();
        assert!(read_state_file(&path)
            .unwrap_err()
            .to_string()
            .contains("directory"));
        fs::remove_dir(&path).unwrap();

        let huge = fs::File::create(&path).unwrap();
        huge.set_len(MAX_STATE_BYTES + 1).unwrap();
        assert!(matches!(
            read_state_file(&path),
            Err(StateReadError::TooLarge { .. })
        ));
        assert!(state.read_state().is_none());
        huge.set_len(MAX_STATE_BYTES).unwrap();
        assert_eq!(
            read_state_file(&path).unwrap().len() as u64,
            MAX_STATE_BYTES
        );

        fs::write(&path, b"not json").unwrap();
        assert!(state.read_state().is_none());
        fs::write(&path, b"{\"status\":\"backoff\"}").unwrap();
        assert_eq!(
            state.read_state().unwrap().status,
            Some(crate::state::Status::Backoff)
        );
    }

    #[test]
    fn markers_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.set_marker(UNHEALTHY, true).unwrap();
        state.set_marker(UNHEALTHY, true).unwrap();
        assert!(dir.path().join(UNHEALTHY).exists());
        state.set_marker(UNHEALTHY, false).unwrap();
        state.set_marker(UNHEALTHY, false).unwrap();
        assert!(!dir.path().join(UNHEALTHY).exists());
    }
}
