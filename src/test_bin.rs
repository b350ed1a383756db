//! Stand-in commands for unit tests: scripts put first on PATH to watch or replace a tool.

use std::path::{Path, PathBuf};

/// Writes `script` as the executable `dir/name` and returns its path.
pub fn stand_in(dir: &Path, name: &str, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, script).expect("write a stand-in");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// This process's PATH with `dir` first.
pub fn path_first(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}
