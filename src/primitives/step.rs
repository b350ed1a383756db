//! The step: a primitive's plan (changes, diff, one action) reported and, unless this is a
//! dry run, carried out; the commands it runs in the C locale, and the failures it reports.

use super::failure::StepError;
use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext, Position};
use std::sync::Arc;
use std::time::Instant;

use crate::context::HostCtx;
use crate::planned::{PlannedContent, PlannedFile};
use crate::report::{Status, StepEvent};

/// What a step did (or, in a dry run, would do): what `step` reports and returns.
#[derive(Default)]
pub struct Outcome {
    pub changed: bool,
    pub skipped: bool,
    /// Human lines: "install munge", "start munge", "run: make install".
    pub changes: Vec<String>,
    pub diff: Option<String>,
    /// Extra fields of the value returned to the recipe.
    pub result: Map,
}

/// Work a real run does for a step; what it returns joins the step's result.
pub type Work<'a> = Box<dyn FnOnce(&HostCtx) -> Result<Map, StepError> + 'a>;

/// How a step's plan is carried out. Only [`step`] runs it, and never in a dry run.
pub enum Action<'a> {
    /// Nothing to run.
    Nothing,
    /// One script, in the C locale; a non-zero exit is a failure showing its stderr.
    Script {
        cmd: String,
        stdin: Option<std::sync::Arc<Vec<u8>>>,
        /// The target's limit (default: `--timeout`).
        timeout: Option<std::time::Duration>,
    },
    /// Work only a real run does (a copy streamed between hosts, a wait); what it returns
    /// joins the step's result. A dry run reports the plan's changes, or `skipped` when
    /// `skip_in_dry_run`.
    Work {
        run: Work<'a>,
        skip_in_dry_run: bool,
    },
    /// A command behind guards, whose probe and apply are one script: see [`Guarded`].
    Guarded(Guarded),
}

/// A command that runs unless its guard says it need not (`sh` with `creates`, `unless`, ...).
/// A dry run sends the guard alone (it is the probe); a real run sends guard and command as
/// one script, one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    /// Prints [`GUARD_SKIP`] and exits when the command need not run (may be empty).
    pub guard: String,
    /// What runs after the guard: environment, folder, the command.
    pub command: String,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<std::time::Duration>,
    /// A failing command (or one out of time) is reported `changed`, not a failure.
    pub ignore_errors: bool,
    /// The change reported when it runs ("run: make install").
    pub change: String,
}

/// What a guard prints when the command need not run.
pub const GUARD_SKIP: &str = "__RCP_GUARD_SKIP__";

/// A step's plan: what its probes found wrong and how to put it right. The body of a
/// primitive builds it from facts (pure decision functions do the deciding); [`step`] alone
/// reports it and applies it unless this is a dry run.
pub struct StepPlan<'a> {
    pub changes: Vec<String>,
    pub diff: Option<String>,
    /// Extra fields of the value returned to the recipe.
    pub result: Map,
    pub action: Action<'a>,
    /// Paths this step writes, for the run's registry of planned files (dry runs).
    pub writes: Vec<(String, PlannedFile)>,
    /// What makes this change the same as another (options, content checksum) when it is
    /// idempotent: the same change planned twice on a host in one dry run counts once.
    /// `None`: every planned run is a change of its own (`sh` without `creates`, restarts).
    pub identity: Option<String>,
}

impl<'a> StepPlan<'a> {
    /// Nothing to change.
    pub fn ok() -> StepPlan<'a> {
        StepPlan {
            changes: Vec::new(),
            diff: None,
            result: Map::new(),
            action: Action::Nothing,
            writes: Vec::new(),
            identity: None,
        }
    }
    pub fn with(mut self, key: &str, v: impl Into<Dynamic>) -> StepPlan<'a> {
        self.result.insert(key.into(), v.into());
        self
    }
    /// Same change as another step with the same op, target and `id`.
    pub fn same_as(mut self, id: impl Into<String>) -> StepPlan<'a> {
        self.identity = Some(id.into());
        self
    }
    pub fn writes(mut self, path: &str, f: PlannedFile) -> StepPlan<'a> {
        self.writes.push((path.to_string(), f));
        self
    }
    /// A guarded command.
    pub fn guarded(g: Guarded) -> StepPlan<'a> {
        StepPlan {
            action: Action::Guarded(g),
            ..StepPlan::ok()
        }
    }
    /// Work that only a real run does (see [`Action::Work`]).
    pub fn work(
        skip_in_dry_run: bool,
        run: impl FnOnce(&HostCtx) -> Result<Map, StepError> + 'a,
    ) -> StepPlan<'a> {
        StepPlan {
            action: Action::Work {
                run: Box::new(run),
                skip_in_dry_run,
            },
            ..StepPlan::ok()
        }
    }
    /// A change made by one script.
    pub fn script(
        changes: Vec<String>,
        cmd: String,
        stdin: Option<std::sync::Arc<Vec<u8>>>,
        timeout: Option<std::time::Duration>,
    ) -> StepPlan<'a> {
        StepPlan {
            changes,
            action: Action::Script {
                cmd,
                stdin,
                timeout,
            },
            ..StepPlan::ok()
        }
    }
}

impl std::fmt::Debug for Action<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Nothing => write!(f, "Nothing"),
            Action::Script { cmd, timeout, .. } => write!(f, "Script({cmd:?}, {timeout:?})"),
            Action::Work {
                skip_in_dry_run, ..
            } => write!(f, "Work(skip_in_dry_run: {skip_in_dry_run})"),
            Action::Guarded(g) => write!(f, "{g:?}"),
        }
    }
}

impl std::fmt::Debug for StepPlan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepPlan")
            .field("changes", &self.changes)
            .field("diff", &self.diff)
            .field("action", &self.action)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl From<Plan> for StepPlan<'_> {
    /// The changes of a decision table, made by its commands joined with `&&`.
    fn from(p: Plan) -> Self {
        if p.cmds.is_empty() {
            return StepPlan {
                changes: p.changes,
                ..StepPlan::ok()
            };
        }
        StepPlan::script(p.changes, p.cmds.join(" && "), None, None)
    }
}

pub type StepResult<'a> = Result<StepPlan<'a>, StepError>;

/// The host this script runs for (set as the engine's tag).
/// Ends the collecting pass of [`super::prefetch`] for anything but a state step.
pub fn host_ctx(ctx: &NativeCallContext) -> Result<Arc<HostCtx>, Box<EvalAltResult>> {
    let h = host_info(ctx)?;
    if h.prefetch.collecting() {
        return Err(err_at(super::prefetch::STOP, ctx.call_position()));
    }
    Ok(h)
}

/// The host's context, also in the collecting pass (for what only looks at the run).
pub fn host_info(ctx: &NativeCallContext) -> Result<Arc<HostCtx>, Box<EvalAltResult>> {
    ctx.tag()
        .and_then(|t| t.clone().try_cast::<Arc<HostCtx>>())
        .ok_or_else(|| {
            err_at(
                "this function needs a target host (it cannot run in `recipe check` or at the controller)",
                ctx.call_position(),
            )
        })
}

pub fn err_at(msg: impl Into<String>, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(msg.into()), pos))
}

/// Reports a step that failed on its options (there is no target yet: it is "(options)").
pub(crate) fn failed_options_step(ctx: &NativeCallContext, op: &str, msg: &str) {
    let Some(h) = ctx.tag().and_then(|t| t.clone().try_cast::<Arc<HostCtx>>()) else {
        return;
    };
    if h.prefetch.collecting() {
        return;
    }
    let source = call_file(ctx, &h);
    let msg = StepError::Options(msg.to_string()).to_string();
    h.run.reporter.step(StepEvent {
        event: "step",
        host: h.name.clone(),
        recipe: h.recipe.name.clone(),
        line: ctx.call_position().line().unwrap_or(0),
        source,
        op: op.to_string(),
        target: "(options)".into(),
        status: Status::Failed,
        dry_run: h.run.dry_run,
        ms: 0,
        msg: Some(h.run.reporter.redactor().redact(&msg)),
        changes: Vec::new(),
        diff: None,
    });
}

/// Runs one step: the body probes and returns a plan; `step` reports it and, unless this is
/// a dry run, applies it. Returns `#{changed, status, ...}` or a runtime error.
pub fn step<'a>(
    ctx: &NativeCallContext,
    op: &str,
    target: &str,
    body: impl FnOnce(&HostCtx) -> StepResult<'a>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    step_after(ctx, op, target, None, body)
}

/// [`step`] with a command that must run before the probes in a real run
/// (`systemctl daemon-reload`, so that units written by earlier steps are seen as written).
/// A dry run probes what is there.
pub fn step_after<'a>(
    ctx: &NativeCallContext,
    op: &str,
    target: &str,
    before: Option<&str>,
    body: impl FnOnce(&HostCtx) -> StepResult<'a>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let h = host_info(ctx)?;
    let pos = ctx.call_position();
    if h.prefetch.collecting() {
        return collect(&h, op, before, body, pos);
    }
    let line = pos.line().unwrap_or(0);
    let source = call_file(ctx, &h);
    let at = format!("{}:{line}", source.as_deref().unwrap_or(&h.recipe.name));
    let started = Instant::now();
    // Shown live (on a terminal, or by --json-progress) until the step's own line replaces it.
    let live = h
        .run
        .reporter
        .running(&h.name, &h.recipe.name, line, source.clone(), op, target);
    let res = crate::context::with_step_meter(live.meter(), || {
        crate::cpu::native(|| {
            if let Some(cmd) = before {
                if !h.run.dry_run {
                    apply(&h, cmd, None, None)?;
                }
            }
            let plan = body(&h)?;
            carry_out(&h, op, target, &at, plan)
        })
    });
    drop(live);
    let ms = started.elapsed().as_millis() as u64;
    let mut ev = StepEvent {
        event: "step",
        host: h.name.clone(),
        recipe: h.recipe.name.clone(),
        line,
        source,
        op: op.to_string(),
        target: h.run.reporter.redactor().redact(target),
        status: Status::Ok,
        dry_run: h.run.dry_run,
        ms,
        msg: None,
        changes: Vec::new(),
        diff: None,
    };
    match res {
        Ok(out) => {
            ev.status = if out.skipped {
                Status::Skipped
            } else if out.changed {
                Status::Changed
            } else {
                Status::Ok
            };
            let red = h.run.reporter.redactor();
            ev.changes = out.changes.iter().map(|c| red.redact(c)).collect();
            ev.diff = out.diff.as_deref().map(|d| red.redact(d));
            h.run.reporter.step(ev);
            let mut m = out.result;
            m.insert("changed".into(), out.changed.into());
            m.insert("skipped".into(), out.skipped.into());
            m.insert(
                "status".into(),
                Dynamic::from(
                    if out.skipped {
                        "skipped"
                    } else if out.changed {
                        "changed"
                    } else {
                        "ok"
                    }
                    .to_string(),
                ),
            );
            Ok(super::fields::Fields::dynamic(m))
        }
        Err(e) => {
            let msg = h.run.reporter.redactor().redact(&e.to_string());
            ev.status = Status::Failed;
            ev.msg = Some(msg.clone());
            h.run.reporter.step(ev);
            Err(Box::new(EvalAltResult::ErrorRuntime(
                Dynamic::from(format!("{op} {target}: {msg}")),
                pos,
            )))
        }
    }
}

/// A step in the collecting pass of [`super::prefetch`]: its body runs up to its first probe,
/// which is recorded, and the step answers "ok, unchanged". Anything else ends the pass.
fn collect<'a>(
    h: &HostCtx,
    op: &str,
    before: Option<&str>,
    body: impl FnOnce(&HostCtx) -> StepResult<'a>,
    pos: Position,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let stop = || Err(err_at(super::prefetch::STOP, pos));
    if !super::prefetch::STEPS.contains(&op) || (before.is_some() && !h.run.dry_run) {
        return stop();
    }
    match body(h) {
        Err(StepError::Ahead(super::prefetch::Ahead::Recorded)) => {
            let mut m = Map::new();
            m.insert("changed".into(), false.into());
            m.insert("skipped".into(), false.into());
            m.insert("status".into(), Dynamic::from("ok".to_string()));
            Ok(super::fields::Fields::dynamic(m))
        }
        _ => stop(),
    }
}

/// The one place that tells a dry run from a real one: report the plan, and apply it only
/// in a real run. A dry run records what it plans in the run's registry, and a change
/// planned already on this host (by another recipe of the run) is `ok` here.
fn carry_out(
    h: &HostCtx,
    op: &str,
    target: &str,
    at: &str,
    plan: StepPlan,
) -> Result<Outcome, StepError> {
    no_placeholder(&plan)?;
    let StepPlan {
        changes,
        diff,
        mut result,
        action,
        writes,
        identity,
    } = plan;
    let dry = h.run.dry_run;
    let mut out = Outcome {
        changed: !changes.is_empty(),
        skipped: false,
        changes,
        diff,
        result: Map::new(),
    };
    match action {
        Action::Guarded(g) => {
            let ran = run_guarded(h, &g, &mut out)?;
            out.result.extend(std::mem::take(&mut result));
            if dry && ran {
                return Ok(planned_once(h, op, target, at, out, writes, identity));
            }
            return Ok(out);
        }
        Action::Work {
            skip_in_dry_run: true,
            ..
        } if dry => {
            out.skipped = true;
            out.changed = false;
        }
        _ if dry => {
            out.result = result;
            if out.changed {
                return Ok(planned_once(h, op, target, at, out, writes, identity));
            }
            // Nothing to do because an earlier step of this run plans it (the probe saw
            // that step's planned file): say where, as a real run would find it done.
            if let Some(first) = identity.and_then(|id| {
                h.run
                    .planned
                    .planned_as(&h.name, &format!("{op} {target}"), &id)
            }) {
                out.changes = vec![planned_already(&first)];
            }
            return Ok(out);
        }
        Action::Nothing => {}
        Action::Script {
            cmd,
            stdin,
            timeout,
        } => {
            apply(
                h,
                &cmd,
                stdin.as_deref().and_then(|b| stdin_bytes(b)),
                timeout,
            )?;
        }
        Action::Work { run, .. } => {
            h.prefetch.forget();
            result.extend(run(h)?)
        }
    }
    out.result = result;
    Ok(out)
}

/// Refuses a plan that would put a secret's placeholder text on the host (dry runs too).
fn no_placeholder(plan: &StepPlan) -> Result<(), String> {
    use crate::secrets::refuse_placeholder as refuse;
    for (path, f) in &plan.writes {
        if let PlannedContent::Bytes { bytes, .. } = &f.content {
            refuse(&format!("the content of {path}"), bytes)?;
        }
    }
    match &plan.action {
        Action::Script { cmd, stdin, .. } => {
            refuse("the command", cmd.as_bytes())?;
            refuse("the input", stdin.as_deref().map_or(&[][..], |v| v))
        }
        Action::Guarded(g) => {
            refuse(
                "the command",
                format!("{}{}", g.guard, g.command).as_bytes(),
            )?;
            refuse("the input", g.stdin.as_deref().unwrap_or(b""))
        }
        _ => Ok(()),
    }
}

/// The note of a dry-run step whose change an earlier step of the run plans.
fn planned_already(first: &str) -> String {
    format!("planned already at {first} (counted there; a real run finds it done)")
}

/// A dry run's change: recorded with what it writes, or `ok` when this host has it planned
/// already.
fn planned_once(
    h: &HostCtx,
    op: &str,
    target: &str,
    at: &str,
    mut out: Outcome,
    writes: Vec<(String, PlannedFile)>,
    identity: Option<String>,
) -> Outcome {
    if let Some(id) = identity {
        let subject = format!("{op} {target}");
        if let Some(first) = h.run.planned.first_change(&h.name, &subject, &id, at) {
            out.changed = false;
            out.diff = None;
            out.changes = vec![planned_already(&first)];
            return out;
        }
    }
    for (path, mut f) in writes {
        f.at = at.to_string();
        h.run.planned.plan_file(&h.name, &path, f);
    }
    out
}

/// Runs a guarded command: in a dry run the guard alone, in a real run guard and command
/// as one script. Fills `out`; true when the command runs (or would run).
fn run_guarded(h: &HostCtx, g: &Guarded, out: &mut Outcome) -> Result<bool, StepError> {
    let dry = h.run.dry_run;
    let script = if dry {
        format!("{}exit 0\n", g.guard)
    } else {
        format!("{}{}", g.guard, g.command)
    };
    let stdin = if dry {
        None
    } else {
        g.stdin.as_deref().and_then(stdin_bytes)
    };
    let res = |rc: i64, stdout: String, stderr: String| -> Map {
        let mut m = Map::new();
        m.insert("rc".into(), rc.into());
        m.insert("stdout".into(), stdout.into());
        m.insert("stderr".into(), stderr.into());
        m.insert("timed_out".into(), false.into());
        m
    };
    let r = match h.exec(&script, stdin, g.timeout) {
        Ok(r) => r,
        // A time limit is one more way to fail: `ignore_errors` covers it too.
        Err(e @ crate::transport::TransportError::Timeout(_)) if g.ignore_errors => {
            out.changed = true;
            out.changes.push(format!("{} (stopped: {e})", g.change));
            out.result = res(
                crate::transport::shell::TIMEOUT_STATUS as i64,
                String::new(),
                e.to_string(),
            );
            out.result.insert("timed_out".into(), true.into());
            return Ok(true);
        }
        Err(e) => return Err(e.into()),
    };
    let stdout = r.stdout_str();
    if stdout.starts_with(GUARD_SKIP) {
        out.result = res(0, String::new(), String::new());
        return Ok(false);
    }
    out.changed = true;
    out.changes.push(g.change.clone());
    if dry {
        out.result = res(0, String::new(), String::new());
        return Ok(true);
    }
    if r.status != 0 && !g.ignore_errors {
        return Err(StepError::command(&r));
    }
    out.result = res(r.status as i64, stdout, r.stderr_str());
    Ok(true)
}

/// What this run's dry-run steps plan for `host:path` (nothing in a real run: there the host
/// holds the result).
pub fn planned_file(h: &HostCtx, host: &str, path: &str) -> Option<PlannedFile> {
    h.run.planned.file(host, path)
}

/// The file of the call when it is not the recipe: `stdlib/x.rhai` for a step inside a
/// module's function (Rhai names the module by its import name, `x`: the file is found
/// where `import` found it, once per module and folder).
pub fn call_file(ctx: &NativeCallContext, h: &HostCtx) -> Option<String> {
    type Cache = std::sync::Mutex<std::collections::HashMap<(std::path::PathBuf, String), String>>;
    static FILES: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let src = ctx.call_source().filter(|s| *s != h.recipe.source)?;
    let key = (h.recipe.dir.clone(), src.to_string());
    let files = FILES.get_or_init(Default::default);
    if let Some(f) = files.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Some(f);
    }
    let path = std::path::Path::new(src);
    let found = if path.is_file() {
        Some(path.to_path_buf())
    } else {
        crate::modules::module_paths(&h.recipe.dir)
            .into_iter()
            .map(|d| d.join(format!("{src}.rhai")))
            .find(|p| p.is_file())
    };
    let f = short_source(
        &found
            .map(|p| p.display().to_string())
            .unwrap_or(src.to_string()),
    );
    if let Ok(mut m) = files.lock() {
        m.insert(key, f.clone());
    }
    Some(f)
}

/// `stdlib/x.rhai` rather than an absolute path, for output.
pub fn short_source(s: &str) -> String {
    let p = std::path::Path::new(s);
    let parts: Vec<_> = p.components().rev().take(2).collect();
    if parts.len() == 2 {
        format!(
            "{}/{}",
            parts[1].as_os_str().to_string_lossy(),
            parts[0].as_os_str().to_string_lossy()
        )
    } else {
        s.to_string()
    }
}

/// Prepended to every command a primitive runs. Sites log in with their own locale
/// (`LANG=ja_JP.UTF-8` from /etc/default/locale through PAM), and translated tools would
/// otherwise print words the checks cannot read, and errors nobody else can. Each command runs
/// in a subshell of the worker, so the export ends with the command.
pub const C_LOCALE: &str = "LC_ALL=C; export LC_ALL\n";

/// `cmd` run in the C locale (see [`C_LOCALE`]).
pub fn in_c_locale(cmd: &str) -> String {
    format!("{C_LOCALE}{cmd}")
}

/// Runs a read-only check command in the C locale; any transport error is a step failure.
/// Its answer may come from the probes asked ahead ([`super::prefetch`]).
pub fn check(h: &HostCtx, cmd: &str) -> Result<crate::transport::ExecOutput, StepError> {
    check_as(h, cmd, super::prefetch::Kind::Shell)
}

/// [`check`] of a probe that the probes asked ahead may answer together with others of its
/// kind; alone, `cmd` runs as it is.
pub fn check_as(
    h: &HostCtx,
    cmd: &str,
    kind: super::prefetch::Kind,
) -> Result<crate::transport::ExecOutput, StepError> {
    if let Some(answer) = h.prefetch.answer_as(cmd, kind) {
        return answer;
    }
    Ok(h.exec_bounded(&in_c_locale(cmd), std::time::Duration::from_secs(120))?)
}

/// Runs a changing command in the C locale; non-zero status is an error with stderr. Only
/// [`carry_out`] calls it, and never in a dry run.
fn apply(
    h: &HostCtx,
    cmd: &str,
    stdin: Option<&[u8]>,
    timeout: Option<std::time::Duration>,
) -> Result<crate::transport::ExecOutput, StepError> {
    if h.run.dry_run {
        return Err(StepError::Refused(format!(
            "internal error: a change was about to be made in a dry run: {cmd}"
        )));
    }
    let out = h.exec(&in_c_locale(cmd), stdin, timeout)?;
    if out.status != 0 {
        return Err(StepError::command(&out));
    }
    Ok(out)
}

/// Bytes for a command's stdin; empty ones go as no stdin (`/dev/null`, the same bytes): the
/// worker's frame of an empty payload lacks a field and is refused (exit status 98).
pub fn stdin_bytes(b: &[u8]) -> Option<&[u8]> {
    (!b.is_empty()).then_some(b)
}

/// What a planned change is: human lines for the report and the commands that make it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<String>,
    pub cmds: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.cmds.is_empty()
    }
    pub fn add(&mut self, what: impl Into<String>, cmd: impl Into<String>) {
        self.changes.push(what.into());
        self.cmds.push(cmd.into());
    }
}

/// Rejects a NUL byte, which no path or argument can carry.
pub fn no_nul(what: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        Err(format!("{what} contains a NUL byte"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_run_in_the_c_locale_whatever_the_login_has() {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(in_c_locale("printf '%s|%s' \"$LC_ALL\" \"$LANG\""))
            .env("LANG", "ja_JP.UTF-8")
            .env("LC_ALL", "de_DE.UTF-8")
            .env("LANGUAGE", "zh_CN")
            .output()
            .expect("sh runs");
        // LC_ALL=C wins over LANG, and gettext ignores LANGUAGE in the C locale.
        assert_eq!(String::from_utf8_lossy(&out.stdout), "C|ja_JP.UTF-8");
    }

    #[test]
    fn a_decision_table_becomes_one_script() {
        let mut p = Plan::default();
        let sp: StepPlan = p.clone().into();
        assert!(sp.changes.is_empty() && matches!(sp.action, Action::Nothing));
        p.add("owner root -> munge", "chown -h munge /k");
        p.add("mode 0644 -> 0400", "chmod 0400 /k");
        let sp: StepPlan = p.into();
        assert_eq!(sp.changes, ["owner root -> munge", "mode 0644 -> 0400"]);
        let Action::Script {
            cmd,
            stdin,
            timeout,
        } = &sp.action
        else {
            panic!("{sp:?}");
        };
        assert_eq!(cmd, "chown -h munge /k && chmod 0400 /k");
        assert!(stdin.is_none() && timeout.is_none());
        assert_eq!(sp.identity, None);
        assert!(sp.writes.is_empty());
    }
}
