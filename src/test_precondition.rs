//! What a test needs before it can prove anything (root, a tool, a file). A missing one fails
//! the test: a skip must never pass for a success. With `RECIPE_TEST_ALLOW_SKIP=1` the test is
//! skipped instead, out loud (on the real stderr, past the test harness's capture) and counted
//! in `target/skipped-tests.txt`, which `scripts/test` reports. Shared by the unit tests and
//! `tests/common`.

use std::io::Write;
use std::path::PathBuf;

/// Set to `1` to turn missing preconditions into counted skips.
pub const ALLOW_SKIP: &str = "RECIPE_TEST_ALLOW_SKIP";

/// Where skips are recorded, one line each.
pub fn skips_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/skipped-tests.txt")
}

/// `true` when `met`. Otherwise the test fails naming `what` it lacks, or, when skips are
/// allowed, the skip is printed and recorded and `false` comes back (the test returns).
pub fn require(met: bool, what: &str) -> bool {
    if met {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    assert!(
        std::env::var(ALLOW_SKIP).as_deref() == Ok("1"),
        "{test}: {what}. A missing precondition fails the test; set {ALLOW_SKIP}=1 to skip it \
         instead (scripts/test counts the skips)"
    );
    let line = format!("SKIPPED {test}: {what}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skips_file())
    {
        let _ = f.write_all(line.as_bytes());
    }
    false
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// [`require`] root, for `what` (mounting a tmpfs, booting sandbox hosts...).
pub fn require_root(what: &str) -> bool {
    require(is_root(), &format!("{what} needs root"))
}
