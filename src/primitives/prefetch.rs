//! The probes of the steps ahead, asked in one round trip. Before a host runs its recipe the
//! script runs once more in a *collecting* pass: each state step (`directory`, `file`,
//! `template`, `packages`, `service`, `user`, `group`) records its first probe instead of
//! sending it and answers "ok, unchanged", and the pass stops at the first thing whose answer
//! it cannot assume (a command, a read, a change made before a probe, an error). The
//! recorded probes go to the host as one script, each in a subshell of its own with its own
//! stdout, stderr and status, and the real run's steps take their answers from there.
//!
//! An answer is good until this host changes: any command other than a probe (a fix, `sh`,
//! a copy) drops them all, and later steps probe for themselves as before. So a step sees
//! what it would have seen a few milliseconds later, reports the same and fails at the same
//! place; a guess the real run does not follow (another branch taken) only costs its probe.

use std::collections::HashMap;
use std::sync::Mutex;

use super::attrs::STAT_FMT;
use super::failure::StepError;
use crate::transport::{ExecOutput, TransportError};

/// What ends the collecting pass as a script error (a command, a read, a step that changes
/// before it probes). The pass's error is never shown.
pub const STOP: &str = "\u{0}prefetch: stop";

/// Why a probe got no answer in the collecting pass (not a failure: the pass turns it into
/// an "ok" or its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ahead {
    /// Recorded, to be asked with the others: the step answers "ok, unchanged".
    Recorded,
    /// The batch is full: the pass ends here.
    Full,
}

/// The steps whose first probe the collecting pass records: each probes before it changes
/// anything and reads nothing from other hosts first (`file` with `from_host` does, and stops
/// the pass through [`STOP`]).
pub const STEPS: &[&str] = &[
    "directory",
    "file",
    "template",
    "packages",
    "service",
    "user",
    "group",
];

/// At most this many probes in one batch: a long recipe gets its first ones.
const MAX_PROBES: usize = 64;

/// What a recorded probe asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Any read-only command: it runs in a subshell of its own.
    Shell,
    /// The stat and checksum of a file ([`super::files::probe_host_file`]'s command): the
    /// batch answers every such probe with one `stat` and one `sha256sum` in all.
    File(String),
}

#[derive(Default)]
struct State {
    collecting: bool,
    recorded: Vec<(String, Kind)>,
    answers: HashMap<String, ExecOutput>,
    /// The batch timed out: the next probe fails with that at once instead of waiting as
    /// long again (the host did not answer; the same step would have waited for it).
    timed_out: Option<TransportError>,
}

/// One host's probes asked ahead (see the module's note).
#[derive(Default)]
pub struct Prefetch {
    state: Mutex<State>,
}

impl Prefetch {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    /// Whether the collecting pass is running (nothing may reach the host, nothing is reported).
    pub fn collecting(&self) -> bool {
        self.with(|s| s.collecting).unwrap_or(false)
    }

    /// In the collecting pass: records `cmd` and returns what ends the step's body
    /// ([`Ahead::Recorded`], or [`Ahead::Full`] when the batch is full). Otherwise the answer
    /// asked ahead, if any, or the batch's timeout once. `kind` says whether the batch may ask
    /// it together with others of its kind.
    pub fn answer_as(&self, cmd: &str, kind: Kind) -> Option<Result<ExecOutput, StepError>> {
        self.with(|s| {
            if s.collecting {
                if s.recorded.len() >= MAX_PROBES {
                    return Some(Err(StepError::Ahead(Ahead::Full)));
                }
                if !s.recorded.iter().any(|(r, _)| r == cmd) {
                    s.recorded.push((cmd.to_string(), kind));
                }
                return Some(Err(StepError::Ahead(Ahead::Recorded)));
            }
            if let Some(e) = s.timed_out.take() {
                return Some(Err(StepError::from(e)));
            }
            s.answers.get(cmd).cloned().map(Ok)
        })
        .flatten()
    }

    /// The host is about to change: no answer asked before holds any more.
    pub fn forget(&self) {
        self.with(|s| {
            s.answers.clear();
            s.timed_out = None;
        });
    }

    pub(crate) fn start(&self) {
        self.with(|s| {
            s.collecting = true;
            s.recorded.clear();
            s.answers.clear();
        });
    }

    /// Ends the collecting pass; the probes it recorded, in order.
    pub(crate) fn stop(&self) -> Vec<(String, Kind)> {
        self.with(|s| {
            s.collecting = false;
            std::mem::take(&mut s.recorded)
        })
        .unwrap_or_default()
    }

    pub(crate) fn keep(&self, answers: HashMap<String, ExecOutput>) {
        self.with(|s| s.answers = answers);
    }
}

impl Kind {
    /// The kind of [`super::files::probe_host_file`]'s probe of `path`: a path whose name
    /// `sha256sum` would escape, or that it reads as stdin (`-`), is asked alone.
    pub fn file(path: &str) -> Kind {
        if path.starts_with('/') && !path.contains(['\n', '\\']) {
            Kind::File(path.to_string())
        } else {
            Kind::Shell
        }
    }
}

/// One script asking every probe: each command probe runs in one subshell (a command
/// substitution that collects its stderr while its stdout goes straight out), in the C locale
/// like any check, and ends with `\n<marker> <status>\n<stderr>\n<marker>\n`, the worker's own
/// framing. The `x` printed on exit keeps stderr's trailing newlines, which `$(...)` would
/// strip. The file probes come last, all in one such subshell ([`files_script`]).
pub fn batch_script(probes: &[(String, Kind)], marker: &str) -> String {
    let mut s = format!(
        "__pm={marker}\n__pb() {{\n  {{ __pe=$(trap 'printf x' EXIT; eval \"$1\" 2>&1 >&3 3>&-); __ps=$?; }} 3>&1\n  printf '\\n%s %s\\n%s\\n%s\\n' \"$__pm\" \"$__ps\" \"${{__pe%x}}\" \"$__pm\"\n}}\n"
    );
    let mut call = |cmd: &str| {
        s.push_str("__pb ");
        s.push_str(&crate::transport::quote(&super::in_c_locale(cmd)));
        s.push('\n');
    };
    for (p, _) in probes.iter().filter(|(_, k)| *k == Kind::Shell) {
        call(p);
    }
    let files = file_paths(probes);
    if !files.is_empty() {
        call(&files_script(&files));
    }
    s
}

fn file_paths(probes: &[(String, Kind)]) -> Vec<&str> {
    probes
        .iter()
        .filter_map(|(_, k)| match k {
            Kind::File(p) => Some(p.as_str()),
            Kind::Shell => None,
        })
        .collect()
}

/// Answers every file probe with builtins and two processes: which paths exist (`[ -e ] ||
/// [ -L ]`, as the probe asks), one `stat` of those (its format plus `|%n`, so each line
/// names its path), which are regular files (`[ -f ]`), one `sha256sum` of those.
fn files_script(paths: &[&str]) -> String {
    use crate::transport::quote;
    let mut s = String::from("__e=; set --\n");
    for p in paths {
        let q = quote(p);
        s.push_str(&format!(
            "if [ -e {q} ] || [ -L {q} ]; then __e=${{__e}}1; set -- \"$@\" {q}; else __e=${{__e}}0; fi\n"
        ));
    }
    s.push_str(&format!(
        "printf '%s\\n' \"$__e\"\nif [ $# -gt 0 ]; then stat -c '{STAT_FMT}|%n' -- \"$@\" || exit; fi\n__f=; set --\n"
    ));
    for p in paths {
        let q = quote(p);
        s.push_str(&format!(
            "if [ -f {q} ]; then __f=${{__f}}1; set -- \"$@\" {q}; else __f=${{__f}}0; fi\n"
        ));
    }
    s.push_str("printf '%s\\n' \"$__f\"\nif [ $# -gt 0 ]; then sha256sum -- \"$@\" || exit; fi\n");
    s
}

/// Each file probe's answer as its own command prints it (see
/// [`super::files::probe_host_file`]): `absent`, or the stat line and then the checksum
/// line (`<hash>  -`, as `sha256sum < file` prints it) or `-`. `None` unless the output is
/// exactly what [`files_script`] prints when all went well: then every step probes alone.
fn split_files(out: &ExecOutput, paths: &[&str]) -> Option<Vec<ExecOutput>> {
    if out.status != 0 || !out.stderr.is_empty() {
        return None;
    }
    let mut rest = out.stdout.as_slice();
    let flags = |rest: &mut &[u8]| -> Option<Vec<bool>> {
        let nl = memchr::memchr(b'\n', rest)?;
        let f = &rest[..nl];
        *rest = &rest[nl + 1..];
        (f.len() == paths.len() && f.iter().all(|b| matches!(b, b'0' | b'1')))
            .then(|| f.iter().map(|b| *b == b'1').collect())
    };
    let exists = flags(&mut rest)?;
    let mut stats = Vec::with_capacity(paths.len());
    for (p, e) in paths.iter().zip(&exists) {
        if !e {
            stats.push(None);
            continue;
        }
        // The format's four fields hold no `|` (parse_stat needs that too), then `|<path>\n`.
        let bars: Vec<usize> = memchr::memchr_iter(b'|', rest).take(4).collect();
        let end = *bars.get(3)?;
        let line = std::str::from_utf8(&rest[..end]).ok()?;
        if line.contains('\n') || super::attrs::parse_stat(line).is_none() {
            return None;
        }
        rest = rest[end + 1..]
            .strip_prefix(p.as_bytes())?
            .strip_prefix(b"\n")?;
        stats.push(Some(line.to_string()));
    }
    let regular = flags(&mut rest)?;
    let mut res = Vec::with_capacity(paths.len());
    for ((p, st), f) in paths.iter().zip(stats).zip(regular) {
        let stdout = match (st, f) {
            (None, false) => b"absent\n".to_vec(),
            (None, true) => return None,
            (Some(line), false) => format!("{line}\n-\n").into_bytes(),
            (Some(line), true) => {
                let hash = rest.get(..64)?;
                if !hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return None;
                }
                let hash = std::str::from_utf8(hash).ok()?.to_string();
                rest = rest[64..]
                    .strip_prefix(b"  ")?
                    .strip_prefix(p.as_bytes())?
                    .strip_prefix(b"\n")?;
                format!("{line}\n{hash}  -\n").into_bytes()
            }
        };
        res.push(ExecOutput {
            status: 0,
            stdout,
            stderr: Vec::new(),
        });
    }
    rest.is_empty().then_some(res)
}

/// Every probe's answer from the batch's calls (see [`batch_script`]); `None` unless all
/// came whole.
fn answers(
    probes: Vec<(String, Kind)>,
    calls: Vec<ExecOutput>,
) -> Option<HashMap<String, ExecOutput>> {
    let files = file_paths(&probes);
    let mut calls = calls.into_iter();
    let mut shell = Vec::new();
    for _ in probes.iter().filter(|(_, k)| *k == Kind::Shell) {
        shell.push(calls.next()?);
    }
    let file_answers = if files.is_empty() {
        Vec::new()
    } else {
        split_files(&calls.next()?, &files)?
    };
    let mut shell = shell.into_iter();
    let mut file_answers = file_answers.into_iter();
    probes
        .into_iter()
        .map(|(cmd, k)| {
            let a = match k {
                Kind::Shell => shell.next()?,
                Kind::File(_) => file_answers.next()?,
            };
            Some((cmd, a))
        })
        .collect()
}

/// How many subshell calls [`batch_script`] makes for `probes`.
fn calls_of(probes: &[(String, Kind)]) -> usize {
    let shell = probes.iter().filter(|(_, k)| *k == Kind::Shell).count();
    shell + usize::from(shell < probes.len())
}

/// Splits the output of [`batch_script`] into one result per probe; `None` when it is not
/// whole (then every step probes for itself).
pub fn parse_batch(out: &[u8], marker: &str, n: usize) -> Option<Vec<ExecOutput>> {
    let head = format!("\n{marker} ");
    let tail = format!("\n{marker}\n");
    let (hf, tf) = (
        memchr::memmem::Finder::new(head.as_bytes()),
        memchr::memmem::Finder::new(tail.as_bytes()),
    );
    let mut rest = out;
    let mut res = Vec::with_capacity(n);
    for _ in 0..n {
        let at = hf.find(rest)?;
        let stdout = rest[..at].to_vec();
        rest = &rest[at + head.len()..];
        let nl = memchr::memchr(b'\n', rest)?;
        let status = std::str::from_utf8(&rest[..nl]).ok()?.trim().parse().ok()?;
        rest = &rest[nl + 1..];
        let end = tf.find(rest)?;
        let stderr = rest[..end].to_vec();
        rest = &rest[end + tail.len()..];
        res.push(ExecOutput {
            status,
            stdout,
            stderr,
        });
    }
    rest.is_empty().then_some(res)
}

/// A marker no probe prints by chance.
fn marker() -> String {
    format!("__RCP_P{:032x}", crate::transport::shell::rand_u128())
}

/// Runs the collecting pass of `ast` on `engine` (whose tag is this host's context) and asks
/// what it recorded in one round trip. Nothing is reported and nothing reaches the host but
/// that one script; any failure leaves the steps to probe for themselves.
pub fn ask_ahead(
    engine: &mut rhai::Engine,
    ast: &rhai::AST,
    vars: rhai::Map,
    h: &crate::context::HostCtx,
) {
    if std::env::var_os("RECIPE_NO_PREFETCH").is_some() {
        return;
    }
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    h.prefetch.start();
    let mut scope = rhai::Scope::new();
    scope.push_constant("vars", crate::engine::Vars(vars));
    // It ends at the first step it cannot answer: its error is no one's business.
    let _ = engine.run_ast_with_scope(&mut scope, ast);
    let probes = h.prefetch.stop();
    // One probe is asked by its step as soon anyway.
    if probes.len() < 2 {
        return;
    }
    let m = marker();
    let limit = std::time::Duration::from_secs(120);
    let out = match h.exec_bounded(&batch_script(&probes, &m), limit) {
        Ok(out) => out,
        Err(e @ TransportError::Timeout(_)) => {
            h.prefetch.with(|s| s.timed_out = Some(e));
            return;
        }
        // Anything else happens again, as fast, to the step that probes first.
        Err(_) => return,
    };
    let n = probes.len();
    let Some(answers) = parse_batch(&out.stdout, &m, calls_of(&probes))
        .filter(|_| out.status == 0)
        .and_then(|calls| answers(probes, calls))
    else {
        return;
    };
    h.conn
        .stats
        .probes_ahead
        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    h.prefetch.keep(answers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(probes: &[&str]) -> Vec<(String, Kind)> {
        probes
            .iter()
            .map(|p| (p.to_string(), Kind::Shell))
            .collect()
    }

    /// Runs the batch of `probes` with `path` as PATH (or this process's); each probe's answer.
    fn run_batch_with(probes: &[(String, Kind)], path: Option<&str>) -> Vec<ExecOutput> {
        let m = marker();
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c").arg(batch_script(probes, &m));
        if let Some(p) = path {
            c.env("PATH", p);
        }
        let out = c.output().expect("sh runs");
        assert!(out.status.success());
        let calls = parse_batch(&out.stdout, &m, calls_of(probes)).expect("whole");
        let mut a = answers(probes.to_vec(), calls).expect("answers");
        probes
            .iter()
            .map(|(p, _)| a.remove(p).expect("an answer"))
            .collect()
    }

    fn run_batch(probes: &[String]) -> Vec<ExecOutput> {
        let p: Vec<(String, Kind)> = probes.iter().map(|p| (p.clone(), Kind::Shell)).collect();
        run_batch_with(&p, None)
    }

    fn alone(p: &str) -> ExecOutput {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(super::super::in_c_locale(p))
            .output()
            .expect("sh runs");
        ExecOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }

    /// Each probe answers in the batch exactly what it answers alone: stdout, stderr (trailing
    /// newlines and a final `x` included), status, `exit`, and nothing leaks to the next one.
    #[test]
    fn a_batch_answers_each_probe_as_it_answers_alone() {
        let probes: Vec<String> = [
            "echo out; echo err >&2; exit 5",
            "printf 'a\\n\\n'; printf 'e\\n\\n' >&2",
            "printf 'no newline x'; printf 'stderr ends in x' >&2",
            "false",
            "printf '%s|%s' \"$LC_ALL\" \"${LEAK-unset}\"; LEAK=1; export LEAK; cd /",
            "printf '%s|%s' \"${LEAK-unset}\" \"$PWD\"",
            "stat -c '%f|%U' -- / && sha256sum </dev/null",
            "if [ -e /nonexistent ]; then echo there; else echo absent; fi",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = run_batch(&probes);
        for (p, g) in probes.iter().zip(&got) {
            let a = alone(p);
            assert_eq!(
                (g.status, &g.stdout, &g.stderr),
                (a.status, &a.stdout, &a.stderr),
                "{p}"
            );
        }
        assert_eq!(got[4].stdout, b"C|unset");
        assert!(got[5].stdout.starts_with(b"unset|"));
    }

    #[test]
    fn a_batch_cut_short_is_not_used() {
        let probes = shell(&["echo a", "echo b"]);
        let m = marker();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(batch_script(&probes, &m))
            .output()
            .expect("sh runs");
        let whole = out.stdout;
        assert!(parse_batch(&whole, &m, 2).is_some());
        for cut in [1, whole.len() / 2, whole.len() - 1] {
            assert!(parse_batch(&whole[..cut], &m, 2).is_none(), "{cut}");
        }
        assert!(parse_batch(&whole, &m, 3).is_none());
    }

    /// A folder of every kind of path a file probe meets.
    fn paths_of_every_kind(d: &std::path::Path) -> Vec<String> {
        use std::os::unix::fs::symlink;
        std::fs::write(d.join("file"), b"abc").expect("write");
        std::fs::write(d.join("empty"), b"").expect("write");
        std::fs::write(d.join("it's a | file -- x"), b"quoted\n").expect("write");
        std::fs::create_dir(d.join("dir")).expect("mkdir");
        symlink("file", d.join("link")).expect("symlink");
        symlink("dir", d.join("dirlink")).expect("symlink");
        symlink("nowhere", d.join("dangling")).expect("symlink");
        let fifo = d.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        [
            "file",
            "empty",
            "it's a | file -- x",
            "dir",
            "link",
            "dirlink",
            "dangling",
            "fifo",
            "absent",
            "absent/below",
            "file/below",
        ]
        .iter()
        .map(|n| d.join(n).to_string_lossy().into_owned())
        .collect()
    }

    /// File probes asked together answer exactly what each probe's own command answers alone,
    /// beside command probes, whatever the path is.
    #[test]
    fn file_probes_asked_together_answer_as_each_alone() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut probes: Vec<(String, Kind)> = paths_of_every_kind(d.path())
            .iter()
            .map(|p| (super::super::files::file_probe(p), Kind::file(p)))
            .collect();
        assert!(probes.iter().all(|(_, k)| *k != Kind::Shell));
        probes.insert(3, ("echo between; exit 3".to_string(), Kind::Shell));
        let got = run_batch_with(&probes, None);
        for ((p, _), g) in probes.iter().zip(&got) {
            let a = alone(p);
            assert_eq!(
                (g.status, g.stdout_str(), g.stderr_str()),
                (a.status, a.stdout_str(), a.stderr_str()),
                "{p}"
            );
        }
        assert!(got[0]
            .stdout_str()
            .ends_with("\nba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  -\n"));
        assert_eq!(got[9].stdout_str(), "absent\n");
    }

    /// However many files: one `stat` and one `sha256sum` in all (stand-ins first on PATH
    /// count them, then run the real ones).
    #[test]
    fn file_probes_cost_one_stat_and_one_checksum_in_all() {
        let d = tempfile::tempdir().expect("tempdir");
        let paths = paths_of_every_kind(d.path());
        let bin = tempfile::tempdir().expect("tempdir");
        let log = bin.path().join("log");
        for tool in ["stat", "sha256sum"] {
            let real = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .expect("sh");
            let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
            let script = format!(
                "#!/bin/sh\necho {tool} >> '{}'\nexec {real} \"$@\"\n",
                log.display()
            );
            crate::test_bin::stand_in(bin.path(), tool, &script);
        }
        let path = crate::test_bin::path_first(bin.path());
        let probes: Vec<(String, Kind)> = paths
            .iter()
            .map(|p| (super::super::files::file_probe(p), Kind::file(p)))
            .collect();
        let got = run_batch_with(&probes, Some(&path));
        assert_eq!(got.len(), paths.len());
        let calls = std::fs::read_to_string(&log).expect("log");
        assert_eq!(calls, "stat\nsha256sum\n");
    }

    /// Anything but the output of a batch that went well answers no file probe: the steps
    /// then probe alone.
    #[test]
    fn file_answers_only_from_a_batch_that_went_well() {
        let ok = |stdout: &str| ExecOutput {
            status: 0,
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        };
        let paths = ["/a", "/b"];
        let sum = "0".repeat(64);
        let good = format!("10\n81a4|root|root|3|/a\n10\n{sum}  /a\n");
        let a = split_files(&ok(&good), &paths).expect("good");
        assert_eq!(a[0].stdout_str(), format!("81a4|root|root|3\n{sum}  -\n"));
        assert_eq!(a[1].stdout_str(), "absent\n");
        let bad = [
            format!("10\n81a4|root|root|3|/b\n10\n{sum}  /a\n"), // another path
            format!("11\n81a4|root|root|3|/a\n10\n{sum}  /a\n"), // a stat line missing
            format!("10\n81a4|root|root|3|/a\n11\n{sum}  /a\n"), // a checksum missing
            "10\n81a4|root|root|3|/a\n01\n".to_string(),         // regular but absent
            format!("10\n81a4|root|root|3|/a\n10\n{sum}  /a\nmore"),
            format!("1\n81a4|root|root|3|/a\n10\n{sum}  /a\n"),
            "10\n81a4|root|root|3|/a\n10\nnot-a-sum  /a\n".to_string(),
        ];
        for b in &bad {
            assert!(split_files(&ok(b), &paths).is_none(), "{b}");
        }
        let mut failed = ok(&good);
        failed.status = 1;
        assert!(split_files(&failed, &paths).is_none());
        let mut noisy = ok(&good);
        noisy.stderr = b"sha256sum: /b: Permission denied\n".to_vec();
        assert!(split_files(&noisy, &paths).is_none());
        // Names sha256sum would escape, or read as stdin, are asked alone.
        assert_eq!(Kind::file("/a\nb"), Kind::Shell);
        assert_eq!(Kind::file("/a\\b"), Kind::Shell);
        assert_eq!(Kind::file("-"), Kind::Shell);
        assert_eq!(Kind::file("rel"), Kind::Shell);
    }

    #[test]
    fn collecting_records_each_probe_once_and_answers_nothing() {
        let p = Prefetch::default();
        p.start();
        assert!(p.collecting());
        assert!(matches!(
            p.answer_as("a", Kind::Shell),
            Some(Err(StepError::Ahead(Ahead::Recorded)))
        ));
        let _ = p.answer_as("b", Kind::Shell);
        let _ = p.answer_as("a", Kind::Shell);
        assert_eq!(p.stop(), shell(&["a", "b"]));
        assert!(!p.collecting());
        assert!(p.answer_as("a", Kind::Shell).is_none());
        p.keep([("a".to_string(), ExecOutput::default())].into());
        assert!(matches!(p.answer_as("a", Kind::Shell), Some(Ok(_))));
        p.forget();
        assert!(p.answer_as("a", Kind::Shell).is_none());
        p.with(|s| s.timed_out = Some(TransportError::Timeout("no answer within 120s".into())));
        let once = p
            .answer_as("b", Kind::Shell)
            .and_then(|r| r.err())
            .map(|e| e.to_string());
        assert_eq!(once.as_deref(), Some("timed out: no answer within 120s"));
        assert!(p.answer_as("b", Kind::Shell).is_none(), "once");
    }
}
