//! Ctrl-C and SIGTERM: a first one stops every host after its current step, a second aborts
//! the steps under way; either way the run ends through its normal path (connections
//! closed, recap printed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// How far a run has been asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    Running,
    /// One signal: no new step starts; hosts not yet connected are not started.
    AfterStep,
    /// A second signal: the commands under way are abandoned too (their sessions end, and
    /// with them the commands on the hosts).
    Now,
}

/// The signal that stopped the run (its name and exit status), set once.
static SIGNAL: OnceLock<(&'static str, i32)> = OnceLock::new();

fn state() -> &'static tokio::sync::watch::Sender<Stop> {
    static S: OnceLock<tokio::sync::watch::Sender<Stop>> = OnceLock::new();
    S.get_or_init(|| tokio::sync::watch::channel(Stop::Running).0)
}

/// Waits until the run is asked to stop at least `at`.
pub async fn reached(at: Stop) {
    let mut rx = state().subscribe();
    let _ = rx.wait_for(|s| *s >= at).await;
}

/// How far the run has been asked to stop, now.
pub fn stop() -> Stop {
    *state().borrow()
}

/// Why a host stopped, for its recap: `interrupted (SIGTERM)`.
pub fn reason() -> String {
    format!("interrupted ({})", SIGNAL.get().map_or("Ctrl-C", |s| s.0))
}

/// The exit status of a run aborted by a second signal: 128 + that signal's number (130 for
/// Ctrl-C, 143 for SIGTERM).
pub fn abort_status() -> Option<i32> {
    ABORT.get().copied()
}

static ABORT: OnceLock<i32> = OnceLock::new();

/// Ctrl-C (SIGINT) and SIGTERM both stop every host after its current step, so the run
/// ends with its recap; a second signal of either kind abandons the steps under way, and
/// the run exits 130 or 143 (after its recap).
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
        _ = int.recv() => ("Ctrl-C", 130),
        _ = term.recv() => ("SIGTERM", 143),
    };
    let _ = SIGNAL.set(first);
    eprintln!(
        "\ninterrupted ({}): stopping every host after its current step (Ctrl-C or SIGTERM again to abort)",
        first.0
    );
    flag.store(true, Ordering::Relaxed);
    state().send_replace(Stop::AfterStep);
    let (second, code) = tokio::select! {
        _ = int.recv() => ("Ctrl-C", 130),
        _ = term.recv() => ("SIGTERM", 143),
    };
    let _ = ABORT.set(code);
    eprintln!("\n{second} again: abandoning the steps under way; closing connections");
    state().send_replace(Stop::Now);
}
