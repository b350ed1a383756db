//! Bad input of every kind gets a clear, short error with its place (file:line:col, or the
//! host) and the right exit status: 2 for what is found before any host is touched, 1 for
//! what fails while running, never a panic. The recipes and inventories are in
//! tests/fixtures/bad/; runtime cases run with `--local` (they fail before changing anything).

mod common;
use common::*;

use std::time::{Duration, Instant};

#[test]
fn bad_inventories_exit_2_with_file_line_and_column() {
    let vars = bad("vars.rhai");
    expect_short(
        &[
            "run",
            &vars,
            "-i",
            &bad("inventory_syntax.toml"),
            "--group",
            "all",
        ],
        2,
        &["inventory_syntax.toml:4:9", "[hosts.a", "^"],
    );
    expect_short(
        &[
            "run",
            &vars,
            "-i",
            &bad("inventory_type.toml"),
            "--group",
            "all",
        ],
        2,
        &["inventory_type.toml:4:8", "twenty-two"],
    );
    expect_short(
        &[
            "run",
            &vars,
            "-i",
            &bad("inventory_unknown_member.toml"),
            "--group",
            "web",
        ],
        2,
        &["inventory_unknown_member.toml:6:15", "ghost"],
    );
    expect_short(
        &[
            "run",
            &vars,
            "-i",
            &bad("inventory_ok.toml"),
            "--group",
            "nosuch",
        ],
        2,
        &["unknown group \"nosuch\"", "web"],
    );
    expect_short(
        &[
            "run",
            &vars,
            "-i",
            &bad("no_such_inventory.toml"),
            "--group",
            "all",
        ],
        2,
        &["no_such_inventory.toml"],
    );
    expect_short(&["run", &vars], 2, &["no hosts"]);
}

#[test]
fn an_unresolvable_host_is_bad_input_found_before_connecting() {
    // Not in any inventory: resolved like `ssh NAME`, and the name does not resolve: a typo,
    // refused (exit 2) before any connection.
    let o = expect_short(
        &[
            "run",
            &bad("vars.rhai"),
            "--host",
            "nosuchhost.invalid",
            "--connect-timeout",
            "5",
        ],
        2,
        &["nosuchhost.invalid", "cannot resolve"],
    );
    assert!(!o.all().contains("error: internal"), "{}", o.show());
}

#[test]
fn bad_vars_exit_2_and_say_what_was_expected() {
    let vars = bad("vars.rhai");
    let cases: &[(&str, &[&str])] = &[
        ("count=abc", &["count=abc", "an integer"]),
        ("novalue", &["novalue", "KEY=VALUE"]),
        ("coutn=3", &["no variable coutn", "did you mean count?"]),
        ("names=[1, 2", &["names", "TOML list"]),
        ("enabled=maybe", &["enabled", "true or false"]),
        ("1x=2", &["not a variable name"]),
        ("=2", &["not a variable name"]),
    ];
    for (v, pieces) in cases {
        expect_short(&["run", &vars, "--local", "--var", v], 2, pieces);
    }
    // A good one still works.
    expect_short(
        &[
            "run",
            &vars,
            "--local",
            "--var",
            "count=7",
            "--var",
            "names=a, b",
        ],
        0,
        &["7 true [\"a\", \"b\"] x"],
    );
}

#[test]
fn recipe_errors_point_at_the_line() {
    // Syntax: exit 2 before any host, from run and from check, with the source line.
    for cmd in [
        &["run", &bad("syntax_error.rhai"), "--local"][..],
        &["check", &bad("syntax_error.rhai")][..],
    ] {
        expect_short(
            cmd,
            2,
            &["syntax error", "syntax_error.rhai:4:14", "let x = [1, 2;"],
        );
    }
    expect_short(
        &["run", &bad("no_such_recipe.rhai"), "--local"],
        2,
        &["not found"],
    );
    // A runtime error inside a module points into the module, with the calls that led there.
    expect_short(
        &["run", &bad("module_error.rhai"), "--local"],
        1,
        &[
            "broken.rhai:5:7",
            "Division by zero",
            "module_error.rhai:6:17",
        ],
    );
    // An undefined template variable names the template, its line and the variable, and is
    // found before any host is touched (exit 2); nothing is written.
    let dest = tempfile::tempdir().expect("tmp");
    let d = dest.path().join("out.conf");
    let dv = format!("dest={}", d.display());
    expect_short(
        &["run", &bad("template_error.rhai"), "--local", "--var", &dv],
        2,
        &[
            "undefined.j2:2",
            "not_declared_anywhere",
            "template_error.rhai:4",
        ],
    );
    assert!(!d.exists());
}

#[test]
fn runaway_recipes_are_stopped_by_the_limits() {
    for (file, why, place) in [
        (
            "infinite_loop.rhai",
            "Too many operations",
            "infinite_loop.rhai:6:",
        ),
        (
            "deep_recursion.rhai",
            "Stack overflow",
            "deep_recursion.rhai:",
        ),
        (
            "huge_string.rhai",
            "Length of string too large",
            "huge_string.rhai:6:",
        ),
        (
            "huge_pad.rhai",
            "Length of string too large",
            "huge_pad.rhai:5:",
        ),
    ] {
        let started = Instant::now();
        let o = expect_short(&["run", &bad(file), "--local"], 1, &[place]);
        // A tight loop meets the operations limit, or the CPU limit on a slow machine.
        assert!(
            o.all().contains(why)
                || (why == "Too many operations" && o.all().contains("CPU limit")),
            "{file}: no {why:?} in:\n{}",
            o.all()
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{file} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn hundred_megabyte_inputs_get_short_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let big = "x".repeat(100_000_000);
    // A 100 MB string in a recipe: a syntax error (over the string limit), shown in short.
    let rhai = tmp.path().join("big.rhai");
    std::fs::write(&rhai, format!("let s = \"{big}\";\n")).expect("write");
    let r = rhai.display().to_string();
    expect_short(
        &["run", &r, "--local"],
        2,
        &["big.rhai:1:9", "Length of string"],
    );
    // A 100 MB variable in an inventory: refused before any host is touched.
    let inv = tmp.path().join("big.toml");
    std::fs::write(&inv, format!("[vars]\nlabel = \"{big}\"\n")).expect("write");
    let i = inv.display().to_string();
    expect_short(
        &["run", &bad("vars.rhai"), "-i", &i, "--local"],
        2,
        &["label", "100000000 bytes"],
    );
    // A syntax error at the end of a 100 MB line: the line is shown cut around the column.
    std::fs::write(&inv, format!("[vars]\nlabel = \"{big}\" junk\n")).expect("write");
    expect_short(
        &["run", &bad("vars.rhai"), "-i", &i, "--local"],
        2,
        &["big.toml:2:100000012", "\" junk"],
    );
}

#[test]
fn a_recipes_validate_refuses_before_any_host_with_exit_2() {
    let r = bad("validate.rhai");
    // Every reason at once, with the recipe's imports in effect; the host is never contacted.
    let o = expect_short(
        &[
            "run",
            &r,
            "--host",
            "nosuchhost.invalid",
            "--var",
            "workers=0",
            "--var",
            "mode=slow",
        ],
        2,
        &[
            "refuses to run",
            "workers must be at least 1, not 0",
            "'slow' is not a mode",
        ],
    );
    assert!(!o.all().contains("unreachable"), "{}", o.show());
    // Good values pass validation and the recipe runs.
    expect_short(&["run", &r, "--local"], 0, &["ran"]);
}

/// Slurm releases that cannot take a setting are refused before any host (issue 20.3): a
/// site CFLAGS without -fcommon for a release that needs it with GCC >= 10, cgroup.conf's
/// `CgroupPlugin=cgroup/v2` before 22.05 and `=disabled` before 24.05; and the same-image
/// comparison with a runtime that does not run the SIF. Each also passes validation where
/// it can work (and then stops at the host name that does not resolve).
#[test]
fn version_settings_are_refused_before_any_host() {
    let recipes = project().join("recipes");
    let rec = |n: &str| recipes.join(n).to_string_lossy().into_owned();
    let cases: [(&str, &[&str], &str, &str); 5] = [
        (
            "slurm_build.rhai",
            &[
                "slurm_version=19.05.4",
                "slurm_sha256=unverified",
                "slurm_configure_flags=[\"CFLAGS=-O2\"]",
            ],
            "slurm_version=19.05.7",
            "needs -fcommon to build with GCC 10",
        ),
        (
            "slurm_master.rhai",
            &[
                "slurm_version=21.08.8",
                "slurm_cgroup_conf=[\"CgroupPlugin=cgroup/v2\"]",
            ],
            "slurm_version=22.05.8",
            "needs Slurm 22.05 or later",
        ),
        (
            "slurm_master.rhai",
            &[
                "slurm_version=23.11.1",
                "slurm_cgroup_conf=[\"CgroupPlugin=disabled\"]",
            ],
            "slurm_version=24.05.1",
            "needs Slurm 24.05 or later",
        ),
        (
            "samples/same_image.rhai",
            &["k8s_sample_image_containerd=docker.io/library/busybox:1.36"],
            "k8s_sample_image_containerd=",
            "the pods run another image",
        ),
        (
            "cluster.rhai",
            &["kubernetes=true"],
            "k8s_sample=false",
            "needs singularity = true and container_sample = true",
        ),
    ];
    for (recipe, vars, good, want) in cases {
        let r = rec(recipe);
        let mut args = vec!["run", r.as_str(), "--host", "nosuchhost.invalid"];
        for v in vars {
            args.extend(["--var", v]);
        }
        let o = expect_short(&args, 2, &["refuses to run", want]);
        assert!(!o.all().contains("unreachable"), "{}", o.show());
        args.extend(["--var", good]);
        let o = Test::new().args(&args).run().expect_no_panic();
        assert!(
            !o.all().contains("refuses to run") && o.all().contains("nosuchhost.invalid"),
            "{recipe} with {good} was refused\n{}",
            o.show()
        );
    }
}

/// A path with a NUL byte fails its step on every branch of `file` and `directory`
/// (`state: absent` included), before anything is probed or removed: the shell would cut
/// the path at the NUL and act on another one.
#[test]
fn a_nul_byte_in_a_path_fails_every_file_branch() {
    let d = tempfile::tempdir().expect("tmp");
    std::fs::write(d.path().join("keep"), "x").expect("write");
    let dir = format!("dir={}", d.path().display());
    for op in ["file-absent", "dir-absent", "file", "dir", "attrs"] {
        let opv = format!("op={op}");
        let o = expect_error(
            &[
                "run",
                &bad("nul_paths.rhai"),
                "--local",
                "--json",
                "--var",
                &dir,
                "--var",
                &opv,
            ],
            1,
            &[],
        );
        let ev = o.events();
        let step = ev
            .iter()
            .find(|e| e["event"] == "step")
            .unwrap_or_else(|| panic!("{op}: no step: {}", o.show()));
        assert_eq!(step["status"], "failed", "{op}: {step}");
        let msg = step["msg"].as_str().unwrap_or("");
        assert!(msg.contains("path contains a NUL byte"), "{op}: {msg}");
        assert!(d.path().join("keep").exists(), "{op}");
    }
}

#[test]
fn rolling_flags_and_a_broken_rolling_module_are_refused_before_any_host() {
    let r = fixture("recipes/rolling_slurmd.rhai");
    let r = r.to_str().expect("utf-8 path");
    let inv = bad("inventory_ok.toml");
    for s in ["0", "0%", "150%", "x"] {
        expect_short(
            &["run", r, "--local", "--serial", s],
            2,
            &["--serial", "percentage"],
        );
    }
    expect_short(&["run", r, "--local", "--max-fail", "2"], 2, &["--serial"]);
    expect_short(
        &["run", r, "-i", &inv, "--serial", "1"],
        2,
        &["--serial needs hosts"],
    );
    expect_short(
        &[
            "run", r, "-i", &inv, "--group", "all", "--serial", "1", "--via", "slurm", "--login",
            "m",
        ],
        2,
        &["--serial cannot go with --via slurm"],
    );
    // A site's own rolling.rhai beside its recipe is the one used, and checked first.
    let tmp = tempfile::tempdir().expect("tmp");
    let recipe = tmp.path().join("change.rhai");
    std::fs::write(
        &recipe,
        "// A change.\nfn defaults() { #{} }\nsh(\"true\");\n",
    )
    .expect("write");
    std::fs::write(
        tmp.path().join("rolling.rhai"),
        "fn before(roll) {\n    let x = ;\n}\n",
    )
    .expect("write");
    let recipe = recipe.to_str().expect("utf-8 path");
    expect_short(
        &["run", recipe, "--local", "--serial", "1"],
        2,
        &["rolling.rhai:2:13", "--serial drains nodes"],
    );
    std::fs::write(
        tmp.path().join("rolling.rhai"),
        "fn before(roll) { print(\"site drain \" + roll.host); #{} }\nfn after(roll, st) { print(\"site resume\"); }\nfn failed(roll, st, what) {}\n",
    )
    .expect("write");
    Test::new()
        .args(["run", recipe, "--local", "--serial", "1"])
        .run()
        .expect_success()
        .expect_contains(&["site drain local", "site resume"]);
}

/// The accounting recipes refuse, before any host, what would break slurmdbd.conf, SQL or
/// sacctmgr: a password with a quote (never repeated in the message), an existing database
/// server without a password, a database name that is not a word, an account map with an
/// unknown key or an upper-case name.
#[test]
fn accounting_recipes_refuse_bad_settings_before_any_host() {
    let dbd = project().join("recipes/slurmdbd.rhai");
    let secret_pw = "it's-Secret9";
    let o = expect_short(
        &[
            "run",
            dbd.to_str().expect("path"),
            "--host",
            "nosuchhost.invalid",
            "--var",
            &format!("accounting_db_password={secret_pw}"),
            "--var",
            "accounting_db_name=acct-db",
        ],
        2,
        &[
            "accounting_db_password may not contain quotes",
            "accounting_db_name must be letters, digits and _",
        ],
    );
    assert!(!o.all().contains("Secret9"), "{}", o.show());
    assert!(!o.all().contains("unreachable"), "{}", o.show());
    expect_short(
        &[
            "run",
            dbd.to_str().expect("path"),
            "--host",
            "nosuchhost.invalid",
            "--var",
            "accounting_db_install=false",
        ],
        2,
        &["give its password in accounting_db_password"],
    );
    let acc = project().join("recipes/slurm_accounts.rhai");
    expect_short(
        &[
            "run",
            acc.to_str().expect("path"),
            "--host",
            "nosuchhost.invalid",
            "--var",
            "slurm_accounts={ Physics = { users = [\"alice\"] }, chem = { fair_share = 3 } }",
        ],
        2,
        &[
            "account \"Physics\" must be lower-case",
            "slurm_accounts.chem: unknown key \"fair_share\"",
        ],
    );
}
