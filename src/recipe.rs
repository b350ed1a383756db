//! A recipe file: where it is, its doc block, its declared variables, and its compiled AST.

use rhai::{Dynamic, Engine, Scope, AST};
use std::path::{Path, PathBuf};

use crate::errors::{locate_eval, locate_parse, Located};

pub mod check;

/// A loaded and compiled recipe.
pub struct Recipe {
    pub path: PathBuf,
    pub name: String,
    pub doc: String,
    /// Declared variables in declaration order: name, default, doc comment.
    pub vars: Vec<(String, Dynamic, String)>,
    pub ast: AST,
    /// What `recipe check` and `run` warn about before any host (it runs, likely not as meant).
    pub warnings: Vec<Located>,
    /// Its `download(..)` calls and where each one's sha256 comes from (`recipe check`).
    pub downloads: Vec<Located>,
}

/// Finds a recipe: a path as given, else a bare name in `./recipes/` (with or without `.rhai`).
pub fn resolve(name: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(name);
    if p.is_file() {
        return Ok(p);
    }
    for cand in [format!("recipes/{name}"), format!("recipes/{name}.rhai")] {
        let c = PathBuf::from(&cand);
        if c.is_file() {
            return Ok(c);
        }
    }
    Err(format!(
        "recipe {name:?} not found (looked for {name}, recipes/{name}, recipes/{name}.rhai)"
    ))
}

/// The leading comment block, without the comment markers.
pub fn doc_of(text: &str) -> String {
    let mut out = Vec::new();
    for l in text.lines() {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix("//") {
            let rest = rest.trim_start_matches(['!', '/']);
            out.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
        } else if t.is_empty() && out.is_empty() {
            continue;
        } else {
            break;
        }
    }
    out.join("\n").trim().to_string()
}

/// `name: value, // doc` lines inside `fn defaults()`: the per-variable docs.
pub fn var_docs(text: &str) -> Vec<(String, String)> {
    let mut docs = Vec::new();
    let mut inside = false;
    let mut depth = 0i32;
    for l in text.lines() {
        let t = l.trim();
        if !inside {
            if t.starts_with("fn defaults") {
                inside = true;
                depth = 0;
            } else {
                continue;
            }
        }
        let code = strip_comment(t);
        depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
        if let Some((k, _)) = t.split_once(':') {
            let k = k.trim();
            if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                let doc = t[code.len()..].trim_start_matches('/').trim().to_string();
                docs.push((k.to_string(), doc));
            }
        }
        if inside && depth <= 0 && t.contains('}') {
            break;
        }
    }
    docs
}

/// The code part of a line: up to a `//` that is not inside a string literal.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let b: Vec<(usize, char)> = line.char_indices().collect();
    for (n, &(i, c)) in b.iter().enumerate() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '`' | '\'' => quote = Some(c),
            '/' if b.get(n + 1).map(|x| x.1) == Some('/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The map `fn defaults()` returns, if the recipe has one.
fn defaults(
    engine: &Engine,
    scope: &mut Scope,
    ast: &rhai::AST,
    shown: &str,
) -> Result<Option<rhai::Map>, Located> {
    let has_defaults = ast
        .iter_functions()
        .any(|f| f.name == "defaults" && f.params.is_empty());
    if !has_defaults {
        return Ok(None);
    }
    let opts = rhai::CallFnOptions::new()
        .eval_ast(false)
        .rewind_scope(true);
    let v: Dynamic = engine
        .call_fn_with_options(opts, scope, ast, "defaults", ())
        .map_err(|e| locate_eval(&e, shown))?;
    v.try_cast::<rhai::Map>().map(Some).ok_or_else(|| Located {
        message: "fn defaults() must return a map of variable names to default values".into(),
        source: Some(shown.to_string()),
        line: 0,
        column: 0,
        ..Default::default()
    })
}

/// The variables a recipe declares, without checking the rest of it (`None` if it does not
/// compile or its `defaults()` fails: checking that recipe says why).
pub fn declared(engine: &Engine, path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut scope = Scope::new();
    scope.push("vars", crate::engine::Vars::default());
    let ast = engine.compile_with_scope(&scope, &text).ok()?;
    let map = defaults(engine, &mut scope, &ast, &path.display().to_string()).ok()?;
    let mut names: Vec<String> = map
        .unwrap_or_default()
        .keys()
        .map(|k| k.to_string())
        .collect();
    names.sort();
    Some(names)
}

/// Reads, compiles (strict variables: `vars` is the only free name) and evaluates `defaults()`.
pub fn load(engine: &Engine, path: &Path) -> Result<Recipe, Located> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Located {
        message: format!("cannot read recipe: {e}"),
        source: Some(shown.clone()),
        line: 0,
        column: 0,
        ..Default::default()
    })?;
    let mut scope = Scope::new();
    // A variable, not a constant: the optimizer would inline a constant's (empty) value
    // wherever `vars` is passed as a whole, e.g. `f(vars)`.
    scope.push("vars", crate::engine::Vars::default());
    let mut ast = engine
        .compile_with_scope(&scope, &text)
        .map_err(|e| locate_parse(&e, &shown))?;
    ast.set_source(shown.clone());
    let mut vars = Vec::new();
    if let Some(map) = defaults(engine, &mut scope, &ast, &shown)? {
        let docs = var_docs(&text);
        let order: Vec<String> = docs.iter().map(|(k, _)| k.clone()).collect();
        let mut names: Vec<String> = map.keys().map(|k| k.to_string()).collect();
        names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(usize::MAX));
        for n in names {
            let doc = docs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, d)| d.clone())
                .unwrap_or_default();
            let val = map.get(n.as_str()).cloned().unwrap_or(Dynamic::UNIT);
            vars.push((n, val, doc));
        }
    }
    // Mistakes that would fail on every host are reported now, before any host is touched.
    let declared: Vec<String> = vars.iter().map(|(n, _, _)| n.clone()).collect();
    let findings = check::check(path, &text, &declared);
    let mut found = findings.errors.into_iter();
    if let Some(mut first) = found.next() {
        first.more = found.collect();
        return Err(first);
    }
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| shown.clone());
    Ok(Recipe {
        path: path.to_path_buf(),
        name,
        doc: doc_of(&text),
        vars,
        ast,
        warnings: findings.warnings,
        downloads: findings.downloads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_is_first_comment_block() {
        let d = doc_of("// Installs munge.\n// Second line.\n\nlet x = 1; // not doc\n");
        assert_eq!(d, "Installs munge.\nSecond line.");
    }

    #[test]
    fn var_docs_ignore_slashes_in_strings() {
        let t = "fn defaults() {\n  #{\n    url: \"https://x/y\", // where from\n  }\n}\n";
        assert_eq!(var_docs(t), vec![("url".into(), "where from".into())]);
    }

    #[test]
    fn var_docs_read_trailing_comments() {
        let t = "fn defaults() {\n  #{\n    munge_uid: 990, // UID of munge\n    path: \"/x\",\n  }\n}\nlet a = #{b: 1};\n";
        let d = var_docs(t);
        assert_eq!(
            d,
            vec![
                ("munge_uid".into(), "UID of munge".into()),
                ("path".into(), String::new())
            ]
        );
    }
}
