//! Test support: a real OpenSSH server on loopback with its own host key and client key,
//! an inventory pointing at it, and helpers to run the real binary.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `sshd -D` owned by the test; killed on drop (also when the test fails).
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub addr: String,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn sshd_path() -> PathBuf {
    for p in ["/usr/sbin/sshd", "/usr/bin/sshd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("sshd not found: apt-get install openssh-server (the tests need a real OpenSSH server)");
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success(), "ssh-keygen failed");
}

impl Sshd {
    /// Starts sshd on 127.0.0.1 (or `addr`) with a fresh host key; root logs in with the
    /// generated client key. Extra sshd_config lines can be passed.
    pub fn start_with(addr: &str, extra: &str) -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("copy key");
        std::fs::create_dir_all("/run/sshd").ok();
        let port = free_port();
        let cfg = format!(
            "Port {port}\nListenAddress {addr}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {pid}\n\
             Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 200:30:400\n{extra}\n",
            hk = d.join("host_key").display(),
            ak = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
        );
        std::fs::write(d.join("sshd_config"), cfg).expect("write config");
        let child = Command::new(sshd_path())
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(d.join("sshd.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("sshd starts");
        let s = Sshd {
            dir,
            port,
            addr: addr.to_string(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((addr, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let pubkey = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let mut parts = pubkey.split_whitespace();
        let line = format!(
            "[{addr}]:{port} {} {}\n",
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("")
        );
        std::fs::write(d.join("known_hosts"), line).expect("known_hosts");
        s
    }

    pub fn start() -> Sshd {
        Sshd::start_with("127.0.0.1", "")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An inventory with this server as host `name` (plus any extra TOML).
    pub fn inventory(&self, name: &str, extra: &str) -> PathBuf {
        let p = self.path(&format!("inventory-{name}.toml"));
        let text = format!(
            "known_hosts = \"{kh}\"\n\n[hosts.{name}]\naddress = \"{a}\"\nport = {port}\nuser = \"root\"\nkey = \"{key}\"\n{extra}\n",
            kh = self.path("known_hosts").display(),
            a = self.addr,
            port = self.port,
            key = self.path("client_key").display(),
        );
        std::fs::write(&p, text).expect("inventory");
        p
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `recipe` binary, run from the repository root.
pub fn recipe() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("recipe").expect("binary built");
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env("NO_COLOR", "1");
    c.timeout(Duration::from_secs(600));
    c
}

/// JSON events printed by `--json`.
pub fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn recaps(ev: &[serde_json::Value]) -> Vec<serde_json::Value> {
    ev.iter()
        .filter(|e| e["event"] == "recap")
        .cloned()
        .collect()
}

pub fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}
