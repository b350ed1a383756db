//! The record a sandbox keeps of itself (`state.json`): what `status` shows and what `down` removes.

use super::paths::{self, Layout};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// One host of a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostState {
    pub name: String,
    pub addr: Ipv4Addr,
    pub netns: String,
    pub veth: String,
}

/// One sandbox, written before anything is made so that a killed `up` can be cleaned up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxState {
    pub name: String,
    pub octet: u8,
    pub bridge: String,
    pub bridge_addr: Ipv4Addr,
    pub hosts: Vec<HostState>,
    pub image: String,
    /// Debian suite of the image; records of older versions lack it and were bookworm.
    #[serde(default = "default_release")]
    pub release: String,
    pub serve_dir: PathBuf,
    pub proxy_port: u16,
    pub files_port: u16,
    /// `starting` while `up` runs, `up` once every host answered.
    pub phase: String,
}

fn default_release() -> String {
    "bookworm".to_string()
}

impl SandboxState {
    pub fn load(layout: &Layout) -> Option<SandboxState> {
        let text = std::fs::read_to_string(layout.state()).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save(&self, layout: &Layout) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let tmp = layout.dir.join(".state.json.tmp");
        std::fs::write(&tmp, text + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, layout.state())
            .with_context(|| format!("cannot write {}", layout.state().display()))?;
        Ok(())
    }
}

/// Names of every sandbox that has a folder, sorted.
pub fn list_names() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(paths::sandboxes_dir()) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| super::names::check_sandbox_name(n).is_ok())
        .collect();
    v.sort();
    v
}

/// The other sandbox (by name) whose record claims this octet, if any.
pub fn owner_of_octet(octet: u8, except: &str) -> Option<String> {
    list_names()
        .into_iter()
        .filter(|n| n != except)
        .find(|n| SandboxState::load(&Layout::new(n)).is_some_and(|s| s.octet == octet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            dir: dir.path().to_path_buf(),
        };
        let s = SandboxState {
            name: "t".into(),
            octet: 9,
            bridge: "rcp9br".into(),
            bridge_addr: Ipv4Addr::new(10, 231, 9, 1),
            hosts: vec![HostState {
                name: "a".into(),
                addr: Ipv4Addr::new(10, 231, 9, 10),
                netns: "rcp9-a".into(),
                veth: "rcp9v0".into(),
            }],
            image: "abc".into(),
            release: "trixie".into(),
            serve_dir: dir.path().join("files"),
            proxy_port: 3128,
            files_port: 8000,
            phase: "up".into(),
        };
        s.save(&layout).unwrap();
        assert_eq!(SandboxState::load(&layout), Some(s));
    }
}
