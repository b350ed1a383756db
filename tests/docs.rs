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
