//! Checks before a sandbox is made: root, the programs it runs, overlayfs.

use super::tools;
use anyhow::{bail, Result};

/// Fails unless this process runs as root.
pub fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "`recipe sandbox {what}` must run as root (sandboxes are made of network namespaces, a bridge, mounts and containers): run it with sudo"
        );
    }
    Ok(())
}

/// Fails unless the kernel can mount overlayfs.
pub fn require_overlayfs() -> Result<()> {
    let known = std::fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    if !known {
        // The module may load on first mount; try it.
        let _ = std::process::Command::new("modprobe")
            .arg("overlay")
            .env("PATH", tools::SAFE_PATH)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let known = std::fs::read_to_string("/proc/filesystems")
            .map(|t| t.contains("overlay"))
            .unwrap_or(false);
        if !known {
            bail!("the kernel has no overlayfs, which sandbox hosts boot from: load it with `modprobe overlay`");
        }
    }
    Ok(())
}

/// Everything `up` needs, checked before anything is made (debootstrap only if the base
/// image still has to be built).
pub fn check_up(image_cached: bool) -> Result<()> {
    require_root("up")?;
    let mut needed = tools::FOR_HOSTS.to_vec();
    if !image_cached {
        needed.extend(tools::FOR_IMAGE);
    }
    tools::require_all(&needed)?;
    require_overlayfs()?;
    Ok(())
}
