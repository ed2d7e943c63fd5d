//! The job's output: copied from its pipe to the run log in arrival order,
//! capped at AGENT_RUN_LOG_MAX_BYTES, and scanned for the auth pattern.

use std::fs::File;
use std::io::{self, Write};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::auth::AuthMatcher;

/// Size of one read from the job's output pipe.
const READ_CHUNK: usize = 256 * 1024;

/// What happened to the job's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputStats {
    /// Bytes read from the job.
    pub bytes_read: u64,
    /// Bytes written to the run log (after the header).
    pub bytes_written: u64,
    /// Bytes read but not written because of AGENT_RUN_LOG_MAX_BYTES.
    pub bytes_dropped: u64,
    /// The first error writing the run log, if any.
    pub write_error: Option<String>,
    /// The auth pattern matched a line of the output.
    pub pattern_matched: bool,
}

/// Copies the job's output to the run log, in arrival order, scanning it.
///
/// Past `limit` the output is still read and scanned, only not written;
/// the log then ends with one line saying how much was dropped (SPEC §3).
pub(super) async fn pump(
    mut receiver: pipe::Receiver,
    mut log: Option<File>,
    limit: u64,
    mut matcher: AuthMatcher,
    matched: oneshot::Sender<()>,
    mut stop: oneshot::Receiver<()>,
) -> OutputStats {
    let mut stats = OutputStats::default();
    let mut matched = Some(matched);
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut last_written = b'\n';
    loop {
        let read = tokio::select! {
            biased;
            read = receiver.read(&mut buffer) => read,
            _ = &mut stop => break,
        };
        let count = match read {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buffer[..count];
        stats.bytes_read += count as u64;
        let now_matched = matcher.feed(chunk) || (count < READ_CHUNK && matcher.search_pending());
        if now_matched {
            if let Some(sender) = matched.take() {
                let _ = sender.send(());
            }
        }
        let room = if limit == 0 {
            count as u64
        } else {
            limit.saturating_sub(stats.bytes_written)
        };
        let keep = (count as u64).min(room) as usize;
        stats.bytes_dropped += (count - keep) as u64;
        if keep > 0 {
            if let Some(file) = log.as_mut() {
                match file.write_all(&chunk[..keep]) {
                    Ok(()) => {
                        stats.bytes_written += keep as u64;
                        last_written = chunk[keep - 1];
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "cannot write the run log; the rest of this run's output is scanned but not kept");
                        stats.write_error = Some(error.to_string());
                        log = None;
                    }
                }
            }
        }
    }
    if matcher.search_pending() {
        if let Some(sender) = matched.take() {
            let _ = sender.send(());
        }
    }
    stats.pattern_matched = matcher.is_matched();
    if stats.bytes_dropped > 0 {
        if let Some(file) = log.as_mut() {
            let newline = if last_written == b'\n' { "" } else { "\n" };
            let line = format!(
                "{newline}# jobloop truncated: dropped={} limit={}\n",
                stats.bytes_dropped, limit
            );
            if let Err(error) = file.write_all(line.as_bytes()) {
                stats.write_error.get_or_insert(error.to_string());
            }
        }
    }
    stats
}
