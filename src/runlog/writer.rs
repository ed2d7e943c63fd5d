//! The run-log writer: one thread that does all of the loop's disk work in
//! `AGENT_LOG_DIR` (creating a run log with its header, writing the job's
//! output into it, its last line, closing it; listing and deleting for
//! retention; appending notes), so a log directory that blocks (a hung
//! NFS or FUSE mount) delays the job's output and never the loop's answers
//! to `/livez`, signals and `/resume`.
//!
//! The job's output reaches the thread as [`Sink`] pieces: buffers that go
//! to the thread full and come back empty. A sink holds at most
//! [`BUFFERS`] of them, so a blocked disk stops the reading of the job's
//! pipe (and so, once the pipe is full, the job) instead of growing
//! memory; buffers are reused, never allocated per chunk.
//!
//! Test seam: `JOBLOOP_TEST_RUN_LOG_GATE`, when set, names a FIFO that the
//! thread reads one byte from before each write of the job's output; at
//! the FIFO's end of file it passes for good. A test thus stalls the disk
//! exactly where a hung mount would, without root or a FUSE device (see
//! tests/integration/hardening_disk.rs). Whoever sets jobloop's
//! environment controls its job anyway, so the seam gives nothing away.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use super::RetentionOutcome;
use crate::naming::{RunLogEntry, RunLogNamer};

/// Size of one buffer of the job's output (one read of its pipe).
pub const CHUNK: usize = 256 * 1024;

/// Buffers one run's output may have in flight: the most memory a blocked
/// disk can hold per run, besides the pipe itself.
pub const BUFFERS: usize = 4;

/// The variable naming the test seam's FIFO (see the module docs).
pub const GATE_VAR: &str = "JOBLOOP_TEST_RUN_LOG_GATE";

/// What the thread did with one run log, known once it is closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes of the job's output written (after the header).
    pub bytes_written: u64,
    /// Size of the file: header, output and jobloop's own lines.
    pub size: u64,
    /// The first error writing it; later output was dropped.
    pub write_error: Option<String>,
}

/// Why a request to the writer thread got no answer.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The thread is gone (it panicked); nothing more reaches the disk.
    #[error("the run-log writer thread is gone")]
    Gone,
}

enum Piece {
    /// `len` bytes of the job's output, in a buffer to give back.
    Output(Vec<u8>, usize),
    /// A line of jobloop's own (the truncation line).
    Line(String),
}

type RetentionDone = Box<dyn FnOnce(RetentionOutcome) + Send>;

enum Request {
    Create {
        runs_dir: PathBuf,
        start: SystemTime,
        header: String,
        pieces: std_mpsc::Receiver<Piece>,
        empties: mpsc::UnboundedSender<Vec<u8>>,
        written: oneshot::Sender<Written>,
        reply: oneshot::Sender<io::Result<PathBuf>>,
    },
    Scan {
        runs_dir: PathBuf,
        reply: oneshot::Sender<Vec<RunLogEntry>>,
    },
    Delete {
        log_dir: PathBuf,
        names: Vec<String>,
        done: RetentionDone,
    },
    Append {
        path: PathBuf,
        line: String,
    },
}

/// The handle of the writer thread; the thread ends when every handle and
/// every [`Sink`] is gone.
#[derive(Debug, Clone)]
pub struct RunLogWriter {
    requests: std_mpsc::Sender<Request>,
}

/// Where the job's output goes: full buffers to the writer thread, empty
/// ones back. Dropping it ends the run log.
#[derive(Debug)]
pub struct Sink {
    pieces: std_mpsc::Sender<Piece>,
    empties: mpsc::UnboundedReceiver<Vec<u8>>,
    allocated: usize,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Piece::Output(_, len) => write!(f, "Output({len})"),
            Piece::Line(line) => write!(f, "Line({line:?})"),
        }
    }
}

impl Sink {
    /// An empty buffer with room for [`CHUNK`] bytes: a reused one, a new
    /// one while fewer than [`BUFFERS`] exist, else the next one the disk
    /// gives back (this wait is the back-pressure). Cancel-safe. A new one
    /// is not zeroed: the reader fills its spare capacity, so pages are
    /// touched only as far as output arrives.
    pub async fn buffer(&mut self) -> Vec<u8> {
        if let Ok(buffer) = self.empties.try_recv() {
            return buffer;
        }
        if self.allocated < BUFFERS {
            self.allocated += 1;
            return Vec::with_capacity(CHUNK);
        }
        match self.empties.recv().await {
            Some(buffer) => buffer,
            // The thread is gone; the caller's next write fails.
            None => Vec::with_capacity(CHUNK),
        }
    }

    /// Hands the first `len` bytes of `buffer` to the thread.
    ///
    /// # Errors
    ///
    /// When the thread is gone; the buffer comes back with the error.
    pub fn write(&mut self, buffer: Vec<u8>, len: usize) -> Result<(), Vec<u8>> {
        self.pieces
            .send(Piece::Output(buffer, len))
            .map_err(|std_mpsc::SendError(piece)| match piece {
                Piece::Output(buffer, _) => buffer,
                Piece::Line(_) => Vec::new(),
            })
    }

    /// Hands a line of jobloop's own to the thread, after the output.
    pub fn line(&mut self, line: String) {
        let _ = self.pieces.send(Piece::Line(line));
    }
}

/// A run log being written: its path, the [`Sink`] for the job's output
/// and, once the sink is dropped and the file closed, what was written.
#[derive(Debug)]
pub struct OpenRunLog {
    /// Its path.
    pub path: PathBuf,
    /// Where the job's output goes.
    pub sink: Sink,
    /// Resolves once the file is closed.
    pub written: oneshot::Receiver<Written>,
}

impl RunLogWriter {
    /// Starts the thread.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn spawn() -> io::Result<RunLogWriter> {
        let (requests, inbox) = std_mpsc::channel();
        let gate = Gate::new(std::env::var_os(GATE_VAR).map(PathBuf::from));
        std::thread::Builder::new()
            .name("jobloop-runlog".into())
            .spawn(move || serve(&inbox, gate))?;
        Ok(RunLogWriter { requests })
    }

    /// Creates the next run log in `runs_dir` with `header` (see
    /// [`super::create_next`]); the answer comes once the disk gave it.
    ///
    /// # Errors
    ///
    /// When the run log cannot be created, or the thread is gone.
    pub async fn create(
        &self,
        runs_dir: &Path,
        start: SystemTime,
        header: String,
    ) -> io::Result<OpenRunLog> {
        let (pieces_tx, pieces) = std_mpsc::channel();
        let (empties, empties_rx) = mpsc::unbounded_channel();
        let (written_tx, written) = oneshot::channel();
        let (reply, answer) = oneshot::channel();
        self.send(Request::Create {
            runs_dir: runs_dir.to_path_buf(),
            start,
            header,
            pieces,
            empties,
            written: written_tx,
            reply,
        })?;
        let path = answer.await.map_err(|_| gone())??;
        Ok(OpenRunLog {
            path,
            sink: Sink {
                pieces: pieces_tx,
                empties: empties_rx,
                allocated: 0,
            },
            written,
        })
    }

    /// Lists the run logs of `runs_dir` (see [`super::scan`]).
    ///
    /// # Errors
    ///
    /// When the thread is gone.
    pub async fn scan(&self, runs_dir: &Path) -> Result<Vec<RunLogEntry>, WriterError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Scan {
            runs_dir: runs_dir.to_path_buf(),
            reply,
        })
        .map_err(|_| WriterError::Gone)?;
        answer.await.map_err(|_| WriterError::Gone)
    }

    /// Deletes `names` from `log_dir/runs` (see [`super::delete`]), then
    /// calls `done` on the thread with the outcome.
    pub fn delete(
        &self,
        log_dir: &Path,
        names: Vec<String>,
        done: impl FnOnce(RetentionOutcome) + Send + 'static,
    ) {
        let _ = self.send(Request::Delete {
            log_dir: log_dir.to_path_buf(),
            names,
            done: Box::new(done),
        });
    }

    /// Appends `line` to the existing file `path` (see
    /// [`crate::files::append_line`]).
    pub fn append(&self, path: &Path, line: String) {
        let _ = self.send(Request::Append {
            path: path.to_path_buf(),
            line,
        });
    }

    fn send(&self, request: Request) -> io::Result<()> {
        self.requests.send(request).map_err(|_| gone())
    }
}

fn gone() -> io::Error {
    io::Error::other(WriterError::Gone)
}

/// The thread: one request at a time, in order; a run log from its
/// creation to its close.
fn serve(inbox: &std_mpsc::Receiver<Request>, mut gate: Gate) {
    let mut namer = RunLogNamer::default();
    let mut spare = None;
    while let Ok(request) = inbox.recv() {
        match request {
            Request::Create {
                runs_dir,
                start,
                header,
                pieces,
                empties,
                written,
                reply,
            } => match super::create_next(&mut namer, &runs_dir, start, &header, spare.take()) {
                Ok((path, file)) => {
                    if reply.send(Ok(path)).is_ok() {
                        // The next run's file, made while this job starts;
                        // but the loop first: the reply just woke it, maybe
                        // onto this very CPU, and it starts the job.
                        std::thread::yield_now();
                        spare = super::Spare::make(&runs_dir);
                        let outcome = copy(file, header.len(), &pieces, &empties, &mut gate);
                        let _ = written.send(outcome);
                    }
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
            Request::Scan { runs_dir, reply } => {
                let _ = reply.send(super::scan(&runs_dir));
            }
            Request::Delete {
                log_dir,
                names,
                done,
            } => done(super::delete(&log_dir, &names)),
            Request::Append { path, line } => crate::files::append_line(&path, &line),
        }
    }
}

/// Writes one run's pieces to `file` until the sink is dropped, giving
/// each buffer back; after an error the rest is dropped, buffers still
/// given back so the job's output keeps flowing.
fn copy(
    mut file: File,
    header_len: usize,
    pieces: &std_mpsc::Receiver<Piece>,
    empties: &mpsc::UnboundedSender<Vec<u8>>,
    gate: &mut Gate,
) -> Written {
    let mut written = Written {
        size: header_len as u64,
        ..Written::default()
    };
    while let Ok(piece) = pieces.recv() {
        let (bytes, output) = match &piece {
            Piece::Output(buffer, len) => (&buffer[..*len], true),
            Piece::Line(line) => (line.as_bytes(), false),
        };
        if written.write_error.is_none() {
            gate.pass();
            match file.write_all(bytes) {
                Ok(()) => {
                    written.size += bytes.len() as u64;
                    if output {
                        written.bytes_written += bytes.len() as u64;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot write the run log; the rest of this run's output is scanned but not kept");
                    written.write_error = Some(error.to_string());
                }
            }
        }
        if let Piece::Output(buffer, _) = piece {
            let _ = empties.send(buffer);
        }
    }
    // Closing may block too (NFS flushes on close): still on this thread.
    drop(file);
    written
}

/// The test seam's gate: `None` (the normal case) always passes.
struct Gate {
    path: Option<PathBuf>,
    fifo: Option<File>,
}

impl Gate {
    fn new(path: Option<PathBuf>) -> Gate {
        Gate { path, fifo: None }
    }

    /// Waits for one byte of the FIFO; at its end (or any error) the gate
    /// stays open.
    fn pass(&mut self) {
        let Some(path) = self.path.as_ref() else {
            return;
        };
        if self.fifo.is_none() {
            match File::open(path) {
                Ok(fifo) => self.fifo = Some(fifo),
                Err(_) => {
                    self.path = None;
                    return;
                }
            }
        }
        let mut byte = [0u8; 1];
        if let Some(fifo) = self.fifo.as_mut() {
            if !matches!(fifo.read(&mut byte), Ok(1)) {
                self.path = None;
                self.fifo = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_reaches_the_file_in_order_through_reused_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let writer = RunLogWriter::spawn().unwrap();
        let start = SystemTime::UNIX_EPOCH;
        let mut log = writer
            .create(dir.path(), start, "# h\n".into())
            .await
            .unwrap();
        let mut expected = b"# h\n".to_vec();
        for round in 0..(3 * BUFFERS) {
            let mut buffer = log.sink.buffer().await;
            let text = format!("line {round}\n");
            buffer.clear();
            buffer.extend_from_slice(text.as_bytes());
            expected.extend_from_slice(text.as_bytes());
            log.sink.write(buffer, text.len()).unwrap();
        }
        assert!(log.sink.allocated <= BUFFERS);
        log.sink.line("# end\n".into());
        expected.extend_from_slice(b"# end\n");
        drop(log.sink);
        let written = log.written.await.unwrap();
        assert_eq!(std::fs::read(&log.path).unwrap(), expected);
        assert_eq!(written.size, expected.len() as u64);
        assert_eq!(written.bytes_written, expected.len() as u64 - 4 - 6);
        assert_eq!(writer.scan(dir.path()).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error_and_the_thread_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let writer = RunLogWriter::spawn().unwrap();
        let missing = dir.path().join("missing");
        let start = SystemTime::UNIX_EPOCH;
        assert!(writer
            .create(&missing, start, "# h\n".into())
            .await
            .is_err());
        let log = writer
            .create(dir.path(), start, "# h\n".into())
            .await
            .unwrap();
        drop(log.sink);
        assert_eq!(log.written.await.unwrap().size, 4);
    }
}
