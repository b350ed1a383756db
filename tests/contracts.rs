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

/// `e` has every "always" field of its kind's table in docs/contracts.md and no other.
fn assert_documented(e: &serde_json::Value) {
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
    // `batch`, `batch_end` and the recap's `batch`: the same recipe as a rolling run.
    let out = Test::new()
        .arg("run")
        .arg(&r)
        .args(["--local", "--json", "--serial", "1"])
        .run()
        .expect_code(1);
    let rolling = out.events();
    for kind in ["batch", "batch_end"] {
        assert!(
            rolling.iter().any(|e| e["event"] == kind),
            "no {kind} event: {rolling:?}"
        );
    }
    ev.extend(rolling);
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
        assert_documented(e);
        if kind == "step" {
            statuses.insert(e["status"].as_str().unwrap_or("").to_string());
        }
    }
    let want: BTreeSet<String> = ["changed", "ok", "skipped", "failed"]
        .map(String::from)
        .into();
    assert_eq!(statuses, want, "{ev:?}");
}

/// `--json-progress 1`: while a step runs (it waits for a file the test creates once the
/// first `progress` event is out) every event has exactly the documented fields; the step's
/// own event still follows, and plain `--json` has no `progress` event.
#[test]
fn json_progress_events_report_running_steps() {
    let tmp = tempfile::tempdir().expect("tmp");
    let go = tmp.path().join("go");
    let r = tmp.path().join("held.rhai");
    std::fs::write(
        &r,
        format!(
            "sh(\"while [ ! -e {} ]; do sleep 0.1; done\", #{{name: \"held\"}});\n",
            go.display()
        ),
    )
    .expect("write");
    let out_file = tmp.path().join("events.jsonl");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_recipe"))
        .arg("run")
        .arg(&r)
        .args(["--local", "--json", "--json-progress", "1"])
        .stdout(std::fs::File::create(&out_file).expect("out"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("recipe runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&out_file)
        .unwrap_or_default()
        .contains("\"progress\"")
    {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("no progress event while the step was held");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::write(&go, "").expect("go");
    let st = child.wait().expect("wait");
    assert!(st.success());
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&out_file)
        .expect("events")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let first_step = kinds
        .iter()
        .position(|k| *k == "step")
        .expect("a step event");
    assert!(
        kinds[..first_step].contains(&"progress"),
        "progress comes while the step runs: {kinds:?}"
    );
    for e in &events {
        let kind = e["event"].as_str().unwrap_or("");
        assert_documented(e);
        if kind == "progress" {
            assert_eq!(e["host"], "local");
            assert_eq!(e["line"], 1);
            assert_eq!(e["op"], "sh");
            assert_eq!(e["target"], "held");
        }
    }
    // Opt-in only, and only with --json.
    let slow = tmp.path().join("slow.rhai");
    std::fs::write(&slow, "sh(\"sleep 2.5\");\n").expect("write");
    let out = Test::new()
        .arg("run")
        .arg(&slow)
        .args(["--local", "--json"])
        .run()
        .expect_success();
    assert!(!out.stdout.contains("progress"), "{}", out.stdout);
    Test::new()
        .arg("run")
        .arg(&r)
        .args(["--local", "--json-progress", "1"])
        .run()
        .expect_code(2);
}

/// What bash completes after `recipe WORDS`, from the generated script run by a real bash.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> BTreeSet<String> {
    let line = words.join(" ");
    let prog = format!(
        "source {s}; COMP_WORDS=(recipe {line}); COMP_CWORD={n}; _recipe recipe {cur} {prev}; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        s = script.display(),
        n = words.len(),
        cur = words
            .last()
            .copied()
            .filter(|w| !w.is_empty())
            .unwrap_or("''"),
        prev = if words.len() > 1 {
            words[words.len() - 2]
        } else {
            "recipe"
        },
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", &prog])
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{prog}: {}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// Bash, run for real, completes every subcommand clap defines and every flag of each; the
/// zsh and fish scripts (those shells are not installed here) hold each in their own syntax.
#[test]
fn completions_name_every_subcommand() {
    let cli = clap_commands();
    let dir = tempfile::tempdir().expect("tmp");
    let bash = dir.path().join("recipe.bash");
    let out = Test::new()
        .args(["completions", "bash"])
        .run()
        .expect_success();
    std::fs::write(&bash, &out.stdout).expect("write");
    let top: BTreeSet<String> = cli
        .keys()
        .map(|c| c.split(' ').next().unwrap_or("").to_string())
        .collect();
    let got = bash_completes(&bash, &[""]);
    for sub in &top {
        assert!(
            got.contains(sub),
            "bash does not complete `recipe {sub}`: {got:?}"
        );
    }
    for (cmd, flags) in &cli {
        let mut words: Vec<&str> = cmd.split(' ').collect();
        words.push("--");
        let got = bash_completes(&bash, &words);
        for f in flags {
            assert!(
                got.contains(&format!("--{f}")),
                "bash does not complete `recipe {cmd} --{f}`: {got:?}"
            );
        }
    }

    let zsh = Test::new()
        .args(["completions", "zsh"])
        .run()
        .expect_success()
        .stdout;
    let fish = Test::new()
        .args(["completions", "fish"])
        .run()
        .expect_success()
        .stdout;
    let mut c = recipe::cli::command();
    c.build();
    for sub in c.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        assert!(
            zsh.contains(&format!("'{name}:")),
            "zsh completions lack the subcommand {name}"
        );
        assert!(
            fish.contains(&format!("__fish_recipe_needs_command\" -f -a \"{name}\"")),
            "fish completions lack the subcommand {name}"
        );
    }
    for f in &cli["run"] {
        assert!(
            zsh.contains(&format!("--{f}=[")) || zsh.contains(&format!("--{f}[")),
            "zsh completions lack run --{f}"
        );
        assert!(
            fish.lines().any(|l| {
                l.starts_with("complete -c recipe -n \"__fish_recipe_using_subcommand run\"")
                    && (l.contains(&format!(" -l {f} ")) || l.ends_with(&format!(" -l {f}")))
            }),
            "fish completions lack run --{f}"
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
    let version = &out.stdout;
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    // The tests run in a git checkout (scripts/deps installs git): a missing git or commit
    // fails here rather than letting a version without its commit pass.
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let Ok(o) = git else {
        require(false, "git, to know the commit (scripts/deps installs it)");
        return;
    };
    if !require(o.status.success(), "a git checkout, to know the commit") {
        return;
    }
    let h = text(&o.stdout).trim().to_string();
    assert!(
        version.contains(&format!("(commit {h})")),
        "{version} (HEAD {h})"
    );
}

/// The promise table of docs/contracts.md names tests that exist: for each `FILE::NAME`,
/// FILE has a `fn NAME`. A test renamed or removed fails here until the table follows.
#[test]
fn every_promise_names_a_test_that_exists() {
    let text = contracts();
    let start = text
        .find("## Promises and the tests that keep them")
        .expect("the promise table in docs/contracts.md");
    let mut named = 0;
    for line in text[start..].lines().filter(|l| l.starts_with("| ")) {
        let Some(kept) = line.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for cell in kept.split(',').map(|c| c.trim().trim_matches('`')) {
            let Some((file, name)) = cell.split_once("::") else {
                continue;
            };
            let src = std::fs::read_to_string(project().join(file))
                .unwrap_or_else(|e| panic!("docs/contracts.md names {file}: {e}"));
            assert!(
                src.contains(&format!("fn {name}(")),
                "docs/contracts.md names {file}::{name}, which is not a test there any more"
            );
            named += 1;
        }
    }
    assert!(named >= 30, "only {named} tests named in the promise table");
}
