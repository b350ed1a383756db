//! The run object and the one error type, seen from the CLI: where a host stopped, exit
//! statuses decided in one place, `error:` printed once, for host and controller mode alike.

mod common;
use common::*;

#[test]
fn a_failed_host_says_where_it_stopped_in_json_and_in_the_recap() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("t1", "");
    let base = sshd.path("stops");
    let base_var = format!("base={}", base.display());
    let run = |json: bool| {
        let t = Test::new()
            .args([
                "run",
                "tests/fixtures/run/stops.rhai",
                "--group",
                "all",
                "-i",
            ])
            .arg(&inv)
            .args(["--var", &base_var]);
        if json { t.arg("--json") } else { t }.run().expect_code(1)
    };
    let out = run(true);
    let r = out.recaps();
    assert_eq!(r.len(), 1, "{}", out.show());
    assert_eq!(r[0]["failed"], 1, "{r:?}");
    let at = r[0]["stopped_at"].as_str().unwrap_or_default();
    assert!(
        at.ends_with("tests/fixtures/run/stops.rhai:10:1"),
        "stopped_at names the failing call: {r:?}"
    );
    // The step after the failure did not run.
    assert!(!base.join("never").exists());
    let steps = out.steps();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[1]["status"], "failed");
    assert_eq!(steps[1]["line"], 10);

    // The human recap names the place once (the message starts with it).
    let out = run(false);
    let recap = &out.stdout[out.stdout.find("RECAP").unwrap_or(0)..];
    assert_eq!(recap.matches("stops.rhai:10:1").count(), 1, "{recap}");
}

#[test]
fn a_controller_recipe_that_stops_exits_1_with_one_error_line_after_the_recap() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("t1", "");
    let base = sshd.path("ctl");
    let out = Test::new()
        .args([
            "run",
            "tests/fixtures/run/controller_fails.rhai",
            "--json",
            "-i",
        ])
        .arg(&inv)
        .args(["--var", &format!("base={}", base.display())])
        .run()
        .expect_code(1)
        .expect_stderr_contains(&[
            "the controller gives up on purpose",
            "controller_fails.rhai:11",
        ]);
    assert_eq!(out.stderr.matches("error:").count(), 1, "{}", out.show());
    // The played recipe ran and its host's recap is there, with where it stopped.
    let r = out.recaps();
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        r[0]["stopped_at"]
            .as_str()
            .is_some_and(|s| s.ends_with("stops.rhai:10:1")),
        "{r:?}"
    );
}

#[test]
fn usage_errors_exit_2_and_say_error_once() {
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", "tests/fixtures/run/stops.rhai"],
        vec![
            "run",
            "tests/fixtures/run/stops.rhai",
            "--local",
            "--var",
            "nope=1",
        ],
        vec!["run", "no/such/recipe.rhai", "--local"],
        vec![
            "run",
            "tests/fixtures/run/stops.rhai",
            "--via",
            "pbs",
            "--host",
            "x",
        ],
        vec![
            "run",
            "tests/fixtures/run/stops.rhai",
            "--via",
            "slurm",
            "--host",
            "x",
        ],
        vec![
            "run",
            "tests/fixtures/run/stops.rhai",
            "--slurm-prefix",
            "/opt/hpc/slurm",
            "--host",
            "x",
        ],
        // --via through the run's pipeline: its own checks, before any host.
        vec![
            "run",
            "tests/fixtures/run/stops.rhai",
            "--via",
            "slurm",
            "--login",
            "a",
            "--host",
            "a",
        ],
        vec![
            "run",
            "tests/fixtures/run/stops.rhai",
            "--via",
            "slurm",
            "--login",
            "a",
            "--host",
            "a",
            "-i",
            "tests/fixtures/bad/inventory_ok.toml",
            "--local",
        ],
        vec![
            "run",
            "tests/fixtures/run/stops.rhai",
            "--via",
            "slurm",
            "--login",
            "no-such-login.invalid",
            "--host",
            "a",
            "-i",
            "tests/fixtures/bad/inventory_ok.toml",
        ],
        vec!["facts"],
        vec!["list", "no/such/folder"],
        vec!["check", "tests/fixtures/run/stops.rhai", "no/such.rhai"],
    ];
    for args in cases {
        let out = Test::new().args(&args).run().expect_code(2);
        assert_eq!(out.stderr.matches("error:").count(), 1, "{}", out.show());
        assert!(out.stderr.starts_with("error: "), "{}", out.show());
    }
}
