//! What steps and probes return: a map whose fields read as `r.changed`, where a field that is
//! not there (`r.chagned`) is an error naming the fields it has, not a silent `()`.

use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};

/// A step's or a probe's result (`type_of` says "Result").
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Map);

impl Fields {
    pub fn dynamic(m: Map) -> Dynamic {
        Dynamic::from(Fields(m))
    }
}

fn get(f: &mut Fields, key: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    f.0.get(key).cloned().ok_or_else(|| {
        let mut known: Vec<&str> = f.0.keys().map(|k| k.as_str()).collect();
        known.sort();
        let hint = crate::hints::did_you_mean(key, known.iter().copied())
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        Box::new(EvalAltResult::ErrorRuntime(
            format!(
                "this result has no field `{key}`{hint}; it has: {}",
                known.join(", ")
            )
            .into(),
            Position::NONE,
        ))
    })
}

/// The fields every step's result has.
const STEP: &[&str] = &["changed", "skipped", "status"];

/// The fields the result of `call` can have, sorted, for the primitives that return a
/// [`Fields`] (`None` for any other function). `recipe check` holds `r.field` against it;
/// a field listed may still be missing at run time (a dry run skips `wait_for`'s command,
/// so it has no `stdout`): the run says so.
pub fn result_fields(call: &str) -> Option<Vec<&'static str>> {
    let extra: &[&str] = match call {
        "probe" => return Some(vec!["ok", "rc", "stderr", "stdout", "timed_out"]),
        "sh" => &["rc", "stdout", "stderr", "timed_out"],
        "wait_for" => &["stdout"],
        "file" | "template" => &["path", "sha256"],
        "download" => &["path", "sha256", "sha512"],
        "directory" | "unpack" => &["path"],
        "service" => &["active", "enabled"],
        "group" => &["gid"],
        "packages" => &["packages"],
        "user" | "daemon_reload" => &[],
        _ => return None,
    };
    let mut v: Vec<&str> = STEP.iter().chain(extra).copied().collect();
    v.sort();
    Some(v)
}

/// Registers the type: fields by `.name` or `["name"]`, and the map functions recipes use.
pub fn register(e: &mut Engine) {
    e.register_type_with_name::<Fields>("Result")
        .register_indexer_get(get)
        .register_indexer_set(|f: &mut Fields, k: &str, v: Dynamic| {
            f.0.insert(k.into(), v);
        })
        .register_fn("contains", |f: &mut Fields, k: &str| f.0.contains_key(k))
        .register_fn("keys", |f: &mut Fields| -> rhai::Array {
            f.0.keys().map(|k| Dynamic::from(k.to_string())).collect()
        })
        .register_fn("to_map", |f: &mut Fields| f.0.clone())
        .register_fn("to_string", |f: &mut Fields| {
            Dynamic::from_map(f.0.clone()).to_string()
        })
        .register_fn("to_debug", |f: &mut Fields| {
            format!("{:?}", Dynamic::from_map(f.0.clone()))
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_field_is_an_error_and_real_ones_read() {
        let mut e = Engine::new();
        register(&mut e);
        let mut m = Map::new();
        m.insert("changed".into(), true.into());
        m.insert("stdout".into(), "x\n".into());
        let mut scope = rhai::Scope::new();
        scope.push("r", Fields(m));
        for ok in [
            "r.changed",
            r#"r["stdout"] == "x\n""#,
            r#"r.stdout.contains("x")"#,
            r#""changed" in r && !r.contains("nope")"#,
        ] {
            let got = e.eval_with_scope::<bool>(&mut scope, ok);
            assert!(matches!(got, Ok(true)), "{ok}: {got:?}");
        }
        let s: String = e.eval_with_scope(&mut scope, "`${r}`").unwrap_or_default();
        assert!(s.contains("changed") && s.contains("true"), "{s}");
        let err = e
            .eval_with_scope::<Dynamic>(&mut scope, "if r.chagned { 1 } else { 0 }")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("no field `chagned` (did you mean `changed`?); it has: changed, stdout"),
            "{err}"
        );
    }
}
