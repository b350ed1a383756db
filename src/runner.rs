//! `recipe run`: resolve hosts and variables, then run the recipe on every host in parallel.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine::{self, Vars};
use crate::host::{HostCtx, Hosts, RunShared};
use crate::inventory::{self, Inventory, Target};
use crate::report::{Mode, Reporter};
use crate::secrets::Redactor;
use crate::transport::ssh::SshOptions;

/// Everything `recipe run` needs, free of clap types.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub recipe: String,
    pub hosts: Vec<String>,
    pub groups: Vec<String>,
    pub inventory: Option<PathBuf>,
    pub vars: Vec<String>,
    pub dry_run: bool,
    pub diff: bool,
    pub forks: usize,
    pub json: bool,
    pub verbose: u8,
    pub quiet: bool,
    pub conn: ConnConfig,
    pub timeout: u64,
    /// Node side of `--via slurm`: the file of per-node hosts and variables.
    pub slurm_node: Option<PathBuf>,
}

/// Connection settings shared by every command that connects.
#[derive(Debug, Clone, Default)]
pub struct ConnConfig {
    pub known_hosts: Option<PathBuf>,
    pub accept_new: bool,
    pub local: bool,
    pub connect_timeout: u64,
}

/// Exit statuses (see the README).
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("{}", crate::report::printable(&msg.to_string()));
    EXIT_USAGE
}

/// Loads the inventory (or the empty one) and the targets of `--host`/`--group`/`--local`.
pub fn targets(
    inv_path: &Option<PathBuf>,
    hosts: &[String],
    groups: &[String],
    local: bool,
) -> Result<(Inventory, Vec<Target>), String> {
    let inv = match inv_path {
        Some(p) => inventory::load(p).map_err(|e| e.to_string())?,
        None => Inventory::empty(),
    };
    if local {
        let t = this_machine("local", &inv);
        return Ok((inv, vec![t]));
    }
    if hosts.is_empty() && groups.is_empty() {
        return Err(
            "no hosts: give --host NAME, --group NAME (with -i INVENTORY), or --local".into(),
        );
    }
    let t = inv.select(hosts, groups).map_err(|e| e.to_string())?;
    if t.is_empty() {
        return Err("the selected groups have no hosts".into());
    }
    Ok((inv, t))
}

/// A target for this machine (`--local`, controller mode), with the inventory's `[vars]`.
fn this_machine(name: &str, inv: &Inventory) -> Target {
    Target {
        name: name.into(),
        address: name.into(),
        port: 0,
        user: inventory::current_user(),
        keys: vec![],
        jump: None,
        become_: false,
        vars: inv.vars.clone(),
        groups: vec![],
    }
}

pub fn ssh_options(inv: &Inventory, c: &ConnConfig) -> SshOptions {
    SshOptions {
        known_hosts: c
            .known_hosts
            .clone()
            .unwrap_or_else(|| inv.known_hosts_path()),
        accept_new: c.accept_new,
        connect_timeout: Duration::from_secs(c.connect_timeout.max(1)),
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .max_blocking_threads(1024)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// A recipe ready to run: compiled, with each target's final variables.
pub struct Prepared {
    pub name: String,
    pub source: String,
    pub dir: PathBuf,
    pub ast: Arc<rhai::AST>,
    pub per_host: Vec<(Target, rhai::Map)>,
}

/// Loads `recipe`, checks `cli` variables against its declarations and computes each
/// target's variables; every error here is a usage error (exit 2), found before any host is touched.
pub fn prepare(
    recipe: &str,
    targets: &[Target],
    cli: &[(String, String)],
    extra: &rhai::Map,
    redactor: &Redactor,
) -> Result<Prepared, String> {
    let path = crate::recipe::resolve(recipe).map_err(|e| format!("error: {e}"))?;
    let dir = path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."));
    let meta_engine = engine::build(&dir, None);
    let rec = crate::recipe::load(&meta_engine, &path).map_err(|e| e.render())?;
    let cli = crate::vars::check_cli(&rec, cli).map_err(|e| format!("error: {e}"))?;
    let mut per_host = Vec::new();
    for t in targets {
        let mut m = crate::vars::for_host(&rec, &t.name, &t.vars, &cli)
            .map_err(|e| format!("error: {e}"))?;
        for (k, v) in extra {
            if !m.contains_key(k.as_str()) {
                return Err(format!("error: {} declares no variable {k}", rec.name));
            }
            m.insert(k.clone(), v.clone());
        }
        for (k, v) in &m {
            for s in crate::vars::secret_values(k, v) {
                redactor.add(s.as_bytes());
            }
        }
        per_host.push((t.clone(), m));
    }
    validate(&meta_engine, &rec, &per_host)?;
    Ok(Prepared {
        name: rec.name.clone(),
        source: path.display().to_string(),
        dir,
        ast: Arc::new(rec.ast),
        per_host,
    })
}

/// Calls the recipe's `fn validate(v)`, if it has one, with each distinct set of host
/// variables: combinations that cannot work are refused before any host is touched. It
/// returns `()`, `""` or `[]` when all is well, else a message or a list of them. The
/// recipe's imports are in effect (the rest of the script does not run).
fn validate(
    engine: &rhai::Engine,
    rec: &crate::recipe::Recipe,
    per_host: &[(Target, rhai::Map)],
) -> Result<(), String> {
    let has = rec
        .ast
        .iter_functions()
        .any(|f| f.name == "validate" && f.params.len() == 1);
    if !has {
        return Ok(());
    }
    let imports: Vec<rhai::Stmt> = rec
        .ast
        .statements()
        .iter()
        .filter(|s| matches!(s, rhai::Stmt::Import(..)))
        .cloned()
        .collect();
    let mut only_imports = rhai::AST::new(imports, rec.ast.shared_lib().clone());
    if let Some(src) = rec.ast.source() {
        only_imports.set_source(src);
    }
    let mut seen = std::collections::HashSet::new();
    for (t, m) in per_host {
        if !seen.insert(format!("{m:?}")) {
            continue;
        }
        let opts = rhai::CallFnOptions::new().eval_ast(true).rewind_scope(true);
        let mut scope = rhai::Scope::new();
        let got: rhai::Dynamic = engine
            .call_fn_with_options(
                opts,
                &mut scope,
                &only_imports,
                "validate",
                (Vars(m.clone()),),
            )
            .map_err(|e| {
                crate::errors::locate_eval(&e, &rec.path.display().to_string()).render()
            })?;
        let mut msgs: Vec<String> = Vec::new();
        if got.is_unit() {
        } else if let Some(a) = got.clone().try_cast::<rhai::Array>() {
            msgs.extend(a.into_iter().map(|x| x.to_string()));
        } else if got.is_string() {
            msgs.push(got.to_string());
        } else {
            return Err(format!(
                "error: {}: fn validate must return (), a message or a list of messages, not {}",
                rec.name,
                got.type_name()
            ));
        }
        msgs.retain(|m| !m.trim().is_empty());
        if !msgs.is_empty() {
            let whose = if per_host.len() > 1 {
                format!(" (variables of host {})", t.name)
            } else {
                String::new()
            };
            return Err(format!(
                "error: {} refuses to run{whose}: {}\n  change these variables; no host was touched",
                rec.name,
                msgs.join("; ")
            ));
        }
    }
    Ok(())
}

/// What a run shares with everything it starts (plays included).
#[derive(Clone)]
pub struct Base {
    pub dry_run: bool,
    pub diff: bool,
    pub reporter: Reporter,
    pub hosts: Arc<Hosts>,
    pub rt: tokio::runtime::Handle,
    pub timeout: Duration,
    pub interrupted: Arc<AtomicBool>,
    pub forks: usize,
    /// Controller mode: the next `play()` is likely to need the same hosts, so a host's
    /// connection stays open when its part ends (else it is closed, to free its memory).
    pub keep_connections: bool,
}

/// Runs a prepared recipe on its targets, `forks` at a time; returns the names of the
/// hosts that failed or were unreachable.
pub async fn execute(base: &Base, p: Prepared) -> Vec<String> {
    let shared = Arc::new(RunShared {
        recipe_name: p.name.clone(),
        recipe_source: p.source.clone(),
        recipe_dir: p.dir.clone(),
        dry_run: base.dry_run,
        diff: base.diff,
        reporter: base.reporter.clone(),
        hosts: base.hosts.clone(),
        rt: base.rt.clone(),
        default_timeout: base.timeout,
        interrupted: base.interrupted.clone(),
    });
    if let Ok(mut m) = base.hosts.targets.lock() {
        for (t, _) in &p.per_host {
            m.insert(t.name.clone(), t.clone());
        }
    }
    // A host gets its task, thread, engine and connection only when a fork is free: one
    // waiting for its turn is just its variables in the list.
    let sem = Arc::new(tokio::sync::Semaphore::new(base.forks.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut failed = Vec::new();
    let reap = |r: Result<Option<String>, tokio::task::JoinError>, failed: &mut Vec<String>| {
        if let Ok(Some(n)) = r {
            failed.push(n);
        }
    };
    let order: std::collections::HashMap<String, usize> = p
        .per_host
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (t.name.clone(), i))
        .collect();
    for (t, vars) in p.per_host {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            failed.push(t.name.clone());
            continue;
        };
        while let Some(r) = tasks.try_join_next() {
            reap(r, &mut failed);
        }
        let shared = shared.clone();
        let ast = p.ast.clone();
        let source = p.source.clone();
        let recipe_dir = p.dir.clone();
        let keep = base.keep_connections;
        tasks.spawn(Box::pin(async move {
            let _permit = permit;
            let name = t.name.clone();
            let failed = run_one(&shared, name.clone(), vars, ast, recipe_dir, source).await;
            if !keep {
                shared.hosts.release(&name).await;
            }
            failed.then_some(name)
        }));
    }
    while let Some(r) = tasks.join_next().await {
        reap(r, &mut failed);
    }
    // Hosts end in any order; report them in the order they were given.
    failed.sort_by_key(|n| order.get(n).copied().unwrap_or(usize::MAX));
    failed
}

/// Connects to one host and runs the recipe there; reports its end. True when it failed.
async fn run_one(
    shared: &Arc<RunShared>,
    name: String,
    vars: rhai::Map,
    ast: Arc<rhai::AST>,
    recipe_dir: PathBuf,
    source: String,
) -> bool {
    let rep = shared.reporter.clone();
    if shared.interrupted.load(Ordering::Relaxed) {
        rep.finish_host(&name, false, Some("not started: interrupted".into()), None);
        return true;
    }
    let conn = match shared.hosts.connection(&name).await {
        Ok(c) => c,
        Err(e) => {
            rep.finish_host(&name, true, Some(format!("{name}: {e}")), None);
            return true;
        }
    };
    let ctx = Arc::new(HostCtx {
        name: name.clone(),
        conn,
        run: shared.clone(),
        vars: vars.clone(),
        last_step: Mutex::new(None),
    });
    let res =
        tokio::task::spawn_blocking(move || run_host(ctx, &ast, &recipe_dir, vars, &source)).await;
    match res {
        Ok(Ok(())) => {
            rep.finish_host(&name, false, None, None);
            false
        }
        Ok(Err((msg, at))) => {
            rep.finish_host(&name, false, Some(msg), at);
            true
        }
        Err(e) => {
            rep.finish_host(&name, false, Some(format!("internal error: {e}")), None);
            true
        }
    }
}

/// Parses `--var KEY=VALUE`s; secret-named values go to the redactor at once.
pub fn cli_vars(vars: &[String], redactor: &Redactor) -> Result<Vec<(String, String)>, String> {
    let mut cli = Vec::new();
    for v in vars {
        let kv = crate::vars::parse_cli_var(v).map_err(|e| format!("error: {e}"))?;
        // Known before any check, so that no message can show it.
        if crate::vars::is_secret_name(&kv.0) {
            redactor.add(kv.1.as_bytes());
        }
        cli.push(kv);
    }
    Ok(cli)
}

pub fn run(cfg: RunConfig) -> i32 {
    let controller = cfg.hosts.is_empty()
        && cfg.groups.is_empty()
        && !cfg.conn.local
        && cfg.slurm_node.is_none();
    let node = match &cfg.slurm_node {
        Some(f) => match crate::via::node_entry(f) {
            Ok(e) => Some(e),
            Err(e) => return usage(format!("error: {e}")),
        },
        None => None,
    };
    let (inv, targets) = if let Some(e) = &node {
        // A task of `--via slurm`: this machine, as the inventory host it stands for, with
        // the variables the controller computed for that host.
        let inv = Inventory::empty();
        let mut t = this_machine(&e.host, &inv);
        t.vars = e.vars.clone();
        (inv, vec![t])
    } else if controller {
        match &cfg.inventory {
            Some(p) => match inventory::load(p) {
                Ok(i) => (i, Vec::new()),
                Err(e) => return usage(e),
            },
            None => return usage("error: no hosts: give --host NAME, --group NAME (with -i INVENTORY), or --local; \
                                  with -i and no hosts the recipe runs on the controller (for play())"),
        }
    } else {
        match targets(&cfg.inventory, &cfg.hosts, &cfg.groups, cfg.conn.local) {
            Ok(x) => x,
            Err(e) => return usage(format!("error: {e}")),
        }
    };
    let redactor = Redactor::default();
    let cli = match cli_vars(&cfg.vars, &redactor) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let controller_target = this_machine("controller", &inv);
    let prepared = if controller {
        prepare(
            &cfg.recipe,
            std::slice::from_ref(&controller_target),
            &cli,
            &rhai::Map::new(),
            &redactor,
        )
    } else {
        prepare(&cfg.recipe, &targets, &cli, &rhai::Map::new(), &redactor)
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => return usage(redactor.redact(&e)),
    };
    // A `--host` whose name does not resolve is a typo, not an outage: refuse it before any
    // connection. Group members are left to the run (one stale DNS entry must not stop a
    // thousand hosts) and reported unreachable there.
    if !controller && !cfg.conn.local {
        let named: Vec<Target> = targets
            .iter()
            .filter(|t| cfg.hosts.contains(&t.name))
            .cloned()
            .collect();
        if let Err(e) = inventory::check_resolvable(&named) {
            return usage(format!("error: {e}"));
        }
    }
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return usage(format!("error: {e}")),
    };
    let mode = if cfg.json { Mode::Json } else { Mode::Human };
    let mut reporter = Reporter::new(mode, cfg.verbose, cfg.quiet, cfg.diff, redactor);
    reporter.dry_run = cfg.dry_run;
    let mut hosts = Hosts::new(
        Arc::new(inv.clone()),
        ssh_options(&inv, &cfg.conn),
        cfg.conn.local || node.is_some(),
    );
    hosts.only = node.as_ref().map(|e| e.host.clone());
    let hosts = Arc::new(hosts);
    let interrupted = Arc::new(AtomicBool::new(false));
    let base = Base {
        dry_run: cfg.dry_run,
        diff: cfg.diff,
        reporter: reporter.clone(),
        hosts: hosts.clone(),
        rt: rt.handle().clone(),
        timeout: Duration::from_secs(cfg.timeout.max(1)),
        interrupted: interrupted.clone(),
        forks: cfg.forks,
        keep_connections: controller,
    };
    if !controller {
        reporter.start(prepared.per_host.len());
    }
    let ok = rt.block_on(async {
        tokio::spawn(watch_signals(interrupted.clone()));
        let mut ok = true;
        if controller {
            let vars = prepared
                .per_host
                .first()
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let b = base.clone();
            let (ast, dir, source) = (
                prepared.ast.clone(),
                prepared.dir.clone(),
                prepared.source.clone(),
            );
            let res = tokio::task::spawn_blocking(move || {
                crate::controller::run(b, &ast, &dir, vars, &source)
            })
            .await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => {
                    let msg = base.reporter.redactor().redact(&stopped_by(&msg));
                    eprintln!("{}", crate::report::printable(&msg));
                    ok = false;
                }
                Err(e) => {
                    eprintln!("internal error: {e}");
                    ok = false;
                }
            }
        } else {
            execute(&base, prepared).await;
        }
        hosts.close_all().await;
        let ok = reporter.finish() && ok;
        if std::env::var_os("RECIPE_STATS").is_some() {
            // For the benchmark: channels opened and commands sent over the whole run.
            eprintln!(
                "{{\"event\":\"stats\",\"channels\":{},\"round_trips\":{},\"connections\":{}}}",
                hosts.stats.channels.load(Ordering::Relaxed),
                hosts.stats.round_trips.load(Ordering::Relaxed),
                hosts.connection_count()
            );
        }
        ok
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    if ok {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// The signal that stopped the run, for the recap.
static STOP_SIGNAL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The engine says "interrupted (Ctrl-C)" for any stop: name the signal that was received.
fn stopped_by(msg: &str) -> String {
    match STOP_SIGNAL.get() {
        Some(sig) => msg.replace("interrupted (Ctrl-C)", &format!("interrupted ({sig})")),
        None => msg.to_string(),
    }
}

/// Ctrl-C (SIGINT) and SIGTERM both stop every host after its current step, so the run
/// ends with its recap; a second signal of either kind aborts at once (130 or 143).
async fn watch_signals(flag: Arc<AtomicBool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("warning: cannot watch for Ctrl-C and SIGTERM: an interrupted run will not print its recap");
        return;
    };
    let first = tokio::select! {
        _ = int.recv() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    };
    let _ = STOP_SIGNAL.set(first);
    eprintln!(
        "\ninterrupted ({first}): stopping every host after its current step (Ctrl-C or SIGTERM again to abort)"
    );
    flag.store(true, Ordering::Relaxed);
    let code = tokio::select! {
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    };
    std::process::exit(code);
}

/// Runs the script for one host on the current (blocking) thread.
fn run_host(
    ctx: Arc<HostCtx>,
    ast: &rhai::AST,
    recipe_dir: &std::path::Path,
    vars: rhai::Map,
    source: &str,
) -> Result<(), (String, Option<String>)> {
    let mut e = engine::build(recipe_dir, Some(ctx.run.interrupted.clone()));
    e.set_default_tag(rhai::Dynamic::from(ctx.clone()));
    let (rep, name) = (ctx.run.reporter.clone(), ctx.name.clone());
    e.on_print(move |s| rep.note(&name, s));
    let (rep, name) = (ctx.run.reporter.clone(), ctx.name.clone());
    e.on_debug(move |s, _, _| {
        if rep.verbose > 0 {
            rep.note(&name, s)
        }
    });
    let mut scope = rhai::Scope::new();
    scope.push_constant("vars", Vars(vars));
    match e.run_ast_with_scope(&mut scope, ast) {
        Ok(()) => Ok(()),
        Err(err) => {
            let mut loc = crate::errors::locate_eval(&err, source);
            loc.source = loc.source.map(|s| module_file(&s, recipe_dir));
            let mut msg = format!("{}: {}", loc.place(), stopped_by(&loc.message));
            for n in &loc.notes {
                msg.push_str(&format!("\n  ({n})"));
            }
            Err((msg, None))
        }
    }
}

/// Errors inside `import "m"` modules name the module; show its file instead.
pub fn module_file(src: &str, recipe_dir: &std::path::Path) -> String {
    if std::path::Path::new(src).is_file() {
        return src.to_string();
    }
    for dir in engine::module_paths(recipe_dir) {
        let p = dir.join(format!("{src}.rhai"));
        if p.is_file() {
            return p.display().to_string();
        }
    }
    src.to_string()
}
