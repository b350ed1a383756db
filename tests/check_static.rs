//! Mistakes that fail on every host are found by `recipe check`, and by `run` before any host
//! is touched (exit 2, file:line:col, the source line, a did-you-mean); the shipped recipes,
//! the stdlib and the test fixtures pass. Also: runtime errors show their source line, an
//! options map built at run time fails its step with the valid keys, runaway loops stop.

mod common;
use common::*;

/// Each mistake, found by `check` and by `run` (before connecting: `--local` would run it).
#[test]
fn mistakes_are_found_before_any_host_is_touched() {
    let cases: &[(&str, &[&str])] = &[
        (
            "unknown_function.rhai",
            &[
                "unknown function `fiel`",
                "did you mean `file`?",
                "unknown_function.rhai:4:1",
                "fiel(vars.path",
            ],
        ),
        (
            "wrong_arity.rhai",
            &[
                "`file` takes 2 argument(s), not 1",
                "file(path: String, opts: Map)",
                "wrong_arity.rhai:4:9",
            ],
        ),
        (
            "unknown_option.rhai",
            &[
                "file: unknown option `mdoe`",
                "did you mean `mode`?",
                "valid options: content, src, from_host, secret, state, owner, group, mode",
                "unknown_option.rhai:4:",
            ],
        ),
        (
            "undeclared_var.rhai",
            &[
                "unknown variable `vars.mesage`",
                "did you mean `message`?",
                "undeclared_var.rhai:4:10",
            ],
        ),
        (
            "template_syntax.rhai",
            &[
                "template syntax error",
                "bad_syntax.j2:3:",
                "{% endfi %}",
                "named at tests/fixtures/bad/template_syntax.rhai:4:",
            ],
        ),
        (
            "template_error.rhai",
            &[
                "undefined variable `not_declared_anywhere`",
                "undefined.j2:2:",
                "named at tests/fixtures/bad/template_error.rhai:4:",
            ],
        ),
    ];
    for (file, pieces) in cases {
        let path = bad(file);
        expect_error(&["check", &path], 2, pieces);
        let o = expect_error(&["run", &path, "--local", "--json"], 2, pieces);
        assert!(o.stdout.is_empty(), "no step ran: {}", o.stdout);
    }
}

/// Every option type (mode, bool, int, enum, string list, string map, string), every
/// primitive's literal options: a wrong value is found by `check` and by `run` before any
/// host, each at its own file:line:col, with what to write instead.
#[test]
fn mistyped_option_values_are_found_before_any_host() {
    let path = bad("option_types.rhai");
    let pieces: &[&str] = &[
        "option_types.rhai:4:56",
        "file: option `mode` must be a string: write \"0644\" (the integer 644 is the mode 01204",
        "option_types.rhai:5:29",
        "service: option `enabled` must be true or false, not the string \"yes\"",
        "option_types.rhai:6:23",
        "sh: option `timeout` must be a number, not the string \"10\": write 10 without quotes",
        "option_types.rhai:7:26",
        "user: state \"abesnt\" is not one of \"present\", \"absent\" (did you mean \"absent\"?)",
        "option_types.rhai:8:",
        "directory: mode \"0999\" is not an octal mode",
        "option_types.rhai:9:",
        "packages: option `update_cache` must be true or false, not the integer 1",
        "option_types.rhai:10:",
        "user: option `groups` must be an array of strings, not the string \"wheel\": write [\"wheel\"]",
        "user: option `uid` must be a whole number, 0 or more",
        "option_types.rhai:11:",
        "sh: option `env`: the value of `N` must be a string, not the integer 4: write \"4\"",
        "option_types.rhai:12:",
        "download: option `sha256` must be a string, not the integer 0",
    ];
    expect_error(&["check", &path], 2, pieces);
    let o = expect_error(&["run", &path, "--local", "--json"], 2, pieces);
    assert!(o.stdout.is_empty(), "no step ran: {}", o.stdout);
    // A variable the played recipe does not declare, in a literal `vars` of `play`.
    let pieces: &[&str] = &[
        "play_vars.rhai:2:",
        "play vars.rhai: it declares no variable `lable` (did you mean `label`?)",
    ];
    expect_error(&["check", &bad("play_vars.rhai")], 2, pieces);
}

/// Runs a fixture that writes `dest` with `--local --json`; it must fail (exit 1) on its
/// first step, which is returned, without writing `dest`.
fn first_step_fails(fixture: &str) -> serde_json::Value {
    let dest = tempfile::tempdir().expect("tmp");
    let d = dest.path().join("out");
    let dv = format!("dest={}", d.display());
    let o = expect_error(
        &["run", &bad(fixture), "--local", "--json", "--var", &dv],
        1,
        &[],
    );
    let step = o
        .events()
        .into_iter()
        .find(|e| e["event"] == "step")
        .unwrap_or_else(|| panic!("no step event: {}", o.show()));
    assert_eq!(step["status"], "failed", "{step}");
    assert!(!d.exists());
    step
}

/// A value only known at run time is checked at the call: the step fails on its options and
/// the file is not written.
#[test]
fn a_mistyped_option_built_at_run_time_fails_its_step() {
    let step = first_step_fails("option_types_runtime.rhai");
    assert_eq!(step["target"], "(options)", "{step}");
    let msg = step["msg"].as_str().unwrap_or("");
    assert!(msg.contains("write \"0644\""), "{msg}");
}

#[test]
fn shipped_recipes_stdlib_and_fixtures_pass() {
    let mut files = Vec::new();
    for dir in ["recipes", "stdlib", "tests/fixtures/recipes"] {
        for e in std::fs::read_dir(dir).expect("dir").flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "rhai") && !p.ends_with("syntax_error.rhai") {
                files.push(p.display().to_string());
            }
        }
    }
    files.sort();
    for bad_but_runtime in ["module_error.rhai", "vars.rhai", "infinite_loop.rhai"] {
        files.push(bad(bad_but_runtime));
    }
    let args: Vec<&str> = std::iter::once("check")
        .chain(files.iter().map(String::as_str))
        .collect();
    let o = Test::new()
        .args(&args)
        .run()
        .expect_no_panic()
        .expect_success();
    assert_eq!(
        o.all().matches(": ok (").count(),
        files.len(),
        "{}",
        o.show()
    );
    assert!(!o.stderr.contains("warning:"), "{}", o.show());
}

/// A backtick string holding `\n`, `\t` or `\"` is warned about by `check` and by `run`
/// before any host, at the escape's file:line:col with the ways to write it; a command
/// handed to the shell keeps its escapes without a warning.
#[test]
fn escapes_in_backtick_strings_are_warned_about() {
    let path = bad("backtick_escapes.rhai");
    let pieces: &[&str] = &[
        "warning: this backtick string holds `\\n`, which stays a backslash followed by `n`, not a line break",
        "backtick_escapes.rhai:4:40",
        "write `...` + \"\\n\" instead, or a real line break inside the backticks",
        "backtick_escapes.rhai:5:10",
        "holds `\\\"`",
        "2 such escapes",
    ];
    let o = Test::new()
        .args(["check", &path])
        .run()
        .expect_success()
        .expect_contains(pieces);
    assert_eq!(o.stderr.matches("warning:").count(), 2, "{}", o.show());
    assert!(
        !o.stderr.contains(":7:"),
        "the shell's escapes: {}",
        o.show()
    );
    let o = Test::new()
        .args(["run", &path, "--local", "--dry-run", "--json"])
        .run()
        .expect_success()
        .expect_contains(pieces);
    // Printed before the run begins (no host was touched yet).
    let first_warning = o.stderr.find("warning:").unwrap_or(usize::MAX);
    assert_eq!(first_warning, 0, "{}", o.show());
}

#[test]
fn a_runtime_error_shows_its_source_line() {
    expect_error(
        &["run", &bad("runtime_error.rhai"), "--local"],
        1,
        &["runtime_error.rhai:5:", "5 | let x = items[7] + 1;", "^"],
    );
    // Inside a module too: the module's line.
    expect_error(
        &["run", &bad("module_error.rhai"), "--local"],
        1,
        &["broken.rhai:5:7", "5 |     n / zero"],
    );
}

#[test]
fn an_unknown_option_built_at_run_time_fails_its_step() {
    let step = first_step_fails("unknown_option_runtime.rhai");
    assert_eq!(step["op"], "file", "{step}");
    assert_eq!(step["line"], 6, "{step}");
    let msg = step["msg"].as_str().unwrap_or("");
    assert!(msg.contains("unknown option `mdoe`"), "{msg}");
    assert!(msg.contains("did you mean `mode`?"), "{msg}");
    assert!(msg.contains("valid options: content"), "{msg}");
    // Without --json: a FAILED step line.
    let dest = tempfile::tempdir().expect("tmp");
    let dv = format!("dest={}", dest.path().join("out").display());
    expect_error(
        &[
            "run",
            &bad("unknown_option_runtime.rhai"),
            "--local",
            "--var",
            &dv,
        ],
        1,
        &["FAILED", "unknown option `mdoe`"],
    );
}

/// `let r = sh(..); r.chagned`: `check`, and `run` before any host, find a field the
/// primitive's result never has, at its file:line:col with a did-you-mean, for several
/// primitives; a variable bound again, a field set before it is read, and a recipe's own
/// function of a primitive's name are left to the run (no error for them here).
#[test]
fn a_misspelt_result_field_is_found_before_any_host() {
    let pieces: &[&str] = &[
        "result_field.rhai:5:6",
        "`r` holds the result of `sh`, which has no field `chagned` (did you mean `changed`?); it has: changed, rc, skipped, status, stderr, stdout, timed_out",
        "5 | if r.chagned",
        "result_field.rhai:7:7",
        "`p` holds the result of `probe`, which has no field `stdot` (did you mean `stdout`?)",
        "result_field.rhai:9:10",
        "`f` holds the result of `file`, which has no field `sha265` (did you mean `sha256`?)",
        "result_field.rhai:11:6",
        "`s` holds the result of `service`, which has no field `rc`; it has: active, changed, enabled, skipped, status",
    ];
    let o = expect_error(&["check", &bad("result_field.rhai")], 2, pieces);
    assert_eq!(o.stderr.matches("error:").count(), 4, "{}", o.show());
    let o = expect_error(
        &["run", &bad("result_field.rhai"), "--local", "--json"],
        2,
        pieces,
    );
    assert!(o.stdout.is_empty(), "no step ran: {}", o.stdout);
}

/// A misspelt field that only the run can see (the result passes through a function) is
/// an error there, not a silent false.
#[test]
fn a_misspelt_result_field_is_an_error_at_run_time() {
    expect_error(
        &["run", &bad("result_field_runtime.rhai"), "--local"],
        1,
        &[
            "this result has no field `chagned` (did you mean `changed`?)",
            "it has: changed, rc, skipped, status, stderr, stdout, timed_out",
            "result_field_runtime.rhai:4:",
            "4 | fn changed_of(r) { r.chagned }",
        ],
    );
}

#[test]
fn a_runaway_push_loop_is_stopped_by_the_cpu_limit() {
    expect_error(
        &["run", &bad("runaway_push.rhai"), "--local"],
        1,
        &["CPU limit", "runaway_push.rhai:"],
    );
}

#[test]
fn a_host_missing_from_the_inventory_is_refused() {
    expect_error(
        &[
            "run",
            &bad("vars.rhai"),
            "-i",
            &bad("inventory_ok.toml"),
            "--host",
            "ab",
        ],
        2,
        &[
            "host \"ab\" is not in the inventory",
            "did you mean \"a\"?",
            "run without -i",
        ],
    );
}

#[test]
fn facts_of_an_unresolvable_host_is_bad_input() {
    expect_error(
        &["facts", "--host", "nosuchhost.invalid"],
        2,
        &["cannot resolve nosuchhost.invalid"],
    );
}
