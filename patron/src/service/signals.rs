//! OS signals: SIGINT and SIGTERM start a graceful shutdown (a second one
//! exits at once with code 130); SIGHUP reloads what the service can
//! reload (the HTTP server's TLS certificate), then runs the user's hook.

use std::sync::{Arc, Mutex};

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::SighupFn;
use crate::error::Error;

type ReloadFn = Box<dyn Fn() -> Result<(), Error> + Send + Sync>;

/// What SIGHUP reloads besides the user's hook, each with what it is.
#[derive(Default)]
pub(crate) struct Reloads(Mutex<Vec<(String, ReloadFn)>>);

impl Reloads {
    /// Adds `reload`, named `what` in the log lines.
    pub(crate) fn add(
        &self,
        what: impl Into<String>,
        reload: impl Fn() -> Result<(), Error> + Send + Sync + 'static,
    ) {
        self.lock().push((what.into(), Box::new(reload)));
    }

    /// Runs every reload; a failure is logged and leaves the old state.
    fn run(&self) {
        for (what, reload) in self.lock().iter() {
            match reload() {
                Ok(()) => tracing::info!(reloaded = %what, "SIGHUP: reloaded"),
                Err(e) => {
                    tracing::error!(reloaded = %what, error = %e, "SIGHUP: reload failed; keeping the current one")
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, ReloadFn)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn listen(
    stop: CancellationToken,
    hook: Option<SighupFn>,
    reloads: Arc<Reloads>,
) -> Result<JoinHandle<()>, Error> {
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Error::msg(format!("cannot install the {name} handler: {e}")))
    };
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = install(SignalKind::hangup(), "SIGHUP")?;
    Ok(tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    reloads.run();
                    match &hook {
                        Some(hook) => {
                            tracing::info!("SIGHUP received: running the hook");
                            match hook().await {
                                Ok(()) => tracing::info!("SIGHUP hook finished"),
                                Err(e) => tracing::error!(error = %e, "SIGHUP hook failed"),
                            }
                        }
                        None => tracing::info!("SIGHUP received; no hook is set, ignoring it"),
                    }
                    continue;
                }
            };
            if stop.is_cancelled() {
                tracing::warn!(signal = name, "second shutdown signal: exiting now");
                std::process::exit(130);
            }
            tracing::info!(signal = name, "shutdown signal received");
            stop.cancel();
        }
    }))
}
