//! Waiting for the signals that stop a server: SIGINT (Ctrl-C) and SIGTERM.

/// Returns when SIGINT or SIGTERM arrives (or when signals cannot be watched at all, so that
/// a server never runs unstoppable).
pub async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
