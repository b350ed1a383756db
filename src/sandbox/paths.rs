//! Where the sandbox keeps its files: per-sandbox state and the base image cache.

use std::path::PathBuf;

/// Overrides `/var/lib/recipe` (sandbox state lives in `$RECIPE_SANDBOX_ROOT/sandbox/<name>`).
pub const ROOT_ENV: &str = "RECIPE_SANDBOX_ROOT";
/// Overrides `/var/cache/recipe/images` (the base image cache).
pub const CACHE_ENV: &str = "RECIPE_SANDBOX_CACHE";

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Folder holding one sub-folder per sandbox.
pub fn sandboxes_dir() -> PathBuf {
    env_path(ROOT_ENV)
        .unwrap_or_else(|| PathBuf::from("/var/lib/recipe"))
        .join("sandbox")
}

/// Folder holding one sub-folder per cached base image.
pub fn images_dir() -> PathBuf {
    env_path(CACHE_ENV).unwrap_or_else(|| PathBuf::from("/var/cache/recipe/images"))
}

/// Every file of one sandbox, by name.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(name: &str) -> Layout {
        Layout {
            dir: sandboxes_dir().join(name),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.toml")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    pub fn pub_key(&self) -> PathBuf {
        self.dir.join("id_ed25519.pub")
    }
    pub fn files(&self) -> PathBuf {
        self.dir.join("files")
    }
    pub fn proxy_conf(&self) -> PathBuf {
        self.dir.join("tinyproxy.conf")
    }
    pub fn proxy_log(&self) -> PathBuf {
        self.dir.join("tinyproxy.log")
    }
    pub fn proxy_pid(&self) -> PathBuf {
        self.dir.join("tinyproxy.pid")
    }
    pub fn files_log(&self) -> PathBuf {
        self.dir.join("fileserver.log")
    }
    pub fn files_pid(&self) -> PathBuf {
        self.dir.join("fileserver.pid")
    }
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn host(&self, host: &str) -> HostLayout {
        HostLayout {
            dir: self.hosts_dir().join(host),
        }
    }
}

/// Files of one host of a sandbox.
#[derive(Debug, Clone)]
pub struct HostLayout {
    pub dir: PathBuf,
}

impl HostLayout {
    /// The overlay's writable layer: everything the host changes lands here.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// The merged root file system the host boots from.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The pid of the host's supervisor (which runs its systemd-nspawn).
    pub fn pid(&self) -> PathBuf {
        self.dir.join("host.pid")
    }
    pub fn host_key(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key")
    }
    pub fn host_pub_key(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key.pub")
    }
}
