//! The programs the sandbox runs (`ip`, `systemd-nspawn`, ...): finding them and running them with clear errors.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// PATH used for the programs the sandbox runs: root's sbin folders are often missing from PATH.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A program the sandbox needs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const IP: Tool = Tool {
    program: "ip",
    package: "iproute2",
};
pub const NSPAWN: Tool = Tool {
    program: "systemd-nspawn",
    package: "systemd-container",
};
pub const DEBOOTSTRAP: Tool = Tool {
    program: "debootstrap",
    package: "debootstrap",
};
pub const SSH_KEYGEN: Tool = Tool {
    program: "ssh-keygen",
    package: "openssh-client",
};
pub const SSH: Tool = Tool {
    program: "ssh",
    package: "openssh-client",
};
pub const TINYPROXY: Tool = Tool {
    program: "tinyproxy",
    package: "tinyproxy",
};
pub const CHROOT: Tool = Tool {
    program: "chroot",
    package: "coreutils",
};

/// Everything `up` needs once the base image is built.
pub const FOR_HOSTS: [Tool; 5] = [IP, NSPAWN, SSH_KEYGEN, SSH, TINYPROXY];

/// What building the base image needs too.
pub const FOR_IMAGE: [Tool; 2] = [DEBOOTSTRAP, CHROOT];

/// Looks `program` up in PATH and then in the usual system folders.
pub fn find(tool: Tool) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(std::env::split_paths(SAFE_PATH));
    for dir in dirs {
        let candidate = dir.join(tool.program);
        if is_executable(&candidate) {
            return Some(candidate);
        }
    }
    None
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The path of a program, or an error naming the apt-get command that installs it.
pub fn require(tool: Tool) -> Result<PathBuf> {
    find(tool).ok_or_else(|| {
        anyhow!(
            "{} not found: install it with `apt-get install -y {}`",
            tool.program,
            tool.package
        )
    })
}

/// Checks every tool at once, naming all that are missing in one apt-get command.
pub fn require_all(tools: &[Tool]) -> Result<()> {
    let missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| find(*t).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let programs: Vec<&str> = missing.iter().map(|t| t.program).collect();
    let mut packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    packages.dedup();
    bail!(
        "{} not found: install with `apt-get install -y {}`",
        programs.join(", "),
        packages.join(" ")
    )
}

/// A command for `tool` with a predictable PATH and no stdin.
pub fn command(tool: Tool) -> Result<Command> {
    let mut cmd = Command::new(require(tool)?);
    cmd.env("PATH", SAFE_PATH).stdin(Stdio::null());
    Ok(cmd)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `tool args...`, failing with its stderr when it exits non-zero.
pub fn run<I, S>(tool: Tool, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = command(tool)?;
    cmd.args(args);
    run_command(&mut cmd)
}

/// Runs a prepared command, failing with its stderr when it exits non-zero.
pub fn run_command(cmd: &mut Command) -> Result<Output> {
    let what = describe(cmd);
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("could not start `{what}`"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("`{what}` failed ({}): {}", out.status, err.trim());
    }
    Ok(out)
}

/// Runs `tool args...` and ignores failure (for idempotent teardown); true if it succeeded.
pub fn run_quiet<I, S>(tool: Tool, args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    match command(tool) {
        Ok(mut cmd) => cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The last `lines` lines of a text file (for console logs in error messages).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = strip_ansi(&String::from_utf8_lossy(&bytes));
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Removes terminal colour codes (ESC [ ... letter) so console logs read cleanly.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_apt_get() {
        let t = Tool {
            program: "no-such-program-recipe-test",
            package: "no-such-package",
        };
        let e = require(t).unwrap_err().to_string();
        assert!(e.contains("apt-get install -y no-such-package"), "{e}");
        let e = require_all(&[t]).unwrap_err().to_string();
        assert!(e.contains("no-such-program-recipe-test not found"), "{e}");
    }

    #[test]
    fn strips_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[0;32m  OK  \u{1b}[0m] Started"),
            "  OK  ] Started"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn tail_takes_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&p, 2), "c\nd");
        assert_eq!(tail(&p, 10), "a\nb\nc\nd");
        assert!(tail(&dir.path().join("none"), 2).contains("cannot read"));
    }
}
