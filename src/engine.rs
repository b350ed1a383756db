//! The Rhai engine recipes run in: limits, the module resolver, registered primitives, and variables.

use rhai::module_resolvers::{FileModuleResolver, ModuleResolversCollection};
use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cpu::script_cpu;
use crate::modules::module_paths;
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

/// The longest string a recipe may hold (variables included), in bytes.
pub const MAX_STRING_SIZE: usize = 16 * 1024 * 1024;

/// CPU time a script may spend on its own code (its primitives' work not counted). Recipes
/// only glue primitives together and use milliseconds; a runaway loop is stopped after this.
pub const SCRIPT_CPU_LIMIT: Duration = Duration::from_secs(1);

/// How many operations pass between two looks at the CPU clock (a system call).
const CPU_CHECK_EVERY: u64 = 256;

/// Stops a script at Ctrl-C, or when its own code has used [`SCRIPT_CPU_LIMIT`] of CPU:
/// the operations limit alone lets a loop whose every step costs more (an array re-measured
/// on each `push`) run for minutes.
fn watch(e: &mut Engine, interrupted: Option<Arc<AtomicBool>>) {
    let start = Mutex::new(Duration::ZERO);
    e.on_progress(move |ops| {
        if interrupted
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            return Some(Dynamic::from(crate::run::signals::reason()));
        }
        if ops <= 1 {
            if let Ok(mut s) = start.lock() {
                *s = script_cpu();
            }
        } else if ops % CPU_CHECK_EVERY == 0 {
            let began = start.lock().map(|s| *s).unwrap_or_default();
            let used = script_cpu().saturating_sub(began);
            if used > SCRIPT_CPU_LIMIT {
                return Some(Dynamic::from(format!(
                    "CPU limit: the recipe's own code ran for over {} s of CPU after {ops} operations \
                     (a runaway loop?); recipes should leave heavy work to commands on the host (sh)",
                    SCRIPT_CPU_LIMIT.as_secs()
                )));
            }
        }
        None
    });
}

/// Limits that stop runaway recipes (infinite loops, deep recursion, huge strings).
pub fn set_limits(e: &mut Engine) {
    // About half a second of a tight loop; SCRIPT_CPU_LIMIT catches loops of costly steps.
    e.set_max_operations(6_000_000);
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
    watch(&mut e, interrupted);
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
    primitives::fields::register(e);
    crate::secret_ops::register(e);
    for m in api_modules() {
        e.register_global_module(m);
    }
}

/// The primitive modules, in reference order (built once per process, then shared).
pub fn api_modules() -> Vec<rhai::Shared<rhai::Module>> {
    static MODS: std::sync::OnceLock<Vec<rhai::Shared<rhai::Module>>> = std::sync::OnceLock::new();
    MODS.get_or_init(build_api_modules).clone()
}

/// The metadata (names, signatures, doc comments) of the functions one API module registers,
/// as Rhai's JSON (`{"functions": [...]}`); empty when it cannot be made.
pub fn module_metadata(m: rhai::Shared<rhai::Module>) -> serde_json::Value {
    let mut e = Engine::new_raw();
    e.register_type_with_name::<primitives::remote::HostRef>("Host");
    e.register_type_with_name::<crate::secrets::Secret>("Secret");
    e.register_global_module(m);
    e.gen_fn_metadata_to_json(false)
        .ok()
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default()
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

/// A registered function's Rust signature as a script writer reads it (`Result<T, ..>` as
/// `T`, `&str` as `String`).
pub fn short_type(t: &str) -> String {
    let mut t = t.to_string();
    // `Result<T, Box<EvalAltResult>>` reads as `T` to a script writer.
    while let Some(i) = t.find("Result<") {
        let Some(j) = t[i..].find(", Box<EvalAltResult>>") else {
            break;
        };
        let inner = t[i + 7..i + j].to_string();
        t = format!("{}{}{}", &t[..i], inner, &t[i + j + 21..]);
    }
    t.replace("&str", "String")
        .replace("&mut ", "")
        .replace("i64", "int")
        .replace("crate::secrets::Secret", "Secret")
        .replace("HostRef", "Host")
        .replace("get$", "property .")
        .replace("rhai::", "")
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
