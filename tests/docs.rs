//! Documentation kept in sync with the code: docs/api.md is what `recipe doc` prints.

mod common;
use common::*;

#[test]
fn api_reference_is_up_to_date() {
    let out = Test::new().arg("doc").run().expect_success();
    let now = &out.stdout;
    let file = std::fs::read_to_string(fixture("../../docs/api.md")).unwrap_or_default();
    assert!(
        *now == file,
        "docs/api.md is stale: run `cargo run -- doc > docs/api.md`"
    );
    for f in [
        "sh",
        "file",
        "directory",
        "template",
        "packages",
        "service",
        "user",
        "group",
        "download",
        "unpack",
        "facts",
        "read_file",
        "stat",
        "exists",
        "host",
        "wait_for",
        "probe",
    ] {
        assert!(
            now.contains(&format!("### `{f}(")),
            "{f} is missing from the reference"
        );
    }
}

#[test]
fn definitions_for_editors_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    Test::new()
        .arg("doc")
        .arg("--definitions")
        .arg(dir.path())
        .run()
        .expect_success();
    let n = std::fs::read_dir(dir.path())
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(n > 0, "no definition files written");
}

#[test]
fn list_shows_doc_lines_and_defaults() {
    let out = Test::new().arg("list").run().expect_success();
    let text = &out.stdout;
    assert!(text.contains("example.rhai  Example:"), "{text}");
    assert!(
        text.contains("base = \"/opt/recipe-example\"    # folder everything goes into"),
        "{text}"
    );
}

/// The `recipe:line` (`call`) references of a page: (recipe, line, call).
fn line_refs(doc: &str) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    for (at, _) in doc.match_indices(".rhai:") {
        let Some(start) = doc[..at].rfind('`') else {
            continue;
        };
        let file = &doc[start + 1..at + 5];
        let rest = &doc[at + 6..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let Some(after) = rest[digits.len()..].strip_prefix("` (") else {
            continue;
        };
        let ticks = after.chars().take_while(|&c| c == '`').count();
        if ticks == 0 || digits.is_empty() || file.contains(char::is_whitespace) {
            continue;
        }
        let fence = "`".repeat(ticks);
        let body = &after[ticks..];
        let Some(end) = body.find(&format!("{fence})")) else {
            continue;
        };
        let call = if ticks > 1 {
            body[..end].trim()
        } else {
            &body[..end]
        };
        out.push((
            file.to_string(),
            digits.parse().unwrap_or(0),
            call.to_string(),
        ));
    }
    out
}

/// docs/procedure.md maps every step of the procedure to `recipe:line` (`call`): each such
/// line must still hold that call, and every recipe the page names must exist. A recipe
/// edit that moves a step fails here with where the call is now.
#[test]
fn procedure_table_points_at_real_recipe_lines() {
    let root = project();
    let doc = std::fs::read_to_string(root.join("docs/procedure.md")).expect("docs/procedure.md");
    let refs = line_refs(&doc);
    assert!(
        refs.len() >= 40,
        "only {} recipe:line references in docs/procedure.md",
        refs.len()
    );
    let mut problems = Vec::new();
    for (file, at, call) in &refs {
        let text = match std::fs::read_to_string(root.join("recipes").join(file)) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{file}: {e}"));
                continue;
            }
        };
        let lines: Vec<&str> = text.lines().collect();
        if lines
            .get(at.wrapping_sub(1))
            .is_some_and(|l| l.contains(call.as_str()))
        {
            continue;
        }
        let now: Vec<String> = (1..=lines.len())
            .filter(|i| lines[i - 1].contains(call.as_str()))
            .map(|i| i.to_string())
            .collect();
        problems.push(format!(
            "{file}:{at} does not hold `{call}` (found on line(s) {})",
            if now.is_empty() {
                "none".into()
            } else {
                now.join(", ")
            }
        ));
    }
    // Every recipe named anywhere on the page (in recipes/, or played from recipes/samples/).
    for word in doc.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '/' || c == '.')) {
        let Some(name) = word.strip_suffix(".rhai").map(|n| format!("{n}.rhai")) else {
            continue;
        };
        if !root.join("recipes").join(&name).is_file()
            && !root.join("recipes/samples").join(&name).is_file()
        {
            problems.push(format!(
                "docs/procedure.md names {name}, which is not in recipes/"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/procedure.md is out of step with the recipes:\n  {}",
        problems.join("\n  ")
    );
}
