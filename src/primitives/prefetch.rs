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

#[derive(Default)]
struct State {
    collecting: bool,
    recorded: Vec<String>,
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
    /// asked ahead, if any, or the batch's timeout once.
    pub fn answer(&self, cmd: &str) -> Option<Result<ExecOutput, StepError>> {
        self.with(|s| {
            if s.collecting {
                if s.recorded.len() >= MAX_PROBES {
                    return Some(Err(StepError::Ahead(Ahead::Full)));
                }
                if !s.recorded.iter().any(|r| r == cmd) {
                    s.recorded.push(cmd.to_string());
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
    pub(crate) fn stop(&self) -> Vec<String> {
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

/// One script asking every probe: each runs in one subshell (a command substitution that
/// collects its stderr while its stdout goes straight out), in the C locale like any check,
/// and ends with `\n<marker> <status>\n<stderr>\n<marker>\n`, the worker's own framing. The
/// `x` printed on exit keeps stderr's trailing newlines, which `$(...)` would strip.
pub fn batch_script(probes: &[String], marker: &str) -> String {
    let mut s = format!(
        "__pm={marker}\n__pb() {{\n  {{ __pe=$(trap 'printf x' EXIT; eval \"$1\" 2>&1 >&3 3>&-); __ps=$?; }} 3>&1\n  printf '\\n%s %s\\n%s\\n%s\\n' \"$__pm\" \"$__ps\" \"${{__pe%x}}\" \"$__pm\"\n}}\n"
    );
    for p in probes {
        s.push_str("__pb ");
        s.push_str(&crate::transport::quote(&super::in_c_locale(p)));
        s.push('\n');
    }
    s
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
    let Some(results) = parse_batch(&out.stdout, &m, probes.len()).filter(|_| out.status == 0)
    else {
        return;
    };
    h.conn
        .stats
        .probes_ahead
        .fetch_add(probes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    h.prefetch.keep(probes.into_iter().zip(results).collect());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_batch(probes: &[String]) -> Vec<ExecOutput> {
        let m = marker();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(batch_script(probes, &m))
            .output()
            .expect("sh runs");
        assert!(out.status.success());
        parse_batch(&out.stdout, &m, probes.len()).expect("whole")
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
        let probes = vec!["echo a".to_string(), "echo b".to_string()];
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

    #[test]
    fn collecting_records_each_probe_once_and_answers_nothing() {
        let p = Prefetch::default();
        p.start();
        assert!(p.collecting());
        assert!(matches!(
            p.answer("a"),
            Some(Err(StepError::Ahead(Ahead::Recorded)))
        ));
        let _ = p.answer("b");
        let _ = p.answer("a");
        assert_eq!(p.stop(), ["a", "b"]);
        assert!(!p.collecting());
        assert!(p.answer("a").is_none());
        p.keep([("a".to_string(), ExecOutput::default())].into());
        assert!(matches!(p.answer("a"), Some(Ok(_))));
        p.forget();
        assert!(p.answer("a").is_none());
        p.with(|s| s.timed_out = Some(TransportError::Timeout("no answer within 120s".into())));
        let once = p.answer("b").and_then(|r| r.err()).map(|e| e.to_string());
        assert_eq!(once.as_deref(), Some("timed out: no answer within 120s"));
        assert!(p.answer("b").is_none(), "once");
    }
}
