//! The one shutdown signal of the long-running commands (`serve`, `timers run`, `sequencer run`,
//! `projections run`): Ctrl-C or SIGTERM. Below all of them, so that none imports another for it.

use tokio::sync::watch;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn requested() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested: finishing what is in flight");
}

/// A watch channel that turns `true` once shutdown is requested (for loops that poll a stop flag).
pub fn watch_requested() -> watch::Receiver<bool> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        requested().await;
        let _ = stop_tx.send(true);
    });
    stop
}
