//! Controller mode: a recipe run without hosts runs once here and orchestrates others with `play()`.

use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext};
use std::sync::Arc;

use crate::engine::{self, Vars};
use crate::errors::{failed, Error};
use crate::run::{self, Prepared, Run};

/// What `play()` needs: the run.
#[derive(Clone)]
struct ControllerCtx {
    run: Run,
    /// The controller recipe's folder: played recipes are looked up there first.
    dir: std::path::PathBuf,
}

crate::primitives::options::options! {
    /// Options of `play`.
    pub struct PlayOpts for "play" {
        hosts: Vec<String>,
        group: Option<String>,
        ignore_errors: bool,
        /// Values for the played recipe's variables: taken out of the map before it is read.
        #[serde(skip)]
        vars: Option<Map>,
    }
}

fn play(
    ctx: NativeCallContext,
    recipe: &str,
    mut opts: Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let pos = ctx.call_position();
    let err = |m: String| Box::new(EvalAltResult::ErrorRuntime(m.into(), pos));
    let c = ctx
        .tag()
        .and_then(|t| t.clone().try_cast::<Arc<ControllerCtx>>())
        .ok_or_else(|| err("play() runs only in controller mode (recipe run RECIPE -i INVENTORY, without --host/--group)".into()))?;
    // `vars` may hold secrets, which serde cannot carry: taken out first.
    let extra = opts.remove("vars").unwrap_or_default();
    crate::primitives::options::check_key::<PlayOpts>("vars", &extra).map_err(err)?;
    let mut o: PlayOpts = crate::primitives::options::parse(opts).map_err(err)?;
    o.vars = extra.try_cast::<Map>();
    let extra = o.vars.clone().unwrap_or_default();
    let ctx_run = &c.run.ctx;
    let inv = &ctx_run.hosts.inventory;
    let groups: Vec<String> = o.group.into_iter().collect();
    if o.hosts.is_empty() && groups.is_empty() {
        return Err(err("play: give `hosts` or `group`".into()));
    }
    let targets = inv
        .select(&o.hosts, &groups)
        .map_err(|e| err(format!("play {recipe}: {e}")))?;
    let beside = c.dir.join(recipe);
    let recipe_path = if beside.is_file() {
        beside.display().to_string()
    } else {
        recipe.to_string()
    };
    let prepared = run::prepare(
        &recipe_path,
        &targets,
        &[],
        &extra,
        ctx_run.reporter.redactor(),
    )
    .map_err(|e| {
        let text = e.render().unwrap_or_default();
        err(format!("play {recipe}:\n{}", text.trim_end()))
    })?;
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    ctx_run.reporter.note(
        "controller",
        &format!("play {recipe} on {}", names.join(", ")),
    );
    let failed = ctx_run.rt.block_on(c.run.execute(prepared));
    if !failed.is_empty() && !o.ignore_errors {
        return Err(err(format!(
            "play {recipe}: failed on {}",
            failed.join(", ")
        )));
    }
    let mut m = Map::new();
    m.insert("ok".into(), failed.is_empty().into());
    m.insert(
        "hosts".into(),
        Dynamic::from_array(names.into_iter().map(Dynamic::from).collect()),
    );
    m.insert(
        "failed".into(),
        Dynamic::from_array(failed.into_iter().map(Dynamic::from).collect()),
    );
    Ok(Dynamic::from_map(m))
}

fn play1(ctx: NativeCallContext, recipe: &str, group: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    let mut m = Map::new();
    m.insert("group".into(), group.into());
    play(ctx, recipe, m)
}

fn group_hosts(ctx: NativeCallContext, group: &str) -> Result<rhai::Array, Box<EvalAltResult>> {
    let c = ctx
        .tag()
        .and_then(|t| t.clone().try_cast::<Arc<ControllerCtx>>())
        .ok_or_else(|| {
            Box::new(EvalAltResult::ErrorRuntime(
                "no inventory".into(),
                ctx.call_position(),
            ))
        })?;
    Ok(crate::primitives::group_array(
        &c.run.ctx.hosts.inventory,
        group,
    ))
}

/// Runs a controller recipe on this (blocking) thread; a recipe that stops is a failure
/// (exit 1) with its place.
pub fn run(r: Run, p: Prepared) -> Result<(), Error> {
    let mut e = engine::build(&p.dir, Some(r.ctx.interrupted.clone()));
    let rep = r.ctx.reporter.clone();
    let ctx = Arc::new(ControllerCtx {
        run: r,
        dir: p.dir.clone(),
    });
    e.set_default_tag(Dynamic::from(ctx));
    e.register_fn("play", play);
    e.register_fn("play", play1);
    e.register_fn("group_hosts", group_hosts);
    let r2 = rep.clone();
    e.register_fn("log", move |m: &str| r2.note("controller", m));
    e.on_print(move |s| rep.note("controller", s));
    let vars = p
        .per_host
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or_default();
    let mut scope = rhai::Scope::new();
    scope.push_constant("vars", Vars(vars));
    e.run_ast_with_scope(&mut scope, &p.ast)
        .map_err(|err| failed(crate::errors::locate_eval(&err, &p.source).render()))
}
