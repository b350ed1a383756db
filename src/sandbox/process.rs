//! Background processes of a sandbox (containers, proxy, file server): starting them detached, finding and stopping them.

use anyhow::{Context, Result};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `program args...` in its own session, detached from the terminal, with stdout and
/// stderr appended to `log` and `cwd` as its working folder. Returns its pid.
///
/// The child is reaped by a background thread while this process lives; when this process
/// exits, the child carries on (re-parented to init).
pub fn spawn_detached(program: &Path, args: &[OsString], cwd: &Path, log: &Path) -> Result<u32> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env("PATH", super::tools::SAFE_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

/// Is there a live (not zombie) process with this pid?
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: "pid (comm) S ...": the state follows the last ')'.
    match stat.rfind(')') {
        Some(i) => {
            let state = stat[i + 1..].trim_start().chars().next().unwrap_or('?');
            state != 'Z' && state != 'X'
        }
        None => false,
    }
}

/// The command line of a process, one entry per argument.
pub fn cmdline(pid: u32) -> Vec<String> {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(bytes) => bytes
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every pid in /proc, except this process.
fn all_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|p| *p != me)
        .collect()
}

/// This process and its ancestors: never signalled, whatever their arguments say.
fn self_and_ancestors() -> Vec<u32> {
    let mut v = vec![std::process::id()];
    let mut pid = std::process::id();
    for _ in 0..64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            break;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        if ppid <= 1 {
            break;
        }
        v.push(ppid);
        pid = ppid;
    }
    v
}

/// Live processes the sandbox in `dir` started: systemd-nspawn, the hosts' supervisors
/// (`host-supervisor`) and tinyproxy whose arguments name a path inside `dir`, and the file
/// server (`serve-files`) running in `dir`.
pub fn find_by_dir(dir: &Path) -> Vec<u32> {
    let inside = format!("{}/", dir.to_string_lossy());
    let spared = self_and_ancestors();
    all_pids()
        .into_iter()
        .filter(|pid| !spared.contains(pid))
        .filter(|pid| {
            let args = cmdline(*pid);
            let Some(first) = args.first() else {
                return false;
            };
            let program = Path::new(first)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let names_dir = args.iter().skip(1).any(|a| {
                a.starts_with(&inside)
                    || a.split_once('=')
                        .is_some_and(|(_, v)| v.starts_with(&inside))
            });
            if (program == "systemd-nspawn" || program == "tinyproxy") && names_dir {
                return true;
            }
            if names_dir && args.iter().any(|a| a == super::supervisor::SUBCOMMAND) {
                return true;
            }
            let cwd: Option<PathBuf> = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
            args.iter().any(|a| a == "serve-files") && cwd.as_deref() == Some(dir)
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Reads a pid file; None if missing or garbage.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|p| *p > 1)
}

pub fn write_pid(path: &Path, pid: u32) -> Result<()> {
    std::fs::write(path, format!("{pid}\n"))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(p) = libc::pid_t::try_from(pid) {
        if p > 1 {
            // SAFETY: plain syscall on a pid we found; failure (ESRCH) is fine.
            unsafe {
                libc::kill(p, sig);
            }
        }
    }
}

/// Sends SIGTERM to each process, waits up to `grace` for all to end, then SIGKILLs the rest
/// and waits a little more. Returns the pids still alive at the end (normally none).
pub fn terminate(pids: &[u32], grace: Duration) -> Vec<u32> {
    for p in pids {
        signal(*p, libc::SIGTERM);
    }
    if wait_gone(pids, grace) {
        return Vec::new();
    }
    kill_now(pids)
}

/// SIGKILLs each process and waits up to 5 s for them to go; returns any that remain.
pub fn kill_now(pids: &[u32]) -> Vec<u32> {
    for p in pids {
        if alive(*p) {
            signal(*p, libc::SIGKILL);
        }
    }
    wait_gone(pids, Duration::from_secs(5));
    pids.iter().copied().filter(|p| alive(*p)).collect()
}

/// Waits until none of `pids` is alive; true if they all went within `limit`.
pub fn wait_gone(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_find_and_terminate() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let pid =
            spawn_detached(Path::new("/bin/sleep"), &["30".into()], dir.path(), &log).unwrap();
        assert!(alive(pid));
        // `sleep` is none of the sandbox's programs: never matched.
        assert!(!find_by_dir(dir.path()).contains(&pid));
        assert!(terminate(&[pid], Duration::from_secs(5)).is_empty());
        assert!(wait_gone(&[pid], Duration::from_secs(2)));
        assert!(!alive(pid));
    }

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        assert_eq!(read_pid(&p), None);
        write_pid(&p, 1234).unwrap();
        assert_eq!(read_pid(&p), Some(1234));
        std::fs::write(&p, "junk").unwrap();
        assert_eq!(read_pid(&p), None);
    }
}
