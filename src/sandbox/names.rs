//! Names and numbers of a sandbox: name checks, its /24, and its interface, namespace and machine names.

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;

/// Every bridge, veth, network namespace and machine the sandbox makes starts with this.
pub const PREFIX: &str = "rcp";

/// Second octet of every sandbox network: sandboxes live in 10.231.N.0/24.
pub const NET_FIRST: u8 = 10;
pub const NET_SECOND: u8 = 231;

/// The address of the first host is .10, the next .11, and so on.
pub const FIRST_HOST_OCTET: u8 = 10;

/// At most this many hosts per sandbox (.10 .. .209).
pub const MAX_HOSTS: usize = 200;

const MAX_SANDBOX_NAME: usize = 32;
const MAX_HOST_NAME: usize = 32;

/// A sandbox name becomes part of paths: lower-case letters, digits and `-`, starting with a letter or digit.
pub fn check_sandbox_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_SANDBOX_NAME {
        bail!("sandbox name {name:?} must be 1 to {MAX_SANDBOX_NAME} characters long");
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok_chars || !ok_start {
        bail!(
            "sandbox name {name:?} may hold only a-z, 0-9 and '-', and must start with a letter or digit"
        );
    }
    Ok(())
}

/// A host name is a single DNS label (it becomes the host's hostname and Slurm node name).
pub fn check_host_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_HOST_NAME {
        bail!("host name {name:?} must be 1 to {MAX_HOST_NAME} characters long");
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let ok_end = !name.ends_with('-');
    if !ok_chars || !ok_start || !ok_end {
        bail!(
            "host name {name:?} must be a hostname label: a-z, 0-9 and '-', starting with a letter, not ending with '-'"
        );
    }
    Ok(())
}

/// Checks a host list: at least one host, each name valid, no name twice, not too many.
pub fn check_host_list(hosts: &[String]) -> Result<()> {
    if hosts.is_empty() {
        bail!("a sandbox needs at least one host (e.g. --hosts master,w1,w2)");
    }
    if hosts.len() > MAX_HOSTS {
        bail!(
            "a sandbox holds at most {MAX_HOSTS} hosts, {} were asked for",
            hosts.len()
        );
    }
    for (i, h) in hosts.iter().enumerate() {
        check_host_name(h)?;
        if hosts[..i].contains(h) {
            bail!("host {h:?} is named twice");
        }
    }
    Ok(())
}

/// The third octet N of the sandbox's 10.231.N.0/24, derived from its name (1..=254).
pub fn subnet_octet(name: &str) -> u8 {
    let digest = Sha256::digest(name.as_bytes());
    let n = u16::from_be_bytes([digest[0], digest[1]]) % 254;
    // n < 254, so n + 1 fits in 1..=254.
    (n as u8) + 1
}

/// The network address of the sandbox /24.
pub fn subnet(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(NET_FIRST, NET_SECOND, octet, 0)
}

/// The controller's address on the bridge (.1): proxy and file server listen there.
pub fn bridge_addr(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(NET_FIRST, NET_SECOND, octet, 1)
}

/// The address of the host at `index` in the host list.
pub fn host_addr(octet: u8, index: usize) -> Ipv4Addr {
    // index < MAX_HOSTS (checked), so this stays within .10 ..= .209.
    let last = FIRST_HOST_OCTET as usize + index.min(MAX_HOSTS - 1);
    Ipv4Addr::new(NET_FIRST, NET_SECOND, octet, last as u8)
}

/// Bridge name, e.g. `rcp57br` (at most 8 characters).
pub fn bridge_name(octet: u8) -> String {
    format!("{PREFIX}{octet}br")
}

/// Controller-side end of the host's veth pair, e.g. `rcp57v0` (at most 10 characters).
pub fn veth_name(octet: u8, index: usize) -> String {
    format!("{PREFIX}{octet}v{index}")
}

/// Prefix shared by every interface of the sandbox with this octet.
pub fn iface_prefix(octet: u8) -> String {
    format!("{PREFIX}{octet}")
}

/// Network namespace (and machine name) of a host, e.g. `rcp57-master`.
pub fn netns_name(octet: u8, host: &str) -> String {
    format!("{PREFIX}{octet}-{host}")
}

/// Prefix of every network namespace of the sandbox with this octet.
pub fn netns_prefix(octet: u8) -> String {
    format!("{PREFIX}{octet}-")
}

/// Does `iface` belong to the sandbox with this octet (bridge or veth)?
pub fn is_sandbox_iface(octet: u8, iface: &str) -> bool {
    let p = iface_prefix(octet);
    match iface.strip_prefix(&p) {
        Some(rest) => {
            rest == "br"
                || rest
                    .strip_prefix('v')
                    .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_is_stable_and_in_range() {
        for name in [
            "default",
            "itest",
            "a",
            "x-1",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            let n = subnet_octet(name);
            assert!((1..=254).contains(&n), "{name} -> {n}");
            assert_eq!(n, subnet_octet(name));
        }
        assert_ne!(subnet_octet("default"), subnet_octet("itest"));
    }

    #[test]
    fn addresses() {
        assert_eq!(subnet(7), Ipv4Addr::new(10, 231, 7, 0));
        assert_eq!(bridge_addr(7), Ipv4Addr::new(10, 231, 7, 1));
        assert_eq!(host_addr(7, 0), Ipv4Addr::new(10, 231, 7, 10));
        assert_eq!(host_addr(7, 2), Ipv4Addr::new(10, 231, 7, 12));
        assert_eq!(host_addr(7, MAX_HOSTS - 1), Ipv4Addr::new(10, 231, 7, 209));
    }

    #[test]
    fn interface_names_fit_in_ifnamsiz() {
        assert!(bridge_name(254).len() <= 15);
        assert!(veth_name(254, MAX_HOSTS - 1).len() <= 15);
        assert_eq!(bridge_name(57), "rcp57br");
        assert_eq!(veth_name(57, 3), "rcp57v3");
        assert_eq!(netns_name(57, "w1"), "rcp57-w1");
        // A machine name must be a valid hostname (at most 64 characters).
        assert!(netns_name(254, &"a".repeat(MAX_HOST_NAME)).len() <= 64);
    }

    #[test]
    fn sandbox_iface_recognition() {
        assert!(is_sandbox_iface(5, "rcp5br"));
        assert!(is_sandbox_iface(5, "rcp5v12"));
        assert!(!is_sandbox_iface(5, "rcp57br"));
        assert!(!is_sandbox_iface(5, "rcp5v"));
        assert!(!is_sandbox_iface(5, "eth0"));
    }

    #[test]
    fn name_checks() {
        assert!(check_sandbox_name("default").is_ok());
        assert!(check_sandbox_name("ci-2").is_ok());
        assert!(check_sandbox_name("").is_err());
        assert!(check_sandbox_name("../x").is_err());
        assert!(check_sandbox_name("A").is_err());
        assert!(check_sandbox_name("-x").is_err());
        assert!(check_host_name("w1").is_ok());
        assert!(check_host_name("1w").is_err());
        assert!(check_host_name("w_1").is_err());
        assert!(check_host_name("w-").is_err());
        assert!(check_host_name("a.b").is_err());
        assert!(check_host_list(&["a".into(), "b".into()]).is_ok());
        assert!(check_host_list(&["a".into(), "a".into()]).is_err());
        assert!(check_host_list(&[]).is_err());
    }
}
