//! Ctrl-C and SIGTERM: a first one stops every host after its current step, a second aborts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The signal that stopped the run, for the recap.
static STOP_SIGNAL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The engine says "interrupted (Ctrl-C)" for any stop: name the signal that was received.
pub fn stopped_by(msg: &str) -> String {
    match STOP_SIGNAL.get() {
        Some(sig) => msg.replace("interrupted (Ctrl-C)", &format!("interrupted ({sig})")),
        None => msg.to_string(),
    }
}

/// Ctrl-C (SIGINT) and SIGTERM both stop every host after its current step, so the run
/// ends with its recap; a second signal of either kind aborts at once (130 or 143).
pub async fn watch(flag: Arc<AtomicBool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("warning: cannot watch for Ctrl-C and SIGTERM: an interrupted run will not print its recap");
        return;
    };
    let first = tokio::select! {
        _ = int.recv() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    };
    let _ = STOP_SIGNAL.set(first);
    eprintln!(
        "\ninterrupted ({first}): stopping every host after its current step (Ctrl-C or SIGTERM again to abort)"
    );
    flag.store(true, Ordering::Relaxed);
    let code = tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    };
    std::process::exit(code);
}
