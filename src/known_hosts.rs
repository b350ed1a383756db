//! Host key checking against a `known_hosts` file, with OpenSSH's matching rules.
//!
//! russh's own checker misses globs, negation, `@revoked` and whitespace runs, and calls a
//! key "changed" even when another line matches, so lines are parsed and matched here:
//! comma-separated patterns with `*`/`?` and `!negation` (case-insensitive), `[host]:port`
//! for ports other than 22, hashed `|1|salt|hash` names (HMAC-SHA1), `@revoked` lines
//! (which win over everything), `@cert-authority` lines (ignored: no certificates here).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::Mac;
use russh::keys::ssh_key::PublicKey;

/// The result of looking a host's key up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A line for this host has this very key.
    Known,
    /// No line for this host has a key of this algorithm.
    Unknown,
    /// A line for this host has a different key of the same algorithm, and none has this key.
    Changed {
        /// The file holding the conflicting line.
        path: PathBuf,
        /// Its 1-based line number (the first conflicting line).
        line: usize,
        /// A command that removes the stale entries, e.g. `ssh-keygen -R '[host]:2222' -f PATH`.
        fix: String,
    },
    /// An `@revoked` line for this host names this key: never accept it.
    Revoked,
}

/// Look `key` up for `host` (and `port`) in the file at `path`. A missing file is `Unknown`.
pub fn check(path: &Path, host: &str, port: u16, key: &PublicKey) -> io::Result<HostKeyStatus> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HostKeyStatus::Unknown),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&bytes);
    let name = lookup_name(host, port);
    let mut known = false;
    let mut revoked = false;
    let mut changed_at = None;
    for (index, raw) in text.lines().enumerate() {
        let Some(line) = parse_line(raw) else {
            continue;
        };
        if !hosts_match(line.hosts, &name) {
            continue;
        }
        let same_key = line.key.key_data() == key.key_data();
        match line.marker {
            Marker::CertAuthority => {}
            Marker::Revoked => revoked |= same_key,
            Marker::None if same_key => known = true,
            Marker::None => {
                if line.key.algorithm() == key.algorithm() && changed_at.is_none() {
                    changed_at = Some(index + 1);
                }
            }
        }
    }
    Ok(if revoked {
        HostKeyStatus::Revoked
    } else if known {
        HostKeyStatus::Known
    } else if let Some(line) = changed_at {
        HostKeyStatus::Changed {
            path: path.to_path_buf(),
            line,
            fix: format!(
                "ssh-keygen -R {} -f {}",
                quote(&name),
                quote(&path.to_string_lossy())
            ),
        }
    } else {
        HostKeyStatus::Unknown
    })
}

/// Record `key` for `host`/`port` at the end of `path`, creating the file (0600) and its
/// folder (0700) if needed. One `write` per line, so concurrent appends do not interleave.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> io::Result<()> {
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '#'))
        || host.starts_with(['|', '@', '!'])
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot record a host key for host name {host:?}"),
        ));
    }
    let mut bare = key.clone();
    bare.set_comment("");
    let key_text = bare
        .to_openssh()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let mut options = fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let needs_newline = match fs::read(path) {
        Ok(existing) => existing.last().is_some_and(|&b| b != b'\n'),
        Err(_) => false,
    };
    let mut line = String::new();
    if needs_newline {
        line.push('\n');
    }
    line.push_str(&lookup_name(host, port));
    line.push(' ');
    line.push_str(key_text.trim_end());
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.flush()
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The name OpenSSH looks up: `host` on port 22, `[host]:port` otherwise; lowercase, as
/// `ssh` lowercases the host name before using it.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

fn quote(s: &str) -> String {
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| s.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug)]
struct Line<'a> {
    marker: Marker,
    hosts: &'a str,
    key: PublicKey,
}

/// One line: `[@marker] hosts keytype base64 [comment]`, fields separated by runs of
/// spaces or tabs. Comments, blank lines, unknown markers and unparsable keys give `None`
/// (OpenSSH skips them too).
fn parse_line(raw: &str) -> Option<Line<'_>> {
    let mut fields = raw.split([' ', '\t']).filter(|f| !f.is_empty());
    let first = fields.next()?;
    if first.starts_with('#') {
        return None;
    }
    let (marker, hosts) = match first {
        "@revoked" => (Marker::Revoked, fields.next()?),
        "@cert-authority" => (Marker::CertAuthority, fields.next()?),
        m if m.starts_with('@') => return None,
        hosts => (Marker::None, hosts),
    };
    let key_type = fields.next()?;
    let base64 = fields.next()?;
    let key = PublicKey::from_openssh(&format!("{key_type} {base64}")).ok()?;
    // The type word must agree with the encoded key, as OpenSSH requires.
    if key.algorithm().as_str() != key_type {
        return None;
    }
    Some(Line { marker, hosts, key })
}

/// OpenSSH's `match_hostname`: any negated pattern that matches rejects the line, else any
/// positive match accepts it. A hashed field stands alone and must hash to `name`.
fn hosts_match(field: &str, name: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let mut positive = false;
    for pattern in field.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if glob_match(&pattern.to_lowercase(), name) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

fn hashed_match(salt_and_hash: &str, name: &str) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = <hmac::Hmac<sha1::Sha1> as Mac>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` (any run) and `?` (one character) globbing, iterative so hostile patterns stay linear.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with ssh-keygen; fixed strings keep the tests deterministic.
    const ED1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICtdlCXTDRCKRYOOyASvV8KXByIHocbfuoJJ+7p2gtxx";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINCghAZ/QHz7DYwTmrJYv5gXPIA911GejCkUll0SyOob";
    const EC256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBTdkNFclkvX0RPfBrrbT0w3LZnDsMqjRccXC3TRMiK3XtPDbT40K3tVewnWe7WIbV+sRMdkk4UrdNaLrNYlzzM=";
    const EC384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBFKI8Zw4fj9z+eq4UIfwZWfSHi6Y7lfAFQvTjtsues2nUvWhsaBJbbt7DADtdQMaPzqB2AT4BSNBl4xcgplmZnb9Lj8MHUyOTojsJLf9UBvE1jqBRxDrn5DxH+Yrvf+l8A==";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDRc/85C0VTJUiklB+4gxnf2EzIZDMHhE7E9BwkNZk2CEWoJ1jLHmhmbAOtPzhFAg9EslnOJg12ExIBpQ9i4dgsT7Y8t3E5skJ8CaIWDiDLGhbHZegUOKevvPgQ1FjqYqRStYSdUTIPe6I30ZmYGcSaCXXt3h+ETAX7wGRbVWjiDMMI6ouO224+BnruOTX0rSRyut8sVrhPtrj6G0j2eZZ3/A/w0xaSOb9piraTJzYKU81WTQdjv9wDJX0QspV4dvyNLQ1RhDZYNznHSTSXuthkuUadnmO7aksmVCUN13FxXmJexljjWGiNM6qHY4ME46tDdNLf2VgZ2QcZXFOo+b5L";
    // `ssh-keygen -H` of "server.example ED1" and "[server.example]:2222 ED1".
    const HASHED_22: &str = "|1|K6N+OWY66OP/Ai31LyRy9j9Oubk=|mHGcaZ7ozV8D9JNzYs3CmSa0CO4=";
    const HASHED_2222: &str = "|1|B2FJZ3QGum+8ENamQIcgXGwA/S0=|SdQJqnyLfmEbxNpv0RX9Ha+CJPU=";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn status(text: &str, host: &str, port: u16, k: &str) -> HostKeyStatus {
        let (_d, path) = file(text);
        check(&path, host, port, &key(k)).unwrap()
    }

    fn is_changed(s: &HostKeyStatus, want_line: usize) -> bool {
        matches!(s, HostKeyStatus::Changed { line, .. } if *line == want_line)
    }

    #[test]
    fn missing_file_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope");
        assert_eq!(
            check(&path, "h", 22, &key(ED1)).unwrap(),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn exact_name_known_changed_unknown() {
        let text = format!("server.example {ED1}\n");
        assert_eq!(
            status(&text, "server.example", 22, ED1),
            HostKeyStatus::Known
        );
        assert!(is_changed(&status(&text, "server.example", 22, ED2), 1));
        // Another algorithm is not a conflict: OpenSSH would offer to add it.
        assert_eq!(
            status(&text, "server.example", 22, EC256),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            status(&text, "other.example", 22, ED2),
            HostKeyStatus::Unknown
        );
        // Host names compare case-insensitively.
        assert_eq!(
            status(&text, "SERVER.Example", 22, ED1),
            HostKeyStatus::Known
        );
    }

    #[test]
    fn ecdsa_curves_are_different_algorithms() {
        let text = format!("h {EC256}\n");
        assert_eq!(status(&text, "h", 22, EC384), HostKeyStatus::Unknown);
        assert_eq!(status(&text, "h", 22, EC256), HostKeyStatus::Known);
        let text = format!("h {RSA}\n");
        assert_eq!(status(&text, "h", 22, RSA), HostKeyStatus::Known);
    }

    #[test]
    fn comma_lists_globs_and_negation() {
        let text = format!("alpha,*.example.org,node-?? {ED1}\n");
        for host in ["alpha", "a.example.org", "x.y.example.org", "node-01"] {
            assert_eq!(status(&text, host, 22, ED1), HostKeyStatus::Known, "{host}");
        }
        for host in ["example.org", "node-1", "node-001", "alphabet"] {
            assert_eq!(
                status(&text, host, 22, ED1),
                HostKeyStatus::Unknown,
                "{host}"
            );
        }
        let text = format!("*.example.org,!secret.example.org {ED1}\n");
        assert_eq!(
            status(&text, "www.example.org", 22, ED1),
            HostKeyStatus::Known
        );
        assert_eq!(
            status(&text, "secret.example.org", 22, ED1),
            HostKeyStatus::Unknown
        );
        // A negation alone never matches anything.
        let text = format!("!foo {ED1}\n");
        assert_eq!(status(&text, "bar", 22, ED1), HostKeyStatus::Unknown);
    }

    #[test]
    fn non_default_port_uses_brackets() {
        let text = format!("[server.example]:2222 {ED1}\nserver.example {ED2}\n");
        assert_eq!(
            status(&text, "server.example", 2222, ED1),
            HostKeyStatus::Known
        );
        // Port 22 sees only the plain name, port 2222 only the bracketed one.
        assert!(is_changed(&status(&text, "server.example", 22, ED1), 2));
        assert!(is_changed(&status(&text, "server.example", 2222, ED2), 1));
        assert_eq!(
            status(&text, "server.example", 2200, ED1),
            HostKeyStatus::Unknown
        );
        // Globs apply inside the brackets too.
        let text = format!("[*.lab]:2222 {ED1}\n");
        assert_eq!(status(&text, "n1.lab", 2222, ED1), HostKeyStatus::Known);
        assert_eq!(status(&text, "n1.lab", 22, ED1), HostKeyStatus::Unknown);
        let text = format!("[::1]:2222 {ED1}\n");
        assert_eq!(status(&text, "::1", 2222, ED1), HostKeyStatus::Known);
    }

    #[test]
    fn hashed_names_made_by_ssh_keygen() {
        let text = format!("{HASHED_22} {ED1}\n{HASHED_2222} {ED1}\n");
        assert_eq!(
            status(&text, "server.example", 22, ED1),
            HostKeyStatus::Known
        );
        assert_eq!(
            status(&text, "server.example", 2222, ED1),
            HostKeyStatus::Known
        );
        assert!(is_changed(&status(&text, "server.example", 22, ED2), 1));
        assert!(is_changed(&status(&text, "server.example", 2222, ED2), 2));
        assert_eq!(
            status(&text, "server.example", 2200, ED1),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            status(&text, "other.example", 22, ED1),
            HostKeyStatus::Unknown
        );
        // Broken hashes are skipped, not errors.
        let text = format!("|1|!!!|??? {ED1}\n|1|nohash {ED1}\n");
        assert_eq!(
            status(&text, "server.example", 22, ED1),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn any_matching_key_wins_over_a_mismatch() {
        let text = format!("server {ED2}\nserver {ED1}\n");
        assert_eq!(status(&text, "server", 22, ED1), HostKeyStatus::Known);
        let text = format!("server {ED2}\n*.x {ED2}\nser* {ED2}\n");
        let s = status(&text, "server", 22, ED1);
        assert!(
            is_changed(&s, 1),
            "first conflicting line is reported: {s:?}"
        );
    }

    #[test]
    fn revoked_wins() {
        let text = format!("server {ED1}\n@revoked * {ED1}\n");
        assert_eq!(status(&text, "server", 22, ED1), HostKeyStatus::Revoked);
        assert!(is_changed(&status(&text, "server", 22, ED2), 1));
        // A revoked line for another host, or another key, does not apply.
        let text = format!("server {ED1}\n@revoked other {ED1}\n@revoked server {ED2}\n");
        assert_eq!(status(&text, "server", 22, ED1), HostKeyStatus::Known);
    }

    #[test]
    fn cert_authority_lines_are_ignored() {
        let text = format!("@cert-authority *.example {ED2}\n");
        assert_eq!(status(&text, "a.example", 22, ED1), HostKeyStatus::Unknown);
        assert_eq!(status(&text, "a.example", 22, ED2), HostKeyStatus::Unknown);
    }

    #[test]
    fn whitespace_comments_and_junk() {
        let ed1_tabs = ED1.replace(' ', "\t \t");
        let text = format!(
            "# a comment\n\n   \n\t  server   {ed1_tabs}   trailing comment words\r\n\
             @bogus server {ED2}\nserver\nserver ssh-ed25519\nserver ssh-ed25519 notbase64!\n\
             server ssh-rsa {}\n\u{0}\u{1}garbage\n",
            ED2.split(' ').nth(1).unwrap()
        );
        assert_eq!(status(&text, "server", 22, ED1), HostKeyStatus::Known);
        // The type word disagrees with the key inside: skipped, so ED2 is not "changed".
        assert!(is_changed(&status(&text, "server", 22, ED2), 4));
    }

    #[test]
    fn non_utf8_file_still_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kh");
        let mut bytes = b"\xff\xfe junk\n".to_vec();
        bytes.extend_from_slice(format!("h {ED1}\n").as_bytes());
        fs::write(&path, bytes).unwrap();
        assert_eq!(
            check(&path, "h", 22, &key(ED1)).unwrap(),
            HostKeyStatus::Known
        );
    }

    #[test]
    fn changed_carries_a_fix_command() {
        let (_d, path) = file(&format!("[h.example]:2222 {ED1}\n"));
        match check(&path, "h.example", 2222, &key(ED2)).unwrap() {
            HostKeyStatus::Changed { path: p, line, fix } => {
                assert_eq!(p, path);
                assert_eq!(line, 1);
                assert_eq!(
                    fix,
                    format!("ssh-keygen -R '[h.example]:2222' -f {}", path.display())
                );
            }
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    #[test]
    fn append_creates_private_file_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/known_hosts");
        let mut k = key(ED1);
        k.set_comment("must not be written");
        append(&path, "Node1.Example", 22, &k).unwrap();
        append(&path, "node1.example", 2222, &key(EC256)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("node1.example {ED1}\n[node1.example]:2222 {EC256}\n")
        );
        assert_eq!(
            check(&path, "node1.example", 22, &key(ED1)).unwrap(),
            HostKeyStatus::Known
        );
        assert_eq!(
            check(&path, "node1.example", 2222, &key(EC256)).unwrap(),
            HostKeyStatus::Known
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
    }

    #[test]
    fn append_after_a_line_without_newline() {
        let (_d, path) = file(&format!("a {ED2}"));
        append(&path, "b", 22, &key(ED1)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("a {ED2}\nb {ED1}\n"));
        assert_eq!(
            check(&path, "a", 22, &key(ED2)).unwrap(),
            HostKeyStatus::Known
        );
    }

    #[test]
    fn append_refuses_names_that_would_corrupt_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kh");
        for bad in ["", "a b", "a\nb", "a,b", "|1|x", "@revoked", "!x", "#c"] {
            assert!(append(&path, bad, 22, &key(ED1)).is_err(), "{bad:?}");
        }
        assert!(!path.exists());
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("??", "ab"));
        assert!(!glob_match("??", "abc"));
        assert!(!glob_match("", "a"));
        assert!(glob_match("", ""));
        // Pathological patterns stay fast.
        let long = "a".repeat(5000);
        assert!(!glob_match(&format!("{}b", "*a".repeat(200)), &long));
    }
}
