//! OS signals: SIGINT and SIGTERM start a graceful shutdown (a second one
//! exits at once with code 130); SIGHUP runs the user's hook.

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::SighupFn;
use crate::error::Error;

pub(crate) fn listen(
    stop: CancellationToken,
    hook: Option<SighupFn>,
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
