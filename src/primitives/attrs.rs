//! File attributes: the mode (an octal string), owner and group options, and what `stat`
//! says about a path (kind from the mode bits, owner, group, mode, size) in any locale.

use super::options;

/// A file mode, written as an octal string ("0644"); an integer is refused (644 is not
/// rw-r--r--: see [`options::int_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl options::OptType for Mode {
    const KIND: options::Kind = options::Kind::Mode;
}

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => options::parse_mode(&s)
                .map(Mode)
                .map_err(serde::de::Error::custom),
            Raw::I(i) => Err(serde::de::Error::custom(options::int_mode(i))),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

options::options! {
    /// Owner/group/mode options shared by files and directories.
    pub struct Attrs for "" {
        owner: Option<String>,
        group: Option<String>,
        mode: Option<Mode>,
    }
}

/// The type of a path, from the file-type bits of its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Other,
}

impl FileKind {
    /// From the `st_mode` bits (`S_IFMT`).
    pub fn from_mode(raw: u32) -> FileKind {
        match raw & 0o170000 {
            0o100000 => FileKind::Regular,
            0o040000 => FileKind::Directory,
            0o120000 => FileKind::Symlink,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            _ => FileKind::Other,
        }
    }
}

/// What `stat` says about a path: kind, owner, group, mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatInfo {
    pub kind: FileKind,
    pub owner: String,
    pub group: String,
    /// Permission bits only (`0o7777`).
    pub mode: u32,
    pub size: u64,
}

impl StatInfo {
    /// The `kind` recipes see from `stat()`: the words English GNU `stat -c %F` prints, so
    /// recipes written against earlier versions keep working, on every host whatever its
    /// locale.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FileKind::Regular if self.size == 0 => "regular empty file",
            FileKind::Regular => "regular file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symbolic link",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "character special file",
            FileKind::BlockDevice => "block special file",
            FileKind::Other => "weird file",
        }
    }
}

/// The `stat` format all checks use: `raw mode in hex|owner|group|size`. The raw mode, not
/// `%F`: `%F` names the type in the login's language ("ディレクトリ").
pub const STAT_FMT: &str = "%f|%U|%G|%s";

pub fn parse_stat(line: &str) -> Option<StatInfo> {
    let mut p = line.trim().split('|');
    let raw = u32::from_str_radix(p.next()?, 16).ok()?;
    let owner = p.next()?.to_string();
    let group = p.next()?.to_string();
    let size = p.next()?.parse().ok()?;
    if p.next().is_some() {
        return None;
    }
    Some(StatInfo {
        kind: FileKind::from_mode(raw),
        owner,
        group,
        mode: raw & 0o7777,
        size,
    })
}

/// The changes needed to bring `st` to `want`: commands and their descriptions.
pub fn attr_fixes(path_q: &str, st: &StatInfo, want: &Attrs) -> (Vec<String>, Vec<String>) {
    let mut cmds = Vec::new();
    let mut what = Vec::new();
    let owner_diff = want.owner.as_ref().filter(|o| **o != st.owner);
    let group_diff = want.group.as_ref().filter(|g| **g != st.group);
    if owner_diff.is_some() || group_diff.is_some() {
        let spec = match (owner_diff, group_diff) {
            (Some(o), Some(g)) => format!("{o}:{g}"),
            (Some(o), None) => o.clone(),
            (None, Some(g)) => format!(":{g}"),
            (None, None) => String::new(),
        };
        cmds.push(format!(
            "chown -h {} {path_q}",
            crate::transport::quote(&spec)
        ));
        if let Some(o) = owner_diff {
            what.push(format!("owner {} -> {o}", st.owner));
        }
        if let Some(g) = group_diff {
            what.push(format!("group {} -> {g}", st.group));
        }
    }
    if let Some(m) = want.mode.filter(|m| m.0 != st.mode) {
        cmds.push(format!("chmod {m} {path_q}"));
        what.push(format!("mode {:04o} -> {m}", st.mode));
    }
    (cmds, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitives::in_c_locale;

    fn st(line: &str) -> StatInfo {
        parse_stat(line).unwrap_or_else(|| panic!("cannot parse {line:?}"))
    }

    #[test]
    fn stat_kind_comes_from_the_mode_bits() {
        // What `stat -c '%f|%U|%G|%s'` prints (GNU coreutils), whatever the locale.
        let cases = [
            ("41ed|root|root|4096", "directory", 0o755),
            ("81a4|root|root|12", "regular file", 0o644),
            ("8180|munge|munge|0", "regular empty file", 0o600),
            ("a1ff|root|root|7", "symbolic link", 0o777),
            ("11a4|root|root|0", "fifo", 0o644),
            ("c1ed|root|root|0", "socket", 0o755),
            ("21b6|root|root|0", "character special file", 0o666),
            ("61b0|root|disk|0", "block special file", 0o660),
            ("89ed|root|root|10", "regular file", 0o4755),
            ("43ff|root|root|4096", "directory", 0o1777),
        ];
        for (line, kind, mode) in cases {
            let s = st(line);
            assert_eq!(s.kind_name(), kind, "{line}");
            assert_eq!(s.mode, mode, "{line}");
        }
        let s = st("81a4|UNKNOWN|UNKNOWN|3\n");
        assert_eq!(
            (s.owner.as_str(), s.group.as_str(), s.size),
            ("UNKNOWN", "UNKNOWN", 3)
        );
    }

    #[test]
    fn stat_words_are_never_parsed() {
        // The `%F` format of earlier versions, in English and in Japanese: not a mode.
        assert_eq!(parse_stat("directory|root|root|755|4096"), None);
        assert_eq!(parse_stat("ディレクトリ|root|root|755|4096"), None);
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("41ed|root|root"), None);
    }

    #[test]
    fn the_real_stat_agrees() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path();
        std::fs::write(p.join("f"), b"abc").expect("write");
        std::fs::write(p.join("e"), b"").expect("write");
        std::os::unix::fs::symlink("f", p.join("l")).expect("symlink");
        let cases = [
            (p.to_path_buf(), "directory"),
            (p.join("f"), "regular file"),
            (p.join("e"), "regular empty file"),
            (p.join("l"), "symbolic link"),
        ];
        for (path, kind) in cases {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(in_c_locale(&format!(
                    "stat -c '{STAT_FMT}' -- {}",
                    crate::transport::quote(&path.to_string_lossy())
                )))
                .output()
                .expect("stat runs");
            let line = String::from_utf8_lossy(&out.stdout);
            assert_eq!(st(&line).kind_name(), kind, "{}: {line}", path.display());
        }
    }
}
