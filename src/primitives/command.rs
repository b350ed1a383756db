//! Commands: `sh` (guarded, idempotent with `creates`/`unless`), `probe` (read-only) and `wait_for`.

use rhai::plugin::*;

use crate::transport::TransportError;

crate::primitives::options::options! {
    /// Options of `sh`.
    pub struct ShOpts for "sh" {
        creates: Option<String>,
        removes: Option<String>,
        unless: Option<String>,
        onlyif: Option<String>,
        chdir: Option<String>,
        env: std::collections::BTreeMap<String, String>,
        timeout: Option<u64>,
        ignore_errors: bool,
        stdin: Option<String>,
        /// Show this instead of the command in output (for long scripts).
        name: Option<String>,
        /// On a terminal, the live status line shows the last line the command printed.
        progress: bool,
    }
}

use super::GUARD_SKIP as SKIP;

/// The guard part of a `sh` script: prints the marker and exits when the command need not run.
pub fn guard_script(o: &ShOpts) -> String {
    use crate::transport::quote;
    let mut g = String::new();
    if let Some(c) = &o.creates {
        g.push_str(&format!(
            "if [ -e {} ]; then echo {SKIP}; exit 0; fi\n",
            quote(c)
        ));
    }
    if let Some(r) = &o.removes {
        g.push_str(&format!(
            "if [ ! -e {} ]; then echo {SKIP}; exit 0; fi\n",
            quote(r)
        ));
    }
    let cd = o
        .chdir
        .as_ref()
        .map(|d| format!("cd {} 2>/dev/null && ", quote(d)))
        .unwrap_or_default();
    // Guards are checks: they run in the C locale (see `C_LOCALE`) so that one that greps a
    // tool's message decides the same on every host; the command keeps the login's locale.
    let c = super::C_LOCALE.trim_end();
    if let Some(u) = &o.unless {
        g.push_str(&format!(
            "if ({c}; {cd}{u}) </dev/null >/dev/null 2>&1; then echo {SKIP}; exit 0; fi\n"
        ));
    }
    if let Some(u) = &o.onlyif {
        g.push_str(&format!(
            "if ! ({c}; {cd}{u}) </dev/null >/dev/null 2>&1; then echo {SKIP}; exit 0; fi\n"
        ));
    }
    g
}

/// What runs after the guard: the environment, the folder, the command.
pub fn command_script(cmd: &str, o: &ShOpts) -> String {
    use crate::transport::quote;
    let mut s = String::new();
    for (k, v) in &o.env {
        s.push_str(&format!("export {}={}\n", k, quote(v)));
    }
    if let Some(d) = &o.chdir {
        s.push_str(&format!("cd {} || exit 1\n", quote(d)));
    }
    s.push_str(cmd);
    s.push('\n');
    s
}

/// The plan of `sh`: a guarded command (the guard is its probe), or an error for options no
/// shell can take. `creates` makes it idempotent: the same command creating the same path,
/// planned twice on a host, is one change; `creates` is a file the run then plans.
pub fn plan_sh(cmd: &str, o: &ShOpts) -> Result<super::Guarded, String> {
    super::no_nul("command", cmd)?;
    for k in o.env.keys() {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad environment variable name {k:?}"));
        }
    }
    Ok(super::Guarded {
        guard: guard_script(o),
        command: command_script(cmd, o),
        stdin: o
            .stdin
            .as_deref()
            .and_then(|s| super::stdin_bytes(s.as_bytes()))
            .map(<[u8]>::to_vec),
        timeout: o.timeout.map(std::time::Duration::from_secs),
        ignore_errors: o.ignore_errors,
        change: match &o.name {
            Some(n) => format!("run: {n}"),
            None => format!("run: {}", cmd.trim()),
        },
    })
}

fn do_sh(ctx: &NativeCallContext, cmd: &str, o: ShOpts) -> Result<Dynamic, Box<EvalAltResult>> {
    for k in o.env.keys() {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(super::err_at(
                format!("sh: bad environment variable name {k:?}"),
                ctx.call_position(),
            ));
        }
    }
    let label = o
        .name
        .clone()
        .unwrap_or_else(|| cmd.lines().next().unwrap_or("").to_string());
    super::step(ctx, "sh", &label, |_| {
        if o.progress {
            if let Some(m) = crate::context::step_meter() {
                m.keep_lines();
            }
        }
        let g = plan_sh(cmd, &o)?;
        let mut plan = super::StepPlan::guarded(g);
        if let Some(c) = &o.creates {
            plan = plan.same_as(format!("{cmd}\0{c}")).writes(
                c,
                crate::planned::PlannedFile::new(crate::planned::PlannedContent::Unknown, ""),
            );
        }
        Ok(plan)
    })
}

/// `sh` with options; `stdin` may be a secret.
fn do_sh_opts(
    ctx: &NativeCallContext,
    cmd: &str,
    mut m: rhai::Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let secret_stdin = match m.get("stdin") {
        Some(v) if v.is::<crate::secrets::Secret>() => m.remove("stdin").map(|v| v.cast()),
        _ => None,
    };
    let mut o: ShOpts = crate::primitives::opts(ctx, m)?;
    if let Some(s) = secret_stdin {
        o.stdin = Some(secret_command(ctx, &s)?.0);
    }
    do_sh(ctx, cmd, o)
}

/// A secret as command text, known to the redactor, and what output shows instead.
fn secret_command(
    ctx: &NativeCallContext,
    s: &crate::secrets::Secret,
) -> Result<(String, String), Box<EvalAltResult>> {
    let text = String::from_utf8(s.0.to_vec()).map_err(|_| {
        super::err_at(
            format!(
                "sh: a secret of {} bytes is not UTF-8 text; write binary secrets with \
                 file(path, #{{content: s}})",
                s.0.len()
            ),
            ctx.call_position(),
        )
    })?;
    if let Ok(h) = super::host_ctx(ctx) {
        h.run.reporter.redactor().add(&s.0);
    }
    Ok((text, s.describe()))
}

fn do_probe(
    ctx: &NativeCallContext,
    cmd: &str,
    timeout: Option<u64>,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let h = super::host_ctx(ctx)?;
    match h.exec(
        &super::in_c_locale(cmd),
        None,
        timeout.map(std::time::Duration::from_secs),
    ) {
        Ok(out) => Ok(probe_result(&out)),
        // A probe answers a question; "it did not answer in time" is a `false`, not a failure.
        Err(e @ TransportError::Timeout(_)) => {
            let mut m = timed_out(&e);
            m.insert("ok".into(), false.into());
            Ok(super::fields::Fields::dynamic(m))
        }
        Err(e) => Err(super::err_at(
            format!("probe {cmd:?}: {e}"),
            ctx.call_position(),
        )),
    }
}

/// The result of a command stopped by its time limit: `rc` is 124 as with `timeout(1)`.
fn timed_out(e: &TransportError) -> rhai::Map {
    let mut m = rhai::Map::new();
    m.insert(
        "rc".into(),
        (crate::transport::shell::TIMEOUT_STATUS as i64).into(),
    );
    m.insert("stdout".into(), "".into());
    m.insert("stderr".into(), e.to_string().into());
    m.insert("timed_out".into(), true.into());
    m
}

/// `#{ok, rc, stdout, stderr}` of a read-only command.
pub fn probe_result(out: &crate::transport::ExecOutput) -> Dynamic {
    let mut m = rhai::Map::new();
    m.insert("rc".into(), (out.status as i64).into());
    m.insert("ok".into(), (out.status == 0).into());
    m.insert("stdout".into(), out.stdout_str().into());
    m.insert("stderr".into(), out.stderr_str().into());
    m.insert("timed_out".into(), false.into());
    super::fields::Fields::dynamic(m)
}

crate::primitives::options::options! {
    /// Options of `wait_for`.
    pub struct WaitOpts for "wait_for" {
        /// Seconds (default 60).
        timeout: Option<u64>,
        /// Seconds between tries (default 2).
        interval: Option<u64>,
        name: Option<String>,
        /// Run the check on this other inventory host instead.
        on: Option<String>,
    }
}

#[export_module]
pub mod api {
    use super::*;

    /// Runs a shell command (`/bin/sh`) on the target and reports `changed`.
    /// Options: `creates` (skip if this path exists), `removes` (skip unless it exists),
    /// `unless` (skip if this command succeeds), `onlyif` (run only if it succeeds),
    /// `chdir`, `env` (map), `timeout` (seconds), `ignore_errors`, `stdin` (string), `name` (label),
    /// `progress` (show the last line of its output in the live status line, redacted).
    /// The guards run with `LC_ALL=C`, like every check; the command itself runs with the
    /// login's locale.
    /// Returns `#{changed, rc, stdout, stderr, timed_out}` (`timed_out: true`, rc 124, when it
    /// ran out of time); a non-zero exit or a timeout is a failure unless `ignore_errors`.
    /// In a dry run the guard is checked and the command is only reported.
    ///
    /// ```rhai
    /// sh("make install", #{chdir: "/opt/src/slurm", creates: "/opt/slurm/sbin/slurmd"});
    /// ```
    #[rhai_fn(name = "sh", return_raw)]
    pub fn sh_opts(
        ctx: NativeCallContext,
        cmd: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        do_sh_opts(&ctx, cmd, opts)
    }

    /// Runs a command that holds a secret (`"login -p " + s`): the host gets the real
    /// command, output shows its size and checksum (or `name`). Options as for `sh`.
    #[rhai_fn(name = "sh", return_raw)]
    pub fn sh_secret_opts(
        ctx: NativeCallContext,
        cmd: crate::secrets::Secret,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let (text, label) = secret_command(&ctx, &cmd)?;
        let mut opts = opts;
        opts.entry("name".into()).or_insert_with(|| label.into());
        do_sh_opts(&ctx, &text, opts)
    }

    /// Runs a command that holds a secret, without guards.
    #[rhai_fn(name = "sh", return_raw)]
    pub fn sh_secret(
        ctx: NativeCallContext,
        cmd: crate::secrets::Secret,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let (text, label) = secret_command(&ctx, &cmd)?;
        let o = ShOpts {
            name: Some(label),
            ..ShOpts::default()
        };
        do_sh(&ctx, &text, o)
    }

    /// Runs a shell command without guards: always runs, always `changed`.
    #[rhai_fn(name = "sh", return_raw)]
    pub fn sh(ctx: NativeCallContext, cmd: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        do_sh(&ctx, cmd, ShOpts::default())
    }

    /// Runs a read-only command and returns `#{ok, rc, stdout, stderr, timed_out}` (a timeout
    /// is `ok: false`, rc 124). Runs in dry runs
    /// too and is not a step: use it only for commands that change nothing. It runs with
    /// `LC_ALL=C`, like every check, so its output is the same on every host whatever the
    /// login's locale.
    ///
    /// ```rhai
    /// let v = probe("slurmd -V");
    /// if v.ok && v.stdout.contains(vars.slurm_version) { ... }
    /// ```
    #[rhai_fn(name = "probe", return_raw)]
    pub fn probe(ctx: NativeCallContext, cmd: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        do_probe(&ctx, cmd, None)
    }

    /// `probe` with a time limit in seconds.
    #[rhai_fn(name = "probe", return_raw)]
    pub fn probe_t(
        ctx: NativeCallContext,
        cmd: &str,
        timeout: i64,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        do_probe(&ctx, cmd, Some(timeout.max(1) as u64))
    }

    /// Repeats a read-only command until it succeeds; fails after `timeout` seconds
    /// (default 60) with its last output. Options: `timeout`, `interval` (default 2),
    /// `name`, `on` (run the check on another inventory host). Skipped in a dry run. The
    /// command runs with `LC_ALL=C`, like `probe`.
    ///
    /// ```rhai
    /// wait_for("sinfo -h -n w1 -o %t | grep -qx idle", #{on: "master", timeout: 120});
    /// ```
    #[rhai_fn(name = "wait_for", return_raw)]
    pub fn wait_for(
        ctx: NativeCallContext,
        cmd: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: WaitOpts = crate::primitives::opts(&ctx, opts)?;
        let label = o.name.clone().unwrap_or_else(|| cmd.to_string());
        crate::primitives::step(&ctx, "wait_for", &label, |_| {
            // A wait changes nothing and needs what earlier steps did: a dry run skips it.
            Ok(crate::primitives::StepPlan::work(true, move |h| {
                wait(h, cmd, &o)
            }))
        })
    }
}

/// Repeats `cmd` until it succeeds or `o.timeout` passes.
fn wait(
    h: &crate::context::HostCtx,
    cmd: &str,
    o: &WaitOpts,
) -> Result<rhai::Map, crate::primitives::StepError> {
    use crate::primitives::StepError;
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_secs(o.timeout.unwrap_or(60));
    let target = o.on.clone().unwrap_or_else(|| h.name.clone());
    loop {
        if h.run.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StepError::Interrupted(crate::run::signals::reason()));
        }
        let limit = std::time::Duration::from_secs(o.interval.unwrap_or(2).max(1) * 5 + 10);
        let out = match h.exec_on(&target, &crate::primitives::in_c_locale(cmd), Some(limit)) {
            Ok(out) => out,
            // A check that hangs is a check that has not succeeded yet.
            Err(e @ TransportError::Timeout(_)) => crate::transport::ExecOutput {
                status: crate::transport::shell::TIMEOUT_STATUS,
                stdout: Vec::new(),
                stderr: e.to_string().into_bytes(),
            },
            Err(e) => return Err(e.into()),
        };
        if out.status == 0 {
            let mut m = rhai::Map::new();
            m.insert("stdout".into(), out.stdout_str().into());
            return Ok(m);
        }
        if std::time::Instant::now() >= deadline {
            return Err(StepError::command(&out).doing(format!(
                "still failing after {}s on {target} (the last try)",
                o.timeout.unwrap_or(60)
            )));
        }
        std::thread::sleep(std::time::Duration::from_secs(
            o.interval.unwrap_or(2).max(1),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_quotes_paths() {
        let o = ShOpts {
            creates: Some("/tmp/a b'c".into()),
            ..Default::default()
        };
        let g = guard_script(&o);
        assert!(g.contains(&crate::transport::quote("/tmp/a b'c")), "{g}");
    }

    fn sh(cmd: &str, o: &ShOpts) -> crate::primitives::Guarded {
        plan_sh(cmd, o).expect("a plan")
    }

    #[test]
    fn the_guard_is_the_probe_and_never_runs_the_command() {
        // What a dry run sends: the guard alone.
        let o = ShOpts {
            unless: Some("test -f /x".into()),
            creates: Some("/opt/done".into()),
            ..Default::default()
        };
        let g = sh("rm -rf /", &o);
        assert!(!g.guard.contains("rm -rf"), "{}", g.guard);
        assert!(g.guard.contains("if [ -e /opt/done ]"), "{}", g.guard);
        assert!(g.guard.contains("test -f /x"), "{}", g.guard);
        assert_eq!(g.command, "rm -rf /\n");
        assert_eq!(g.change, "run: rm -rf /");
        // Without guards there is no probe: it always runs.
        let g = sh("make", &ShOpts::default());
        assert_eq!(g.guard, "");
    }

    #[test]
    fn sh_table() {
        // Environment and folder come before the command; guards keep the C locale.
        let mut env = std::collections::BTreeMap::new();
        env.insert("A_B".to_string(), "x y".to_string());
        let o = ShOpts {
            chdir: Some("/src".into()),
            env,
            onlyif: Some("true".into()),
            timeout: Some(5),
            ignore_errors: true,
            stdin: Some(String::new()),
            name: Some("build".into()),
            ..Default::default()
        };
        let g = sh("make\nmake install", &o);
        assert_eq!(
            g.command,
            "export A_B='x y'\ncd /src || exit 1\nmake\nmake install\n"
        );
        assert!(
            g.guard
                .starts_with("if ! (LC_ALL=C; export LC_ALL; cd /src 2>/dev/null && true)"),
            "{}",
            g.guard
        );
        assert_eq!(g.change, "run: build");
        assert_eq!(g.timeout, Some(std::time::Duration::from_secs(5)));
        assert!(g.ignore_errors);
        // An empty stdin goes as no stdin.
        assert_eq!(g.stdin, None);
        let o = ShOpts {
            stdin: Some("key".into()),
            removes: Some("/tmp/x".into()),
            ..Default::default()
        };
        let g = sh("cat", &o);
        assert_eq!(g.stdin.as_deref(), Some(&b"key"[..]));
        assert!(g.guard.contains("if [ ! -e /tmp/x ]"), "{}", g.guard);
        // Refused before anything runs.
        let mut env = std::collections::BTreeMap::new();
        env.insert("A-B".to_string(), "x".to_string());
        let e = plan_sh(
            "true",
            &ShOpts {
                env,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("bad environment variable name"), "{e}");
        assert!(plan_sh("a\0b", &ShOpts::default()).is_err());
    }
}
