//! Before any host is touched: the targets, the `--var`s, the compiled recipe and each host's variables.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::{self, Vars};
use crate::errors::{usage, Error};
use crate::inventory::{self, Inventory, Target};
use crate::secrets::Redactor;

/// Loads the inventory (or the empty one) and the targets of `--host`/`--group`/`--local`.
pub fn targets(
    inv_path: &Option<PathBuf>,
    hosts: &[String],
    groups: &[String],
    local: bool,
) -> Result<(Inventory, Vec<Target>), Error> {
    let inv = match inv_path {
        Some(p) => inventory::load(p).map_err(usage)?,
        None => Inventory::empty(),
    };
    if local {
        let t = this_machine("local", &inv);
        return Ok((inv, vec![t]));
    }
    if hosts.is_empty() && groups.is_empty() {
        return Err(usage(
            "no hosts: give --host NAME, --group NAME (with -i INVENTORY), or --local",
        ));
    }
    let t = inv.select(hosts, groups).map_err(usage)?;
    if t.is_empty() {
        return Err(usage("the selected groups have no hosts"));
    }
    Ok((inv, t))
}

/// A target for this machine (`--local`, controller mode), with the inventory's `[vars]`.
pub fn this_machine(name: &str, inv: &Inventory) -> Target {
    Target {
        name: name.into(),
        address: name.into(),
        port: 0,
        user: crate::local_user::current_user(),
        keys: vec![],
        jump: None,
        become_: false,
        vars: inv.vars.clone(),
        groups: vec![],
    }
}

/// Parses `--var KEY=VALUE`s; secret-named values go to the redactor at once.
pub fn cli_vars(vars: &[String], redactor: &Redactor) -> Result<Vec<(String, String)>, Error> {
    let mut cli = Vec::new();
    for v in vars {
        let kv = crate::vars::parse_cli_var(v).map_err(usage)?;
        // Known before any check, so that no message can show it.
        if crate::vars::is_secret_name(&kv.0) {
            redactor.add(kv.1.as_bytes());
        }
        cli.push(kv);
    }
    Ok(cli)
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
) -> Result<Prepared, Error> {
    let path = crate::recipe::resolve(recipe).map_err(usage)?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let meta_engine = engine::build(&dir, None);
    let rec = crate::recipe::load(&meta_engine, &path).map_err(Error::Recipe)?;
    // Before any host: it runs, but likely not as meant.
    for w in &rec.warnings {
        eprint!("{}", w.render_warning());
    }
    let cli = crate::vars::check_cli(&rec, cli).map_err(usage)?;
    let mut per_host = Vec::new();
    for t in targets {
        let mut m = crate::vars::for_host(&rec, &t.name, &t.vars, &cli).map_err(usage)?;
        for (k, v) in extra {
            if !m.contains_key(k.as_str()) {
                let hint = crate::hints::did_you_mean(k, m.keys().map(|n| n.as_str()))
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                return Err(usage(format!(
                    "{} declares no variable {k}{hint}",
                    rec.name
                )));
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
) -> Result<(), Error> {
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
                Error::Recipe(crate::errors::locate_eval(
                    &e,
                    &rec.path.display().to_string(),
                ))
            })?;
        let mut msgs: Vec<String> = Vec::new();
        if got.is_unit() {
        } else if let Some(a) = got.clone().try_cast::<rhai::Array>() {
            msgs.extend(a.into_iter().map(|x| x.to_string()));
        } else if got.is_string() {
            msgs.push(got.to_string());
        } else {
            return Err(usage(format!(
                "{}: fn validate must return (), a message or a list of messages, not {}",
                rec.name,
                got.type_name()
            )));
        }
        msgs.retain(|m| !m.trim().is_empty());
        if !msgs.is_empty() {
            let whose = if per_host.len() > 1 {
                format!(" (variables of host {})", t.name)
            } else {
                String::new()
            };
            return Err(usage(format!(
                "{} refuses to run{whose}: {}\n  change these variables; it touched no host",
                rec.name,
                msgs.join("; ")
            )));
        }
    }
    Ok(())
}
