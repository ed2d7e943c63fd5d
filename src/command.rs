//! The requests the HTTP server and the signal handlers send to the loop.
//!
//! A leaf: the senders (`http`, `signals`) and the receiver (`supervisor`)
//! share these types without either importing the other.

use tokio::sync::oneshot;

/// Requests to the loop, from the HTTP server and the signal handlers.
#[derive(Debug)]
pub enum Command {
    /// Liveness: answered as soon as the loop sees it.
    Ping(oneshot::Sender<()>),
    /// Leave a halt (`POST /resume`, SIGHUP).
    Resume {
        /// Who asked, for the log.
        source: &'static str,
        /// Where to send the answer, if anyone waits for it.
        reply: Option<oneshot::Sender<ResumeAnswer>>,
    },
    /// SIGTERM / SIGINT: the first stops gracefully, the second at once.
    Shutdown,
}

/// The answer to [`Command::Resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAnswer {
    /// The halt is left; the loop runs again.
    Resumed,
    /// The loop was not halted.
    NotHalted,
}
