//! docs/contracts.md is kept true: its command table lists exactly the subcommands and flags
//! clap defines, and a real run's JSON events have exactly the documented fields. Also the
//! generated extras: completions, the man page, `--version` with the commit.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};

fn contracts() -> String {
    std::fs::read_to_string(fixture("../../docs/contracts.md")).expect("docs/contracts.md")
}

/// `--long` flags in a piece of text.
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(k) = text[i..].find("--") {
        let start = i + k + 2;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'-') {
            end += 1;
        }
        if end > start {
            out.insert(text[start..end].to_string());
        }
        i = end.max(start);
    }
    out
}

/// The table's rows: command path ("run", "sandbox up") -> flags.
fn documented_commands() -> BTreeMap<String, BTreeSet<String>> {
    let mut m = BTreeMap::new();
    for line in contracts().lines() {
        let Some(rest) = line.strip_prefix("| `recipe ") else {
            continue;
        };
        let (cmd, flags) = rest.split_once('`').unwrap_or((rest, ""));
        let path: Vec<&str> = cmd
            .split_whitespace()
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase()))
            .collect();
        m.insert(path.join(" "), flags_in(flags));
    }
    m
}

fn clap_commands() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(c: &clap::Command, prefix: &str, out: &mut BTreeMap<String, BTreeSet<String>>) {
        let shown = c
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help");
        for sub in shown {
            let path = format!("{prefix}{}", sub.get_name()).trim().to_string();
            if sub.has_subcommands() {
                walk(sub, &format!("{path} "), out);
                continue;
            }
            let flags = sub
                .get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long())
                .filter(|l| *l != "help" && *l != "version")
                .map(str::to_string)
                .collect();
            out.insert(path, flags);
        }
    }
    let mut out = BTreeMap::new();
    let mut c = recipe::cli::command();
    c.build();
    walk(&c, "", &mut out);
    out
}

#[test]
fn the_command_table_matches_clap() {
    let doc = documented_commands();
    let cli = clap_commands();
    assert_eq!(
        doc.keys().collect::<Vec<_>>(),
        cli.keys().collect::<Vec<_>>(),
        "subcommands in docs/contracts.md vs clap"
    );
    for (cmd, flags) in &cli {
        assert_eq!(
            doc.get(cmd),
            Some(flags),
            "flags of `recipe {cmd}` in docs/contracts.md vs clap"
        );
    }
}

/// The documented fields of one event: (always, optional).
fn documented_fields(event: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = contracts();
    let start = text
        .find(&format!("### `{event}`"))
        .unwrap_or_else(|| panic!("no ### `{event}` section"));
    let mut always = BTreeSet::new();
    let mut optional = BTreeSet::new();
    for line in text[start..].lines().skip(1) {
        if line.starts_with('#') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        match cells[2] {
            "always" => always.insert(name),
            _ => optional.insert(name),
        };
    }
    (always, optional)
}

#[test]
fn json_events_have_exactly_the_documented_fields() {
    let tmp = tempfile::tempdir().expect("tmp");
    let base = tmp.path().display().to_string();
    let r = tmp.path().join("events.rhai");
    std::fs::write(
        &r,
        format!(
            "// Every kind of step event.\nfn defaults() {{ #{{}} }}\n\
             file(\"{base}/a\", #{{content: \"x\\n\"}});\n\
             file(\"{base}/a\", #{{content: \"x\\n\"}});\n\
             sh(\"true\", #{{creates: \"{base}/a\"}});\n\
             sh(\"exit 3\");\n"
        ),
    )
    .expect("write");
    let out = Test::new()
        .arg("run")
        .arg(&r)
        .args(["--local", "--json", "--diff"])
        .run()
        .expect_code(1);
    let mut ev = out.events();
    assert_eq!(recaps(&ev).len(), 1);
    // `skipped`: a wait_for in a dry run.
    std::fs::write(
        &r,
        "// A skipped step.\nfn defaults() { #{} }\nwait_for(\"true\", #{timeout: 5});\n",
    )
    .expect("write");
    let out = Test::new()
        .arg("run")
        .arg(&r)
        .args(["--local", "--json", "--dry-run"])
        .run()
        .expect_success();
    ev.extend(out.events());
    let mut statuses = BTreeSet::new();
    for e in &ev {
        let kind = e["event"].as_str().unwrap_or("");
        let (always, optional) = documented_fields(kind);
        assert!(!always.is_empty(), "event {kind:?} is not documented: {e}");
        let keys: BTreeSet<String> = e
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for k in &always {
            assert!(keys.contains(k), "{kind} event without `{k}`: {e}");
        }
        for k in &keys {
            assert!(
                always.contains(k) || optional.contains(k),
                "{kind} event has the undocumented field `{k}`: {e}"
            );
        }
        if kind == "step" {
            statuses.insert(e["status"].as_str().unwrap_or("").to_string());
        }
    }
    let want: BTreeSet<String> = ["changed", "ok", "skipped", "failed"]
        .map(String::from)
        .into();
    assert_eq!(statuses, want, "{ev:?}");
}

#[test]
fn completions_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Test::new()
            .args(["completions", shell])
            .run()
            .expect_success();
        let text = &out.stdout;
        for sub in [
            "run",
            "check",
            "list",
            "facts",
            "doc",
            "sandbox",
            "completions",
            "man",
        ] {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(
            text.contains("dry-run"),
            "{shell} completions lack --dry-run"
        );
    }
}

#[test]
fn the_man_page_is_generated() {
    let out = Test::new().arg("man").run().expect_success();
    let text = &out.stdout;
    assert!(
        text.starts_with(".ie") || text.contains(".TH recipe"),
        "{text}"
    );
    for sub in ["run", "check", "list", "facts", "completions", "man"] {
        assert!(text.contains(&format!("recipe\\-{sub}")), "man lacks {sub}");
    }
    let dir = tempfile::tempdir().expect("tmp");
    Test::new()
        .args(["man", "--dir"])
        .arg(dir.path())
        .run()
        .expect_success();
    let run = std::fs::read_to_string(dir.path().join("recipe-run.1")).unwrap_or_default();
    assert!(run.contains("dry\\-run"), "recipe-run.1: {run}");
}

#[test]
fn version_names_the_commit() {
    let out = Test::new().arg("--version").run();
    let text = &out.stdout;
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    // A build from a git checkout names its commit; elsewhere the version alone is fine.
    if let Some(h) = head {
        assert!(text.contains(&format!("(commit {h})")), "{text} (HEAD {h})");
    }
}
