//! The Rhai engine recipes run in: limits, module paths, registered primitives, and variables.

use rhai::module_resolvers::{FileModuleResolver, ModuleResolversCollection};
use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::primitives;

/// The recipe's variables as seen by the script: `vars.name`; an unknown name is an error,
/// not a silent `()`.
#[derive(Debug, Clone, Default)]
pub struct Vars(pub Map);

fn vars_get(v: &mut Vars, key: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    v.0.get(key).cloned().ok_or_else(|| {
        let mut known: Vec<String> = v.0.keys().map(|k| k.to_string()).collect();
        known.sort();
        Box::new(EvalAltResult::ErrorRuntime(
            format!(
                "unknown variable `{key}` (declare it in fn defaults(); declared: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
            .into(),
            Position::NONE,
        ))
    })
}

/// Where `import "name"` looks: the recipe's folder, the `stdlib/` beside it or beside
/// its parent (recipes/samples/x.rhai finds the project's stdlib), `./stdlib`, and
/// `$RECIPE_STDLIB`.
pub fn module_paths(recipe_dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![
        recipe_dir.to_path_buf(),
        recipe_dir.join("../stdlib"),
        recipe_dir.join("../../stdlib"),
        PathBuf::from("stdlib"),
    ];
    if let Some(p) = std::env::var_os("RECIPE_STDLIB") {
        v.insert(0, PathBuf::from(p));
    }
    v.into_iter().filter(|p| p.is_dir()).collect()
}

/// The longest string a recipe may hold (variables included), in bytes.
pub const MAX_STRING_SIZE: usize = 16 * 1024 * 1024;

/// Limits that stop runaway recipes (infinite loops, deep recursion, huge strings).
pub fn set_limits(e: &mut Engine) {
    e.set_max_operations(20_000_000);
    e.set_max_call_levels(48);
    e.set_max_expr_depths(64, 32);
    e.set_max_string_size(MAX_STRING_SIZE);
    e.set_max_array_size(200_000);
    e.set_max_map_size(100_000);
    e.set_max_modules(64);
    e.set_strict_variables(true);
}

/// An engine with every primitive registered. `interrupted` stops scripts (Ctrl-C).
pub fn build(recipe_dir: &Path, interrupted: Option<Arc<AtomicBool>>) -> Engine {
    // Engine::new() would build Rhai's standard package again for every engine (~0.5 MB and
    // thousands of allocations each); one engine runs per host, so share one copy instead.
    static STD: std::sync::OnceLock<rhai::Shared<rhai::Module>> = std::sync::OnceLock::new();
    let mut e = Engine::new_raw();
    e.set_max_strings_interned(256);
    e.on_print(|s| println!("{s}"));
    e.on_debug(|s, _, _| eprintln!("{s}"));
    e.register_global_module(
        STD.get_or_init(|| {
            use rhai::packages::Package;
            rhai::packages::StandardPackage::new().as_shared_module()
        })
        .clone(),
    );
    set_limits(&mut e);
    let mut res = ModuleResolversCollection::new();
    for p in module_paths(recipe_dir) {
        let mut r = FileModuleResolver::new_with_path(p);
        r.enable_cache(true);
        res.push(r);
    }
    e.set_module_resolver(res);
    register(&mut e);
    if let Some(flag) = interrupted {
        e.on_progress(move |_| {
            if flag.load(Ordering::Relaxed) {
                Some(Dynamic::from("interrupted (Ctrl-C)".to_string()))
            } else {
                None
            }
        });
    }
    e
}

/// Registers types and the primitive modules.
pub fn register(e: &mut Engine) {
    e.register_type_with_name::<Vars>("Vars")
        .register_indexer_get(vars_get)
        .register_fn("keys", |v: &mut Vars| -> rhai::Array {
            v.0.keys().map(|k| Dynamic::from(k.to_string())).collect()
        })
        .register_fn("contains", |v: &mut Vars, k: &str| v.0.contains_key(k))
        .register_fn("to_map", |v: &mut Vars| v.0.clone());
    e.register_type_with_name::<primitives::remote::HostRef>("Host");
    e.register_type_with_name::<crate::secrets::Secret>("Secret");
    for m in api_modules() {
        e.register_global_module(m);
    }
}

/// The primitive modules, in reference order (built once per process, then shared).
pub fn api_modules() -> Vec<rhai::Shared<rhai::Module>> {
    static MODS: std::sync::OnceLock<Vec<rhai::Shared<rhai::Module>>> = std::sync::OnceLock::new();
    MODS.get_or_init(build_api_modules).clone()
}

fn build_api_modules() -> Vec<rhai::Shared<rhai::Module>> {
    vec![
        rhai::exported_module!(primitives::command::api).into(),
        rhai::exported_module!(primitives::files::api).into(),
        rhai::exported_module!(primitives::packages::api).into(),
        rhai::exported_module!(primitives::services::api).into(),
        rhai::exported_module!(primitives::users::api).into(),
        rhai::exported_module!(primitives::facts::api).into(),
        rhai::exported_module!(primitives::remote::api).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_var_is_an_error_and_property_access_works() {
        let e = build(Path::new("."), None);
        let mut m = Map::new();
        m.insert("a".into(), 1_i64.into());
        let mut scope = rhai::Scope::new();
        scope.push_constant("vars", Vars(m));
        let ok: i64 = e
            .eval_with_scope(&mut scope, "vars.a + vars[\"a\"]")
            .unwrap_or(-1);
        assert_eq!(ok, 2);
        let err = e
            .eval_with_scope::<Dynamic>(&mut scope, "vars.ab")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown variable `ab`"), "{err}");
    }

    #[test]
    fn infinite_loop_is_stopped() {
        let e = build(Path::new("."), None);
        let r = e.run("loop { }");
        assert!(r.is_err());
    }
}
