//! Shutdown triggers: SIGTERM (Kubernetes) and SIGINT (Ctrl-C) both start a
//! graceful shutdown.

/// Resolves at the first SIGTERM or SIGINT; returns the signal's name.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers there is nothing to wait for; the process
        // then stops only when killed, which loses nothing either.
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
