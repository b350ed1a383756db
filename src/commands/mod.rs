//! The commands of the CLI, free of clap types: `run` (and its `--via` form) in their own
//! files; check, list, facts and doc here.

mod node;
pub mod run;
pub mod via;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::errors::{failed, usage, Error};
use crate::host::ConnConfig;

/// `recipe check`: compile each recipe and evaluate its declarations; exit 2 on any error.
pub fn check(recipes: &[String]) -> Result<(), Error> {
    let mut bad = 0;
    for r in recipes {
        let path = match crate::recipe::resolve(r) {
            Ok(p) => p,
            Err(e) => {
                eprint!("{}", usage(e).render().unwrap_or_default());
                bad += 1;
                continue;
            }
        };
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let engine = crate::engine::build(&dir, None);
        match crate::recipe::load(&engine, &path) {
            Ok(rec) => {
                for w in &rec.warnings {
                    eprint!("{}", w.render_warning());
                }
                // Imports are resolved at run time; check them now so typos show here.
                let mut ok = true;
                for m in import_names(&rec.ast) {
                    let res = engine.module_resolver().resolve(
                        &engine,
                        Some(&path.display().to_string()),
                        &m,
                        rhai::Position::NONE,
                    );
                    if let Err(e) = res {
                        eprint!(
                            "{}",
                            crate::errors::locate_eval(&e, &path.display().to_string()).render()
                        );
                        ok = false;
                    }
                }
                if ok {
                    println!("{}: ok ({} variables)", path.display(), rec.vars.len());
                    // Where each download's checksum comes from (unpinned ones are refused
                    // at run time unless the site says "unverified").
                    let mut so = std::io::stdout().lock();
                    for d in &rec.downloads {
                        let _ = writeln!(
                            so,
                            "  {}:{}:{}: {}",
                            d.source.as_deref().unwrap_or("?"),
                            d.line,
                            d.column,
                            d.message
                        );
                    }
                } else {
                    bad += 1;
                }
            }
            Err(e) => {
                eprint!("{}", e.render());
                bad += 1;
            }
        }
    }
    if bad > 0 {
        Err(Error::Reported)
    } else {
        Ok(())
    }
}

fn import_names(ast: &rhai::AST) -> Vec<String> {
    // `import "x" as y;` at top level: scan the source-independent way Rhai exposes.
    let mut v = Vec::new();
    ast.walk(&mut |nodes| {
        if let Some(rhai::ASTNode::Stmt(rhai::Stmt::Import(x, _))) = nodes.last() {
            if let rhai::Expr::StringConstant(s, _) = &x.0 {
                v.push(s.to_string());
            }
        }
        true
    });
    v
}

/// `recipe list`: each recipe's doc line and variables with defaults.
pub fn list(dir: Option<PathBuf>) -> Result<(), Error> {
    let dir = dir.unwrap_or_else(|| PathBuf::from("recipes"));
    let rhai_files = |d: &std::path::Path| -> std::io::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(d)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .collect())
    };
    let mut files: Vec<PathBuf> = match rhai_files(&dir) {
        Ok(v) => v,
        Err(e) => return Err(usage(format!("cannot read {}: {e}", dir.display()))),
    };
    // Recipes one folder down too (recipes/samples/).
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for sub in rd.filter_map(|e| e.ok().map(|e| e.path())) {
            if sub.is_dir() {
                files.extend(rhai_files(&sub).unwrap_or_default());
            }
        }
    }
    files.sort();
    let mut status = Ok(());
    for f in files {
        let here = f.parent().unwrap_or(&dir);
        let engine = crate::engine::build(here, None);
        let name = f.strip_prefix(&dir).unwrap_or(&f).display().to_string();
        match crate::recipe::load(&engine, &f) {
            Ok(r) => {
                println!("{name}  {}", summary(&r.doc));
                // Secret-named defaults (`*_token`, ...) are not shown: a listing is pasted
                // into tickets and chats.
                for (n, v, doc) in &r.vars {
                    let v = crate::vars::shown(n, v);
                    if doc.is_empty() {
                        println!("    {n} = {v}");
                    } else {
                        println!("    {n} = {v}    # {doc}");
                    }
                }
            }
            Err(e) => {
                eprint!("{}", e.render());
                status = Err(Error::Reported);
            }
        }
    }
    status
}

/// The first sentence of a recipe's documentation, whatever the line wrapping; the whole
/// first paragraph when no sentence ends in it.
pub fn summary(doc: &str) -> String {
    // Indented lines are usage examples (`  recipe run ...`): not part of the prose.
    let para: Vec<&str> = doc
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("  "))
        .map(str::trim)
        .collect();
    if para.is_empty() {
        return "(no documentation)".into();
    }
    let text = para.join(" ");
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c != '.' {
            continue;
        }
        match chars.get(i + 1) {
            None => return text,
            // "e.g." and "1.3" are not the end of a sentence; ". Next" is.
            Some(' ') if chars.get(i + 2).is_some_and(|n| n.is_uppercase()) => {
                return chars[..=i].iter().collect();
            }
            _ => {}
        }
    }
    text
}

/// `recipe facts`: one host's facts as JSON.
pub fn facts(host: Option<String>, inv: Option<PathBuf>, conn: ConnConfig) -> Result<(), Error> {
    let hosts: Vec<String> = host.into_iter().collect();
    let (inv, targets) = crate::run::targets(&inv, &hosts, &[], conn.local)?;
    if !conn.local {
        crate::inventory::check_resolvable(&targets).map_err(usage)?;
    }
    let t = targets
        .into_iter()
        .next()
        .ok_or_else(|| usage("give --host NAME or --local"))?;
    let rt = crate::run::runtime()?;
    let hosts = crate::host::Hosts::new(std::sync::Arc::new(inv), &conn, conn.local);
    let res = rt.block_on(async {
        let c = hosts.connection(&t).await?;
        let out = c
            .exec(
                crate::primitives::facts::FACTS_CMD,
                None,
                Some(std::time::Duration::from_secs(60)),
            )
            .await;
        c.close().await;
        out
    });
    let out = res.map_err(|e| failed(format!("{}: {e}", t.name)))?;
    let mut m = crate::primitives::facts::parse(&out.stdout_str());
    m.insert("name".into(), t.name.clone().into());
    let json: serde_json::Value =
        rhai::serde::from_dynamic(&rhai::Dynamic::from_map(m)).unwrap_or_default();
    println!(
        "{}",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
    Ok(())
}

/// The Markdown reference of every primitive, from the doc comments of the registered functions.
pub fn reference() -> String {
    let titles = [
        ("Commands", "command"),
        ("Files", "files"),
        ("Packages", "packages"),
        ("Services", "services"),
        ("Users and groups", "users"),
        ("Facts", "facts"),
        ("Other hosts, output and secrets", "remote"),
    ];
    let mut out = String::from(
        "# Recipe primitives\n\n<!-- Generated by `recipe doc` from the doc comments in src/primitives/; do not edit. -->\n\n\
         Every state primitive checks first, changes only what differs, reports `ok` or `changed`, and returns a result\n\
         with at least `changed` (bool) and `status` (\"ok\", \"changed\", \"skipped\"); reading a field a result does\n\
         not have (`r.chagned`) is an error that names the fields it has, found by `recipe check` where a variable\n\
         holds a primitive's result (`let r = sh(..); if r.chagned`) and by the run elsewhere. Options are a map as the last\n\
         argument; an unknown option, or a value of the wrong type, is an error that `recipe check` finds where the\n\
         map is written out (a mode is a string: `mode: \"0644\"`; the integer 644 is refused, it would be mode 01204).\n\
         Variables are read as `vars.name`.\n\n\
         Strings: `\"...\"` reads escapes (`\"a\\n\"` ends in a line break); a backtick string fills in `${...}` but\n\
         reads no escapes, so `` `${vars.motd}\\n` `` ends in a backslash and an `n`. Write `` `${vars.motd}` + \"\\n\" ``,\n\
         or put a real line break inside the backticks. `recipe check` warns about `\\n`, `\\t`, `\\r` and `\\\"` in\n\
         a backtick string, except in a command handed to the shell (`sh`, `probe`, `wait_for` and their guards).\n\n",
    );
    for (m, (title, _)) in crate::engine::api_modules().into_iter().zip(titles) {
        out.push_str(&format!("## {title}\n\n"));
        let json = crate::engine::module_metadata(m);
        let mut fns: Vec<(String, String)> = json["functions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|f| {
                let sig = f["signature"].as_str().unwrap_or("").to_string();
                let doc = f["docComments"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str())
                            .flat_map(|c| c.lines())
                            .map(|l| {
                                l.trim_start()
                                    .trim_start_matches("///")
                                    .strip_prefix(' ')
                                    .unwrap_or(l.trim_start().trim_start_matches("///"))
                                    .to_string()
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                (sig, doc)
            })
            .collect();
        fns.sort();
        for (sig, doc) in fns {
            out.push_str(&format!(
                "### `{}`\n\n{}\n\n",
                crate::engine::short_type(&sig),
                doc.trim()
            ));
            // The option types, from the same definition the run and `recipe check` use.
            let name = sig.split('(').next().unwrap_or("");
            if crate::engine::short_type(&sig).contains("opts: Map") {
                if let Some(fields) = crate::primitives::options::of(name) {
                    out.push_str(&format!(
                        "Option types: {}.\n\n",
                        crate::primitives::options::describe(&fields)
                    ));
                }
            }
        }
    }
    out
}

/// `recipe doc`: print the reference, or write definition files.
pub fn doc(definitions: Option<PathBuf>) -> Result<(), Error> {
    match definitions {
        None => {
            print!("{}", reference());
            Ok(())
        }
        Some(dir) => {
            let engine = crate::engine::build(Path::new("."), None);
            match engine
                .definitions()
                .include_standard_packages(false)
                .write_to_dir(&dir)
            {
                Ok(()) => {
                    println!("wrote Rhai definitions into {}", dir.display());
                    Ok(())
                }
                Err(e) => Err(failed(format!(
                    "cannot write definitions into {}: {e}",
                    dir.display()
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn summary_is_the_first_sentence_across_wrapped_lines() {
        assert_eq!(
            summary("Installs MUNGE and makes sure it\nruns on every node. Then checks it.\nMore."),
            "Installs MUNGE and makes sure it runs on every node."
        );
        assert_eq!(
            summary("Slurm (seed 1.1, e.g. source). Next."),
            "Slurm (seed 1.1, e.g. source)."
        );
        assert_eq!(
            summary("No full stop\nhere\n\nSecond paragraph."),
            "No full stop here"
        );
        assert_eq!(summary(""), "(no documentation)");
        assert_eq!(
            summary("Does a thing on the master\n  recipe run x.rhai --host m"),
            "Does a thing on the master"
        );
    }
}
