//! The run object: one run's flags, reporter and hosts, and how it runs a prepared recipe on
//! its hosts. Host mode and controller mode (`play()`) both drive recipes through it.

pub mod prepare;
pub mod rolling;
pub mod signals;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::context::{HostCtx, RecipeInfo, RunCtx};
use crate::engine::{self, Vars};
use crate::errors::{failed, Error};

pub use prepare::{cli_vars, prepare, targets, this_machine, Prepared};

/// One run: what its hosts share (the context primitives see) and how many run at once.
#[derive(Clone)]
pub struct Run {
    pub ctx: Arc<RunCtx>,
    /// `--forks`: hosts running at the same time.
    pub forks: usize,
    /// Controller mode: the next `play()` is likely to need the same hosts, so a host's
    /// connection stays open when its part ends (else it is closed, to free its memory).
    pub keep_connections: bool,
}

/// A host's part of a rolling run: the roll's settings, its batch and how many there are.
type HostRoll = (Arc<rolling::Roll>, (usize, usize));

/// The async runtime of a command that connects.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .max_blocking_threads(1024)
        .enable_all()
        .build()
        .map_err(|e| failed(format!("cannot start the async runtime: {e}")))
}

impl Run {
    /// Runs a prepared recipe on its targets, `forks` at a time; returns the names of the
    /// hosts that failed or were unreachable, in the order they were given.
    pub async fn execute(&self, p: Prepared) -> Vec<String> {
        // Each play() of a controller recipe counts its own hosts done on the status line.
        self.ctx.reporter.start(p.per_host.len());
        self.execute_batch(p, None).await
    }

    /// [`Run::execute`] for one batch of a rolling run (`roll`: its settings, this batch
    /// and how many), or for all hosts (None).
    async fn execute_batch(&self, p: Prepared, roll: Option<HostRoll>) -> Vec<String> {
        let recipe = Arc::new(RecipeInfo {
            name: p.name.clone(),
            source: p.source.clone(),
            dir: p.dir.clone(),
        });
        // A host gets its task, thread, engine and connection only when a fork is free: one
        // waiting for its turn is just its variables in the list.
        let sem = Arc::new(tokio::sync::Semaphore::new(self.forks.max(1)));
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
            let (run, recipe, ast) = (self.ctx.clone(), recipe.clone(), p.ast.clone());
            let keep = self.keep_connections;
            let roll = roll.clone();
            tasks.spawn(Box::pin(async move {
                let _permit = permit;
                let name = t.name.clone();
                let failed = run_one(&run, &t, vars, ast, recipe, roll).await;
                if !keep {
                    run.hosts.release(&name).await;
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

    /// Ends the run: closes every connection and prints the recap. Err when a host failed.
    pub async fn finish(&self) -> Result<(), Error> {
        let hosts = &self.ctx.hosts;
        hosts.close_all().await;
        let ok = self.ctx.reporter.finish(self.ctx.dry_run);
        if std::env::var_os("RECIPE_STATS").is_some() {
            // For the benchmark: channels opened and commands sent over the whole run.
            eprintln!(
                "{{\"event\":\"stats\",\"channels\":{},\"round_trips\":{},\"remote_pids\":{},\"probes_ahead\":{},\"connections\":{}}}",
                hosts.stats.channels.load(Ordering::Relaxed),
                hosts.stats.round_trips.load(Ordering::Relaxed),
                hosts.stats.remote_pids.load(Ordering::Relaxed),
                hosts.stats.probes_ahead.load(Ordering::Relaxed),
                hosts.connection_count()
            );
        }
        if ok {
            Ok(())
        } else {
            Err(Error::HostsFailed)
        }
    }
}

/// Connects to one host and runs the recipe there; reports its end. True when it failed.
async fn run_one(
    run: &Arc<RunCtx>,
    t: &crate::inventory::Target,
    vars: rhai::Map,
    ast: Arc<rhai::AST>,
    recipe: Arc<RecipeInfo>,
    roll: Option<HostRoll>,
) -> bool {
    let rep = run.reporter.clone();
    let name = t.name.clone();
    let not_started = || {
        let why = format!("not started: {}", signals::reason());
        rep.finish_host(&name, false, Some(why), None);
        true
    };
    if run.interrupted.load(Ordering::Relaxed) {
        return not_started();
    }
    // A stop while connecting (a handshake that stalls) ends the attempt at once.
    let conn = tokio::select! {
        c = run.hosts.connection(t) => c,
        _ = signals::reached(signals::Stop::AfterStep) => return not_started(),
    };
    if let Some((tries, notes)) = run.hosts.take_connect_notes(&name) {
        if tries > 1 {
            rep.connect_tries(&name, tries);
        }
        for n in notes {
            rep.note(&name, &n);
        }
    }
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            rep.finish_host(&name, true, Some(format!("{name}: {e}")), None);
            return true;
        }
    };
    let ctx = Arc::new(HostCtx {
        name: name.clone(),
        conn,
        run: run.clone(),
        recipe,
        vars: vars.clone(),
        prefetch: Default::default(),
    });
    let t = t.clone();
    let res = tokio::task::spawn_blocking(move || run_host(ctx, &ast, vars, roll, &t)).await;
    match res {
        Ok(Ok(())) => {
            rep.finish_host(&name, false, None, None);
            false
        }
        Ok(Err((msg, at))) => {
            rep.finish_host(&name, false, Some(msg), Some(at));
            true
        }
        Err(e) => {
            rep.finish_host(&name, false, Some(format!("internal error: {e}")), None);
            true
        }
    }
}

/// Runs the script for one host on the current (blocking) thread. An error comes with the
/// place where the host stopped (`file:line:col`).
fn run_host(
    ctx: Arc<HostCtx>,
    ast: &rhai::AST,
    vars: rhai::Map,
    roll: Option<HostRoll>,
    t: &crate::inventory::Target,
) -> Result<(), (String, String)> {
    let dir = ctx.recipe.dir.clone();
    let mut e = engine::build(&dir, Some(ctx.run.interrupted.clone()));
    e.set_default_tag(rhai::Dynamic::from(ctx.clone()));
    crate::primitives::prefetch::ask_ahead(&mut e, ast, vars.clone(), &ctx);
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
    let describe = |err: &rhai::EvalAltResult| {
        let mut loc = crate::errors::locate_eval(err, &ctx.recipe.source);
        loc.source = loc.source.map(|s| module_file(&s, &dir));
        let place = loc.place();
        let mut msg = format!("{place}: {}", loc.message);
        for n in &loc.notes {
            msg.push_str(&format!("\n  ({n})"));
        }
        (msg, place)
    };
    let res = match roll {
        None => e.run_ast_with_scope(&mut scope, ast),
        Some((roll, batch)) => {
            rolling::around(&mut e, &mut scope, ast, &ctx, t, &roll, batch, &describe)
        }
    };
    res.map_err(|err| describe(&err))
}

/// Errors inside `import "m"` modules name the module; show its file instead.
pub fn module_file(src: &str, recipe_dir: &Path) -> String {
    if Path::new(src).is_file() {
        return src.to_string();
    }
    for dir in crate::modules::module_paths(recipe_dir) {
        let p: PathBuf = dir.join(format!("{src}.rhai"));
        if p.is_file() {
            return p.display().to_string();
        }
    }
    src.to_string()
}
