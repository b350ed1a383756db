//! Snapshot of what a dry run prints: the steps, the changes, and the diffs (local transport).

mod common;
use common::*;

#[test]
fn dry_run_with_diff_reads_like_a_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("target");
    std::fs::create_dir_all(base.join("sub dir")).expect("dir");
    std::fs::write(
        base.join("sub dir/greeting.conf"),
        "greeting = old\nitem1\n",
    )
    .expect("old file");
    let out = Test::new()
        .args([
            "run",
            "tests/fixtures/recipes/engine.rhai",
            "--local",
            "--dry-run",
            "--diff",
        ])
        .args(["--var", &format!("base={}", base.display())])
        .run()
        .expect_success();
    let text = out.stdout.replace(&base.display().to_string(), "<BASE>");
    insta::assert_snapshot!(text);
    // Nothing was written.
    assert!(!base.join("blob.bin").exists());
    assert_eq!(
        std::fs::read_to_string(base.join("sub dir/greeting.conf")).unwrap_or_default(),
        "greeting = old\nitem1\n"
    );
}
