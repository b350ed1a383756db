//! What the dry-run steps of this run have planned, across hosts and plays: the files they
//! would write (so that a later step reading one, on any host, sees the planned content or
//! says what it depends on) and the changes they would make (so that the same change planned
//! twice on a host is counted once). One per run (`RunCtx::planned`); a real run never fills
//! it: there the hosts themselves hold the results.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Planned content of files kept whole up to this size; above it only "some content" is known.
const KEEP_MAX: usize = 4 * 1024 * 1024;

/// What a step plans for a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedContent {
    /// A file with exactly these bytes (a template, a content or a controller file).
    Bytes { bytes: Arc<Vec<u8>>, secret: bool },
    /// A file whose content only exists once the step has run (a key a command makes, a
    /// download, a file copied from a file that is itself not there yet).
    Unknown,
    /// A directory.
    Directory,
    /// Removed.
    Absent,
}

/// A path some step of this run plans to write, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub content: PlannedContent,
    /// `recipe.rhai:12` (or the module's file) of the step.
    pub at: String,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Permission bits, when the step sets them.
    pub mode: Option<u32>,
}

impl PlannedFile {
    pub fn new(content: PlannedContent, at: &str) -> PlannedFile {
        let content = match content {
            PlannedContent::Bytes { bytes, .. } if bytes.len() > KEEP_MAX => {
                PlannedContent::Unknown
            }
            c => c,
        };
        PlannedFile {
            content,
            at: at.to_string(),
            owner: None,
            group: None,
            mode: None,
        }
    }

    /// "depends on master:/etc/munge/munge.key (planned at munge.rhai:40, not yet there)".
    pub fn depends(&self, host: &str, path: &str) -> String {
        format!(
            "depends on {host}:{path} (planned at {}, not yet there)",
            self.at
        )
    }
}

/// The run-wide registry of planned files and changes.
#[derive(Debug, Default)]
pub struct Planned {
    files: Mutex<HashMap<(String, String), PlannedFile>>,
    /// (host, op and target) -> (the latest planned change, where).
    changes: Mutex<HashMap<(String, String), (String, String)>>,
}

impl Planned {
    /// Records that a step plans `f` for `host:path` (a later plan of the same path wins).
    pub fn plan_file(&self, host: &str, path: &str, f: PlannedFile) {
        if let Ok(mut m) = self.files.lock() {
            m.insert((host.to_string(), path.to_string()), f);
        }
    }

    /// What this run plans for `host:path`, if anything.
    pub fn file(&self, host: &str, path: &str) -> Option<PlannedFile> {
        let m = self.files.lock().ok()?;
        if m.is_empty() {
            return None;
        }
        m.get(&(host.to_string(), path.to_string())).cloned()
    }

    /// Records that a step plans the change `identity` to `subject` (op and target) on
    /// `host` at `at`. If the latest plan for that subject on that host is the same change,
    /// returns where it was planned (the step changes nothing more); a different change in
    /// between (content A, then B, then A again) makes it a change again.
    pub fn first_change(
        &self,
        host: &str,
        subject: &str,
        identity: &str,
        at: &str,
    ) -> Option<String> {
        let mut m = self.changes.lock().ok()?;
        let key = (host.to_string(), subject.to_string());
        match m.get(&key) {
            Some((id, first)) if id == identity => Some(first.clone()),
            _ => {
                m.insert(key, (identity.to_string(), at.to_string()));
                None
            }
        }
    }

    /// Where the latest plan for `subject` on `host` was made, if it is the change
    /// `identity` (a step that finds its work planned already: it only reads).
    pub fn planned_as(&self, host: &str, subject: &str, identity: &str) -> Option<String> {
        let m = self.changes.lock().ok()?;
        match m.get(&(host.to_string(), subject.to_string())) {
            Some((id, at)) if id == identity => Some(at.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_per_host_and_path() {
        let p = Planned::default();
        assert_eq!(p.file("master", "/etc/x"), None);
        let f = PlannedFile::new(PlannedContent::Unknown, "munge.rhai:3");
        p.plan_file("master", "/etc/x", f.clone());
        assert_eq!(p.file("master", "/etc/x"), Some(f.clone()));
        assert_eq!(p.file("w1", "/etc/x"), None);
        assert_eq!(
            f.depends("master", "/etc/x"),
            "depends on master:/etc/x (planned at munge.rhai:3, not yet there)"
        );
        // Big content is not kept.
        let big = PlannedFile::new(
            PlannedContent::Bytes {
                bytes: Arc::new(vec![0; KEEP_MAX + 1]),
                secret: false,
            },
            "a:1",
        );
        assert_eq!(big.content, PlannedContent::Unknown);
    }

    #[test]
    fn a_change_is_counted_once_per_host() {
        let p = Planned::default();
        assert_eq!(p.first_change("m", "user slurm", "uid 5", "a.rhai:1"), None);
        assert_eq!(
            p.first_change("m", "user slurm", "uid 5", "b.rhai:2"),
            Some("a.rhai:1".into())
        );
        assert_eq!(
            p.first_change("w1", "user slurm", "uid 5", "b.rhai:2"),
            None
        );
        // A, then B, then A again: each is a change (a real run would make all three).
        assert_eq!(p.first_change("m", "file /x", "A", "c.rhai:1"), None);
        assert_eq!(p.first_change("m", "file /x", "B", "c.rhai:2"), None);
        assert_eq!(p.first_change("m", "file /x", "A", "c.rhai:3"), None);
        assert_eq!(
            p.first_change("m", "file /x", "A", "c.rhai:4"),
            Some("c.rhai:3".into())
        );
        assert_eq!(p.planned_as("m", "file /x", "A"), Some("c.rhai:3".into()));
        assert_eq!(p.planned_as("m", "file /x", "B"), None);
        assert_eq!(p.planned_as("w1", "file /x", "A"), None);
    }
}
