//! Run-time hardening against real OpenSSH servers on loopback: where output goes when
//! stdout is a file and stderr a terminal, what a command's stdin leaves on a target that
//! is cut or a controller that is stopped, secrets in messages, control characters from
//! targets, and the messages of keys, signals, time limits and badly encoded recipes.

mod common;
use common::*;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// (pid, parent pid, comm) of every process.
fn processes() -> Vec<(u32, u32, String)> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        v.push((pid, ppid, stat[open + 1..close].to_string()));
    }
    v
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| text(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Whether some process runs exactly this argv.
fn running(argv: &[&str]) -> bool {
    let want = argv.join(" ") + " ";
    processes().iter().any(|(pid, _, _)| cmdline(*pid) == want)
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills `s`'s sshd like a crash: the listener and every per-connection sshd, at once.
fn cut(s: &mut Sshd) {
    let pid: u32 = std::fs::read_to_string(s.path("sshd.pid"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sshd pid: {}", s.log()));
    let procs = processes();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(
            procs
                .iter()
                .filter(|(_, pp, comm)| *pp == p && comm.starts_with("sshd"))
                .map(|(pid, _, _)| *pid),
        );
        i += 1;
    }
    for pid in tree {
        // SAFETY: kill(2) on pids of this test's own sshd.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    s.stop();
}

/// An sshd whose sessions get `TMPDIR` = a folder of the test's own (the worker's
/// temporary files go there), with that folder.
fn sshd_with_tmpdir() -> (Sshd, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp").keep();
    let s = Sshd::start_with("127.0.0.1", &format!("SetEnv TMPDIR={}", tmp.display()));
    (s, tmp)
}

/// An inventory naming `names`, all on sshd `s`.
fn inventory_of(s: &Sshd, names: &[&str], extra: &str) -> PathBuf {
    let mut inv = format!("known_hosts = \"{}\"\n", s.path("known_hosts").display());
    for n in names {
        inv.push_str(&format!(
            "\n[hosts.{n}]\naddress = \"{}\"\nport = {}\nuser = \"root\"\nkey = \"{}\"\n{extra}\n",
            s.addr,
            s.port,
            s.path("client_key").display()
        ));
    }
    let p = s.path(&format!("inv-{}.toml", names.join("-")));
    std::fs::write(&p, inv).expect("inventory");
    p
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write");
    p
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = recipe();
    c.args(args);
    for (k, v) in env {
        if v.is_empty() {
            c.env_remove(k);
        } else {
            c.env(k, v);
        }
    }
    let o = c.output().expect("runs");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: text(&o.stdout),
        stderr: text(&o.stderr),
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("recipe"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("recipe starts")
}

fn finish(c: Child) -> Out {
    let o = c.wait_with_output().expect("recipe ends");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: text(&o.stdout),
        stderr: text(&o.stderr),
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".recipe."))
                .collect()
        })
        .unwrap_or_default()
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
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two fds; both are owned right after.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: fresh fds from openpty, owned once each.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let child = Command::new(assert_cmd::cargo::cargo_bin("recipe"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .arg("run")
        .arg(&recipe)
        .args(["--group", "all", "-i"])
        .arg(&inv)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("recipe starts");
    // The terminal side must be read, or the progress line would block on a full pty.
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        seen
    });
    let out = finish(child);
    let term = text(&reader.join().expect("reader"));
    assert_eq!(out.code, 0, "{}\n--- terminal\n{term}", out.all());
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

fn stdin_recipe(dir: &Path) -> PathBuf {
    write(
        dir,
        "stdin.rhai",
        "// Stdin test.\nfn defaults() { #{ api_token: \"\" } }\n\
         sh(\"cat > /dev/null; sleep 4.5\", #{stdin: vars.api_token});\n\
         file(\"/tmp/recipe-never-written\", #{content: \"x\"});\n",
    )
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
    let recipe = stdin_recipe(s.dir.path());
    let var = format!("api_token={TOKEN}");
    let child = spawn(&[
        "run",
        &recipe.display().to_string(),
        "--group",
        "all",
        "-i",
        &inv.display().to_string(),
        "--var",
        &var,
    ]);
    wait_until("the command", 30, || running(&["sleep", "4.5"]));
    // While it runs: stdin is nowhere on disk.
    assert_no_trace(&tmp);
    std::thread::sleep(Duration::from_millis(1500));
    cut(&mut s);
    let out = finish(child);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("connection lost"), "{}", out.all());
    // The orphaned shell ends when its command does.
    wait_until("the command to end", 30, || !running(&["sleep", "4.5"]));
    std::thread::sleep(Duration::from_millis(300));
    assert_no_trace(&tmp);
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn sigterm_stops_like_ctrl_c_with_a_recap_and_leaves_nothing() {
    let (s, tmp) = sshd_with_tmpdir();
    let inv = inventory_of(&s, &["a", "b"], "");
    let recipe = stdin_recipe(s.dir.path());
    let var = format!("api_token={TOKEN}");
    let child = spawn(&[
        "run",
        &recipe.display().to_string(),
        "--group",
        "all",
        "-i",
        &inv.display().to_string(),
        "--var",
        &var,
    ]);
    wait_until("the commands", 30, || {
        processes()
            .iter()
            .filter(|(p, _, _)| cmdline(*p) == "sleep 4.5 ")
            .count()
            == 2
    });
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = finish(child);
    assert_ne!(out.code, 143, "killed, not stopped: {}", out.all());
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("interrupted (SIGTERM)"),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains("RECAP"), "{}", out.all());
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
    assert_eq!(
        out.stdout
            .matches("stdin.rhai:4:1: stopped: interrupted (SIGTERM)")
            .count(),
        2,
        "{}",
        out.all()
    );
    assert!(!Path::new("/tmp/recipe-never-written").exists());
    assert!(!out.all().contains(TOKEN), "{}", out.all());
    assert_no_trace(&tmp);
    std::fs::remove_dir_all(&tmp).ok();
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
    let out = run(
        &[
            "run",
            &recipe.display().to_string(),
            "--group",
            "all",
            "-i",
            &inv.display().to_string(),
        ],
        &[],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.code, 0, "{}", out.all());
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
        let out = run(&["run", &r, "--local", "--var", var], &[]);
        assert_eq!(out.code, 2, "{var}: {}", out.all());
        assert!(
            !out.all().contains("SECRET-VALUE") && !out.all().contains("pw-in-default"),
            "{var}: {}",
            out.all()
        );
        assert!(out.stderr.contains("--var"), "{}", out.all());
    }
    // A number in a secret-named variable and a secret-named key inside a map are secrets.
    let out = run(&["run", &r, "--local", "--var", "api_token=987654321"], &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains(" ops"), "{}", out.all());
    assert!(
        !out.all().contains("987654321") && !out.all().contains("pw-in-default"),
        "{}",
        out.all()
    );
    let out = run(&["list", &dir.path().display().to_string()], &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.all().contains("pw-in-default"), "{}", out.all());
    assert!(
        out.stdout.contains("admin_password = <secret: hidden>"),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains("\"user\": \"ops\""), "{}", out.all());
    assert!(out.stdout.contains("empty_token = \"\""), "{}", out.all());
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
    let args = [
        "run",
        &recipe.display().to_string(),
        "--group",
        "all",
        "-i",
        &inv.display().to_string(),
    ];
    let out = run(&args, &[]);
    assert_eq!(out.code, 1, "{}", out.all());
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
    let j = run(&[&args[..], &["--json"]].concat(), &[]);
    assert!(!events(j.stdout.as_bytes()).is_empty());
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
    let out = run(
        &[
            "run",
            &recipe.display().to_string(),
            "--host",
            "k",
            "-i",
            &inv.display().to_string(),
        ],
        &[("SSH_AUTH_SOCK", "")],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(!out.all().contains("no key at all"), "{}", out.all());
    assert!(
        out.stdout.contains(&format!(
            "{} (missing: no such file; it is `key =` of host k in {}",
            s.path("no_such_key").display(),
            inv.display()
        )),
        "{}",
        out.all()
    );
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
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&k)
                .status()
                .expect("keygen");
            assert!(st.success());
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
    let args = [
        "run",
        &recipe.display().to_string(),
        "--host",
        "a",
        "-i",
        &inv.display().to_string(),
    ];
    let out = run(&args, &[("SSH_AUTH_SOCK", &sock)]);
    assert_eq!(out.code, 0, "{}", out.all());
    // With a wrong inventory key the failure says what was offered, not "Channel send error".
    let bad = s.path("other_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&bad)
        .status()
        .expect("keygen");
    assert!(st.success());
    let text = std::fs::read_to_string(&inv)
        .expect("inv")
        .replace("client_key", "other_key");
    std::fs::write(&inv, text).expect("inv");
    let out = run(&args, &[("SSH_AUTH_SOCK", &sock)]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(!out.all().contains("Channel send error"), "{}", out.all());
    assert!(
        out.stdout
            .contains(&format!("tried: {} (refused)", bad.display())),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains("ssh-agent keys"), "{}", out.all());

    // An encrypted inventory key is used through the agent's copy, before the other 8.
    let enc = s.path("enc_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "pass phrase", "-f"])
        .arg(&enc)
        .status()
        .expect("keygen");
    assert!(st.success());
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
    let out = run(&args, &[("SSH_AUTH_SOCK", &sock)]);
    assert_eq!(out.code, 0, "{}", out.all());
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
    let started = Instant::now();
    let out = run(
        &[
            "run",
            &recipe.display().to_string(),
            "--host",
            "t",
            "-i",
            &inv.display().to_string(),
        ],
        &[],
    );
    assert!(started.elapsed() < Duration::from_secs(25), "{}", out.all());
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("probe ok=false rc=124 timed_out=true"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains("sh rc=124 timed_out=true"),
        "{}",
        out.all()
    );
    let failed = out
        .stdout
        .lines()
        .skip_while(|l| !l.contains("t.rhai:6"))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(failed.contains("FAILED"), "{}", out.all());
    assert!(failed.contains("timed out"), "{failed}\n{}", out.all());
    assert!(!out.all().contains("exit status 137"), "{}", out.all());
}

#[test]
fn a_recipe_that_is_not_utf8_is_placed_at_its_first_bad_byte() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("latin1.rhai");
    std::fs::write(&p, b"// Latin-1.\nlog(\"caf\xe9\");\n").expect("write");
    let out = run(&["run", &p.display().to_string(), "--local"], &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains(&format!("{}:2:9", p.display())),
        "{}",
        out.all()
    );
    assert!(out.stderr.contains("byte 0xe9"), "{}", out.all());
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
    let out = run(&["run", &imp.display().to_string(), "--local"], &[]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains(&format!(
            "module \"m\" ({}:2:14) is not UTF-8",
            dir.path().join("m.rhai").display()
        )),
        "{}",
        out.all()
    );
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
    let out = run(
        &[
            "run",
            &recipe.display().to_string(),
            "--host",
            "w",
            "-i",
            &inv.display().to_string(),
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(flag.exists());
}
