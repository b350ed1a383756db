//! The keeper of one sandbox host: runs its systemd-nspawn and starts it again when the
//! container reboots, so that a sandbox host comes back from `systemctl reboot` as a machine does.
//!
//! With `--keep-unit` (needed here: this machine's PID 1 may not be systemd), nspawn does not
//! restart a rebooted container itself: it exits with status 133 and leaves that to its
//! unit (systemd's systemd-nspawn@.service has `RestartForceExitStatus=133`). This process
//! plays that unit's part, for 133 only. SIGTERM (what `sandbox down` sends) is passed on
//! to nspawn, which powers the container off, and nothing is started again.

use anyhow::{Context, Result};
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

/// The hidden subcommand: `recipe sandbox host-supervisor NSPAWN ARGS...`; also how
/// teardown recognises the process.
pub const SUBCOMMAND: &str = "host-supervisor";

/// systemd-nspawn's exit status when the container rebooted (EXIT_FORCE_RESTART in nspawn.c).
pub const REBOOTED: i32 = 133;

static STOPPING: AtomicBool = AtomicBool::new(false);
static CHILD: AtomicI32 = AtomicI32::new(0);

/// What to do when nspawn has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The container rebooted: boot it again.
    Boot,
    /// Stop, with this exit status.
    Exit(i32),
}

/// After nspawn ended with `code` (None: killed by a signal): boot again only after a
/// reboot (133) and only when no stop was asked for.
pub fn next(code: Option<i32>, stopping: bool) -> Next {
    match code {
        Some(REBOOTED) if !stopping => Next::Boot,
        Some(c) => Next::Exit(c),
        None => Next::Exit(1),
    }
}

extern "C" fn on_stop(_sig: libc::c_int) {
    // Only async-signal-safe work: an atomic store and kill(2).
    STOPPING.store(true, Ordering::SeqCst);
    let child = CHILD.load(Ordering::SeqCst);
    if child > 1 {
        // SAFETY: kill is async-signal-safe; a stale pid at worst gets a SIGTERM it ignores.
        unsafe {
            libc::kill(child, libc::SIGTERM);
        }
    }
}

fn catch_stop_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installs a handler that only touches atomics and calls kill(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Runs `program args...` (systemd-nspawn) until it ends other than by a reboot, or a stop
/// signal came; returns its last exit status.
pub fn supervise(program: &Path, args: &[OsString]) -> Result<i32> {
    catch_stop_signals();
    let mut boots = 0u32;
    loop {
        if STOPPING.load(Ordering::SeqCst) {
            return Ok(0);
        }
        // stdout/stderr are the host's console log, inherited.
        let mut child = Command::new(program)
            .args(args)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = i32::try_from(child.id()).unwrap_or(0);
        CHILD.store(pid, Ordering::SeqCst);
        // A stop that came between the check above and the store: the handler missed
        // this child, so it is told here.
        if STOPPING.load(Ordering::SeqCst) && pid > 1 {
            // SAFETY: plain kill(2) of our own child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let status = child.wait().context("cannot wait for systemd-nspawn")?;
        CHILD.store(0, Ordering::SeqCst);
        match next(status.code(), STOPPING.load(Ordering::SeqCst)) {
            Next::Boot => {
                boots += 1;
                eprintln!(
                    "recipe sandbox: the host rebooted (systemd-nspawn exit status {REBOOTED}): booting it again (boot {})",
                    boots + 1
                );
                // A container that reboots at once must not make this a busy loop.
                std::thread::sleep(Duration::from_secs(1));
            }
            Next::Exit(c) => return Ok(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reboot_boots_again_and_never_while_stopping() {
        assert_eq!(next(Some(133), false), Next::Boot);
        assert_eq!(next(Some(133), true), Next::Exit(133));
        assert_eq!(next(Some(0), false), Next::Exit(0));
        assert_eq!(next(Some(1), false), Next::Exit(1));
        // Killed by a signal (SIGKILL from teardown): never started again.
        assert_eq!(next(None, false), Next::Exit(1));
    }
}
