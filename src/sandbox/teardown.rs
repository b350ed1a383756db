//! Taking a sandbox down: stop its hosts and services, remove namespaces, links, bridge, mounts and files.

use super::host;
use super::names;
use super::net;
use super::paths::Layout;
use super::process;
use super::state::{self, SandboxState};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Time hosts get to power off cleanly before they are killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(15);

/// Does anything of the sandbox `name` exist on this machine?
pub fn exists(name: &str) -> bool {
    let layout = Layout::new(name);
    if layout.dir.exists() {
        return true;
    }
    let octet = names::subnet_octet(name);
    state::owner_of_octet(octet, name).is_none()
        && (!net::list_netns(octet).is_empty() || !net::list_links(octet).is_empty())
}

/// Removes everything of the sandbox `name`. Idempotent: succeeds when nothing is there.
pub fn teardown(name: &str) -> Result<()> {
    let layout = Layout::new(name);
    let recorded = SandboxState::load(&layout);
    let octet = recorded
        .as_ref()
        .map(|s| s.octet)
        .unwrap_or_else(|| names::subnet_octet(name));
    // Never touch the network of another sandbox that happens to share the derived octet.
    let owns_network = recorded.is_some() || state::owner_of_octet(octet, name).is_none();

    // Host names: from the record, and from the folders (a record may be missing).
    let mut hosts: Vec<String> = recorded
        .as_ref()
        .map(|s| s.hosts.iter().map(|h| h.name.clone()).collect())
        .unwrap_or_default();
    if let Ok(rd) = std::fs::read_dir(layout.hosts_dir()) {
        for e in rd.filter_map(|e| e.ok()) {
            if let Ok(n) = e.file_name().into_string() {
                if !hosts.contains(&n) {
                    hosts.push(n);
                }
            }
        }
    }

    // nspawn's lock files are named after the mounted root's inode: note them while mounted.
    let lock_files: Vec<PathBuf> = hosts
        .iter()
        .filter_map(|h| host::nspawn_lock_file(&layout.host(h).root()))
        .collect();

    // 1. Power the hosts off (SIGTERM makes nspawn shut the container down cleanly) and stop
    //    the proxy and the file server; kill what does not go.
    // Found by their arguments, not by pid files: a pid may have been reused. Looked for
    // again until none is left: a host caught in a reboot may have had its nspawn started
    // again by its supervisor between the look and the signal.
    let mut stuck = Vec::new();
    for _ in 0..3 {
        let pids = process::find_by_dir(&layout.dir);
        if pids.is_empty() {
            break;
        }
        stuck = process::terminate(&pids, POWEROFF_GRACE);
    }

    // 2. Containers whose nspawn was killed keep running: kill whatever lives in our namespaces.
    if owns_network {
        let inside: Vec<u32> = net::list_netns(octet)
            .iter()
            .flat_map(|ns| net::netns_pids(ns))
            .collect();
        let left = process::kill_now(&inside);
        if !left.is_empty() {
            bail!("could not stop processes {left:?} of sandbox {name}: kill them by hand");
        }
    }
    if !stuck.is_empty() {
        bail!("could not stop processes {stuck:?} of sandbox {name}: kill them by hand");
    }

    // 3. nspawn's runtime files, then our mounts.
    for f in lock_files {
        let _ = std::fs::remove_file(f);
    }
    for h in &hosts {
        if names::check_host_name(h).is_ok() {
            for d in host::nspawn_runtime_dirs(&names::netns_name(octet, h)) {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    host::unmount_below(&layout.dir)?;

    // 4. Network: namespaces, veths, bridge.
    if owns_network {
        net::remove_all(octet)?;
    }

    // 5. Files (the image cache stays).
    if layout.dir.exists() {
        std::fs::remove_dir_all(&layout.dir)
            .with_context(|| format!("cannot remove {}", layout.dir.display()))?;
    }
    Ok(())
}
