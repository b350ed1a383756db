//! The atomic-write script run for real on this machine, with its tools wrapped to watch the temporary file.

use std::path::Path;
use std::process::{Command, Stdio};

use super::files::write_script_checked;
use super::{Attrs, Mode};

/// Runs the atomic-write script with wrappers around chmod/chown/chgrp/cat/mv that record
/// the temporary file's mode and owner before and after each of them: the temporary file
/// must never grant more than the requested mode, nor belong to anyone but root or the
/// requested owner, at any point where it could be opened.
#[test]
fn the_temporary_file_is_never_wider_than_requested() {
    if !crate::test_precondition::require_root("chown") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let bin = tmp.path().join("bin");
    let target_dir = tmp.path().join("t");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::create_dir_all(&target_dir).expect("t");
    let log = tmp.path().join("log");
    for cmd in ["chmod", "chown", "chgrp", "cat", "mv"] {
        let real = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| format!("{d}/{cmd}"))
            .find(|p| Path::new(p).exists())
            .expect("coreutils");
        let w = format!(
            "#!/bin/sh\nfor f in {d}/.recipe.*; do [ -e \"$f\" ] && stat -c '{cmd}-before %a %U %G %s' \"$f\" >> {log}; done\n\
             {real} \"$@\"; s=$?\nfor f in {d}/.recipe.*; do [ -e \"$f\" ] && stat -c '{cmd}-after %a %U %G %s' \"$f\" >> {log}; done\nexit $s\n",
            d = target_dir.display(),
            log = log.display(),
        );
        crate::test_bin::stand_in(&bin, cmd, &w);
    }
    let target = target_dir.join("key file");
    let cases: Vec<(&str, Attrs, Option<&[u8]>)> = vec![
        (
            "new 0400 nobody:nogroup",
            Attrs {
                owner: Some("nobody".into()),
                group: Some("nogroup".into()),
                mode: Some(Mode(0o400)),
            },
            None,
        ),
        (
            "existing 0644 file rewritten as 0600",
            Attrs {
                owner: None,
                group: None,
                mode: Some(Mode(0o600)),
            },
            Some(b"old"),
        ),
        (
            "existing file, owner only",
            Attrs {
                owner: Some("nobody".into()),
                group: None,
                mode: Some(Mode(0o440)),
            },
            Some(b"old"),
        ),
    ];
    for (what, attrs, existing) in cases {
        std::fs::remove_file(&target).ok();
        std::fs::remove_file(&log).ok();
        if let Some(b) = existing {
            std::fs::write(&target, b).expect("old");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        let script = write_script_checked(target.to_str().expect("utf8"), &attrs, true, None);
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
            )
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh");
        {
            use std::io::Write;
            let mut i = child.stdin.take().expect("stdin");
            i.write_all(b"secret content").expect("write");
        }
        assert!(child.wait().expect("wait").success(), "{what}");
        let want = attrs.mode.map(|m| m.0).unwrap_or(0o644);
        let owner = attrs.owner.clone().unwrap_or_else(|| "root".into());
        let seen = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!seen.is_empty(), "{what}: nothing recorded");
        for l in seen.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            let mode = u32::from_str_radix(f[1], 8).expect("mode");
            // Group and other bits beyond the requested ones would let someone open the
            // file now and read the content later, through the open descriptor.
            assert_eq!(
                mode & 0o077 & !want,
                0,
                "{what}: temporary file at {l} (wanted {want:o})\n{seen}"
            );
            assert!(
                f[2] == "root" || f[2] == owner,
                "{what}: temporary file owned by {} ({l})",
                f[2]
            );
            if f[0] == "cat-after" || f[0] == "mv-before" {
                assert_eq!(mode, want, "{what}: {l}");
                assert_eq!(f[2], owner, "{what}: {l}");
            }
        }
        assert_eq!(std::fs::read(&target).expect("written"), b"secret content");
    }
}
