//! `recipe sandbox status`: a table of sandboxes, their hosts, addresses and state.

use super::names;
use super::paths::Layout;
use super::probe;
use super::process;
use super::state::{self, SandboxState};
use std::net::SocketAddrV4;
use std::time::Duration;

fn service_state(pid_file: &std::path::Path, dir: &std::path::Path) -> &'static str {
    match process::read_pid(pid_file) {
        Some(pid) if process::find_by_dir(dir).contains(&pid) => "running",
        _ => "stopped",
    }
}

/// The status text of one sandbox.
pub fn describe(name: &str) -> String {
    let layout = Layout::new(name);
    let Some(st) = SandboxState::load(&layout) else {
        return format!(
            "sandbox {name}: incomplete (no record in {}); remove it with `recipe sandbox down --name {name}`\n",
            layout.dir.display()
        );
    };
    let ours = process::find_by_dir(&layout.dir);
    let mut s = format!(
        "sandbox {name}: {}, network {}/24, bridge {} {}\n",
        st.phase,
        names::subnet(st.octet),
        st.bridge,
        st.bridge_addr
    );
    s.push_str(&format!("  inventory  {}\n", layout.inventory().display()));
    s.push_str(&format!(
        "  apt proxy  http://{}:{} ({})\n",
        st.bridge_addr,
        st.proxy_port,
        service_state(&layout.proxy_pid(), &layout.dir)
    ));
    s.push_str(&format!(
        "  files      http://{}:{} <- {} ({})\n",
        st.bridge_addr,
        st.files_port,
        st.serve_dir.display(),
        service_state(&layout.files_pid(), &layout.dir)
    ));
    let width = st
        .hosts
        .iter()
        .map(|h| h.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    s.push_str(&format!("  {:<width$}  {:<15}  STATE\n", "HOST", "ADDRESS"));
    for h in &st.hosts {
        let hl = layout.host(&h.name);
        let state = match process::read_pid(&hl.pid()) {
            Some(pid) if ours.contains(&pid) => {
                if probe::ssh_banner(SocketAddrV4::new(h.addr, 22), Duration::from_millis(500)) {
                    "running"
                } else {
                    "booting (no ssh yet)"
                }
            }
            _ => "stopped",
        };
        s.push_str(&format!(
            "  {:<width$}  {:<15}  {state}\n",
            h.name,
            h.addr.to_string()
        ));
    }
    s
}

/// Status of one sandbox, or of all when `name` is None.
pub fn status_text(name: Option<&str>) -> String {
    match name {
        Some(n) => {
            if Layout::new(n).dir.exists() {
                describe(n)
            } else {
                format!("no sandbox named {n}\n")
            }
        }
        None => {
            let all = state::list_names();
            if all.is_empty() {
                return "no sandboxes (make one with `recipe sandbox up`)\n".to_string();
            }
            all.iter()
                .map(|n| describe(n))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}
