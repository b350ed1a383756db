//! TCP probes of sandbox services (sshd, proxy, file server): is the port answering yet?

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Sandbox traffic goes only to 10.231.0.0/16 (the sandbox subnets) and loopback.
pub fn allowed_target(addr: Ipv4Addr) -> bool {
    let o = addr.octets();
    addr.is_loopback() || (o[0] == super::names::NET_FIRST && o[1] == super::names::NET_SECOND)
}

/// Does something accept TCP connections at `addr`?
pub fn port_open(addr: SocketAddrV4, timeout: Duration) -> bool {
    if !allowed_target(*addr.ip()) {
        return false;
    }
    TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout).is_ok()
}

/// Does an SSH server answer at `addr` (its banner starts with `SSH-`)?
pub fn ssh_banner(addr: SocketAddrV4, timeout: Duration) -> bool {
    if !allowed_target(*addr.ip()) {
        return false;
    }
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

/// Waits until `check` is true, `gone` is true (gave up: returns false) or `limit` passes.
pub fn wait_until(
    limit: Duration,
    mut check: impl FnMut() -> bool,
    mut gone: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if gone() || Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `preferred` if it can be bound on `ip` now, else a free port the kernel picks.
pub fn free_port(ip: Ipv4Addr, preferred: u16) -> std::io::Result<u16> {
    if preferred != 0 && TcpListener::bind(SocketAddrV4::new(ip, preferred)).is_ok() {
        return Ok(preferred);
    }
    let l = TcpListener::bind(SocketAddrV4::new(ip, 0))?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sandbox_and_loopback_targets() {
        assert!(allowed_target(Ipv4Addr::new(10, 231, 4, 10)));
        assert!(allowed_target(Ipv4Addr::LOCALHOST));
        assert!(!allowed_target(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(!allowed_target(Ipv4Addr::new(10, 232, 4, 10)));
        assert!(!port_open(
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 22),
            Duration::from_millis(10)
        ));
    }

    #[test]
    fn probes_a_local_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        assert!(port_open(a, Duration::from_secs(1)));
        let p = free_port(Ipv4Addr::LOCALHOST, port).unwrap();
        assert_ne!(p, port);
        assert!(wait_until(Duration::from_secs(1), || true, || false));
        assert!(!wait_until(Duration::from_secs(5), || false, || true));
    }
}
