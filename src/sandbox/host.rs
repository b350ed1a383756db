//! One sandbox host: its overlay root on the base image, its own files, booting it with systemd-nspawn and waiting for it.

use super::paths::HostLayout;
use super::probe;
use super::process;
use super::tools::{self, NSPAWN, SSH};
use anyhow::{bail, Context, Result};
use std::ffi::{CString, OsString};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where systemd-nspawn keeps per-machine runtime files.
const NSPAWN_RUN: &str = "/run/systemd/nspawn";

/// Everything a host's own files are made from.
pub struct HostFiles<'a> {
    pub hostname: &'a str,
    pub etc_hosts: &'a str,
    pub authorized_key: &'a str,
    pub apt_proxy_conf: &'a str,
}

/// /etc/hosts of every host: localhost, then every sandbox host by name.
pub fn etc_hosts_text(hosts: &[(String, Ipv4Addr)], bridge: Ipv4Addr) -> String {
    let mut s = String::from(
        "# Written by recipe sandbox.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    s.push_str(&format!("{bridge}\tsandbox-controller\n"));
    for (name, addr) in hosts {
        s.push_str(&format!("{addr}\t{name}\n"));
    }
    s
}

fn random_machine_id() -> Result<String> {
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(hex::encode(buf))
}

/// Creates `upper/rel` folder by folder, each with the mode and owner it has in `lower`,
/// so the merged view keeps the image's permissions (an upper folder's attributes win).
fn mkdirs_like(upper: &Path, lower: &Path, rel: &str, default_mode: u32) -> Result<PathBuf> {
    let mut up = upper.to_path_buf();
    let mut low = lower.to_path_buf();
    for part in Path::new(rel).components() {
        up.push(part);
        low.push(part);
        if up.is_dir() {
            continue;
        }
        std::fs::create_dir(&up).with_context(|| format!("cannot create {}", up.display()))?;
        let (mode, uid, gid) = match std::fs::metadata(&low) {
            Ok(m) => (m.mode() & 0o7777, m.uid(), m.gid()),
            Err(_) => (default_mode, 0, 0),
        };
        std::fs::set_permissions(&up, std::fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::chown(&up, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {}", up.display()))?;
    }
    Ok(up)
}

fn put(upper: &Path, lower: &Path, rel: &str, text: &[u8], mode: u32) -> Result<()> {
    let rel_path = Path::new(rel);
    let parent = rel_path
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = if parent.is_empty() {
        upper.to_path_buf()
    } else {
        mkdirs_like(upper, lower, &parent, 0o755)?
    };
    let Some(file_name) = rel_path.file_name() else {
        bail!("bad file name {rel}");
    };
    let p = dir.join(file_name);
    std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    std::os::unix::fs::chown(&p, Some(0), Some(0))?;
    Ok(())
}

/// Fills the host's overlay upper layer with its own files: hostname, hosts, machine id,
/// SSH host key, root's authorized key, apt proxy.
pub fn prepare(layout: &HostLayout, lower: &Path, files: &HostFiles) -> Result<()> {
    let upper = layout.upper();
    for d in [upper.clone(), layout.work(), layout.root()] {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // The root of the overlay takes the image root's attributes.
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755))?;
    put(
        &upper,
        lower,
        "etc/hostname",
        format!("{}\n", files.hostname).as_bytes(),
        0o644,
    )?;
    put(
        &upper,
        lower,
        "etc/hosts",
        files.etc_hosts.as_bytes(),
        0o644,
    )?;
    put(
        &upper,
        lower,
        "etc/machine-id",
        format!("{}\n", random_machine_id()?).as_bytes(),
        0o444,
    )?;
    let key = std::fs::read(layout.host_key())
        .with_context(|| format!("cannot read {}", layout.host_key().display()))?;
    let key_pub = std::fs::read(layout.host_pub_key())
        .with_context(|| format!("cannot read {}", layout.host_pub_key().display()))?;
    put(&upper, lower, "etc/ssh/ssh_host_ed25519_key", &key, 0o600)?;
    put(
        &upper,
        lower,
        "etc/ssh/ssh_host_ed25519_key.pub",
        &key_pub,
        0o644,
    )?;
    mkdirs_like(&upper, lower, "root/.ssh", 0o700)?;
    std::fs::set_permissions(
        upper.join("root/.ssh"),
        std::fs::Permissions::from_mode(0o700),
    )?;
    put(
        &upper,
        lower,
        "root/.ssh/authorized_keys",
        files.authorized_key.as_bytes(),
        0o600,
    )?;
    put(
        &upper,
        lower,
        "etc/apt/apt.conf.d/01proxy",
        files.apt_proxy_conf.as_bytes(),
        0o644,
    )?;
    Ok(())
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("path holds a NUL byte")
}

/// Mounts the overlay (base image below, the host's upper layer on top) on the host's root.
pub fn mount_root(layout: &HostLayout, lower: &Path) -> Result<()> {
    let (upper, work, root) = (layout.upper(), layout.work(), layout.root());
    for p in [lower, upper.as_path(), work.as_path()] {
        let s = p.to_string_lossy();
        if s.contains([',', ':', '\\']) || s.chars().any(char::is_whitespace) {
            bail!(
                "path {} holds a character overlayfs cannot take (, : \\ or space): choose another RECIPE_SANDBOX_ROOT / RECIPE_SANDBOX_CACHE",
                p.display()
            );
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let src = CString::new("overlay")?;
    let fstype = CString::new("overlay")?;
    let target = cstr(&root)?;
    let data = CString::new(opts)?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "cannot mount the overlay root {} ({e}); the kernel needs overlayfs (`modprobe overlay`)",
            root.display()
        );
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts every mount at or below `dir` (lazily if busy).
pub fn unmount_below(dir: &Path) -> Result<()> {
    for m in mounts_below(dir) {
        let Ok(c) = cstr(&m) else { continue };
        // SAFETY: valid NUL-terminated path.
        let rc = unsafe { libc::umount2(c.as_ptr(), 0) };
        if rc != 0 {
            // SAFETY: as above.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    let left = mounts_below(dir);
    if !left.is_empty() {
        bail!(
            "could not unmount {}: unmount by hand with `umount -l PATH`",
            left.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// systemd-nspawn's lock file for a root folder, named after its device and inode.
pub fn nspawn_lock_file(root: &Path) -> Option<PathBuf> {
    let m = std::fs::metadata(root).ok()?;
    Some(PathBuf::from(format!(
        "{NSPAWN_RUN}/locks/inode-{}:{}",
        m.dev(),
        m.ino()
    )))
}

/// Runtime files systemd-nspawn keeps for a machine name (left behind if it is killed).
pub fn nspawn_runtime_dirs(machine: &str) -> Vec<PathBuf> {
    vec![
        PathBuf::from(format!("{NSPAWN_RUN}/propagate/{machine}")),
        PathBuf::from(format!("{NSPAWN_RUN}/unix-export/{machine}")),
    ]
}

/// Boots the host detached: systemd as PID 1 in its own network namespace, console to its
/// log, under a `recipe sandbox host-supervisor` that boots it again when it reboots. Returns
/// the supervisor's pid.
pub fn boot(layout: &HostLayout, netns: &str, sandbox_dir: &Path) -> Result<u32> {
    let nspawn = tools::require(NSPAWN)?;
    let program = super::fileserver::recipe_binary()?;
    let mut root_arg = OsString::from("--directory=");
    root_arg.push(layout.root());
    let args: Vec<OsString> = vec![
        "sandbox".into(),
        super::supervisor::SUBCOMMAND.into(),
        nspawn.into_os_string(),
        root_arg,
        "--boot".into(),
        "--register=no".into(),
        "--keep-unit".into(),
        format!("--network-namespace-path={}/{netns}", super::net::NETNS_DIR).into(),
        format!("--machine={netns}").into(),
        "--link-journal=no".into(),
        "--resolv-conf=off".into(),
        "--console=read-only".into(),
    ];
    let pid = process::spawn_detached(&program, &args, sandbox_dir, &layout.console_log())?;
    process::write_pid(&layout.pid(), pid)?;
    Ok(pid)
}

/// How to reach a host with ssh, for checks.
pub struct SshTarget<'a> {
    pub addr: Ipv4Addr,
    pub key: &'a Path,
    pub known_hosts: &'a Path,
}

/// `ssh root@ADDR` with the sandbox's key and known_hosts only (no user or system ssh
/// configuration, no agent, no prompt); the caller adds `--` and the command. Refuses any
/// address that is not a sandbox host's.
pub fn ssh_command(
    key: &Path,
    known_hosts: &Path,
    addr: &str,
    connect_timeout_s: u32,
) -> Result<Command> {
    match addr.parse::<Ipv4Addr>() {
        Ok(a) if probe::allowed_target(a) => {}
        _ => bail!("refusing to connect to {addr}: not a sandbox address"),
    }
    let mut cmd = tools::command(SSH)?;
    cmd.arg("-F")
        .arg("/dev/null")
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
        ])
        .arg(format!("ConnectTimeout={connect_timeout_s}"))
        .args(["-l", "root", addr]);
    Ok(cmd)
}

/// Runs `ssh root@addr COMMAND...` with the sandbox key and known_hosts only, killing it at `deadline`.
/// Returns (exit code, stdout); None if it timed out.
pub fn ssh_run(
    t: &SshTarget,
    command: &[&str],
    deadline: Instant,
) -> Result<Option<(i32, String)>> {
    let mut cmd = ssh_command(t.key, t.known_hosts, &t.addr.to_string(), 5)?;
    cmd.arg("--")
        .args(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("cannot run ssh")?;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            if let Some(mut so) = child.stdout.take() {
                let _ = so.read_to_string(&mut out);
            }
            return Ok(Some((status.code().unwrap_or(-1), out)));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the host's sshd answers and systemd reports `running` or `degraded`.
/// Returns the system state; fails with the tail of the console log.
pub fn wait_ready(
    name: &str,
    pid: u32,
    layout: &HostLayout,
    target: &SshTarget,
    limit: Duration,
) -> Result<String> {
    let started = Instant::now();
    let deadline = started + limit;
    let console = || {
        format!(
            "last lines of its console log {}:\n{}",
            layout.console_log().display(),
            tools::tail(&layout.console_log(), 25)
        )
    };
    let ssh_addr = SocketAddrV4::new(target.addr, 22);
    let answered = probe::wait_until(
        limit,
        || probe::ssh_banner(ssh_addr, Duration::from_millis(500)),
        || !process::alive(pid),
    );
    if !answered {
        if !process::alive(pid) {
            bail!("host {name} stopped while booting; {}", console());
        }
        bail!(
            "host {name} ({}) did not answer on port 22 within {} s; {}",
            target.addr,
            limit.as_secs(),
            console()
        );
    }
    let mut last = String::new();
    while Instant::now() < deadline {
        if !process::alive(pid) {
            bail!("host {name} stopped while booting; {}", console());
        }
        match ssh_run(
            target,
            &["systemctl", "is-system-running", "--wait"],
            deadline,
        )? {
            Some((code, out)) => {
                let state = out.trim().to_string();
                if state == "running" || state == "degraded" {
                    return Ok(state);
                }
                if code == 255 {
                    last = "ssh could not log in yet".into();
                } else {
                    last = format!("systemd state {state:?}");
                    if state != "starting" && state != "initializing" && !state.is_empty() {
                        bail!("host {name} booted into state {state:?}; {}", console());
                    }
                }
            }
            None => last = "timed out".into(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "host {name} ({}) did not finish booting within {} s ({last}); {}",
        target.addr,
        limit.as_secs(),
        console()
    )
}

/// A host's units that failed (for a `degraded` warning).
pub fn failed_units(target: &SshTarget) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    match ssh_run(
        target,
        &["systemctl", "--failed", "--no-legend", "--plain"],
        deadline,
    ) {
        Ok(Some((_, out))) => out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_names_every_host() {
        let t = etc_hosts_text(
            &[
                ("master".into(), Ipv4Addr::new(10, 231, 3, 10)),
                ("w1".into(), Ipv4Addr::new(10, 231, 3, 11)),
            ],
            Ipv4Addr::new(10, 231, 3, 1),
        );
        assert!(t.contains("127.0.0.1\tlocalhost\n"));
        assert!(t.contains("10.231.3.10\tmaster\n"));
        assert!(t.contains("10.231.3.11\tw1\n"));
        assert!(t.contains("10.231.3.1\tsandbox-controller\n"));
        // The hostname must resolve to the real address, not 127.0.1.1 (Slurm needs that).
        assert!(!t.contains("127.0.1.1"));
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\"), "/x\\");
    }

    #[test]
    fn upper_dirs_copy_lower_modes() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lower.path().join("root")).unwrap();
        std::fs::set_permissions(
            lower.path().join("root"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        put(
            upper.path(),
            lower.path(),
            "root/.ssh/authorized_keys",
            b"k",
            0o600,
        )
        .unwrap();
        let m = |p: &str| std::fs::metadata(upper.path().join(p)).unwrap().mode() & 0o7777;
        assert_eq!(m("root"), 0o700);
        assert_eq!(m("root/.ssh"), 0o755); // not in lower: default of put
        assert_eq!(m("root/.ssh/authorized_keys"), 0o600);
    }
}
