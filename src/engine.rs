//! The Rhai engine recipes run in: limits, module paths, registered primitives, and variables.

use rhai::module_resolvers::{FileModuleResolver, ModuleResolversCollection};
use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// CPU time a script may spend on its own code (its primitives' work not counted). Recipes
/// only glue primitives together and use milliseconds; a runaway loop is stopped after this.
pub const SCRIPT_CPU_LIMIT: Duration = Duration::from_secs(1);

/// How many operations pass between two looks at the CPU clock (a system call).
const CPU_CHECK_EVERY: u64 = 256;

thread_local! {
    /// CPU time this thread spent inside primitives (see [`native`]).
    static NATIVE_CPU: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// CPU time used by the calling thread so far.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Runs a primitive's work; its CPU time is not counted against [`SCRIPT_CPU_LIMIT`]
/// (diffs and checksums of big files are the primitive's cost, not a runaway script).
pub fn native<T>(f: impl FnOnce() -> T) -> T {
    let before = thread_cpu();
    let out = f();
    let spent = thread_cpu().saturating_sub(before);
    NATIVE_CPU.with(|c| c.set(c.get() + spent));
    out
}

/// The CPU time the script itself used on this thread: all of it less its primitives'.
fn script_cpu() -> Duration {
    thread_cpu().saturating_sub(NATIVE_CPU.with(Cell::get))
}

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
            return Some(Dynamic::from("interrupted (Ctrl-C)".to_string()));
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
