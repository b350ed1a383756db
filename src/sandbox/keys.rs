//! SSH keys of a sandbox: the root login key pair, each host's host key, and the known_hosts file.

use super::tools::{self, SSH_KEYGEN};
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::path::Path;

/// Generates an ed25519 key pair without passphrase at `path` (and `path.pub`).
pub fn generate(path: &Path, comment: &str) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = path.as_os_str();
    tools::run(
        SSH_KEYGEN,
        [
            "-q".as_ref(),
            "-t".as_ref(),
            "ed25519".as_ref(),
            "-N".as_ref(),
            "".as_ref(),
            "-C".as_ref(),
            comment.as_ref(),
            "-f".as_ref(),
            out,
        ],
    )
    .with_context(|| format!("cannot generate SSH key {}", path.display()))?;
    Ok(())
}

/// The `TYPE BASE64` part of a public key file's line (the comment dropped).
pub fn public_key_body(pub_text: &str) -> Result<String> {
    let mut parts = pub_text.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(kind), Some(b64)) if kind.starts_with("ssh-") => Ok(format!("{kind} {b64}")),
        _ => bail!("not an OpenSSH public key: {:?}", pub_text.trim()),
    }
}

/// known_hosts text: one line per host, matching both its name and its address.
pub fn known_hosts_text(hosts: &[(String, Ipv4Addr, String)]) -> String {
    let mut s = String::new();
    for (name, addr, key) in hosts {
        s.push_str(&format!("{addr},{name} {key}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_body() {
        assert_eq!(
            public_key_body("ssh-ed25519 AAAAC3Nz root@x\n").unwrap(),
            "ssh-ed25519 AAAAC3Nz"
        );
        assert!(public_key_body("garbage").is_err());
    }

    #[test]
    fn known_hosts_lines() {
        let t = known_hosts_text(&[
            (
                "master".into(),
                Ipv4Addr::new(10, 231, 5, 10),
                "ssh-ed25519 AAA".into(),
            ),
            (
                "w1".into(),
                Ipv4Addr::new(10, 231, 5, 11),
                "ssh-ed25519 BBB".into(),
            ),
        ]);
        assert_eq!(
            t,
            "10.231.5.10,master ssh-ed25519 AAA\n10.231.5.11,w1 ssh-ed25519 BBB\n"
        );
    }
}
