//! CPU time of the calling thread, split between a script's own code and its primitives' work.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    /// CPU time this thread spent inside primitives (see [`native`]).
    static NATIVE_CPU: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// CPU time used by the calling thread so far.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Runs a primitive's work; its CPU time is not counted against the script CPU limit (`engine::SCRIPT_CPU_LIMIT`)
/// (diffs and checksums of big files are the primitive's cost, not a runaway script).
pub fn native<T>(f: impl FnOnce() -> T) -> T {
    let before = thread_cpu();
    let out = f();
    let spent = thread_cpu().saturating_sub(before);
    NATIVE_CPU.with(|c| c.set(c.get() + spent));
    out
}

/// The CPU time the script itself used on this thread: all of it less its primitives'.
pub fn script_cpu() -> Duration {
    thread_cpu().saturating_sub(NATIVE_CPU.with(Cell::get))
}
