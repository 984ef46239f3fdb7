//! Graceful shutdown: one signal (SIGTERM or Ctrl-C, or an embedder's own future) flips a
//! watch channel every loop, worker and server listens to; each finishes the round, step
//! or request in flight, then stops.

use tokio::sync::watch;

/// The sending side: call [`Shutdown::trigger`] once.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A shutdown not yet triggered.
    pub fn new() -> Shutdown {
        Shutdown {
            tx: watch::channel(false).0,
        }
    }

    /// Whether shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Triggers when `signal` completes (an embedder's own shutdown future).
    pub fn trigger_on(&self, signal: impl std::future::Future<Output = ()> + Send + 'static) {
        let me = self.clone();
        tokio::spawn(async move {
            signal.await;
            me.trigger();
        });
    }

    /// Asks everything to stop.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// A future that completes once shutdown is triggered.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // An error means the sender is gone, which is a shutdown too.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Triggers on SIGTERM or Ctrl-C.
    pub fn on_signals(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            signal().await;
            tracing::info!("shutdown signal received; finishing work in flight");
            me.trigger();
        });
    }
}

async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
