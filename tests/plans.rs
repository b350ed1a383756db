//! Honest plans across hosts and plays (loopback sshd, two inventory names for it): in a dry
//! controller run a worker reads the master's planned configuration (not a guess), a copy of
//! a key a command has not made yet says what it depends on, and the master's recipe played
//! twice is counted once; every step's `line` belongs to the file `recipe` or `source` names.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

fn inventory(sshd: &Sshd) -> std::path::PathBuf {
    common::loopback::inventory_of(sshd, &["master", "w1"], "")
}

fn run(inv: &Path, base: &Path, extra: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Test::new()
        .args([
            "run",
            "tests/fixtures/recipes/plans/plans.rhai",
            "--json",
            "-i",
        ])
        .arg(inv)
        .args(["--var", &format!("base={}", base.display())])
        .args(extra)
        .run();
    let ev = out.events();
    (out.code, ev, out.stderr)
}

fn steps(ev: &[Value]) -> Vec<&Value> {
    ev.iter().filter(|e| e["event"] == "step").collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Every step's line, in the file its event names, holds the call of its op.
fn lines_belong_to_their_files(ev: &[Value]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recipes/plans");
    for st in steps(ev) {
        let file = match st.get("source").and_then(Value::as_str) {
            // `source` is `folder/file` of a module.
            Some(src) => dir.join(Path::new(src).file_name().expect("a file name")),
            None => dir.join(s(&st["recipe"])),
        };
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} ({st})", file.display()));
        let line = st["line"].as_u64().unwrap_or(0) as usize;
        let l = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        let op = s(&st["op"]);
        let call = if op == "directory" && l.contains("|p|") {
            // A closure: `|p| directory(p, ...)`.
            "directory(".to_string()
        } else {
            format!("{op}(")
        };
        assert!(
            l.contains(&call),
            "line {line} of {} is {l:?}, not a call of {op}: {st}",
            file.display()
        );
    }
}

#[test]
fn a_dry_controller_run_plans_across_hosts_and_counts_a_step_once() {
    let sshd = Sshd::start();
    let inv = inventory(&sshd);
    let base = sshd.path("plans");
    let (code, ev, err) = run(&inv, &base, &["--dry-run", "--diff"]);
    assert_eq!(code, 0, "{err}\n{ev:#?}");
    assert!(!base.exists(), "the dry run wrote {}", base.display());
    lines_belong_to_their_files(&ev);
    let st = steps(&ev);
    let master: Vec<_> = st.iter().filter(|e| e["host"] == "master").collect();
    let worker: Vec<_> = st.iter().filter(|e| e["host"] == "w1").collect();
    // First play: folder, template, key command, key attributes; all would change.
    assert_eq!(master.len(), 8, "{master:#?}");
    assert!(
        master[..4].iter().all(|e| e["status"] == "changed"),
        "{master:#?}"
    );
    // The key's attributes wait for the key the command makes.
    let attrs = &master[3];
    assert_eq!(attrs["op"], "file");
    assert_eq!(attrs["source"], "plans/plans_mod.rhai", "{attrs}");
    assert!(
        s(&attrs["changes"][0]).contains("once it exists: depends on master:")
            && s(&attrs["changes"][0])
                .contains("(planned at plans/plans_mod.rhai:4, not yet there)"),
        "{attrs}"
    );
    // Played again: the same steps were planned already; counted once.
    for e in &master[4..] {
        assert_eq!(e["status"], "ok", "{e}");
        assert!(
            s(&e["changes"][0]).starts_with("planned already at "),
            "{e}"
        );
    }
    assert_eq!(
        s(&master[5]["changes"][0]),
        "planned already at plans_master.rhai:13 (counted there; a real run finds it done)"
    );
    // The worker's spool folder is the one in the master's planned file, not a guess.
    let spool = base.join("spool-x1");
    let spool = spool.to_str().expect("utf8");
    assert!(
        worker
            .iter()
            .any(|e| e["op"] == "directory" && e["target"] == spool && e["status"] == "changed"),
        "{worker:#?}"
    );
    // The key copy says what it depends on; the secret-free diff says so too.
    let key = worker
        .iter()
        .find(|e| e["op"] == "file" && s(&e["target"]).ends_with("w1/key"))
        .expect("the key copy");
    assert_eq!(key["status"], "changed", "{key}");
    let change = s(&key["changes"][0]);
    assert!(
        change.contains(&format!(
            "depends on master:{}/master/key (planned at plans/plans_mod.rhai:4, not yet there)",
            base.display()
        )),
        "{key}"
    );
    assert!(s(&key["diff"]).contains("depends on master:"), "{key}");
    // The recap counts the planned-twice steps once.
    let r = recaps(&ev);
    let m = r
        .iter()
        .find(|r| r["host"] == "master")
        .expect("master recap");
    assert_eq!(
        (m["changed"].as_u64(), m["ok"].as_u64()),
        (Some(4), Some(4)),
        "{m}"
    );

    // A real run does it all; the second play finds it done, and a second run changes nothing.
    let (code, ev, err) = run(&inv, &base, &[]);
    assert_eq!(code, 0, "{err}\n{ev:#?}");
    lines_belong_to_their_files(&ev);
    let st = steps(&ev);
    let master: Vec<_> = st.iter().filter(|e| e["host"] == "master").collect();
    assert!(
        master[4..].iter().all(|e| e["status"] == "ok"),
        "{master:#?}"
    );
    assert!(Path::new(spool).is_dir());
    assert_eq!(
        std::fs::read(base.join("w1/key")).expect("key copied"),
        std::fs::read(base.join("master/key")).expect("key made")
    );
    let (code, ev, err) = run(&inv, &base, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(recaps(&ev).iter().all(|r| r["changed"] == 0), "{ev:#?}");
    // And a dry run now plans nothing.
    let (code, ev, err) = run(&inv, &base, &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(recaps(&ev).iter().all(|r| r["changed"] == 0), "{ev:#?}");
}

/// Steps that write the same paths one after another (content A, B, A again; a removal
/// and a re-creation; attributes after content; a template equal to a planned file): the dry
/// run says, step by step, what the real run then does, on an empty folder and again on
/// what the real run left.
#[test]
fn a_dry_run_predicts_later_writes_to_the_same_path() {
    let tmp = tempfile::tempdir().expect("tmp");
    let recipe = tmp.path().join("rewrites.rhai");
    let tpl = tmp.path().join("a.j2");
    std::fs::write(&tpl, "{{ word }}\n").expect("template");
    std::fs::write(
        &recipe,
        r#"// The same paths written again and again.
fn defaults() { #{ base: "" } }
let d = vars.base;
file(`${d}/x`, #{content: "A\n"});
file(`${d}/x`, #{content: "B\n"});
file(`${d}/x`, #{content: "A\n"});
file(`${d}/x`, #{content: "A\n"});
file(`${d}/x`, #{mode: "0600"});
file(`${d}/x`, #{content: "A\n", mode: "0600"});
file(`${d}/x`, #{state: "absent"});
file(`${d}/x`, #{content: "A\n"});
template(`${d}/t`, "a.j2", #{vars: #{word: "w"}});
file(`${d}/t`, #{content: "w\n"});
file(`${d}/t`, #{content: "v\n"});
"#,
    )
    .expect("recipe");
    let base = tmp.path().join("out");
    std::fs::create_dir(&base).expect("out");
    let go = |dry: bool| {
        let mut t = Test::new()
            .arg("run")
            .arg(&recipe)
            .args(["--local", "--json", "--diff"]);
        t = t.args(["--var", &format!("base={}", base.display())]);
        if dry {
            t = t.arg("--dry-run");
        }
        let out = t.run().expect_success();
        let got: Vec<String> = out
            .steps()
            .iter()
            .map(|st| {
                // An `ok` step of a dry run may say where its work was planned already.
                let changes: Vec<&str> = st["changes"]
                    .as_array()
                    .filter(|_| st["status"] == "changed")
                    .map(|a| a.iter().map(s).collect())
                    .unwrap_or_default();
                format!("{} {} {}", st["line"], s(&st["status"]), changes.join("; "))
            })
            .collect();
        (got, out)
    };
    let (dry, dry_out) = go(true);
    assert_eq!(
        std::fs::read_dir(&base).expect("out").count(),
        0,
        "the dry run wrote"
    );
    let (real, _) = go(false);
    assert_eq!(dry, real, "dry run:\n{}", dry_out.show());
    let again = dry_out
        .steps()
        .into_iter()
        .find(|st| st["line"] == 7)
        .expect("line 7");
    assert!(
        s(&again["changes"][0]).starts_with("planned already at rewrites.rhai:6 "),
        "{again}"
    );
    // And what it says is what a careful reader expects.
    let expect = [
        "4 changed create",
        "5 changed rewrite",
        "6 changed rewrite",
        "7 ok ",
        "8 changed mode 0644 -> 0600",
        "9 ok ",
        "10 changed remove",
        "11 changed create",
        "12 changed create",
        "13 ok ",
        "14 changed rewrite",
    ];
    for (got, want) in real.iter().zip(expect) {
        assert!(
            got.starts_with(want),
            "`{got}` is not `{want}...`:\n{}",
            real.join("\n")
        );
    }
    assert_eq!(real.len(), expect.len(), "{}", real.join("\n"));
    // Again, from the files the first run left: the dry run still predicts the real run.
    let (dry, dry_out) = go(true);
    let (real, _) = go(false);
    assert_eq!(dry, real, "second dry run:\n{}", dry_out.show());
    assert!(real[0].starts_with("4 ok"), "{}", real.join("\n"));
}
