//! Run-time hardening against real OpenSSH servers on loopback: where output goes when
//! stdout is a file and stderr a terminal, what a command's stdin leaves on a target that
//! is cut or a controller that is stopped, secrets in messages, control characters from
//! targets, and the messages of keys, signals, time limits and badly encoded recipes.

mod common;
use common::loopback::*;
use common::pty::{self, Terminal};
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `recipe run RECIPE --host HOST -i INV`.
fn run_host(recipe: &Path, host: &str, inv: &Path) -> Test {
    Test::new()
        .arg("run")
        .arg(recipe)
        .args(["--host", host, "-i"])
        .arg(inv)
}

// ---------------------------------------------------------------------------------------
// Item 1: output with stdout redirected and stderr a terminal.

#[test]
fn step_lines_and_recap_go_to_stdout_when_stderr_is_a_terminal() {
    let s = Sshd::start();
    let inv = inventory_of(&s, &["h1", "h2", "h3"], "");
    let recipe = write(
        s.dir.path(),
        "out.rhai",
        "// Output test.\nsh(\"sleep 0.5; echo hi\");\nlog(\"note from the recipe\");\n",
    );
    let mut term = Terminal::open(pty::ROWS, pty::COLS);
    let child = run_all(&recipe, &inv)
        .env("TERM", "xterm")
        .stderr_to(term.stderr())
        .spawn();
    let out = child.finish();
    let term = text(&term.settled());
    assert_eq!(out.code, 0, "{}\n--- terminal\n{term}", out.show());
    for h in ["h1", "h2", "h3"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(h) && l.contains("out.rhai:2") && l.contains("changed")),
            "no step line of {h} on stdout:\n{}\n--- terminal\n{term}",
            out.all()
        );
        assert!(
            out.stdout
                .contains(&format!("{h:<10} note from the recipe")),
            "{}",
            out.all()
        );
    }
    assert!(
        out.stdout.contains("RECAP"),
        "{}\n--- terminal\n{term}",
        out.all()
    );
    assert!(
        !term.contains("RECAP") && !term.contains("out.rhai:2"),
        "step lines or recap on the terminal:\n{term}"
    );
}

// ---------------------------------------------------------------------------------------
// Item 2: a command's stdin never rests on the target.

const TOKEN: &str = "tok-7f3c9a1e5b2d4c6f8a0e";

/// The recipe (in `dir`), the argument of its `sleep` (this test's own, see [`own_sleep`])
/// and the file its second step would write (in `dir`, not shared with other tests).
fn stdin_recipe(dir: &Path) -> (PathBuf, String, PathBuf) {
    let sleep = own_sleep("4.5");
    let never = dir.join("never-written");
    let r = write(
        dir,
        "stdin.rhai",
        &format!(
            "// Stdin test.\nfn defaults() {{ #{{ api_token: \"\" }} }}\n\
             sh(\"cat > /dev/null; sleep {sleep}\", #{{stdin: vars.api_token}});\n\
             file({never:?}, #{{content: \"x\"}});\n",
            never = never.display().to_string()
        ),
    );
    (r, sleep, never)
}

/// No file under `tmp` (the target's TMPDIR) holds the token, and no worker folder is left.
fn assert_no_trace(tmp: &Path) {
    for f in files_under(tmp) {
        let b = std::fs::read(&f).unwrap_or_default();
        assert!(
            !text(&b).contains(TOKEN),
            "{} holds the token on the target",
            f.display()
        );
    }
    assert!(leftovers(tmp).is_empty(), "left: {:?}", leftovers(tmp));
}

#[test]
fn stdin_is_not_left_on_a_target_whose_sshd_is_killed() {
    let (mut s, tmp) = sshd_with_tmpdir();
    let inv = inventory_of(&s, &["cut"], "");
    let (recipe, sleep, _) = stdin_recipe(s.dir.path());
    let var = format!("api_token={TOKEN}");
    let child = run_all(&recipe, &inv).args(["--var", &var]).spawn();
    wait_until("the command", 30, || running(&["sleep", &sleep]));
    // While it runs: stdin is nowhere on disk.
    assert_no_trace(&tmp);
    cut(&mut s);
    child
        .finish()
        .expect_code(1)
        .expect_stdout_contains(&["connection lost"]);
    // The orphaned shell ends when its command does.
    wait_until("the command to end", 30, || !running(&["sleep", &sleep]));
    // Then the orphaned shell removes its folder.
    wait_until("the worker's folder to go", 30, || {
        leftovers(&tmp).is_empty()
    });
    assert_no_trace(&tmp);
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn sigterm_stops_like_ctrl_c_with_a_recap_and_leaves_nothing() {
    let (s, tmp) = sshd_with_tmpdir();
    let inv = inventory_of(&s, &["a", "b"], "");
    let (recipe, sleep, never) = stdin_recipe(s.dir.path());
    let var = format!("api_token={TOKEN}");
    let child = run_all(&recipe, &inv).args(["--var", &var]).spawn();
    wait_until("the commands", 30, || {
        running_count(&["sleep", &sleep]) == 2
    });
    child.signal(libc::SIGTERM);
    let out = child.finish();
    assert_ne!(out.code, 143, "killed, not stopped: {}", out.show());
    let out = out
        .expect_code(1)
        .expect_stderr_contains(&["interrupted (SIGTERM)"])
        .expect_stdout_contains(&["RECAP"]);
    for h in ["a", "b"] {
        // The current step finished; the next one never started.
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(h) && l.contains("stdin.rhai:3") && l.contains("changed")),
            "{}",
            out.all()
        );
    }
    // The next step never started; the recap says where each host stopped.
    assert!(
        !out.stdout
            .lines()
            .any(|l| l.contains("stdin.rhai:4") && l.contains(" file ")),
        "{}",
        out.all()
    );
    // (The second host's identical message may be folded into "same as" the first.)
    assert_eq!(
        out.stdout
            .matches("stdin.rhai:4:1: stopped: interrupted (SIGTERM)")
            .count()
            + out.stdout.matches("same as a\n").count()
            + out.stdout.matches("same as b\n").count(),
        2,
        "{}",
        out.all()
    );
    assert!(!never.exists());
    assert!(!out.all().contains(TOKEN), "{}", out.all());
    assert_no_trace(&tmp);
    std::fs::remove_dir_all(&tmp).ok();
}

/// A recipe whose first step sleeps (own argument), then writes a file.
fn sleeper(dir: &Path, secs: &str) -> PathBuf {
    write(
        dir,
        "sleeper.rhai",
        &format!(
            "// Signal test.\nfn defaults() {{ #{{ out: \"\" }} }}\n\
             sh(\"sleep {secs}\");\nfile(vars.out, #{{content: \"x\"}});\n"
        ),
    )
}

/// Ctrl-C (SIGINT) stops like SIGTERM; a second signal of either kind abandons the step
/// under way and exits 128 + that signal after the recap, with the connections closed and
/// so the host's command ended (its process list).
#[test]
fn a_second_signal_aborts_after_the_recap_with_128_plus_its_number() {
    let s = Sshd::start();
    let inv = inventory_of(&s, &["a", "b"], "");
    let cases = [
        (libc::SIGINT, None, 1, "interrupted (Ctrl-C)"),
        (
            libc::SIGINT,
            Some(libc::SIGINT),
            130,
            "interrupted (Ctrl-C)",
        ),
        (
            libc::SIGTERM,
            Some(libc::SIGTERM),
            143,
            "interrupted (SIGTERM)",
        ),
        (
            libc::SIGINT,
            Some(libc::SIGTERM),
            143,
            "interrupted (Ctrl-C)",
        ),
    ];
    for (i, (first, second, code, why)) in cases.into_iter().enumerate() {
        let secs = format!("{}.{}", 621 + i, std::process::id() % 1000);
        let short = if second.is_none() {
            "2.5"
        } else {
            secs.as_str()
        };
        let dir = s.dir.path().join(format!("sig{i}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let recipe = sleeper(&dir, short);
        let out_file = dir.join("written");
        let child = run_all(&recipe, &inv)
            .args(["--var", &format!("out={}", out_file.display())])
            .spawn();
        wait_until("the commands", 30, || running_count(&["sleep", short]) == 2);
        child.signal(first);
        if let Some(sig) = second {
            std::thread::sleep(std::time::Duration::from_millis(300));
            child.signal(sig);
        }
        let out = child
            .finish()
            .expect_code(code)
            .expect_stderr_contains(&[why])
            .expect_stdout_contains(&["RECAP"]);
        for h in ["a", "b"] {
            assert!(
                out.stdout
                    .lines()
                    .any(|l| l.starts_with(h) && l.contains("failed=1")),
                "{}",
                out.all()
            );
        }
        if second.is_some() {
            assert!(
                out.stdout.contains("abandoned by a second signal"),
                "{}",
                out.all()
            );
            wait_until("the abandoned commands to end on the host", 30, || {
                !running(&["sleep", short])
            });
        }
        assert!(!out_file.exists(), "the next step ran");
    }
}

/// Ctrl-C while a host's SSH handshake stalls (a server that accepts and never speaks)
/// stops that host at once, as not started, instead of waiting out the connect timeout.
#[test]
fn ctrl_c_during_a_stalled_handshake_stops_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let s = Sshd::start();
    let dir = s.dir.path();
    let inv = dir.join("stall.toml");
    std::fs::write(
        &inv,
        format!(
            "known_hosts = \"{}\"\n[hosts.mute]\naddress = \"127.0.0.1\"\nport = {port}\nuser = \"nobody\"\n",
            s.path("known_hosts").display()
        ),
    )
    .expect("inventory");
    let recipe = sleeper(dir, "1");
    let child = run_all(&recipe, &inv)
        .args(["--connect-timeout", "3000", "--var", "out=/nonexistent/x"])
        .spawn();
    // The controller has connected and waits for the server's SSH banner.
    let (_conn, _) = listener.accept().expect("accept");
    child.signal(libc::SIGINT);
    let out = child.finish().expect_code(1);
    assert!(
        out.stdout.contains("not started: interrupted (Ctrl-C)"),
        "{}",
        out.all()
    );
    assert!(!out.stdout.contains("unreachable"), "{}", out.all());
}

#[test]
fn folders_of_dead_runs_are_swept_at_the_next_connection() {
    let (s, tmp) = sshd_with_tmpdir();
    let inv = inventory_of(&s, &["h"], "");
    let recipe = write(s.dir.path(), "noop.rhai", "// Nothing.\nprobe(\"true\");\n");
    let mk = |name: &str, file: &str, old: bool| {
        let d = tmp.join(name);
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(d.join(file), TOKEN).expect("write");
        if old {
            for p in [d.join(file), d.clone()] {
                let st = Command::new("touch")
                    .args(["-d", "-10 min"])
                    .arg(&p)
                    .status()
                    .expect("touch");
                assert!(st.success());
            }
        }
        d
    };
    let dead = mk(".recipe.DeAdRuN1", "i", true);
    let recent = mk(".recipe.ReCeNt01", "i", false);
    let foreign = mk(".recipe.NoTOuRs1", "notes.txt", true);
    let busy = mk(".recipe.BuSy0001", "e", true);
    // A command of a live run holds its stderr file open.
    let mut holder = Command::new("sleep")
        .arg("30")
        .stdin(std::fs::File::open(busy.join("e")).expect("open"))
        .spawn()
        .expect("sleep");
    let out = run_all(&recipe, &inv).run();
    // The sweep runs beside the first command, in the background: give it a moment (it
    // looks at the folders in name order, so the busy one before the dead one).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while dead.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = holder.kill();
    let _ = holder.wait();
    out.expect_success();
    assert!(!dead.exists(), "the dead run's folder is still there");
    assert!(
        recent.exists(),
        "a folder touched 5 minutes ago or less is kept"
    );
    assert!(foreign.exists(), "a folder holding other files is kept");
    assert!(busy.exists(), "a folder with an open file is kept");
    std::fs::remove_dir_all(&tmp).ok();
}

// ---------------------------------------------------------------------------------------
// Item 3: secrets in messages.

#[test]
fn secret_values_are_in_no_usage_error_nor_listing() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "sec.rhai",
        "// Secrets.\nfn defaults() { #{ api_token: 0, db: #{ root_password: \"pw-in-default-1\", user: \"ops\" }, \
         admin_password: \"pw-in-default-2\", empty_token: \"\" } }\n\
         log(`${vars.api_token} ${vars.db.root_password} ${vars.db.user}`);\n",
    );
    let r = dir.path().join("sec.rhai").display().to_string();
    for var in [
        "api_token=SECRET-VALUE-1",
        "SECRET-VALUE-1",
        "bad name_token=SECRET-VALUE-1",
        "db={root_password = \"SECRET-VALUE-1\"",
    ] {
        Test::new()
            .args(["run", &r, "--local", "--var", var])
            .run()
            .expect_code(2)
            .expect_lacks(&["SECRET-VALUE", "pw-in-default"])
            .expect_stderr_contains(&["--var"]);
    }
    // A number in a secret-named variable and a secret-named key inside a map are secrets.
    Test::new()
        .args(["run", &r, "--local", "--var", "api_token=987654321"])
        .run()
        .expect_success()
        .expect_stdout_contains(&[" ops"])
        .expect_lacks(&["987654321", "pw-in-default"]);
    Test::new()
        .arg("list")
        .arg(dir.path())
        .run()
        .expect_success()
        .expect_lacks(&["pw-in-default"])
        .expect_stdout_contains(&[
            "admin_password = <secret: hidden>",
            "\"user\": \"ops\"",
            "empty_token = \"\"",
        ]);
}

// ---------------------------------------------------------------------------------------
// Item 6: control characters from targets.

#[test]
fn control_characters_from_targets_are_shown_escaped() {
    let s = Sshd::start();
    let inv = inventory_of(&s, &["t"], "");
    let recipe = write(
        s.dir.path(),
        "esc.rhai",
        "// Escapes.\n\
         let p = probe(\"printf '\\\\033]0;pwned\\\\007\\\\033[2J'\");\n\
         log(\"out: \" + p.stdout + \"\\tend\");\n\
         print(\"cr\\rline\");\n\
         sh(\"printf 'bad\\\\033[2Jthing\\\\233x\\\\n' >&2; exit 3\");\n",
    );
    let out = run_all(&recipe, &inv).run().expect_code(1);
    let all = out.all();
    assert!(
        !all.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "raw control characters in output: {all:?}"
    );
    assert!(
        all.contains("out: \\x1b]0;pwned\\x07\\x1b[2J\tend"),
        "{all}"
    );
    assert!(all.contains("cr\\rline"), "{all}");
    assert!(all.contains("bad\\x1b[2Jthing"), "{all}");
    // JSON escapes them its own way and stays valid.
    let j = run_all(&recipe, &inv).arg("--json").run();
    assert!(!j.events().is_empty());
}

// ---------------------------------------------------------------------------------------
// Item 7: messages that mislead.

#[test]
fn a_missing_key_file_is_named_with_its_origin() {
    let s = Sshd::start();
    let inv = s.inventory("k", "");
    let text = std::fs::read_to_string(&inv)
        .expect("inv")
        .replace("client_key", "no_such_key");
    std::fs::write(&inv, text).expect("inv");
    let recipe = write(s.dir.path(), "k.rhai", "// K.\nprobe(\"true\");\n");
    run_host(&recipe, "k", &inv)
        .env_remove("SSH_AUTH_SOCK")
        .run()
        .expect_code(1)
        .expect_lacks(&["no key at all"])
        .expect_stdout_contains(&[&format!(
            "{} (missing: no such file; it is `key =` of host k in {}",
            s.path("no_such_key").display(),
            inv.display()
        )]);
}

/// An ssh-agent of the test's own, holding `n` keys the server does not know; killed on drop.
struct Agent {
    sock: PathBuf,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn with_unknown_keys(n: usize) -> Agent {
        let dir = tempfile::tempdir().expect("tmp");
        let sock = dir.path().join("agent.sock");
        let out = Command::new("ssh-agent")
            .arg("-a")
            .arg(&sock)
            .arg("-s")
            .output()
            .expect("ssh-agent runs");
        let pid = text(&out.stdout)
            .split("SSH_AGENT_PID=")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .and_then(|p| p.parse().ok())
            .expect("agent pid");
        for i in 0..n {
            let k = dir.path().join(format!("k{i}"));
            keygen(&k);
            let st = Command::new("ssh-add")
                .arg("-q")
                .arg(&k)
                .env("SSH_AUTH_SOCK", &sock)
                .stderr(Stdio::null())
                .status()
                .expect("ssh-add");
            assert!(st.success());
        }
        Agent {
            sock,
            pid,
            _dir: dir,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the agent this test started.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
    }
}

#[test]
fn the_inventory_key_is_offered_before_a_full_agent() {
    let s = Sshd::start();
    let agent = Agent::with_unknown_keys(8);
    let inv = s.inventory("a", "");
    let recipe = write(s.dir.path(), "a.rhai", "// A.\nprobe(\"true\");\n");
    let sock = agent.sock.display().to_string();
    let run = || {
        run_host(&recipe, "a", &inv)
            .env("SSH_AUTH_SOCK", &sock)
            .run()
    };
    run().expect_success();
    // With a wrong inventory key the failure says what was offered, not "Channel send error".
    let bad = s.path("other_key");
    keygen(&bad);
    let text = std::fs::read_to_string(&inv)
        .expect("inv")
        .replace("client_key", "other_key");
    std::fs::write(&inv, text).expect("inv");
    run()
        .expect_code(1)
        .expect_lacks(&["Channel send error"])
        .expect_stdout_contains(&[
            &format!("tried: {} (refused)", bad.display()),
            "ssh-agent keys",
        ]);

    // An encrypted inventory key is used through the agent's copy, before the other 8.
    let enc = s.path("enc_key");
    keygen_with(&enc, "pass phrase");
    let mut ak = std::fs::read_to_string(s.path("authorized_keys")).expect("ak");
    ak.push_str(&std::fs::read_to_string(s.path("enc_key.pub")).expect("pub"));
    std::fs::write(s.path("authorized_keys"), ak).expect("ak");
    let askpass = write(s.dir.path(), "askpass", "#!/bin/sh\necho 'pass phrase'\n");
    let st = Command::new("chmod").arg("755").arg(&askpass).status();
    assert!(st.is_ok_and(|s| s.success()));
    let st = Command::new("ssh-add")
        .arg("-q")
        .arg(&enc)
        .env("SSH_AUTH_SOCK", &sock)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ssh-add");
    assert!(st.success(), "ssh-add of the encrypted key");
    let text = std::fs::read_to_string(&inv)
        .expect("inv")
        .replace("other_key", "enc_key");
    std::fs::write(&inv, text).expect("inv");
    run().expect_success();
}

#[test]
fn time_limits_are_named_covered_by_ignore_errors_and_false_for_probes() {
    let s = Sshd::start();
    let inv = s.inventory("t", "");
    let recipe = write(
        s.dir.path(),
        "t.rhai",
        "// Time limits.\n\
         let p = probe(\"sleep 30\", 1);\n\
         log(`probe ok=${p.ok} rc=${p.rc} timed_out=${p.timed_out}`);\n\
         let r = sh(\"sleep 31\", #{timeout: 1, ignore_errors: true});\n\
         log(`sh rc=${r.rc} timed_out=${r.timed_out}`);\n\
         sh(\"trap '' TERM; sleep 32\", #{timeout: 1});\n",
    );
    // No clock: a limit not enforced shows as rc 0 and timed_out=false below.
    let out = run_host(&recipe, "t", &inv).run();
    let out = out.expect_code(1).expect_stdout_contains(&[
        "probe ok=false rc=124 timed_out=true",
        "sh rc=124 timed_out=true",
    ]);
    let failed = out
        .stdout
        .lines()
        .skip_while(|l| !l.contains("t.rhai:6"))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(failed.contains("FAILED"), "{}", out.show());
    assert!(failed.contains("timed out"), "{failed}\n{}", out.show());
    out.expect_lacks(&["exit status 137"]);
}

#[test]
fn a_recipe_that_is_not_utf8_is_placed_at_its_first_bad_byte() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("latin1.rhai");
    std::fs::write(&p, b"// Latin-1.\nlog(\"caf\xe9\");\n").expect("write");
    Test::new()
        .arg("run")
        .arg(&p)
        .arg("--local")
        .run()
        .expect_code(2)
        .expect_stderr_contains(&[&format!("{}:2:9", p.display()), "byte 0xe9"]);
    // A module is not "not found" because of its encoding.
    std::fs::write(
        dir.path().join("m.rhai"),
        b"// M.\nfn f() { \"caf\xe9\" }\n",
    )
    .expect("write");
    let imp = write(
        dir.path(),
        "imp.rhai",
        "// I.\nimport \"m\" as m;\nlog(m::f());\n",
    );
    Test::new()
        .arg("run")
        .arg(&imp)
        .arg("--local")
        .run()
        .expect_code(1)
        .expect_stdout_contains(&[&format!(
            "module \"m\" ({}:2:14) is not UTF-8",
            dir.path().join("m.rhai").display()
        )]);
}

#[test]
fn a_wait_for_check_that_hangs_once_is_retried() {
    let s = Sshd::start();
    let inv = s.inventory("w", "");
    let flag = s.path("hung-once");
    let recipe = write(
        s.dir.path(),
        "w.rhai",
        &format!(
            "// Wait.\nwait_for(\"[ -e {f} ] || {{ touch {f}; sleep 60; }}\", #{{timeout: 40, interval: 1}});\n",
            f = flag.display()
        ),
    );
    run_host(&recipe, "w", &inv).run().expect_success();
    assert!(flag.exists());
}
