//! The primitives recipes call: each checks, decides, applies only what differs, and reports a step.

/// An option whose value is one word of a fixed list: a typo fails when the options are read,
/// before anything is checked or changed on a host. Aliases are accepted but not listed.
macro_rules! choice {
    ($(#[$m:meta])* $name:ident, $field:literal,
     [$($word:literal => $var:ident),+ $(,)?]
     $(, aliases [$($alias:literal => $avar:ident),* $(,)?])?) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($var),+ }
        impl $name {
            /// The documented values.
            pub const WORDS: &'static [&'static str] = &[$($word),+];
            pub fn parse(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($name::$var),)+
                    $($($alias => Ok($name::$avar),)*)?
                    _ => Err($crate::primitives::bad_choice($field, s, Self::WORDS)),
                }
            }
            #[allow(dead_code)] // not every choice is printed back
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $word),+ }
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod command;
pub mod download;
pub mod facts;
pub mod files;
pub mod packages;
pub mod remote;
pub mod services;
pub mod users;
#[cfg(test)]
mod write_tests;

use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext, Position};
use serde::de::DeserializeOwned;
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
pub type Work<'a> = Box<dyn FnOnce(&HostCtx) -> Result<Map, String> + 'a>;

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
        run: impl FnOnce(&HostCtx) -> Result<Map, String> + 'a,
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

pub type StepResult<'a> = Result<StepPlan<'a>, String>;

/// The host this script runs for (set as the engine's tag).
pub fn host_ctx(ctx: &NativeCallContext) -> Result<Arc<HostCtx>, Box<EvalAltResult>> {
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

/// The option keys each primitive (and `play`) accepts; `recipe check` uses the same table.
const OPTION_KEYS: &[(&str, &[&str])] = &[
    (
        "sh",
        &[
            "creates",
            "removes",
            "unless",
            "onlyif",
            "chdir",
            "env",
            "timeout",
            "ignore_errors",
            "stdin",
            "name",
        ],
    ),
    ("wait_for", &["timeout", "interval", "name", "on"]),
    (
        "file",
        &[
            "content",
            "src",
            "from_host",
            "owner",
            "group",
            "mode",
            "secret",
            "state",
        ],
    ),
    ("directory", &["owner", "group", "mode", "state"]),
    ("template", &["vars", "owner", "group", "mode", "secret"]),
    ("download", &["sha256", "owner", "group", "mode", "timeout"]),
    ("unpack", &["creates", "strip_components", "owner"]),
    ("read_file", &["secret", "binary"]),
    ("packages", &["state", "update_cache", "start_services"]),
    ("service", &["state", "enabled", "daemon_reload"]),
    (
        "user",
        &[
            "uid",
            "group",
            "groups",
            "home",
            "shell",
            "system",
            "create_home",
            "comment",
            "state",
        ],
    ),
    ("group", &["gid", "system", "state"]),
    ("play", &["hosts", "group", "ignore_errors", "vars"]),
];

/// The option keys `what` accepts, if it takes an options map.
pub fn option_keys(what: &str) -> Option<&'static [&'static str]> {
    OPTION_KEYS
        .iter()
        .find(|(n, _)| *n == what)
        .map(|(_, k)| *k)
}

/// "file: unknown option `mdoe` (did you mean `mode`?); valid options: ...".
pub fn unknown_option(what: &str, key: &str, valid: &[&str]) -> String {
    let hint = crate::hints::did_you_mean(key, valid.iter().copied())
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default();
    format!(
        "{what}: unknown option `{key}`{hint}; valid options: {}",
        valid.join(", ")
    )
}

/// Decodes an options map into `T`, naming the unknown or mistyped option. A bad option
/// fails the step: a failed step event is reported before the error is returned.
pub fn opts<T: DeserializeOwned>(
    ctx: &NativeCallContext,
    what: &str,
    m: Map,
) -> Result<T, Box<EvalAltResult>> {
    let unknown = option_keys(what).and_then(|valid| {
        m.keys()
            .find(|k| !valid.contains(&k.as_str()))
            .map(|k| unknown_option(what, k, valid))
    });
    let unknown = unknown.or_else(|| {
        m.iter().find(|(_, v)| holds_secret(v)).map(|(k, _)| {
            format!(
                "{what}: option `{k}` cannot take a secret (a secret goes to a host only as \
                 `file` content, `sh` command or `stdin`, or in a template's `vars`)"
            )
        })
    });
    let res = match unknown {
        Some(msg) => Err(msg),
        None => rhai::serde::from_dynamic::<T>(&Dynamic::from_map(m)).map_err(|e| {
            let msg = e.to_string();
            let msg = msg.split(" (line").next().unwrap_or(&msg);
            // Rhai files our own messages (a bad `state`, a bad `mode`) as syntax errors.
            let msg = msg
                .strip_prefix("Syntax error: ")
                .unwrap_or(msg)
                .to_string();
            format!("{what}: bad options: {msg}")
        }),
    };
    res.map_err(|msg| {
        failed_options_step(ctx, what, &msg);
        err_at(msg, ctx.call_position())
    })
}

/// Whether `v` is a secret or holds one (in a map or list).
fn holds_secret(v: &Dynamic) -> bool {
    if v.is::<crate::secrets::Secret>() {
        return true;
    }
    if let Some(m) = v.read_lock::<Map>() {
        return m.values().any(holds_secret);
    }
    if let Some(a) = v.read_lock::<rhai::Array>() {
        return a.iter().any(holds_secret);
    }
    false
}

/// Reports a step that failed on its options (there is no target yet: it is "(options)").
fn failed_options_step(ctx: &NativeCallContext, op: &str, msg: &str) {
    let Some(h) = ctx.tag().and_then(|t| t.clone().try_cast::<Arc<HostCtx>>()) else {
        return;
    };
    let source = call_file(ctx, &h);
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
        msg: Some(h.run.reporter.redactor().redact(msg)),
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
    let h = host_ctx(ctx)?;
    let pos = ctx.call_position();
    let line = pos.line().unwrap_or(0);
    let source = call_file(ctx, &h);
    let at = format!("{}:{line}", source.as_deref().unwrap_or(&h.recipe.name));
    let started = Instant::now();
    let res = crate::cpu::native(|| {
        if let Some(cmd) = before {
            if !h.run.dry_run {
                apply(&h, cmd, None, None)?;
            }
        }
        let plan = body(&h)?;
        carry_out(&h, op, target, &at, plan)
    });
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
            Ok(Dynamic::from_map(m))
        }
        Err(msg) => {
            let msg = h.run.reporter.redactor().redact(&msg);
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

/// The one place that tells a dry run from a real one: report the plan, and apply it only
/// in a real run. A dry run records what it plans in the run's registry, and a change
/// planned already on this host (by another recipe of the run) is `ok` here.
fn carry_out(
    h: &HostCtx,
    op: &str,
    target: &str,
    at: &str,
    plan: StepPlan,
) -> Result<Outcome, String> {
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
        Action::Work { run, .. } => result.extend(run(h)?),
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
fn run_guarded(h: &HostCtx, g: &Guarded, out: &mut Outcome) -> Result<bool, String> {
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
        Err(e) => return Err(e.to_string()),
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
        return Err(failure_text(&r));
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
pub fn check(h: &HostCtx, cmd: &str) -> Result<crate::transport::ExecOutput, String> {
    h.exec_bounded(&in_c_locale(cmd), std::time::Duration::from_secs(120))
        .map_err(|e| e.to_string())
}

/// Runs a changing command in the C locale; non-zero status is an error with stderr. Only
/// [`carry_out`] calls it, and never in a dry run.
fn apply(
    h: &HostCtx,
    cmd: &str,
    stdin: Option<&[u8]>,
    timeout: Option<std::time::Duration>,
) -> Result<crate::transport::ExecOutput, String> {
    if h.run.dry_run {
        return Err(format!(
            "internal error: a change was about to be made in a dry run: {cmd}"
        ));
    }
    let out = h
        .exec(&in_c_locale(cmd), stdin, timeout)
        .map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(failure_text(&out));
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

/// `state "abesnt" is not one of "present", "absent" (did you mean "absent"?)`.
pub fn bad_choice(field: &str, got: &str, words: &[&str]) -> String {
    let hint = crate::hints::did_you_mean(got, words.iter().copied())
        .map(|w| format!(" (did you mean {w:?}?)"))
        .unwrap_or_default();
    let list = words
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{field} {got:?} is not one of {list}{hint}")
}

choice!(
    /// `state` of file, directory, packages, user and group.
    Presence, "state", ["present" => Present, "absent" => Absent]
);

/// "exit status 2: <last lines of stderr or stdout>".
pub fn failure_text(out: &crate::transport::ExecOutput) -> String {
    let err = out.stderr_str();
    let text = if err.trim().is_empty() {
        out.stdout_str()
    } else {
        err
    };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    format!(
        "exit status {}{}{}",
        out.status,
        if tail.is_empty() { "" } else { ":\n" },
        tail
    )
}

/// Rejects a NUL byte, which no path or argument can carry.
pub fn no_nul(what: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        Err(format!("{what} contains a NUL byte"))
    } else {
        Ok(())
    }
}

/// A file mode given as "0644"/"644"/"u=rw,go=r"-free octal string, or an integer (0o644).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Mode)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "mode {s:?} is not an octal mode like \"0644\""
                    ))
                }),
            Raw::I(i) if (0..=0o7777).contains(&i) => Ok(Mode(i as u32)),
            Raw::I(i) => Err(serde::de::Error::custom(format!(
                "mode {i} out of range; write it as a string like \"0644\""
            ))),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Owner/group/mode options shared by files and directories.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Attrs {
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
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

/// The members of an inventory group as a Rhai array (`[]` for an unknown group).
pub fn group_array(inv: &crate::inventory::Inventory, group: &str) -> rhai::Array {
    inv.group_members(group)
        .unwrap_or_default()
        .into_iter()
        .map(Dynamic::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_misspelt_choice_names_the_allowed_words() {
        assert_eq!(Presence::parse("absent"), Ok(Presence::Absent));
        let e = Presence::parse("abesnt").unwrap_err();
        assert_eq!(
            e,
            "state \"abesnt\" is not one of \"present\", \"absent\" (did you mean \"absent\"?)"
        );
        let e = Presence::parse("Present").unwrap_err();
        assert!(e.contains("did you mean \"present\"?"), "{e}");
        // Through serde, the way options maps are read.
        let m: Map = [("state".into(), Dynamic::from("gone".to_string()))]
            .into_iter()
            .collect();
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct O {
            state: Option<Presence>,
        }
        let e = rhai::serde::from_dynamic::<O>(&Dynamic::from_map(m)).unwrap_err();
        assert!(
            e.to_string().contains("state \"gone\" is not one of"),
            "{e}"
        );
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
