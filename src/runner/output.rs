//! The job's output: read from its pipe in arrival order, scanned for the
//! auth pattern, and handed to the run-log writer thread
//! ([`crate::runlog::Sink`]), capped at AGENT_RUN_LOG_MAX_BYTES.
//!
//! Nothing here touches the disk: a log directory that blocks holds up the
//! sink's buffers, so this stops reading and the job's pipe fills (the
//! job waits), while the loop's thread goes on answering.

use std::io;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::auth::AuthMatcher;
use crate::runlog::{Sink, CHUNK};

/// What happened to the job's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputStats {
    /// Bytes read from the job.
    pub bytes_read: u64,
    /// Bytes written to the run log (after the header); the pump hands
    /// them over, the caller fills this in from the writer's answer.
    pub bytes_written: u64,
    /// Bytes read but not written because of AGENT_RUN_LOG_MAX_BYTES.
    pub bytes_dropped: u64,
    /// The first error writing the run log, if any (from the writer too).
    pub write_error: Option<String>,
    /// The auth pattern matched a line of the output.
    pub pattern_matched: bool,
}

/// Reads the job's output and hands it to `log` in arrival order,
/// scanning it.
///
/// Past `limit` the output is still read and scanned, only not kept; the
/// log then ends with one line saying how much was dropped (SPEC §3).
/// `stop` ends the reading once the pipe has nothing ready (the drain is
/// over); `halt` ends it even while waiting for a buffer from a blocked
/// disk (a shutdown). Dropping `log` at the end closes the run log.
pub(super) async fn pump(
    mut receiver: pipe::Receiver,
    mut log: Option<Sink>,
    limit: u64,
    mut matcher: AuthMatcher,
    matched: oneshot::Sender<()>,
    mut stop: oneshot::Receiver<()>,
    mut halt: oneshot::Receiver<()>,
) -> OutputStats {
    let mut stats = OutputStats::default();
    let mut matched = Some(matched);
    // Without a run log one buffer is read into over and over.
    let mut spare = if log.is_none() {
        Some(Vec::with_capacity(CHUNK))
    } else {
        None
    };
    let mut handed = 0u64;
    let mut last_handed = b'\n';
    loop {
        let mut buffer = match (spare.take(), log.as_mut()) {
            (Some(buffer), _) => buffer,
            (None, Some(sink)) => tokio::select! {
                biased;
                buffer = sink.buffer() => buffer,
                _ = &mut halt => break,
            },
            (None, None) => Vec::with_capacity(CHUNK),
        };
        // Read into the spare capacity, never zeroed: a job that writes
        // little touches only the pages it fills, and a job that writes
        // nothing touches none (zeroing 256 KiB per run was half of the
        // loop's instructions and most of its resident heap).
        buffer.clear();
        let read = tokio::select! {
            biased;
            read = receiver.read_buf(&mut buffer) => read,
            _ = &mut stop => break,
        };
        let mut count = match read {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {
                spare = Some(buffer);
                continue;
            }
            Err(_) => break,
        };
        // Take what else the pipe already holds, up to a full buffer,
        // without waiting: a job that writes 64 KiB at a time then costs
        // one scan call and one hand-off to the writer thread (two thread
        // wake-ups) per full buffer, not per write. An error or the end
        // shows again at the next read.
        while buffer.len() < CHUNK {
            match receiver.try_read_buf(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(more) => count += more,
            }
        }
        let chunk = &buffer[..count];
        stats.bytes_read += count as u64;
        let now_matched = matcher.feed(chunk) || (count < CHUNK && matcher.search_pending());
        if now_matched {
            if let Some(sender) = matched.take() {
                let _ = sender.send(());
            }
        }
        let room = if limit == 0 {
            count as u64
        } else {
            limit.saturating_sub(handed)
        };
        let keep = (count as u64).min(room) as usize;
        stats.bytes_dropped += (count - keep) as u64;
        match log.as_mut() {
            Some(sink) if keep > 0 => {
                last_handed = buffer[keep - 1];
                match sink.write(buffer, keep) {
                    Ok(()) => handed += keep as u64,
                    Err(buffer) => {
                        stats.write_error = Some("the run-log writer thread is gone".into());
                        log = None;
                        spare = Some(buffer);
                    }
                }
            }
            _ => spare = Some(buffer),
        }
    }
    if matcher.search_pending() {
        if let Some(sender) = matched.take() {
            let _ = sender.send(());
        }
    }
    stats.pattern_matched = matcher.is_matched();
    if stats.bytes_dropped > 0 {
        if let Some(sink) = log.as_mut() {
            let newline = if last_handed == b'\n' { "" } else { "\n" };
            sink.line(format!(
                "{newline}# jobloop truncated: dropped={} limit={}\n",
                stats.bytes_dropped, limit
            ));
        }
    }
    stats
}
