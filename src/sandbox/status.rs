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
        "sandbox {name}: {}, {}, network {}/24, bridge {} {}\n",
        st.phase,
        st.release,
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
    s.push_str(&format!(
        "  {:<width$}  {:<15}  {:<18}  STATE\n",
        "HOST", "ADDRESS", "RELEASE"
    ));
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
        // What the host's own root says, so a mixed or odd image shows up as such.
        let release = std::fs::read_to_string(hl.root().join("etc/os-release"))
            .ok()
            .and_then(|t| os_release_label(&t))
            .unwrap_or_else(|| format!("{} (image)", st.release));
        s.push_str(&format!(
            "  {:<width$}  {:<15}  {:<18}  {state}\n",
            h.name,
            h.addr.to_string(),
            release
        ));
    }
    s
}

/// `Debian 13 (trixie)` from an os-release file.
fn os_release_label(text: &str) -> Option<String> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    let name = field("NAME").unwrap_or_default();
    let name = name
        .split_whitespace()
        .next()
        .unwrap_or("Linux")
        .to_string();
    match (field("VERSION_ID"), field("VERSION_CODENAME")) {
        (Some(v), Some(c)) => Some(format!("{name} {v} ({c})")),
        (Some(v), None) => Some(format!("{name} {v}")),
        (None, Some(c)) => Some(format!("{name} {c}")),
        (None, None) => None,
    }
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

#[cfg(test)]
mod tests {
    use super::os_release_label;

    #[test]
    fn release_label_from_os_release() {
        let t = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\nVERSION_CODENAME=trixie\n";
        assert_eq!(os_release_label(t).as_deref(), Some("Debian 13 (trixie)"));
        assert_eq!(os_release_label("FOO=1\n"), None);
    }
}
