//! Variable values: declared defaults < inventory (inventory, group, host) < `--var`, each
//! checked against the type of its default.

use rhai::{Dynamic, Map};

use crate::recipe::Recipe;

/// The last word of a name that makes its value a secret (docs/security.md).
pub const SECRET_WORDS: &[&str] = &[
    "secret",
    "secrets",
    "password",
    "passwords",
    "passwd",
    "passphrase",
    "passphrases",
    "token",
    "tokens",
    "key",
    "apikey",
    "credential",
    "credentials",
];

/// Names whose values are secrets: never shown in any output. The name's last word (split at
/// `_`, `-`, `.` and lower-to-upper case changes: `db_password`, `apiKey`, `join-token`)
/// is one of [`SECRET_WORDS`]; `munge_key_file` is not a secret, `munge_key` is.
pub fn is_secret_name(name: &str) -> bool {
    let mut last = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if matches!(c, '_' | '-' | '.') || (c.is_uppercase() && prev_lower) {
            if !matches!(c, '_' | '-' | '.') {
                last.clear();
                last.push(c);
            } else {
                last.clear();
            }
        } else {
            last.push(c);
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
    }
    SECRET_WORDS.contains(&last.to_lowercase().as_str())
}

/// What output shows for a secret-named variable's value (its name is enough to find it).
pub const HIDDEN: &str = "<secret: hidden>";

/// `v` as messages and `recipe list` show it: strings quoted, and the value of a
/// secret-named variable (or of a secret-named key inside a map) replaced by [`HIDDEN`].
pub fn shown(name: &str, v: &Dynamic) -> String {
    if is_secret_name(name) && !v.is_unit() && !is_empty_string(v) {
        return HIDDEN.to_string();
    }
    if let Some(m) = v.read_lock::<Map>() {
        let items: Vec<String> = m
            .iter()
            .map(|(k, x)| format!("{:?}: {}", k.as_str(), shown(k, x)))
            .collect();
        return format!("#{{{}}}", items.join(", "));
    }
    if let Some(a) = v.read_lock::<rhai::Array>() {
        let items: Vec<String> = a.iter().map(|x| shown("", x)).collect();
        return format!("[{}]", items.join(", "));
    }
    if v.is_string() {
        return format!("{:?}", v.clone().into_string().unwrap_or_default());
    }
    v.to_string()
}

/// The values output must never show: every value of a secret-named variable (numbers
/// too), and of secret-named keys inside maps, at any depth.
pub fn secret_values(name: &str, v: &Dynamic) -> Vec<String> {
    fn walk(secret: bool, v: &Dynamic, out: &mut Vec<String>) {
        if let Some(m) = v.read_lock::<Map>() {
            for (k, x) in m.iter() {
                walk(secret || is_secret_name(k), x, out);
            }
        } else if let Some(a) = v.read_lock::<rhai::Array>() {
            for x in a.iter() {
                walk(secret, x, out);
            }
        } else if secret && !v.is_unit() {
            let s = v.to_string();
            if !s.is_empty() {
                out.push(s);
            }
        }
    }
    let mut out = Vec::new();
    walk(is_secret_name(name), v, &mut out);
    out
}

/// Whether a map (or list) default has a secret-named key somewhere inside: a value given
/// for it on the command line may spell that secret.
fn holds_secret_names(v: &Dynamic) -> bool {
    if let Some(m) = v.read_lock::<Map>() {
        return m
            .iter()
            .any(|(k, x)| is_secret_name(k) || holds_secret_names(x));
    }
    if let Some(a) = v.read_lock::<rhai::Array>() {
        return a.iter().any(holds_secret_names);
    }
    false
}

fn is_empty_string(v: &Dynamic) -> bool {
    v.read_lock::<rhai::ImmutableString>()
        .is_some_and(|s| s.is_empty())
}

/// Splits `KEY=VALUE`. Errors never repeat the value: it may be a secret.
pub fn parse_cli_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| {
        // A bare word is a name missing its value; anything else may be a value (a secret)
        // missing its name.
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
            format!("--var {s}: expected KEY=VALUE, like --var {s}=...")
        } else {
            format!(
                "--var: expected KEY=VALUE, got {} characters without `=` (not shown: it may be a secret)",
                s.chars().count()
            )
        }
    })?;
    let k = k.trim();
    if k.is_empty()
        || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || k.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!(
            "--var {k:?}=...: {k:?} is not a variable name (letters, digits, _)"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

fn kind(d: &Dynamic) -> &'static str {
    if d.is_int() {
        "integer"
    } else if d.is_float() {
        "number"
    } else if d.is_bool() {
        "boolean"
    } else if d.is_string() {
        "string"
    } else if d.is_array() {
        "list"
    } else if d.is_map() {
        "map"
    } else if d.is_unit() {
        "()"
    } else {
        "value"
    }
}

/// Converts a command-line string to the type of the default.
pub fn from_cli(name: &str, default: &Dynamic, raw: &str) -> Result<Dynamic, String> {
    let value = if is_secret_name(name) || holds_secret_names(default) {
        HIDDEN.to_string()
    } else {
        raw.to_string()
    };
    let default_shown = shown(name, default);
    let bad = |what: &str| {
        format!("--var {name}={value}: expected {what} (the default is {default_shown})")
    };
    if default.is_int() {
        return raw
            .trim()
            .parse::<i64>()
            .map(Dynamic::from)
            .map_err(|_| bad("an integer"));
    }
    if default.is_float() {
        return raw
            .trim()
            .parse::<f64>()
            .map(Dynamic::from)
            .map_err(|_| bad("a number"));
    }
    if default.is_bool() {
        return match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true.into()),
            "false" | "no" | "0" | "off" => Ok(false.into()),
            _ => Err(bad("true or false")),
        };
    }
    if default.is_array() || default.is_map() {
        let t = raw.trim();
        if t.starts_with('[') || t.starts_with('{') {
            let doc = format!("v = {t}");
            let v: toml::Table = toml::from_str(&doc)
                .map_err(|e| bad(&format!("a TOML {} ({})", kind(default), e.message())))?;
            let j = serde_json::to_value(v.get("v")).map_err(|e| e.to_string())?;
            let d = rhai::serde::to_dynamic(j).map_err(|e| e.to_string())?;
            if kind(&d) != kind(default) {
                return Err(bad(&format!("a {}", kind(default))));
            }
            return Ok(d);
        }
        if default.is_array() {
            let a: rhai::Array = t
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Dynamic::from(s.to_string()))
                .collect();
            return Ok(a.into());
        }
        return Err(bad("a TOML inline table like {a = 1}"));
    }
    Ok(Dynamic::from(raw.to_string()))
}

/// Converts an inventory value, checking it against the default's type.
pub fn from_inventory(
    name: &str,
    default: &Dynamic,
    v: &serde_json::Value,
    host: &str,
) -> Result<Dynamic, String> {
    let d = rhai::serde::to_dynamic(v)
        .map_err(|e| format!("inventory variable {name} for {host}: {e}"))?;
    let ok = kind(&d) == kind(default) || (default.is_float() && d.is_int()) || default.is_unit();
    if !ok {
        return Err(format!(
            "inventory variable {name} for host {host} is a {}, but the recipe's default ({}) is a {}",
            kind(&d),
            shown(name, default),
            kind(default)
        ));
    }
    if default.is_float() && d.is_int() {
        return Ok(Dynamic::from(d.as_int().unwrap_or(0) as f64));
    }
    Ok(d)
}

/// Checks `--var` names against the declaration before any host is touched.
pub fn check_cli(
    recipe: &Recipe,
    cli: &[(String, String)],
) -> Result<Vec<(String, Dynamic)>, String> {
    let mut out = Vec::new();
    for (k, raw) in cli {
        let Some((_, def, _)) = recipe.vars.iter().find(|(n, _, _)| n == k) else {
            let known: Vec<&str> = recipe.vars.iter().map(|(n, _, _)| n.as_str()).collect();
            let hint = known
                .iter()
                .find(|n| close(n, k))
                .map(|n| format!(" (did you mean {n}?)"))
                .unwrap_or_default();
            return Err(format!(
                "--var {k}: {} declares no variable {k}{hint}; declared: {}",
                recipe.name,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        out.push((k.clone(), from_cli(k, def, raw)?));
    }
    Ok(out)
}

fn close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(usize::MAX) <= 2
}

/// The final variables of one host.
pub fn for_host(
    recipe: &Recipe,
    host: &str,
    inv: &crate::inventory::Vars,
    cli: &[(String, Dynamic)],
) -> Result<Map, String> {
    let mut m = Map::new();
    for (k, def, _) in &recipe.vars {
        let v = match inv.get(k) {
            Some(j) => from_inventory(k, def, j, host)?,
            None => def.clone(),
        };
        // A value the engine would refuse at its first use is refused here, before any host.
        let len = v
            .read_lock::<rhai::ImmutableString>()
            .map_or(0, |s| s.len());
        if len > crate::engine::MAX_STRING_SIZE {
            return Err(format!(
                "inventory variable {k} for host {host} is {len} bytes; a recipe value may hold at most {} MiB",
                crate::engine::MAX_STRING_SIZE >> 20
            ));
        }
        m.insert(k.as_str().into(), v);
    }
    for (k, v) in cli {
        m.insert(k.as_str().into(), v.clone());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_values_take_the_default_type() {
        assert_eq!(
            from_cli("n", &Dynamic::from(1_i64), "42")
                .ok()
                .and_then(|d| d.as_int().ok()),
            Some(42)
        );
        assert!(from_cli("n", &Dynamic::from(1_i64), "x").is_err());
        assert_eq!(
            from_cli("b", &Dynamic::from(false), "yes")
                .ok()
                .and_then(|d| d.as_bool().ok()),
            Some(true)
        );
        let a = from_cli("a", &Dynamic::from(rhai::Array::new()), "w1, w2").ok();
        assert_eq!(
            a.map(|d| d.into_array().map(|a| a.len()).unwrap_or(0)),
            Some(2)
        );
        let a = from_cli("a", &Dynamic::from(rhai::Array::new()), "[1, 2, 3]").ok();
        assert_eq!(
            a.map(|d| d.into_array().map(|a| a.len()).unwrap_or(0)),
            Some(3)
        );
    }

    #[test]
    fn cli_var_syntax() {
        assert!(parse_cli_var("a=b=c").is_ok_and(|(k, v)| k == "a" && v == "b=c"));
        assert!(parse_cli_var("novalue").is_err());
        assert!(parse_cli_var("bad name=1").is_err());
        assert!(parse_cli_var("=1").is_err());
    }

    #[test]
    fn close_names() {
        assert!(close("munge_uid", "munge_iud"));
        assert!(!close("munge_uid", "slurm_conf"));
    }

    #[test]
    fn secret_values_are_never_in_messages() {
        let e = from_cli("api_token", &Dynamic::from(1_i64), "S3CRET-VALUE").unwrap_err();
        assert!(!e.contains("S3CRET"), "{e}");
        let mut d = Map::new();
        d.insert("root_password".into(), Dynamic::from("old-pass-1"));
        let e = from_cli(
            "db",
            &Dynamic::from_map(d),
            "{root_password = \"new-pass-2\"",
        )
        .unwrap_err();
        assert!(
            !e.contains("old-pass-1") && !e.contains("new-pass-2"),
            "{e}"
        );
        let e = parse_cli_var("S3CRET-VALUE").unwrap_err();
        assert!(!e.contains("S3CRET"), "{e}");
        let e = parse_cli_var("bad key=S3CRET-VALUE").unwrap_err();
        assert!(!e.contains("S3CRET"), "{e}");
        let mut m = Map::new();
        m.insert("admin_password".into(), Dynamic::from("hunter2-x"));
        m.insert("user".into(), Dynamic::from("ops"));
        let s = shown("db", &Dynamic::from_map(m));
        assert!(!s.contains("hunter2") && s.contains("ops"), "{s}");
        assert_eq!(shown("api_token", &Dynamic::from("")), "\"\"");
        assert_eq!(shown("api_token", &Dynamic::from("x1")), HIDDEN);
    }

    #[test]
    fn secret_values_are_found_at_any_depth() {
        let mut inner = Map::new();
        inner.insert("root_password".into(), Dynamic::from("pw-nested-1"));
        inner.insert("port".into(), Dynamic::from(5432_i64));
        let mut m = Map::new();
        m.insert("db".into(), Dynamic::from_map(inner));
        assert_eq!(
            secret_values("cfg", &Dynamic::from_map(m)),
            vec!["pw-nested-1"]
        );
        assert_eq!(
            secret_values("api_token", &Dynamic::from(123456789_i64)),
            vec!["123456789"]
        );
        assert!(secret_values("port", &Dynamic::from(22_i64)).is_empty());
    }

    #[test]
    fn secret_names() {
        for n in [
            "k8s_join_token",
            "api_key",
            "private_key",
            "munge_key",
            "passphrase",
            "ssh_passphrase",
            "tokens",
            "join_tokens",
            "secret",
            "DB_PASSWORD",
            "db-password",
            "apiKey",
            "apikey",
            "aws.secret",
            "ldap_passwd",
            "registry_credentials",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in [
            "munge_key_path",
            "munge_key_file",
            "keyboard",
            "monkey",
            "port",
            "token_ttl",
            "password_file",
            "",
            "hosts",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
    }
}
