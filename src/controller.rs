//! Controller mode: a recipe run without hosts runs once here and orchestrates others with `play()`.

use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext};
use std::path::Path;
use std::sync::Arc;

use crate::engine::{self, Vars};
use crate::runner::{self, Base};

/// What `play()` needs: the run's shared state.
#[derive(Clone)]
pub struct ControllerCtx {
    pub base: Base,
    /// The controller recipe's folder: played recipes are looked up there first.
    pub dir: std::path::PathBuf,
}

/// Options of `play`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlayOpts {
    #[serde(default)]
    hosts: Vec<String>,
    group: Option<String>,
    #[serde(default)]
    ignore_errors: bool,
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
    let extra = match opts.remove("vars") {
        None => Map::new(),
        Some(v) => v
            .try_cast::<Map>()
            .ok_or_else(|| err("play: `vars` must be a map".into()))?,
    };
    let o: PlayOpts = rhai::serde::from_dynamic(&Dynamic::from_map(opts))
        .map_err(|e| err(format!("play: bad options: {e}")))?;
    let inv = &c.base.hosts.inventory;
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
    let prepared = runner::prepare(
        &recipe_path,
        &targets,
        &[],
        &extra,
        c.base.reporter.redactor(),
    )
    .map_err(|e| err(format!("play {recipe}:\n{e}")))?;
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    c.base.reporter.note(
        "controller",
        &format!("play {recipe} on {}", names.join(", ")),
    );
    let failed = c.base.rt.block_on(runner::execute(&c.base, prepared));
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
        &c.base.hosts.inventory,
        group,
    ))
}

/// Runs a controller recipe on this (blocking) thread.
pub fn run(base: Base, ast: &rhai::AST, dir: &Path, vars: Map, source: &str) -> Result<(), String> {
    let mut e = engine::build(dir, Some(base.interrupted.clone()));
    let ctx = Arc::new(ControllerCtx {
        base: base.clone(),
        dir: dir.to_path_buf(),
    });
    e.set_default_tag(Dynamic::from(ctx));
    e.register_fn("play", play);
    e.register_fn("play", play1);
    e.register_fn("group_hosts", group_hosts);
    let rep = base.reporter.clone();
    e.register_fn("log", move |m: &str| rep.note("controller", m));
    let rep = base.reporter.clone();
    e.on_print(move |s| rep.note("controller", s));
    let mut scope = rhai::Scope::new();
    scope.push_constant("vars", Vars(vars));
    e.run_ast_with_scope(&mut scope, ast).map_err(|err| {
        let loc = crate::errors::locate_eval(&err, source);
        loc.render()
    })
}
