//! The stdlib's pure helpers (configuration editing, Slurm version parsing), run through the
//! real binary on this machine (`--local --dry-run`: nothing is changed).

mod common;
use common::*;

#[test]
fn stdlib_helpers_behave() {
    Test::new()
        .args(["run", "--local", "--dry-run"])
        .arg(fixture("recipes/stdlib_checks.rhai"))
        .run()
        .expect_success()
        .expect_contains(&["stdlib checks passed"]);
}
