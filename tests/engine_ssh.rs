//! End-to-end tests of `recipe run` against a real OpenSSH server on loopback.

mod common;
use common::*;

/// `recipe run` of the engine fixture, into `base`.
fn engine(base: impl std::fmt::Display) -> Test {
    Test::new()
        .args(["run", "tests/fixtures/recipes/engine.rhai"])
        .args(["--var", &format!("base={base}")])
}

/// The engine fixture on every host of `inv`, as JSON.
fn engine_json(inv: &std::path::Path, base: &str) -> Test {
    engine(base)
        .args(["--group", "all", "--json", "-i"])
        .arg(inv)
}

#[test]
fn converges_then_reports_nothing_changed() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("t1", "");
    let base = sshd.path("target");
    let base = base.to_str().expect("utf8");
    let out = engine_json(&inv, base).run();
    assert_eq!(
        out.code,
        0,
        "first run failed: {}\nsshd: {}",
        out.show(),
        sshd.log()
    );
    let ev = out.events();
    let steps: Vec<_> = ev.iter().filter(|e| e["event"] == "step").collect();
    assert!(steps.iter().all(|s| s["status"] == "changed"), "{steps:?}");
    assert!(steps.iter().all(|s| s["host"] == "t1"
        && s["recipe"] == "engine.rhai"
        && s["line"].as_u64().unwrap_or(0) > 0));
    // The binary file arrived byte-exact, the template rendered, modes are as asked.
    let blob = std::fs::read(format!("{base}/blob.bin")).expect("blob written");
    assert_eq!(
        blob,
        std::fs::read(fixture("recipes/blob.bin")).expect("fixture")
    );
    let conf =
        std::fs::read_to_string(format!("{base}/sub dir/greeting.conf")).expect("template written");
    assert_eq!(conf, "greeting = hi\nitem1\nitem2\nitem3\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0)
    };
    assert_eq!(mode(&format!("{base}/blob.bin")), 0o600);
    assert_eq!(mode(&format!("{base}/sub dir/greeting.conf")), 0o640);
    assert_eq!(mode(&format!("{base}/sub dir")), 0o750);
    assert!(std::path::Path::new(&format!("{base}/notified")).exists());

    let out = engine_json(&inv, base).run().expect_success();
    let ev = out.events();
    let recap = &recaps(&ev)[0];
    assert_eq!(recap["changed"], 0, "second run changed something: {ev:?}");
    assert_eq!(recap["failed"], 0);
    assert_eq!(
        std::fs::read_to_string(format!("{base}/ran.txt")).unwrap_or_default(),
        "ran\n",
        "guarded command ran twice"
    );

    // A changed variable changes exactly the template, and the notification runs.
    std::fs::remove_file(format!("{base}/notified")).ok();
    let ev = engine_json(&inv, base)
        .args(["--var", "greeting=hello"])
        .run()
        .expect_success()
        .events();
    let changed: Vec<String> = ev
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| e["op"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(changed, vec!["template", "sh"]);
}

/// Lists every path under `dir` with its mode and content checksum.
fn snapshot(dir: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . -printf '%p %m %s\\n' | sort",
            dir.display()
        ))
        .output()
        .expect("find");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn dry_run_on_a_fresh_target_changes_nothing() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("t1", "");
    let root = sshd.path("dry");
    std::fs::create_dir_all(&root).expect("dir");
    let before = snapshot(&root);
    let base = root.join("target");
    let out = engine(base.display())
        .args(["--host", "t1", "--dry-run", "--diff", "-i"])
        .arg(&inv)
        .run()
        .expect_success();
    let text = &out.stdout;
    assert!(text.contains("would change"), "{text}");
    assert!(
        text.contains("+greeting = hi"),
        "the diff shows the new content: {text}"
    );
    assert!(
        text.contains("binary content"),
        "binary files are summarized, not dumped: {text}"
    );
    assert_eq!(snapshot(&root), before, "the dry run changed the target");
}

#[test]
fn changed_host_key_is_refused_with_the_fix() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("t1", "");
    // Replace the recorded key with another one of the same type.
    let other = sshd.path("other_key");
    keygen(&other);
    let pubkey = std::fs::read_to_string(sshd.path("other_key.pub")).expect("pub");
    let mut p = pubkey.split_whitespace();
    std::fs::write(
        sshd.path("known_hosts"),
        format!(
            "[127.0.0.1]:{} {} {}\n",
            sshd.port,
            p.next().unwrap_or(""),
            p.next().unwrap_or("")
        ),
    )
    .expect("write");
    let out = engine(sshd.path("x").display())
        .args(["--host", "t1", "--accept-new-host-keys", "-i"])
        .arg(&inv)
        .run()
        .expect_code(1);
    let text = &out.stdout;
    assert!(text.contains("HOST KEY CHANGED"), "{text}");
    assert!(text.contains("ssh-keygen -R"), "names the fix: {text}");
    assert!(text.contains("unreachable"), "{text}");
    assert!(!sshd.path("x").exists());
}

#[test]
fn unknown_host_key_is_refused_unless_accepted() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("t1", "");
    std::fs::write(sshd.path("known_hosts"), "").expect("empty known_hosts");
    let base = sshd.path("acc");
    let run = |accept: bool| {
        let t = engine(base.display())
            .args(["--host", "t1", "--json", "-i"])
            .arg(&inv);
        if accept {
            t.arg("--accept-new-host-keys").run()
        } else {
            t.run()
        }
    };
    run(false)
        .expect_code(1)
        .expect_stdout_contains(&["unknown host key"]);
    run(true).expect_success();
    let kh = std::fs::read_to_string(sshd.path("known_hosts")).unwrap_or_default();
    assert!(kh.contains(&format!("[127.0.0.1]:{}", sshd.port)), "{kh}");
    // The recorded key is now known.
    run(false).expect_success();
}

#[test]
fn an_unreachable_host_fails_while_the_other_succeeds() {
    let sshd = Sshd::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let inv = sshd.inventory(
        "good",
        &format!("\n[hosts.dead]\naddress = \"127.0.0.1\"\nport = {dead_port}\nuser = \"root\"\nkey = \"{}\"\n", sshd.path("client_key").display()),
    );
    let base = sshd.path("two");
    let out = engine(base.display())
        .args(["--host", "good", "--host", "dead", "--json", "-i"])
        .arg(&inv)
        .run()
        .expect_code(1);
    let r = out.recaps();
    let good = r.iter().find(|x| x["host"] == "good").expect("good recap");
    let dead = r.iter().find(|x| x["host"] == "dead").expect("dead recap");
    assert_eq!(good["failed"], 0);
    assert_eq!(good["unreachable"], false);
    assert!(good["changed"].as_u64().unwrap_or(0) > 0);
    assert_eq!(dead["unreachable"], true);
    assert!(
        dead["msg"].as_str().unwrap_or("").contains("dead"),
        "{dead}"
    );
}

#[test]
fn a_syntax_error_exits_2_with_line_and_column() {
    Test::new()
        .args([
            "run",
            "tests/fixtures/recipes/syntax_error.rhai",
            "--host",
            "nowhere.invalid",
        ])
        .run()
        .expect_code(2)
        // With the source line.
        .expect_stderr_contains(&["syntax_error.rhai:3:", "let b = (a + ;"]);
    Test::new()
        .args(["check", "tests/fixtures/recipes/syntax_error.rhai"])
        .run()
        .expect_code(2);
}

#[test]
fn a_misspelt_var_is_an_error_before_any_host_is_touched() {
    Test::new()
        .args([
            "run",
            "tests/fixtures/recipes/engine.rhai",
            "--host",
            "nowhere.invalid",
            "--var",
            "greting=x",
        ])
        .run()
        .expect_code(2)
        .expect_stderr_contains(&["did you mean greeting"]);
}

#[test]
fn a_command_that_hangs_is_stopped_by_its_timeout() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("t1", "");
    let r = sshd.path("hang.rhai");
    std::fs::write(&r, "// Hangs.\nsh(\"sleep 600\", #{timeout: 2});\n").expect("write");
    let started = std::time::Instant::now();
    Test::new()
        .arg("run")
        .arg(&r)
        .args(["--host", "t1", "-i"])
        .arg(&inv)
        .run()
        .expect_code(1)
        .expect_stdout_contains(&["did not finish within 2s", "hang.rhai:2"]);
    assert!(started.elapsed().as_secs() < 60);
}

#[test]
fn controller_mode_plays_recipes_in_order_and_reuses_connections() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("t1", "");
    let base = sshd.path("orch");
    let out = Test::new()
        .args([
            "run",
            "tests/fixtures/recipes/orchestrate.rhai",
            "--json",
            "-i",
        ])
        .arg(&inv)
        .args(["--var", &format!("base={}", base.display())])
        .env("RECIPE_STATS", "1")
        .run()
        .expect_success();
    let err = &out.stderr;
    let steps = out.steps();
    // First play changes everything (5 steps), the second finds nothing to do (4 steps:
    // the notification runs only on change).
    assert_eq!(steps.len(), 9, "{steps:?}");
    assert!(steps[..5].iter().all(|s| s["status"] == "changed"));
    assert!(steps[5..].iter().all(|s| s["status"] == "ok"), "{steps:?}");
    let conf = std::fs::read_to_string(base.join("sub dir/greeting.conf")).unwrap_or_default();
    assert!(conf.starts_with("greeting = from play"), "{conf}");
    assert!(
        err.contains("\"connections\":1"),
        "one connection for both plays: {err}"
    );
}

#[test]
fn a_host_behind_a_jump_host_is_reached_through_it() {
    use common::netns::{self, Netns, PORT};
    // The inner host listens in a network namespace this machine cannot enter: only the
    // jump host, on the namespace's one link, can reach it. Ignoring `jump` fails.
    let mut ns = Netns::new();
    let far = ns.far.clone();
    ns.sshd(&far, "");
    ns.sshd("127.0.0.2", "");
    assert!(!netns::reachable_from_here("127.0.0.2", PORT));
    let kh = ns.known_hosts();
    let key = ns.client_key.display().to_string();
    let inv = netns::write(
        ns.dir.path(),
        "inventory.toml",
        &format!(
            "known_hosts = \"{kh}\"\n\n[hosts.bastion]\naddress = \"{far}\"\nport = {PORT}\nuser = \"root\"\nkey = \"{key}\"\n\
             \n[hosts.inner]\naddress = \"127.0.0.2\"\nport = {PORT}\nuser = \"root\"\nkey = \"{key}\"\njump = \"bastion\"\n",
            kh = kh.display(),
        ),
    );
    let base = ns.path("via-jump");
    engine(base.display())
        .args(["--host", "inner", "--json", "-i"])
        .arg(&inv)
        .run()
        .expect_success();
    assert!(base.join("blob.bin").exists());
}

/// What `RECIPE_STATS=1` printed: the counter `key` of the run.
fn stat(stderr: &str, key: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("\"event\":\"stats\""))
        .unwrap_or_else(|| panic!("no stats in {stderr}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("stats are JSON");
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// The steps as reported, without their times.
fn reported(out: &common::Output) -> Vec<serde_json::Value> {
    out.steps()
        .into_iter()
        .map(|mut s| {
            if let Some(o) = s.as_object_mut() {
                o.remove("ms");
            }
            s
        })
        .collect()
}

/// The benchmark's munge step (its file-only variant, as the scale case runs it): the
/// idempotent re-run asks all its probes in one round trip (it took 5, one per step, before
/// the probes were asked ahead) and reports exactly what the step-by-step run reports.
#[test]
fn the_munge_steps_idempotent_rerun_takes_one_round_trip() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("t1", "");
    let base = sshd.path("munge");
    std::fs::create_dir_all(base.join("etc/default")).expect("mkdir");
    let key = sshd.path("munge.key");
    std::fs::write(&key, [7u8; 1024]).expect("key");
    let run = |stats: bool, ahead: bool| {
        let mut t = Test::new()
            .args(["run", "recipes/bench_munge.rhai", "--json", "-i"])
            .arg(&inv)
            .args(["--host", "t1"])
            .args(["--var", &format!("base={}", base.display())])
            .args(["--var", &format!("key_src={}", key.display())])
            .args(["--var", r#"packages=["openssh-server","coreutils"]"#])
            .args(["--var", "owner=root", "--var", "service="]);
        if stats {
            t = t.env("RECIPE_STATS", "1");
        }
        if !ahead {
            t = t.env("RECIPE_NO_PREFETCH", "1");
        }
        t.run().expect_success()
    };
    let first = run(false, true);
    assert!(first.steps().iter().any(|s| s["status"] == "changed"));
    let ahead = run(true, true);
    let alone = run(true, false);
    let steps = reported(&ahead);
    assert_eq!(steps.len(), 5, "{steps:?}");
    assert!(steps.iter().all(|s| s["status"] == "ok"), "{steps:?}");
    assert_eq!(steps, reported(&alone));
    assert_eq!(stat(&alone.stderr, "round_trips"), 5, "{}", alone.stderr);
    assert_eq!(stat(&ahead.stderr, "round_trips"), 1, "{}", ahead.stderr);
    assert_eq!(stat(&ahead.stderr, "probes_ahead"), 5, "{}", ahead.stderr);
}

/// A change drops the answers asked before it (the second write of the same file finds it
/// written), and a step that fails fails at the same line with the same message as when each
/// step probes alone.
#[test]
fn answers_asked_ahead_end_with_a_change_and_failures_stay_where_they_were() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("t1", "");
    let go = |base: &std::path::Path, broken: bool, ahead: bool| {
        let mut t = Test::new()
            .args([
                "run",
                "tests/fixtures/recipes/prefetch.rhai",
                "--json",
                "-i",
            ])
            .arg(&inv)
            .args(["--host", "t1"])
            .args(["--var", &format!("base={}", base.display())])
            .args([
                "--var",
                if broken {
                    "break_it=yes"
                } else {
                    "break_it=no"
                },
            ])
            .env("RECIPE_STATS", "1");
        if !ahead {
            t = t.env("RECIPE_NO_PREFETCH", "1");
        }
        t.run()
    };
    let (a, b) = (sshd.path("ahead"), sshd.path("alone"));
    let first = go(&a, false, true).expect_success();
    let statuses: Vec<_> = first.steps().iter().map(|s| s["status"].clone()).collect();
    assert_eq!(
        statuses,
        ["changed", "changed", "ok", "changed", "changed"],
        "{:?}",
        first.steps()
    );
    let again = go(&a, false, true).expect_success();
    assert!(again.steps().iter().all(|s| s["status"] == "ok"));
    assert_eq!(stat(&again.stderr, "round_trips"), 1, "{}", again.stderr);
    // Failing at line 18 (a file where a folder must be), both ways alike.
    go(&b, false, false).expect_success();
    let ahead = go(&a, true, true).expect_code(1);
    let alone = go(&b, true, false).expect_code(1);
    let last = |o: &common::Output| {
        let s = reported(o);
        let mut l = s.last().cloned().expect("a step");
        if let Some(m) = l.as_object_mut() {
            m.remove("target");
            m.remove("msg");
        }
        (s.len(), l)
    };
    assert_eq!(last(&ahead), last(&alone));
    assert_eq!(last(&ahead).1["status"], "failed");
    assert_eq!(last(&ahead).1["line"], 18);
    assert!(ahead.stdout.contains("not a directory"), "{}", ahead.stdout);
}
