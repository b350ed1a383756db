//! What a recipe can do with a secret: join it with `+` (the result is a secret), measure it,
//! and nothing that would turn it into text; text made of its placeholder is refused later,
//! before any host (see `secrets::refuse_placeholder`).

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, NativeCallContext, Position};
use std::any::TypeId;
use std::sync::Arc;

use crate::secrets::Secret;

/// The bytes `v` adds when joined with a secret by `+`.
fn piece(v: &Dynamic) -> Result<Vec<u8>, Box<EvalAltResult>> {
    if let Some(s) = v.read_lock::<Secret>() {
        return Ok(s.0.to_vec());
    }
    if let Some(s) = v.read_lock::<ImmutableString>() {
        return Ok(s.as_bytes().to_vec());
    }
    if v.is_char() || v.is_int() || v.is_float() || v.is_bool() {
        return Ok(v.to_string().into_bytes());
    }
    if v.is_unit() {
        return Ok(Vec::new());
    }
    if v.is_blob() {
        return Ok(v.clone().cast::<rhai::Blob>());
    }
    Err(Box::new(EvalAltResult::ErrorRuntime(
        format!(
            "a secret can be joined with `+` to text, numbers and other secrets, not to a {}: \
             join the parts one by one",
            v.type_name().rsplit("::").next().unwrap_or("value")
        )
        .into(),
        Position::NONE,
    )))
}

fn join(a: &Dynamic, b: &Dynamic) -> Result<Secret, Box<EvalAltResult>> {
    let mut bytes = piece(a)?;
    bytes.extend(piece(b)?);
    Ok(Secret(Arc::new(bytes)))
}

/// `text += secret` makes the variable a secret (Rhai's own `+=` for text would append the
/// placeholder).
fn append_raw(_: NativeCallContext, args: &mut [&mut Dynamic]) -> Result<(), Box<EvalAltResult>> {
    let joined = join(args[0], args[1])?;
    *args[0] = Dynamic::from(joined);
    Ok(())
}

/// Registers the operators and functions of secrets.
pub fn register(e: &mut Engine) {
    let s = TypeId::of::<Secret>();
    let t = TypeId::of::<ImmutableString>();
    // Exact pairs first: Rhai's text `+` takes (string, any) and would win over (any, secret).
    e.register_fn("+", |a: Secret, b: Secret| {
        join(&Dynamic::from(a), &Dynamic::from(b))
    })
    .register_fn("+", |a: ImmutableString, b: Secret| {
        join(&a.into(), &Dynamic::from(b))
    })
    .register_fn("+", |a: Secret, b: ImmutableString| {
        join(&Dynamic::from(a), &b.into())
    })
    .register_fn("+", |a: Secret, b: Dynamic| join(&Dynamic::from(a), &b))
    .register_fn("+", |a: Dynamic, b: Secret| join(&a, &Dynamic::from(b)))
    .register_raw_fn("+=", [t, s], append_raw)
    .register_raw_fn("append", [t, s], append_raw)
    .register_fn("len", |a: &mut Secret| a.0.len() as i64)
    .register_fn("is_empty", |a: &mut Secret| a.0.is_empty());
}

/// Template variables as JSON, a secret as its real text; true when any secret was among
/// them (then the rendered file is a secret too).
pub fn template_json(vars: rhai::Map) -> Result<(serde_json::Value, bool), String> {
    fn walk(v: Dynamic, secret: &mut bool) -> Result<Dynamic, String> {
        if v.is::<Secret>() {
            let s = v.cast::<Secret>();
            *secret = true;
            return String::from_utf8(s.0.to_vec())
                .map(Dynamic::from)
                .map_err(|_| {
                    format!(
                        "template variables: a secret of {} bytes is not UTF-8 text; write binary \
                     secrets with file(path, #{{content: s}})",
                        s.0.len()
                    )
                });
        }
        if v.is_map() {
            let m = v.cast::<rhai::Map>();
            let mut out = rhai::Map::new();
            for (k, x) in m {
                out.insert(k, walk(x, secret)?);
            }
            return Ok(Dynamic::from_map(out));
        }
        if v.is_array() {
            let a = v.cast::<rhai::Array>();
            let out: Result<rhai::Array, String> = a.into_iter().map(|x| walk(x, secret)).collect();
            return Ok(Dynamic::from_array(out?));
        }
        Ok(v)
    }
    let mut secret = false;
    let v = walk(Dynamic::from_map(vars), &mut secret)?;
    let json = rhai::serde::from_dynamic(&v).map_err(|e| format!("template variables: {e}"))?;
    Ok((json, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::describe_bytes;

    fn eval(script: &str) -> Result<Dynamic, String> {
        let mut e = Engine::new();
        e.register_type_with_name::<Secret>("Secret");
        e.register_fn("secret", |s: &str| Secret(Arc::new(s.as_bytes().to_vec())));
        e.register_fn("to_string", |s: &mut Secret| s.describe());
        e.register_fn("to_debug", |s: &mut Secret| s.describe());
        register(&mut e);
        e.eval::<Dynamic>(script).map_err(|e| e.to_string())
    }

    fn bytes(d: Dynamic) -> Vec<u8> {
        assert!(d.is::<Secret>(), "not a secret: {}", d.type_name());
        d.cast::<Secret>().0.to_vec()
    }

    #[test]
    fn plus_keeps_a_secret_on_either_side() {
        for (script, want) in [
            (
                r#"let s = secret("hunter2"); "password=" + s + "\n""#,
                "password=hunter2\n",
            ),
            (r#"let s = secret("ab"); s + s"#, "abab"),
            (r#"let s = secret("x"); s + 1 + 'c' + true"#, "x1ctrue"),
            (r#"let s = secret("x"); 7 + s"#, "7x"),
            (
                r#"let s = secret("x"); let t = "a"; t += s; t += "b"; t"#,
                "axb",
            ),
            (r#"let s = secret("x"); let t = "a"; t.append(s); t"#, "ax"),
            (r#"let s = secret("x"); s += "y"; s"#, "xy"),
            (
                r#"let s = secret("x"); let t = "p="; t += s + "!"; t"#,
                "p=x!",
            ),
            (
                r#"let s = secret("x"); let m = #{k: "a"}; m.k += s; m.k"#,
                "ax",
            ),
            (
                r#"let s = secret("x"); let a = ["a"]; a[0] += s; a[0]"#,
                "ax",
            ),
        ] {
            let got = eval(script).unwrap_or_else(|e| panic!("{script}: {e}"));
            assert_eq!(bytes(got), want.as_bytes(), "{script}");
        }
    }

    #[test]
    fn text_made_from_a_secret_is_its_placeholder_and_is_refused() {
        let p = describe_bytes(b"hunter2");
        for script in [
            r#"let s = secret("hunter2"); `password=${s}`"#,
            r#"let s = secret("hunter2"); s.to_string()"#,
            r#"let s = secret("hunter2"); [s].to_string()"#,
            r#"let s = secret("hunter2"); #{a: s}.to_string()"#,
        ] {
            let got = eval(script).unwrap_or_else(|e| panic!("{script}: {e}"));
            let text = got.into_string().unwrap_or_default();
            assert!(text.contains(&p), "{script}: {text}");
            assert!(!text.contains("hunter2"), "{script}: {text}");
            assert!(crate::secrets::refuse_placeholder("x", text.as_bytes()).is_err());
        }
    }

    #[test]
    fn joining_with_a_map_is_refused() {
        let err = eval(r#"let s = secret("x"); s + #{a: 1}"#).unwrap_err();
        assert!(err.contains("join the parts"), "{err}");
    }
}
