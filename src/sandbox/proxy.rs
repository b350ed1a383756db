//! The apt forward proxy of a sandbox: tinyproxy on the bridge address, its config and its process.

use super::paths::Layout;
use super::probe;
use super::process;
use super::tools::{self, TINYPROXY};
use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// Port tried first for the proxy.
pub const PREFERRED_PORT: u16 = 3128;

/// tinyproxy's config: listen only on the bridge address, serve only the sandbox /24.
pub fn config_text(listen: Ipv4Addr, port: u16, subnet: Ipv4Addr) -> String {
    format!(
        "# Written by recipe sandbox: the hosts' apt proxy.\n\
         User nobody\n\
         Group nogroup\n\
         Port {port}\n\
         Listen {listen}\n\
         Timeout 600\n\
         MaxClients 100\n\
         Allow {subnet}/24\n\
         ConnectPort 443\n\
         DisableViaHeader Yes\n\
         LogLevel Notice\n"
    )
}

/// The `01proxy` apt config a host gets.
pub fn apt_conf_text(url: &str) -> String {
    format!("Acquire::http::Proxy \"{url}\";\nAcquire::https::Proxy \"{url}\";\n")
}

/// Writes the config and starts tinyproxy in the foreground, detached; waits until it listens.
pub fn start(layout: &Layout, listen: Ipv4Addr, port: u16, subnet: Ipv4Addr) -> Result<u32> {
    let program = tools::require(TINYPROXY)?;
    let conf = layout.proxy_conf();
    std::fs::write(&conf, config_text(listen, port, subnet))
        .with_context(|| format!("cannot write {}", conf.display()))?;
    let args = vec!["-d".into(), "-c".into(), conf.clone().into_os_string()];
    let pid = process::spawn_detached(&program, &args, &layout.dir, &layout.proxy_log())?;
    process::write_pid(&layout.proxy_pid(), pid)?;
    let target = SocketAddrV4::new(listen, port);
    let up = probe::wait_until(
        Duration::from_secs(10),
        || probe::port_open(target, Duration::from_millis(200)),
        || !process::alive(pid),
    );
    if !up {
        bail!(
            "the apt proxy (tinyproxy) did not start listening on {target}; its log {}:\n{}",
            layout.proxy_log().display(),
            tools::tail(&layout.proxy_log(), 15)
        );
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_bridge_and_allows_subnet() {
        let c = config_text(
            Ipv4Addr::new(10, 231, 5, 1),
            3128,
            Ipv4Addr::new(10, 231, 5, 0),
        );
        assert!(c.contains("\nPort 3128\n"));
        assert!(c.contains("\nListen 10.231.5.1\n"));
        assert!(c.contains("\nAllow 10.231.5.0/24\n"));
        assert!(c.contains("\nTimeout 600\n"));
        assert!(c.contains("\nUser nobody\n"));
        // Only one Allow line: nobody else may use the proxy.
        assert_eq!(c.matches("Allow").count(), 1);
    }

    #[test]
    fn apt_conf() {
        assert_eq!(
            apt_conf_text("http://10.231.5.1:3128"),
            "Acquire::http::Proxy \"http://10.231.5.1:3128\";\nAcquire::https::Proxy \"http://10.231.5.1:3128\";\n"
        );
    }
}
