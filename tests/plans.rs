//! Honest plans across hosts and plays (loopback sshd, two inventory names for it): in a dry
//! controller run a worker reads the master's planned configuration (not a guess), a copy of
//! a key a command has not made yet says what it depends on, and the master's recipe played
//! twice is counted once; every step's `line` belongs to the file `recipe` or `source` names.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

fn inventory(sshd: &Sshd) -> std::path::PathBuf {
    let w1 = format!(
        "\n[hosts.w1]\naddress = \"{}\"\nport = {}\nuser = \"root\"\nkey = \"{}\"\n",
        sshd.addr,
        sshd.port,
        sshd.path("client_key").display()
    );
    sshd.inventory("master", &w1)
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
