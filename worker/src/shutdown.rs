//! The stop signal: injected into the drain loop so that tests can trigger it.

use tokio::sync::watch;

/// Whether the worker has been asked to stop; cheap to clone and to wait on repeatedly.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Triggers a [`Shutdown`].
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once the stop is asked for (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger is gone without firing: then never stop on its account.
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A shutdown that fires on SIGTERM (how ECS stops a task) or Ctrl-C.
pub fn on_signals() -> std::io::Result<Shutdown> {
    use tokio::signal::unix::{SignalKind, signal};
    let (trigger, shutdown) = shutdown_channel();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received: finishing up"),
            _ = int.recv() => tracing::info!("interrupt received: finishing up"),
        }
        trigger.trigger();
        // Keep the channel open so that waiters see the stop rather than a closed trigger.
        std::future::pending::<()>().await;
    });
    Ok(shutdown)
}
