//! Faults made for real on loopback sshds (see [`super::Sshd`]): the processes of this
//! machine, waiting for one to appear or go, killing a test sshd like a crash and starting it
//! again, inventories of several hosts on one or more sshds, and the worker's leftovers.
#![allow(dead_code)]

use super::{sshd_path, text, Sshd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// (pid, parent pid, comm) of every process.
pub fn processes() -> Vec<(u32, u32, String)> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        v.push((pid, ppid, stat[open + 1..close].to_string()));
    }
    v
}

/// The argv of `pid`, each argument followed by a space.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| text(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Whether some process runs exactly this argv.
pub fn running(argv: &[&str]) -> bool {
    running_count(argv) > 0
}

/// How many processes run exactly this argv.
pub fn running_count(argv: &[&str]) -> usize {
    let want = argv.join(" ") + " ";
    processes()
        .iter()
        .filter(|(pid, _, _)| cmdline(*pid) == want)
        .count()
}

/// A `sleep` argument of `secs` seconds that no other process on this machine runs: the
/// test's pid and a counter go in the last decimals, so [`running`] finds this test's command
/// and not a neighbour's (other tests, other checkouts).
pub fn own_sleep(secs: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dot = if secs.contains('.') { "" } else { "." };
    format!("{secs}{dot}000{:07}{n:03}", std::process::id())
}

/// Waits until `f` holds; the test fails after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILL to every process running exactly this argv (a command a test left running).
pub fn kill_all(argv: &[&str]) {
    let want = argv.join(" ") + " ";
    for (pid, _, _) in processes() {
        if cmdline(pid) == want {
            // SAFETY: kill(2) on a command this test started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// The pid of the listening sshd of `s` (its PidFile, else by its config path).
pub fn listener_pid(s: &Sshd) -> Option<u32> {
    if let Some(p) = std::fs::read_to_string(s.path("sshd.pid"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        return Some(p);
    }
    let cfg = s.path("sshd_config").display().to_string();
    processes()
        .into_iter()
        .find(|(pid, _, comm)| comm == "sshd" && cmdline(*pid).contains(&cfg))
        .map(|(pid, _, _)| pid)
}

/// Kills `s`'s sshd like a crash would: the listener and every per-connection sshd process
/// (`sshd`, `sshd-session`...), all at once with SIGKILL. The users' shells are left running
/// (as after a real cut); they see their input end.
pub fn cut(s: &mut Sshd) {
    let Some(root) = listener_pid(s) else {
        panic!("no sshd to cut: {}", s.log());
    };
    let procs = processes();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(
            procs
                .iter()
                .filter(|(_, pp, comm)| *pp == p && comm.starts_with("sshd"))
                .map(|(pid, _, _)| *pid),
        );
        i += 1;
    }
    for pid in tree {
        // SAFETY: kill(2) on pids that this test's own sshd started.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    s.stop();
}

/// A second life of a test sshd: same config, port and keys. Killed on drop.
pub struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `s`'s sshd again after [`cut`] or `stop`.
pub fn restart(s: &Sshd) -> Restarted {
    std::fs::remove_file(s.path("sshd.pid")).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The old listener's port may take a moment to be free again.
    loop {
        let child = Command::new(sshd_path())
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(s.path("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        let mut r = Restarted(child);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect((s.addr.as_str(), s.port)).is_ok() {
                return r;
            }
            if let Ok(Some(_)) = r.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(Instant::now() < deadline, "sshd did not restart");
        drop(r.0.kill());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An sshd whose sessions get `TMPDIR` = a folder of the test's own (the worker's
/// temporary files go there), with that folder.
pub fn sshd_with_tmpdir() -> (Sshd, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp").keep();
    let s = Sshd::start_with("127.0.0.1", &format!("SetEnv TMPDIR={}", tmp.display()));
    (s, tmp)
}

/// One host entry of a multi-host inventory.
pub struct HostSpec<'a> {
    pub name: &'a str,
    pub sshd: &'a Sshd,
    pub key: PathBuf,
    /// TOML lines added to the host's table.
    pub extra: String,
}

/// Host `name` on `sshd`, logging in with its client key, with `vars = { VARS }`.
pub fn spec<'a>(name: &'a str, sshd: &'a Sshd, vars: String) -> HostSpec<'a> {
    HostSpec {
        name,
        sshd,
        key: sshd.path("client_key"),
        extra: format!("vars = {{ {vars} }}"),
    }
}

/// Host `name` on `sshd`, logging in with its client key, with `extra` TOML lines.
pub fn spec_extra<'a>(name: &'a str, sshd: &'a Sshd, extra: &str) -> HostSpec<'a> {
    HostSpec {
        name,
        sshd,
        key: sshd.path("client_key"),
        extra: extra.to_string(),
    }
}

/// An inventory `dir/FILE` naming several hosts (on one or more test sshds), with one
/// known_hosts file `dir/known_hosts` holding every server's key.
pub fn inventory_file(dir: &Path, file: &str, hosts: &[HostSpec]) -> PathBuf {
    let kh = dir.join("known_hosts");
    let mut lines = String::new();
    let mut seen = Vec::new();
    for h in hosts {
        if !seen.contains(&h.sshd.port) {
            seen.push(h.sshd.port);
            lines.push_str(&std::fs::read_to_string(h.sshd.path("known_hosts")).expect("kh"));
        }
    }
    std::fs::write(&kh, lines).expect("known_hosts");
    let mut inv = format!("known_hosts = \"{}\"\n", kh.display());
    for h in hosts {
        inv.push_str(&format!(
            "\n[hosts.{}]\naddress = \"{}\"\nport = {}\nuser = \"root\"\nkey = \"{}\"\n{}\n",
            h.name,
            h.sshd.addr,
            h.sshd.port,
            h.key.display(),
            h.extra
        ));
    }
    let p = dir.join(file);
    std::fs::write(&p, inv).expect("inventory");
    p
}

/// [`inventory_file`] as `dir/inventory.toml`.
pub fn inventory(dir: &Path, hosts: &[HostSpec]) -> PathBuf {
    inventory_file(dir, "inventory.toml", hosts)
}

/// An inventory naming `names`, all on sshd `s`, each with `extra` TOML lines.
pub fn inventory_of(s: &Sshd, names: &[&str], extra: &str) -> PathBuf {
    let hosts: Vec<HostSpec> = names.iter().map(|n| spec_extra(n, s, extra)).collect();
    inventory_file(
        s.dir.path(),
        &format!("inv-{}.toml", names.join("-")),
        &hosts,
    )
}

/// The worker's temporary files and folders (`.recipe.*`) in `dir`.
pub fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".recipe."))
                .collect()
        })
        .unwrap_or_default()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `dir/name` with `body`.
pub fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write");
    p
}
