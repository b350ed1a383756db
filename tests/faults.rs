//! Fault tests: what a run does when hosts, keys, networks, disks and commands misbehave.
//!
//! Every fault is made for real: several real OpenSSH servers on loopback (one per "host"),
//! a refused key, a changed host key, a closed port, a command that hangs, sshd killed in the
//! middle of a command or of a 50 MB file transfer, a full tmpfs; and, on systemd-nspawn
//! sandbox hosts (one sandbox boot for all of them), sudo refused, a host's link taken down,
//! and dry runs of every shipped recipe that must leave the hosts' files untouched.
//!
//! Each test checks the same three things: the failing host ends with a short error naming
//! the host and the step, the other hosts finish their work, and a re-run after the fault is
//! repaired converges (and a third run changes nothing).

mod common;
use common::loopback::*;
use common::sandbox::Sandbox;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The recipe the loopback fault tests share. `slow` sleeps (guarded, so a re-run skips
/// it once it has run), `hang` outlives any test, `big` copies a controller file.
const FAULTS_RHAI: &str = r#"// Fault test recipe.
fn defaults() {
    #{
        base: "/tmp/recipe-faults", // per host
        hang: "",                   // a sleep this long (per-step timeout 2 s)
        hang_global: "",            // the same without a per-step timeout (use --timeout)
        slow: "",                   // a command that takes a while (sleep argument)
        big: "",                    // a controller file copied to base/big.bin
    }
}

directory(vars.base, #{mode: "0755"});
file(`${vars.base}/a.txt`, #{content: "a\n", mode: "0640"});
if vars.hang != "" {
    sh(`sleep ${vars.hang}`, #{timeout: 2});
}
if vars.hang_global != "" {
    sh(`sleep ${vars.hang_global}`);
}
if vars.slow != "" {
    sh(`sleep ${vars.slow} && touch ${vars.base}/slept`, #{creates: `${vars.base}/slept`});
}
if vars.big != "" {
    file(`${vars.base}/big.bin`, #{src: vars.big, mode: "0600"});
}
file(`${vars.base}/done`, #{content: "done\n"});
"#;

fn write_recipe(dir: &Path) -> PathBuf {
    let p = dir.join("faults.rhai");
    std::fs::write(&p, FAULTS_RHAI).expect("recipe");
    p
}

fn base_var(dir: &Path, name: &str) -> String {
    format!("base = \"{}\"", dir.join(name).display())
}

/// A run's human output fits on one screen and names every failing host.
fn assert_one_screen(r: &Output, hosts: &[&str]) {
    let lines = r.all().lines().count();
    assert!(
        lines <= 40,
        "more than one screen ({lines} lines):\n{}",
        r.show()
    );
    for h in hosts {
        assert!(r.stdout.contains(h), "{h} is not named:\n{}", r.show());
    }
    assert!(!r.all().contains("panicked"), "{}", r.show());
}

// ---------------------------------------------------------------------------------------
// Loopback sshd faults.

#[test]
fn connection_faults_name_the_host_and_the_others_finish() {
    let good = Sshd::start();
    let wrong_key = Sshd::start();
    let new_hostkey = Sshd::start();
    let mut dead = Sshd::start();
    let dir = good.dir.path();
    let recipe = write_recipe(dir);

    // Wrong key: the inventory names a key the server does not know.
    let stranger = dir.join("stranger_key");
    keygen(&stranger);
    let mut hosts = vec![
        spec("good", &good, base_var(dir, "good")),
        spec("wrongkey", &wrong_key, base_var(dir, "wrongkey")),
        spec("hostkey", &new_hostkey, base_var(dir, "hostkey")),
        spec("dead", &dead, base_var(dir, "dead")),
    ];
    hosts[1].key = stranger.clone();
    let inv = inventory(dir, &hosts);
    // Host key changed: the recorded key for that server is another one.
    let kh = dir.join("known_hosts");
    let other = dir.join("other_host_key");
    keygen(&other);
    let other_pub = std::fs::read_to_string(dir.join("other_host_key.pub")).expect("pub");
    let mut p = other_pub.split_whitespace();
    let entry = format!(
        "[127.0.0.1]:{} {} {}",
        new_hostkey.port,
        p.next().unwrap_or(""),
        p.next().unwrap_or("")
    );
    let recorded = std::fs::read_to_string(&kh).expect("kh");
    let recorded: Vec<String> = recorded
        .lines()
        .map(|l| {
            if l.starts_with(&format!("[127.0.0.1]:{} ", new_hostkey.port)) {
                entry.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&kh, recorded.join("\n") + "\n").expect("kh");
    // Unreachable: nothing listens there any more.
    dead.stop();

    let r = run_all(&recipe, &inv).run();
    assert_eq!(r.code, 1, "{}", r.show());
    assert_one_screen(&r, &["wrongkey", "hostkey", "dead"]);
    assert!(r.stdout.contains("authentication failed"), "{}", r.show());
    assert!(r.stdout.contains("HOST KEY CHANGED"), "{}", r.show());
    assert!(r.stdout.contains("unreachable"), "{}", r.show());
    assert!(
        dir.join("good/done").exists(),
        "the good host did not finish"
    );
    for h in ["wrongkey", "hostkey", "dead"] {
        assert!(!dir.join(h).exists(), "{h} was changed");
    }

    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.code, 1);
    let g = r.recap("good");
    assert_eq!(
        (g["failed"].as_u64(), g["changed"].as_u64()),
        (Some(0), Some(0))
    );
    for (h, why) in [
        ("wrongkey", "authentication failed"),
        ("hostkey", "HOST KEY CHANGED"),
        ("dead", "unreachable"),
    ] {
        let rc = r.recap(h);
        assert_eq!(rc["unreachable"], true, "{rc}");
        let msg = rc["msg"].as_str().unwrap_or("");
        assert!(msg.starts_with(&format!("{h}: ")), "names the host: {msg}");
        assert!(msg.contains(why), "{msg}");
    }
    let hk_msg = r.recap("hostkey")["msg"].as_str().unwrap_or("").to_string();
    assert!(
        hk_msg.contains(&format!("{}:3", kh.display())),
        "names the known_hosts file and line: {hk_msg}"
    );

    // Repair each fault the way the messages say, then re-run: everything converges.
    let fix = hk_msg
        .split("remove the old key with: ")
        .nth(1)
        .expect("the fix command is shown")
        .trim()
        .to_string();
    let st = Command::new("sh")
        .arg("-c")
        .arg(&fix)
        .output()
        .expect("fix");
    assert!(st.status.success(), "{fix}: {}", text(&st.stderr));
    std::fs::copy(wrong_key.path("client_key"), &stranger).expect("key");
    let _dead_again = restart(&dead);
    let r = run_all(&recipe, &inv)
        .args(["--json", "--accept-new-host-keys"])
        .run();
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.recap("good")["changed"], 0);
    for h in ["wrongkey", "hostkey", "dead"] {
        assert!(r.recap(h)["changed"].as_u64().unwrap_or(0) > 0);
        assert!(dir.join(h).join("done").exists());
    }
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.code, 0, "{}", r.show());
    for h in ["good", "wrongkey", "hostkey", "dead"] {
        assert_eq!(r.recap(h)["changed"], 0, "{h}");
    }
}

/// A command that would sleep 601 s is stopped at its 2 s limit, and at the run-wide
/// `--timeout`: the run reports it and ends (the test's own deadline, far below 601 s,
/// fails a run that waits for the command instead), and the command ends on the host.
/// Events, not a stopwatch: the command is seen running on the host, then gone.
#[test]
fn a_hung_command_is_stopped_by_its_timeout() {
    let s = Sshd::start();
    let dir = s.dir.path();
    let recipe = write_recipe(dir);
    // Own arguments: no other process on this machine runs them.
    let hang = own_sleep("601");
    let inv = inventory(
        dir,
        &[
            spec(
                "hangs",
                &s,
                format!("{}, hang = \"{hang}\"", base_var(dir, "h")),
            ),
            spec("fine", &s, base_var(dir, "f")),
        ],
    );
    let run = run_all(&recipe, &inv)
        .timeout(Duration::from_secs(300))
        .spawn();
    wait_until("the hung command to start on the host", 120, || {
        running(&["sleep", &hang])
    });
    let r = run.finish();
    assert_eq!(r.code, 1, "{}", r.show());
    assert_one_screen(&r, &["hangs"]);
    assert!(
        r.stdout.contains("did not finish within 2s"),
        "says why: {}",
        r.show()
    );
    assert!(
        r.stdout.contains("faults.rhai:15"),
        "names the step: {}",
        r.show()
    );
    assert!(dir.join("f/done").exists(), "the other host finished");
    assert!(!dir.join("h/done").exists(), "the hung host went on");
    wait_until("the hung command to be killed", 60, || {
        !running(&["sleep", &hang])
    });

    // The run-wide --timeout covers commands without their own.
    let hang = own_sleep("602");
    let inv2 = inventory(
        dir,
        &[spec(
            "hangs",
            &s,
            format!("{}, hang_global = \"{hang}\"", base_var(dir, "h2")),
        )],
    );
    let run = run_all(&recipe, &inv2)
        .args(["--json", "--timeout", "2"])
        .timeout(Duration::from_secs(300))
        .spawn();
    wait_until("the hung command to start on the host", 120, || {
        running(&["sleep", &hang])
    });
    let r = run.finish();
    assert_eq!(r.code, 1, "{}", r.show());
    let ev = r.events();
    let failed: Vec<_> = ev.iter().filter(|e| e["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{ev:?}");
    assert_eq!(failed[0]["host"], "hangs");
    assert_eq!(failed[0]["line"], 18);
    assert!(failed[0]["msg"]
        .as_str()
        .unwrap_or("")
        .contains("within 2s"));
    // The run-wide limit stops the command on the target too.
    wait_until("the hung command to be stopped on the host", 60, || {
        !running(&["sleep", &hang])
    });

    // Re-run without the hang: converges, then nothing changes.
    let inv = inventory(
        dir,
        &[
            spec("hangs", &s, base_var(dir, "h")),
            spec("fine", &s, base_var(dir, "f")),
        ],
    );
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.recap("hangs")["changed"].as_u64().unwrap_or(0) > 0);
    assert_eq!(r.recap("fine")["changed"], 0);
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.recap("hangs")["changed"], 0);
}

/// A command that sleeps after reading its stdin: small (inline in the worker's frame) or
/// 1 MiB (over a channel of its own, the path that had neither a time limit nor an end with
/// its session on the target).
const LINGER_RHAI: &str = r#"// Linger test recipe.
fn defaults() { #{ secs: "1", big: false } }
let input = "0123456789abcdef";
if vars.big { while input.len() < 1048576 { input += input; } }
sh(`cat >/dev/null; sleep ${vars.secs}`, #{stdin: input});
"#;

/// What runs on a host ends there: at its time limit (`--timeout`), and when the
/// controller is killed (SIGKILL: no chance to clean up) in the middle of it. Seen in the
/// host's process list, for both ways a command's stdin travels.
#[test]
fn commands_end_on_the_host_at_their_limit_and_with_their_session() {
    let s = Sshd::start();
    let dir = s.dir.path();
    let recipe = dir.join("linger.rhai");
    std::fs::write(&recipe, LINGER_RHAI).expect("recipe");
    let inv = inventory(dir, &[spec("h", &s, base_var(dir, "l"))]);
    for (i, big) in ["false", "true"].into_iter().enumerate() {
        // Own arguments, so that no other process on this machine matches.
        let secs = format!("{}.{}", 611 + 2 * i, std::process::id() % 1000);
        let args = [
            "--var",
            &format!("secs={secs}"),
            "--var",
            &format!("big={big}"),
        ];
        let r = run_all(&recipe, &inv)
            .args(args)
            .args(["--json", "--timeout", "2"])
            .run();
        assert_eq!(r.code, 1, "{}", r.show());
        assert!(r.stdout.contains("within 2s"), "{}", r.show());
        wait_until(
            &format!("`sleep {secs}` (big stdin: {big}) to be stopped by --timeout"),
            20,
            || !running(&["sleep", &secs]),
        );

        let secs = format!("{}.{}", 612 + 2 * i, std::process::id() % 1000);
        let args = [
            "--var",
            &format!("secs={secs}"),
            "--var",
            &format!("big={big}"),
        ];
        let child = run_all(&recipe, &inv).args(args).spawn();
        wait_until(&format!("`sleep {secs}` to start"), 30, || {
            running(&["sleep", &secs])
        });
        child.signal(libc::SIGKILL);
        let _ = child.finish();
        wait_until(
            &format!("`sleep {secs}` (big stdin: {big}) to end with its session"),
            30,
            || !running(&["sleep", &secs]),
        );
    }
}

#[test]
fn sshd_killed_mid_command_fails_that_host_only() {
    let mut victim = Sshd::start();
    let other = Sshd::start();
    let dir = other.dir.path();
    let recipe = write_recipe(dir);
    let (slow_cut, slow_other) = (own_sleep("6.25"), own_sleep("3.25"));
    let inv = inventory(
        dir,
        &[
            spec(
                "cut",
                &victim,
                format!("{}, slow = \"{slow_cut}\"", base_var(dir, "c")),
            ),
            spec(
                "other",
                &other,
                format!("{}, slow = \"{slow_other}\"", base_var(dir, "o")),
            ),
        ],
    );
    let child = run_all(&recipe, &inv).spawn();
    wait_until("the slow command", 30, || running(&["sleep", &slow_cut]));
    cut(&mut victim);
    let r = child.finish();
    assert_eq!(r.code, 1, "{}", r.show());
    assert_one_screen(&r, &["cut"]);
    assert!(r.stdout.contains("connection lost"), "{}", r.show());
    assert!(
        r.stdout.contains("faults.rhai:21"),
        "names the step: {}",
        r.show()
    );
    assert!(dir.join("o/done").exists(), "the other host finished");
    assert!(!dir.join("c/done").exists());

    let _back = restart(&victim);
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.recap("other")["changed"], 0);
    assert!(dir.join("c/done").exists());
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.recap("cut")["changed"], 0, "{}", r.show());
}

#[test]
fn sshd_killed_mid_transfer_leaves_the_old_file_whole() {
    let mut s = Sshd::start();
    let dir = s.dir.path();
    let recipe = write_recipe(dir);
    // 50 MB of incompressible bytes: goes over a channel of its own with streamed stdin.
    let big = common::leaks::random_bytes(50 * 1024 * 1024);
    std::fs::write(dir.join("big.src"), &big).expect("big");
    let base = dir.join("t");
    std::fs::create_dir_all(&base).expect("base");
    let old = b"the old content\n".to_vec();
    std::fs::write(base.join("big.bin"), &old).expect("old");
    let inv = inventory(
        dir,
        &[spec(
            "t1",
            &s,
            format!("{}, big = \"big.src\"", base_var(dir, "t")),
        )],
    );
    let child = run_all(&recipe, &inv).spawn();
    // Once the temporary file exists, the controller is frozen: what it has sent so far
    // (socket and pipe buffers, a few MiB at most) cannot be the whole 50 MB, so the cut
    // falls in the middle of the transfer however fast or slow this machine is.
    // (a.txt, the step before, is renamed into place before big.bin's temporary file is made.)
    wait_until("the transfer to start", 60, || {
        base.join("a.txt").exists() && !leftovers(&base).is_empty()
    });
    child.signal(libc::SIGSTOP);
    cut(&mut s);
    child.signal(libc::SIGCONT);
    let r = child.finish();
    assert_eq!(r.code, 1, "{}", r.show());
    assert_one_screen(&r, &["t1"]);
    assert!(
        r.stdout.contains("faults.rhai:24"),
        "names the step: {}",
        r.show()
    );
    assert!(r.stdout.contains("connection lost"), "{}", r.show());
    // The remote shell outlives the cut for a moment: let it finish, then look.
    wait_until("the temporary file to go", 20, || {
        leftovers(&base).is_empty()
    });
    let now = std::fs::read(base.join("big.bin")).expect("target");
    assert!(
        now == old || now == big,
        "partial file: {} bytes, sha256 {}",
        now.len(),
        sha256_hex(&now)
    );

    let _back = restart(&s);
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(
        sha256_hex(&std::fs::read(base.join("big.bin")).expect("new")),
        sha256_hex(&big)
    );
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.recap("t1")["changed"], 0);
    assert!(leftovers(&base).is_empty());
}

#[test]
fn a_full_disk_fails_the_write_and_keeps_the_old_file() {
    if !require_root("mounting a tmpfs") {
        return;
    }
    let s = Sshd::start();
    let dir = s.dir.path();
    let recipe = write_recipe(dir);
    let full = dir.join("full");
    let _guard = Tmpfs::mount(&full, "1m");
    let old = b"old but whole\n".to_vec();
    std::fs::write(full.join("big.bin"), &old).expect("old");
    std::fs::write(dir.join("two.src"), vec![b'x'; 2 * 1024 * 1024]).expect("src");
    std::fs::write(dir.join("small.src"), vec![b'y'; 700 * 1024]).expect("src");
    let inv = inventory(
        dir,
        &[
            spec(
                "full",
                &s,
                format!("base = \"{}\", big = \"two.src\"", full.display()),
            ),
            spec(
                "roomy",
                &s,
                format!("{}, big = \"small.src\"", base_var(dir, "roomy")),
            ),
        ],
    );
    let r = run_all(&recipe, &inv).run();
    assert_eq!(r.code, 1, "{}", r.show());
    assert_one_screen(&r, &["full"]);
    assert!(r.stdout.contains("No space left"), "{}", r.show());
    assert!(
        r.stdout.contains("faults.rhai:24"),
        "names the step: {}",
        r.show()
    );
    assert_eq!(std::fs::read(full.join("big.bin")).expect("old"), old);
    assert!(leftovers(&full).is_empty(), "{:?}", leftovers(&full));
    assert!(dir.join("roomy/done").exists(), "the other host finished");

    // More room: the re-run converges, the next one changes nothing.
    let st = Command::new("mount")
        .args(["-o", "remount,size=8m"])
        .arg(&full)
        .status()
        .expect("remount");
    assert!(st.success());
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(
        std::fs::metadata(full.join("big.bin"))
            .map(|m| m.len())
            .unwrap_or(0),
        2 * 1024 * 1024
    );
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.recap("full")["changed"], 0);
    assert_eq!(r.recap("roomy")["changed"], 0);
}

// ---------------------------------------------------------------------------------------
// The write and command protocols, checked step by step on this machine.

/// The dry-run fingerprint sees a change in every folder recipes write (a new file, a
/// rewrite of the same size, a mode), and not what a booted host writes by itself.
#[test]
fn the_dry_run_fingerprint_sees_every_folder_recipes_write() {
    use common::sandbox::fingerprint;
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    for d in [
        "etc",
        "opt",
        "root",
        "srv",
        "tmp",
        "usr/local",
        "usr/bin",
        "var/lib",
        "var/log/journal",
        "var/spool",
        "var/cache/apt/archives",
    ] {
        std::fs::create_dir_all(r.join(d)).expect("mkdir");
    }
    let base = fingerprint(r);
    for f in [
        "etc/x",
        "opt/x",
        "root/x",
        "srv/x",
        "tmp/x",
        "usr/local/x",
        "usr/bin/x",
        "var/lib/x",
        "var/log/x",
        "var/spool/x",
        "var/cache/apt/archives/x.deb",
    ] {
        let p = r.join(f);
        std::fs::write(&p, "one").expect("write");
        let with = fingerprint(r);
        assert_ne!(with, base, "a new {f} is not seen");
        if !f.starts_with("usr/bin") {
            std::fs::write(&p, "two").expect("rewrite");
            assert_ne!(fingerprint(r), with, "a rewrite of {f} is not seen");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_ne!(fingerprint(r), with, "a new mode of {f} is not seen");
        std::fs::remove_file(&p).expect("rm");
        assert_eq!(fingerprint(r), base, "{f} removed");
    }
    // What the host does by itself: the journal, services' private tmp, a folder that a
    // run's worker made and removed.
    std::fs::write(r.join("var/log/journal/j"), "x").expect("journal");
    std::fs::create_dir_all(r.join("tmp/systemd-private-abc/tmp")).expect("private");
    std::fs::create_dir(r.join("tmp/.recipe.x")).expect("worker");
    std::fs::remove_dir(r.join("tmp/.recipe.x")).expect("worker gone");
    assert_eq!(fingerprint(r), base, "changes of the host's own are seen");
}

// ---------------------------------------------------------------------------------------
// Sandbox hosts (systemd-nspawn): one boot for every test that needs a real machine.

const SANDBOX: &str = "faults";

/// Variables a shipped recipe needs to run on the sandbox: the first host is the master.
/// The recipe's declarations are read from `recipe list` (name = default).
fn sandbox_vars(recipe: &Path, master: &str, work: &Path) -> Vec<String> {
    let dir = recipe.parent().unwrap_or(Path::new("."));
    let file = recipe
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let listing = Test::new()
        .arg("list")
        .arg(dir)
        .run()
        .expect_success()
        .stdout;
    let mut v = Vec::new();
    let mut mine = false;
    for l in listing.lines() {
        if !l.starts_with(' ') {
            mine = l.split_whitespace().next() == Some(file.as_str());
            continue;
        }
        let Some((name, default)) = l.trim().split_once(" = ") else {
            continue;
        };
        if !mine {
            continue;
        }
        let is_string = default.starts_with('"');
        if name == "master" || name.ends_with("_build_host") {
            v.push(format!("{name}={master}"));
        }
        if name == "slurm_proctrack_type" && is_string {
            v.push(format!("{name}=proctrack/linuxproc"));
        }
        if name == "slurm_task_plugin" && is_string {
            v.push(format!("{name}=task/none"));
        }
        if name == "k8s_version" && is_string {
            // The default Kubernetes needs a newer containerd than Debian 12's (1.6), which
            // the recipes refuse; the version the k8s end-to-end test runs fits it.
            v.push(format!("{name}=1.25.16"));
        }
        if name == "key_src" {
            // The benchmark's MUNGE key, on the controller.
            let key = work.join("munge.key");
            std::fs::write(&key, common::leaks::random_bytes(1024)).expect("key");
            v.push(format!("{name}={}", key.display()));
        }
    }
    v
}

#[test]
fn on_sandbox_hosts() {
    if !require_root("booting sandbox hosts") {
        return;
    }
    let sb = Sandbox::up(SANDBOX, &["f1", "f2"]).start();
    let hosts: Vec<&str> = sb.hosts.iter().map(String::as_str).collect();
    let roots: Vec<PathBuf> = hosts.iter().map(|h| sb.root(h)).collect();

    // 1. Dry run purity: every shipped recipe, on fresh hosts, changes no file.
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut recipes: Vec<PathBuf> = std::fs::read_dir(root_dir.join("recipes"))
        .expect("recipes")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    recipes.sort();
    assert!(!recipes.is_empty());
    let keys = tempfile::tempdir().expect("tmp");
    // The downloads no checksum is shipped for (docs/security.md) are taken unchecked, as a
    // site says so explicitly; every other download is pinned by the recipes' defaults.
    let base_inv = std::fs::read_to_string(sb.inventory()).expect("inventory");
    assert!(base_inv.contains("[vars]\n"), "{base_inv}");
    let unpinned = keys.path().join("unverified.toml");
    std::fs::write(
        &unpinned,
        base_inv.replacen(
            "[vars]\n",
            "[vars]\nk8s_cni_manifest_sha256 = \"unverified\"\nsycri_sha256 = \"unverified\"\n",
            1,
        ),
    )
    .expect("inventory");
    for r in &recipes {
        let before = sb.root_fingerprints(&hosts);
        let src = std::fs::read_to_string(r).unwrap_or_default();
        let mut c = Test::new().arg("run").arg(r).arg("-i").arg(&unpinned);
        // Each recipe on the hosts it is for: the master's on f1, the workers' on f2.
        if src.contains("!= vars.master") {
            c = c.args(["--host", hosts[0]]);
        } else if src.contains("== vars.master") {
            c = c.args(["--host", hosts[1]]);
        } else if !src.contains("play(") {
            c = c.args(["--group", "all"]);
        }
        c = c.args(["--dry-run", "--diff", "--timeout", "60"]);
        for v in sandbox_vars(r, hosts[0], keys.path()) {
            c = c.args(["--var", &v]);
        }
        let out = c
            .timeout(common::sandbox::RUN_TIMEOUT)
            .run()
            .expect_no_panic();
        assert!(
            out.success(),
            "the dry run of {} on fresh hosts failed:\n{}",
            r.display(),
            out.show()
        );
        common::sandbox::assert_same_hosts(
            &before,
            &sb.root_fingerprints(&hosts),
            &format!("the dry run of {}", r.display()),
        );
    }

    let work = tempfile::tempdir().expect("tmp");
    let recipe = write_recipe(work.path());

    // 2. Sudo refused: a login user without sudo rights on f2, next to root on f1.
    sb.ssh_ok(
        "f2",
        "useradd -m -s /bin/sh rcpuser && mkdir -p ~rcpuser/.ssh && cp /root/.ssh/authorized_keys ~rcpuser/.ssh/ && chown -R rcpuser: ~rcpuser/.ssh",
    );
    let vars = |slow: &str, base: &str| {
        let mut t = toml::Table::new();
        t.insert("base".into(), base.into());
        if !slow.is_empty() {
            t.insert("slow".into(), slow.into());
        }
        t
    };
    let faults = vars("", "/etc/recipe-faults");
    let inv = sb.inventory_with(
        &work.path().join("sudo.toml"),
        &[
            ("f1", "f1", "root", faults.clone()),
            ("f2u", "f2", "rcpuser", faults),
        ],
    );
    let r = run_all(&recipe, &inv).run();
    assert_eq!(r.code, 1, "{}", r.show());
    assert_one_screen(&r, &["f2u"]);
    assert!(
        r.stdout.contains("sudo refused for rcpuser"),
        "{}",
        r.show()
    );
    assert!(roots[0].join("etc/recipe-faults/done").exists());
    assert!(!roots[1].join("etc/recipe-faults").exists());
    sb.ssh_ok(
        "f2",
        "echo 'rcpuser ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/rcpuser && chmod 0440 /etc/sudoers.d/rcpuser",
    );
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.recap("f1")["changed"], 0);
    assert!(r.recap("f2u")["changed"].as_u64().unwrap_or(0) > 0);
    let owner = sb.ssh_ok("f2", "stat -c %U /etc/recipe-faults/done");
    assert_eq!(owner.trim(), "root", "written through sudo");
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.recap("f2u")["changed"], 0);

    // 3. The link of f1 goes down in the middle of a command: f1 fails on the run's
    // --timeout naming the step, f2 finishes; with the link back, a re-run converges.
    let octet = sb.octet();
    let veth = format!("rcp{octet}v0");
    let link_inv = |slow_f1: &str| {
        sb.inventory_with(
            &work.path().join("link.toml"),
            &[
                ("f1", "f1", "root", vars(slow_f1, "/etc/recipe-link")),
                ("f2", "f2", "root", vars("", "/etc/recipe-link")),
            ],
        )
    };
    let inv = link_inv("30.5");
    let child = run_all(&recipe, &inv).args(["--timeout", "4"]).spawn();
    wait_until("the slow command on f1", 60, || running(&["sleep", "30.5"]));
    // The host's `timeout` (4 s) must not answer before the link is down: its clock is held
    // (SIGSTOP) until the cut, so the order does not depend on how loaded this machine is.
    let held = HeldTimer::of(&["sleep", "30.5"]);
    let st = Command::new("ip")
        .args(["link", "set", &veth, "down"])
        .status()
        .expect("ip");
    assert!(st.success(), "ip link set {veth} down");
    drop(held);
    let r = child.finish();
    let st = Command::new("ip")
        .args(["link", "set", &veth, "up"])
        .status()
        .expect("ip");
    assert!(st.success());
    assert_eq!(r.code, 1, "{}", r.show());
    assert_one_screen(&r, &["f1"]);
    // The remote `timeout` (4 s) cannot report back over a dead link: the controller gives up 15 s later.
    assert!(
        r.stdout.contains(&format!("no answer within {}s", 4 + 15)),
        "{}",
        r.show()
    );
    assert!(r.stdout.contains("faults.rhai:21"), "{}", r.show());
    assert!(
        roots[1].join("etc/recipe-link/done").exists(),
        "f2 finished"
    );
    let inv = link_inv("0.1");
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.code, 0, "{}", r.show());
    assert_eq!(r.recap("f2")["changed"], 0);
    let r = run_all(&recipe, &inv).args(["--json"]).run();
    assert_eq!(r.recap("f1")["changed"], 0, "{}", r.show());
}

/// The `timeout` processes wrapping a command (found through its parents), stopped until
/// dropped: a test can then act before the host's time limit can fire.
struct HeldTimer(Vec<i32>);

impl HeldTimer {
    fn of(argv: &[&str]) -> HeldTimer {
        let want = argv.join(" ") + " ";
        let procs = processes();
        let parent = |pid: u32| procs.iter().find(|p| p.0 == pid).map(|p| p.1);
        let mut held = Vec::new();
        for (pid, _, _) in procs.iter().filter(|p| cmdline(p.0) == want) {
            let mut at = parent(*pid);
            while let Some(p) = at.filter(|p| *p > 1) {
                if cmdline(p).starts_with("timeout ") {
                    // SAFETY: kill(2) on the time limit of a command this test started.
                    unsafe { libc::kill(p as i32, libc::SIGSTOP) };
                    held.push(p as i32);
                    break;
                }
                at = parent(p);
            }
        }
        assert!(!held.is_empty(), "no `timeout` around `{}`", argv.join(" "));
        HeldTimer(held)
    }
}

impl Drop for HeldTimer {
    fn drop(&mut self) {
        for p in &self.0 {
            // SAFETY: resumes a process this test stopped.
            unsafe { libc::kill(*p, libc::SIGCONT) };
        }
    }
}
