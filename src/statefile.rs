//! `AGENT_STATE_DIR`: state.json and the UNHEALTHY / TOKEN_EXPIRED markers.
//!
//! state.json is replaced atomically (temp file, fsync, rename), so a
//! reader sees the old or the new state, complete, at any moment. The temp
//! file is created new with O_NOFOLLOW: a symlink planted at its name is
//! removed, never written through. Writes happen on a thread of their own,
//! always of the newest snapshot, so a slow disk never holds up the loop.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::state::{Snapshot, StoredState};

/// Name of the state file.
pub const STATE_FILE: &str = "state.json";
/// Marker present while halted as unhealthy.
pub const UNHEALTHY: &str = "UNHEALTHY";
/// Marker present while halted for expired credentials.
pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";

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
        match fs::remove_file(&temp) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let mut file = crate::files::create_new(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, self.dir.join(STATE_FILE))
    }

    /// Reads state.json back, typed, if there is a readable one.
    pub fn read_state(&self) -> Option<StoredState> {
        let bytes = fs::read(self.dir.join(STATE_FILE)).ok()?;
        StoredState::from_json(&bytes).ok()
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
                loop {
                    let closed = snapshots.changed().await.is_err();
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
