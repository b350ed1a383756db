//! The stdlib's pure helpers (configuration editing, Slurm version parsing), run through the
//! real binary on this machine (`--local --dry-run`: nothing is changed).

mod common;

#[test]
fn stdlib_helpers_behave() {
    let out = common::recipe()
        .args(["run", "--local", "--dry-run"])
        .arg(common::fixture("recipes/stdlib_checks.rhai"))
        .output()
        .expect("runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("stdlib checks passed"), "{all}");
}
