//! The sandbox network: one bridge with the controller's address, one network namespace and veth pair per host.

use super::names;
use super::tools::{self, IP};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::net::Ipv4Addr;

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// An IPv4 prefix seen on this machine, and where it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
    pub what: String,
}

impl Prefix {
    fn range(&self) -> (u32, u32) {
        let len = u32::from(self.len.min(32));
        let mask: u32 = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let start = u32::from(self.addr) & mask;
        (start, start | !mask)
    }

    /// Do the two prefixes share any address?
    pub fn overlaps(&self, other: &Prefix) -> bool {
        let (a0, a1) = self.range();
        let (b0, b1) = other.range();
        a0 <= b1 && b0 <= a1
    }
}

#[derive(Deserialize)]
struct AddrInfo {
    family: Option<String>,
    local: Option<String>,
    prefixlen: Option<u8>,
}

#[derive(Deserialize)]
struct Link {
    ifname: Option<String>,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct Route {
    dst: Option<String>,
    dev: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    table: Option<String>,
}

fn parse_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
    match s.split_once('/') {
        Some((a, l)) => Some((a.parse().ok()?, l.parse().ok()?)),
        None => Some((s.parse().ok()?, 32)),
    }
}

/// IPv4 prefixes in `ip -j -4 addr` output (each address with its prefix length).
pub fn parse_addrs(json: &str) -> Result<Vec<Prefix>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let links: Vec<Link> = serde_json::from_str(json).context("cannot parse `ip -j addr`")?;
    let mut out = Vec::new();
    for l in links {
        for a in l.addr_info {
            if a.family.as_deref().is_some_and(|f| f != "inet") {
                continue;
            }
            if let (Some(local), Some(len)) = (a.local, a.prefixlen) {
                if let Ok(addr) = local.parse() {
                    out.push(Prefix {
                        addr,
                        len,
                        what: format!(
                            "address {local}/{len} on {}",
                            l.ifname.as_deref().unwrap_or("?")
                        ),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// IPv4 route destinations in `ip -j -4 route show table all` output, default routes excluded.
pub fn parse_routes(json: &str) -> Result<Vec<Prefix>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let routes: Vec<Route> = serde_json::from_str(json).context("cannot parse `ip -j route`")?;
    let mut out = Vec::new();
    for r in routes {
        let Some(dst) = r.dst else { continue };
        let Some((addr, len)) = parse_prefix(&dst) else {
            continue; // "default" and friends
        };
        if len == 0 || r.kind.as_deref() == Some("broadcast") {
            continue;
        }
        out.push(Prefix {
            addr,
            len,
            what: format!(
                "route {dst} via {}{}",
                r.dev.as_deref().unwrap_or("?"),
                r.table.map(|t| format!(" (table {t})")).unwrap_or_default()
            ),
        });
    }
    Ok(out)
}

/// Everything on this machine that overlaps the sandbox's /24.
pub fn conflicts(octet: u8) -> Result<Vec<String>> {
    let addrs = tools::run(IP, ["-j", "-4", "addr", "show"])?;
    let routes = tools::run(IP, ["-j", "-4", "route", "show", "table", "all"])?;
    let mut seen = parse_addrs(&String::from_utf8_lossy(&addrs.stdout))?;
    seen.extend(parse_routes(&String::from_utf8_lossy(&routes.stdout))?);
    Ok(overlapping(octet, &seen))
}

/// The descriptions of the prefixes in `seen` that overlap 10.231.octet.0/24.
pub fn overlapping(octet: u8, seen: &[Prefix]) -> Vec<String> {
    let ours = Prefix {
        addr: names::subnet(octet),
        len: 24,
        what: String::new(),
    };
    let mut out: Vec<String> = seen
        .iter()
        .filter(|p| p.overlaps(&ours))
        .map(|p| p.what.clone())
        .collect();
    out.dedup();
    out
}

/// One host's place on the network.
#[derive(Debug, Clone)]
pub struct HostNet {
    pub netns: String,
    pub veth: String,
    pub addr: Ipv4Addr,
}

fn disable_ipv6(iface: &str) {
    // The bridge and the controller-side veths need no IPv6: keep them quiet.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"),
        "1\n",
    );
}

/// Makes the bridge with the controller's address on it.
pub fn create_bridge(octet: u8) -> Result<()> {
    let br = names::bridge_name(octet);
    let addr = format!("{}/24", names::bridge_addr(octet));
    tools::run(IP, ["link", "add", br.as_str(), "type", "bridge"])
        .with_context(|| format!("cannot create bridge {br}"))?;
    disable_ipv6(&br);
    tools::run(IP, ["addr", "add", addr.as_str(), "dev", br.as_str()])?;
    tools::run(IP, ["link", "set", br.as_str(), "up"])?;
    Ok(())
}

/// Makes the host's network namespace, with `eth0` (its address) and `lo` up, joined to the bridge.
pub fn create_host(octet: u8, h: &HostNet) -> Result<()> {
    let br = names::bridge_name(octet);
    let ns = h.netns.as_str();
    let veth = h.veth.as_str();
    let addr = format!("{}/24", h.addr);
    tools::run(IP, ["netns", "add", ns])
        .with_context(|| format!("cannot create network namespace {ns}"))?;
    tools::run(
        IP,
        [
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    disable_ipv6(veth);
    tools::run(IP, ["link", "set", veth, "master", br.as_str()])?;
    tools::run(IP, ["link", "set", veth, "up"])?;
    tools::run(IP, ["-n", ns, "addr", "add", addr.as_str(), "dev", "eth0"])?;
    tools::run(IP, ["-n", ns, "link", "set", "eth0", "up"])?;
    tools::run(IP, ["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Names of the network namespaces that belong to the sandbox with this octet.
pub fn list_netns(octet: u8) -> Vec<String> {
    let prefix = names::netns_prefix(octet);
    let Ok(rd) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

/// Names of the interfaces (bridge, veths) that belong to the sandbox with this octet.
pub fn list_links(octet: u8) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| names::is_sandbox_iface(octet, n))
        .collect();
    v.sort();
    v
}

/// Pids of every process inside a network namespace (a container left behind, for example).
pub fn netns_pids(netns: &str) -> Vec<u32> {
    match tools::run(IP, ["netns", "pids", netns]) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Removes every namespace, veth and the bridge of the sandbox with this octet.
/// Idempotent; fails only if something could not be removed.
pub fn remove_all(octet: u8) -> Result<()> {
    for ns in list_netns(octet) {
        tools::run_quiet(IP, ["netns", "del", ns.as_str()]);
    }
    let mut links = list_links(octet);
    // veths first, then the bridge.
    links.sort_by_key(|l| l.ends_with("br"));
    for l in links {
        tools::run_quiet(IP, ["link", "del", l.as_str()]);
    }
    let left_ns = list_netns(octet);
    let left_links = list_links(octet);
    if !left_ns.is_empty() || !left_links.is_empty() {
        bail!(
            "could not remove network namespaces {:?} / interfaces {:?}: remove them with `ip netns del NAME` / `ip link del NAME`",
            left_ns,
            left_links
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRS: &str = r#"[{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
        {"ifindex":4,"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24}]},
        {"ifindex":9,"ifname":"wg0","addr_info":[{"family":"inet","local":"10.231.7.5","prefixlen":32}]}]"#;
    const ROUTES: &str = r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]},
        {"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel","scope":"link","flags":[]},
        {"type":"local","dst":"127.0.0.1","dev":"lo","table":"local","flags":[]},
        {"type":"broadcast","dst":"10.231.9.255","dev":"x","table":"local","flags":[]},
        {"dst":"10.0.0.0/8","dev":"vpn0","flags":[]}]"#;

    #[test]
    fn parses_ip_json() {
        let a = parse_addrs(ADDRS).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].addr, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(a[1].len, 24);
        let r = parse_routes(ROUTES).unwrap();
        // default and broadcast are left out
        assert_eq!(r.len(), 3);
        assert!(parse_addrs("").unwrap().is_empty());
        assert!(parse_routes("\n").unwrap().is_empty());
    }

    #[test]
    fn finds_overlaps() {
        let a = parse_addrs(ADDRS).unwrap();
        let r = parse_routes(ROUTES).unwrap();
        assert_eq!(overlapping(7, &a), vec!["address 10.231.7.5/32 on wg0"]);
        assert!(overlapping(8, &a).is_empty());
        // a 10/8 route covers every sandbox subnet
        assert_eq!(overlapping(8, &r), vec!["route 10.0.0.0/8 via vpn0"]);
    }

    #[test]
    fn prefix_overlap() {
        let p = |a: [u8; 4], len| Prefix {
            addr: Ipv4Addr::from(a),
            len,
            what: String::new(),
        };
        assert!(p([10, 231, 7, 0], 24).overlaps(&p([10, 231, 7, 200], 32)));
        assert!(p([10, 0, 0, 0], 8).overlaps(&p([10, 231, 7, 0], 24)));
        assert!(!p([10, 231, 7, 0], 24).overlaps(&p([10, 231, 8, 0], 24)));
        assert!(p([0, 0, 0, 0], 0).overlaps(&p([10, 231, 8, 0], 24)));
    }
}
