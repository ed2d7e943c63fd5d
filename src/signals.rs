//! Signals as commands to the loop: SIGTERM and SIGINT stop it (the second
//! at once), SIGHUP leaves a halt (SPEC §5).

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::command::Command;

/// The handlers, installed: from now on these signals no longer kill
/// jobloop, even as PID 1.
pub struct SignalHandlers {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl SignalHandlers {
    /// Installs the handlers; call inside the runtime that will forward.
    ///
    /// # Errors
    ///
    /// When a handler cannot be installed.
    pub fn install() -> std::io::Result<SignalHandlers> {
        Ok(SignalHandlers {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Forwards signals to the loop until it stops listening.
    pub async fn forward(mut self, commands: mpsc::Sender<Command>) {
        loop {
            let command = tokio::select! {
                _ = self.terminate.recv() => { tracing::info!(signal = "SIGTERM", "stop requested"); Command::Shutdown }
                _ = self.interrupt.recv() => { tracing::info!(signal = "SIGINT", "stop requested"); Command::Shutdown }
                _ = self.hangup.recv() => Command::Resume { source: "SIGHUP", reply: None },
            };
            if commands.send(command).await.is_err() {
                return;
            }
        }
    }
}
