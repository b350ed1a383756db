//! A private network the controller cannot enter: a Linux network namespace holding real
//! OpenSSH servers, joined to this machine by one veth link. Only a server listening on the
//! link's far address (a bastion, a login node) can be reached from here; the others listen
//! on the namespace's own loopback and are reached through it (ProxyJump), or not at all.
//! Needs root (`ip netns`); everything is removed on drop, also when a test fails.
#![allow(dead_code)]

use super::{keygen, sshd_path, text};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The port every server of the namespace listens on (its own network: no clash).
pub const PORT: u16 = 22022;

/// One OpenSSH server inside the namespace.
pub struct NsSshd {
    /// Its address as seen from inside the namespace (and from here for the bastion).
    pub addr: String,
    pub dir: PathBuf,
    child: Child,
}

impl NsSshd {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// The `[addr]:port key` line for known_hosts.
    pub fn known_host(&self) -> String {
        let pubkey = std::fs::read_to_string(self.dir.join("host_key.pub")).expect("host key");
        let mut parts = pubkey.split_whitespace();
        format!(
            "[{}]:{PORT} {} {}\n",
            self.addr,
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("")
        )
    }

    /// Successful logins so far (sshd logs them at LogLevel INFO).
    pub fn logins(&self) -> usize {
        self.log().matches("Accepted publickey for").count()
    }
}

/// The namespace, its link and its servers.
pub struct Netns {
    pub name: String,
    /// This machine's end of the link.
    link: String,
    /// The far end of the link, inside the namespace: where a bastion listens.
    pub far: String,
    pub dir: tempfile::TempDir,
    /// The client key every server of the namespace accepts for root.
    pub client_key: PathBuf,
    pub servers: Vec<NsSshd>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        text(&out.stderr)
    );
}

impl Netns {
    /// A fresh namespace with its loopback up and a veth link to this machine.
    pub fn new() -> Netns {
        assert!(
            super::is_root(),
            "network namespace tests need root (ip netns); run the suite as root"
        );
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() as usize;
        let name = format!("rcp-{pid}-{seq}");
        // A /30 of 10.239.0.0/16 (sandbox bridges use 10.231) of its own (pid and sequence), names within 15 bytes.
        let idx = (pid * 8 + seq) % 16384;
        let (c, d) = (idx / 64, (idx % 64) * 4);
        let link = format!("rcj{}", (pid * 8 + seq) % 1_000_000);
        let near = format!("10.239.{c}.{}", d + 1);
        let far = format!("10.239.{c}.{}", d + 2);
        ip(&["netns", "add", &name]);
        let dir = tempfile::tempdir().expect("tempdir");
        let client_key = dir.path().join("client_key");
        let ns = Netns {
            name: name.clone(),
            link: link.clone(),
            far: far.clone(),
            dir,
            client_key,
            servers: Vec::new(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "far0", "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{near}/30"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        ns.exec(&["ip", "addr", "add", &format!("{far}/30"), "dev", "far0"]);
        ns.exec(&["ip", "link", "set", "far0", "up"]);
        keygen(&ns.client_key);
        ns
    }

    /// Runs `argv` inside the namespace; it must succeed.
    pub fn exec(&self, argv: &[&str]) {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(argv);
        ip(&a);
    }

    /// Starts an sshd inside the namespace on `addr` (the far end of the link, or a
    /// loopback address of the namespace) with `extra` config lines; waits until it listens.
    pub fn sshd(&mut self, addr: &str, extra: &str) -> usize {
        let d = self.dir.path().join(format!("sshd-{addr}"));
        std::fs::create_dir_all(&d).expect("dir");
        keygen(&d.join("host_key"));
        std::fs::copy(
            self.client_key.with_extension("pub"),
            d.join("authorized_keys"),
        )
        .expect("authorize");
        std::fs::create_dir_all("/run/sshd").ok();
        let cfg = format!(
            "Port {PORT}\nListenAddress {addr}\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {pid}\n\
             {extra}\n",
            hk = d.join("host_key").display(),
            ak = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
        );
        std::fs::write(d.join("sshd_config"), cfg).expect("config");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(sshd_path())
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(d.join("sshd.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("sshd starts");
        self.servers.push(NsSshd {
            addr: addr.to_string(),
            dir: d,
            child,
        });
        let i = self.servers.len() - 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.listens(addr, PORT) {
            assert!(
                Instant::now() < deadline,
                "sshd on {addr} in {} did not listen: {}",
                self.name,
                self.servers[i].log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        i
    }

    /// Whether something accepts TCP connections on `addr:port` inside the namespace.
    pub fn listens(&self, addr: &str, port: u16) -> bool {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "ss", "-Hltn", "src"])
            .arg(format!("{addr}:{port}"))
            .output()
            .expect("ss runs");
        !text(&out.stdout).trim().is_empty()
    }

    /// A known_hosts file `dir/known_hosts` holding every server's key.
    pub fn known_hosts(&self) -> PathBuf {
        let p = self.dir.path().join("known_hosts");
        let lines: String = self.servers.iter().map(NsSshd::known_host).collect();
        std::fs::write(&p, lines).expect("known_hosts");
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        // The per-connection sshd processes live in the namespace too: end them before it.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in text(&o.stdout).split_whitespace() {
                    if let Ok(p) = pid.parse::<i32>() {
                        // SAFETY: kill(2) on processes inside this test's own namespace.
                        unsafe {
                            libc::kill(p, libc::SIGKILL);
                        }
                    }
                }
            });
        remove(&self.link, &self.name);
    }
}

/// Deletes this machine's end of a link (the far end goes with it) and the namespace.
fn remove(link: &str, ns: &str) {
    let _ = Command::new("ip").args(["link", "del", link]).status();
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Whether this machine (outside the namespace) can open a TCP connection to `addr:port`.
pub fn reachable_from_here(addr: &str, port: u16) -> bool {
    let Ok(a) = format!("{addr}:{port}").parse::<std::net::SocketAddr>() else {
        return false;
    };
    std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok()
}

/// `dir/name` = `body`.
pub fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write");
    p
}

/// The controller's view of a site whose workers only the login node reaches: a network
/// namespace on a sandbox's bridge (address `.250`) with no route to the hosts named, so a
/// `recipe` run in it (`Test::netns`) gets to them through a jump host or not at all.
pub struct Outside {
    pub name: String,
    link: String,
}

impl Outside {
    /// On the bridge of the sandbox network 10.231.`octet`.0/24, `blocked` unreachable.
    pub fn on_sandbox(octet: u8, blocked: &[&str]) -> Outside {
        assert!(super::is_root(), "network namespaces need root");
        let pid = std::process::id();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let o = Outside {
            name: format!("rcp-out-{pid}-{seq}"),
            link: format!("rco{}", (pid as usize * 8 + seq) % 1_000_000),
        };
        ip(&["netns", "add", &o.name]);
        let inside = |argv: &[&str]| {
            let mut a = vec!["netns", "exec", &o.name];
            a.extend_from_slice(argv);
            ip(&a);
        };
        inside(&["ip", "link", "set", "lo", "up"]);
        ip(&[
            "link", "add", &o.link, "type", "veth", "peer", "name", "eth0", "netns", &o.name,
        ]);
        ip(&["link", "set", &o.link, "master", &format!("rcp{octet}br")]);
        ip(&["link", "set", &o.link, "up"]);
        inside(&[
            "ip",
            "addr",
            "add",
            &format!("10.231.{octet}.250/24"),
            "dev",
            "eth0",
        ]);
        inside(&["ip", "link", "set", "eth0", "up"]);
        for b in blocked {
            inside(&["ip", "route", "add", "unreachable", &format!("{b}/32")]);
        }
        o
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        remove(&self.link, &self.name);
    }
}
