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
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers: processes, sshd restarts, runs in the background.

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
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        v.push((pid, ppid, comm));
    }
    v
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| text(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The pid of the listening sshd of `s` (its PidFile, else by its config path).
fn listener_pid(s: &Sshd) -> Option<u32> {
    if let Some(p) = std::fs::read_to_string(s.path("sshd.pid"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        return Some(p);
    }
    let cfg = s.path("sshd_config").display().to_string();
    processes()
        .into_iter()
        .find(|(pid, _, comm)| comm == "sshd" && cmdline(*pid).contains(&cfg))
        .map(|(pid, _, _)| pid)
}

/// Kills `s`'s sshd like a crash would: the listener and every per-connection sshd process,
/// all at once with SIGKILL. The users' shells are left running (as after a real cut); they
/// see their input end.
fn cut(s: &mut Sshd) {
    let Some(root) = listener_pid(s) else {
        panic!("no sshd to cut: {}", s.log());
    };
    let procs = processes();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(
            procs
                .iter()
                .filter(|(_, pp, comm)| *pp == p && comm == "sshd")
                .map(|(pid, _, _)| *pid),
        );
        i += 1;
    }
    for pid in tree {
        // SAFETY: kill(2) on pids that this test's own sshd started.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    s.stop();
}

/// A second life of a test sshd: same config, port and keys. Killed on drop.
struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn restart(s: &Sshd) -> Restarted {
    std::fs::remove_file(s.path("sshd.pid")).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The old listener's port may take a moment to be free again.
    loop {
        let child = Command::new(sshd_path())
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(s.path("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        let mut r = Restarted(child);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect((s.addr.as_str(), s.port)).is_ok() {
                return r;
            }
            if let Ok(Some(_)) = r.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(Instant::now() < deadline, "sshd did not restart");
        drop(r.0.kill());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One host entry of a multi-host inventory.
struct HostSpec<'a> {
    name: &'a str,
    sshd: &'a Sshd,
    key: PathBuf,
    vars: String,
}

/// An inventory naming several hosts (on one or more test sshds), with one known_hosts file
/// holding every server's key.
fn inventory(dir: &Path, hosts: &[HostSpec]) -> PathBuf {
    let kh = dir.join("known_hosts");
    let mut lines = String::new();
    let mut seen = Vec::new();
    for h in hosts {
        if !seen.contains(&h.sshd.port) {
            seen.push(h.sshd.port);
            lines.push_str(&std::fs::read_to_string(h.sshd.path("known_hosts")).expect("kh"));
        }
    }
    std::fs::write(&kh, lines).expect("known_hosts");
    let mut inv = format!("known_hosts = \"{}\"\n", kh.display());
    for h in hosts {
        inv.push_str(&format!(
            "\n[hosts.{}]\naddress = \"{}\"\nport = {}\nuser = \"root\"\nkey = \"{}\"\nvars = {{ {} }}\n",
            h.name,
            h.sshd.addr,
            h.sshd.port,
            h.key.display(),
            h.vars
        ));
    }
    let p = dir.join("inventory.toml");
    std::fs::write(&p, inv).expect("inventory");
    p
}

fn spec<'a>(name: &'a str, sshd: &'a Sshd, vars: String) -> HostSpec<'a> {
    HostSpec {
        name,
        sshd,
        key: sshd.path("client_key"),
        vars,
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn events(&self) -> Vec<serde_json::Value> {
        events(self.stdout.as_bytes())
    }
    fn recap(&self, host: &str) -> serde_json::Value {
        recaps(&self.events())
            .into_iter()
            .find(|r| r["host"] == host)
            .unwrap_or_else(|| panic!("no recap for {host}: {}{}", self.stdout, self.stderr))
    }
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn run(recipe: &Path, inv: &Path, extra: &[&str]) -> Run {
    let out = common::recipe()
        .arg("run")
        .arg(recipe)
        .args(["--group", "all", "-i"])
        .arg(inv)
        .args(extra)
        .output()
        .expect("runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    }
}

/// Starts a run in the background (to break something while it works).
fn spawn_run(recipe: &Path, inv: &Path, extra: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("recipe"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(recipe)
        .args(["--group", "all", "-i"])
        .arg(inv)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("recipe starts")
}

fn wait_run(c: Child) -> Run {
    let out = c.wait_with_output().expect("recipe ends");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    }
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
        std::thread::sleep(Duration::from_millis(2));
    }
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

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The recipe the loopback fault tests share. `slow` sleeps (guarded, so a re-run skips
/// it once it has run), `hang` never finishes, `big` copies a controller file.
const FAULTS_RHAI: &str = r#"// Fault test recipe.
fn defaults() {
    #{
        base: "/tmp/recipe-faults", // per host
        hang: false,                // a command that never ends (per-step timeout 2 s)
        hang_global: false,         // the same without a per-step timeout (use --timeout)
        slow: "",                   // a command that takes a while (sleep argument)
        big: "",                    // a controller file copied to base/big.bin
    }
}

directory(vars.base, #{mode: "0755"});
file(`${vars.base}/a.txt`, #{content: "a\n", mode: "0640"});
if vars.hang {
    sh("sleep 601", #{timeout: 2});
}
if vars.hang_global {
    sh("sleep 602");
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
fn assert_one_screen(r: &Run, hosts: &[&str]) {
    let lines = r.all().lines().count();
    assert!(
        lines <= 40,
        "more than one screen ({lines} lines):\n{}",
        r.all()
    );
    for h in hosts {
        assert!(r.stdout.contains(h), "{h} is not named:\n{}", r.all());
    }
    assert!(!r.all().contains("panicked"), "{}", r.all());
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
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .expect("keygen");
    assert!(st.success());
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
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("keygen");
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

    let r = run(&recipe, &inv, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_one_screen(&r, &["wrongkey", "hostkey", "dead"]);
    assert!(r.stdout.contains("authentication failed"), "{}", r.all());
    assert!(r.stdout.contains("HOST KEY CHANGED"), "{}", r.all());
    assert!(r.stdout.contains("unreachable"), "{}", r.all());
    assert!(
        dir.join("good/done").exists(),
        "the good host did not finish"
    );
    for h in ["wrongkey", "hostkey", "dead"] {
        assert!(!dir.join(h).exists(), "{h} was changed");
    }

    let r = run(&recipe, &inv, &["--json"]);
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
    let r = run(&recipe, &inv, &["--json", "--accept-new-host-keys"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.recap("good")["changed"], 0);
    for h in ["wrongkey", "hostkey", "dead"] {
        assert!(r.recap(h)["changed"].as_u64().unwrap_or(0) > 0);
        assert!(dir.join(h).join("done").exists());
    }
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for h in ["good", "wrongkey", "hostkey", "dead"] {
        assert_eq!(r.recap(h)["changed"], 0, "{h}");
    }
}

#[test]
fn a_hung_command_is_stopped_by_its_timeout() {
    let s = Sshd::start();
    let dir = s.dir.path();
    let recipe = write_recipe(dir);
    let inv = inventory(
        dir,
        &[
            spec("hangs", &s, format!("{}, hang = true", base_var(dir, "h"))),
            spec("fine", &s, base_var(dir, "f")),
        ],
    );
    let started = Instant::now();
    let r = run(&recipe, &inv, &[]);
    let took = started.elapsed();
    assert_eq!(r.code, 1, "{}", r.all());
    assert_one_screen(&r, &["hangs"]);
    assert!(
        r.stdout.contains("did not finish within 2s"),
        "says why: {}",
        r.all()
    );
    assert!(
        r.stdout.contains("faults.rhai:15"),
        "names the step: {}",
        r.all()
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(dir.join("f/done").exists(), "the other host finished");
    assert!(!dir.join("h/done").exists(), "the hung host went on");
    wait_until("the hung command to be killed", 10, || {
        !running(&["sleep", "601"])
    });

    // The run-wide --timeout covers commands without their own.
    let inv2 = inventory(
        dir,
        &[spec(
            "hangs",
            &s,
            format!("{}, hang_global = true", base_var(dir, "h2")),
        )],
    );
    let r = run(&recipe, &inv2, &["--json", "--timeout", "2"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let ev = r.events();
    let failed: Vec<_> = ev.iter().filter(|e| e["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{ev:?}");
    assert_eq!(failed[0]["host"], "hangs");
    assert_eq!(failed[0]["line"], 18);
    assert!(failed[0]["msg"]
        .as_str()
        .unwrap_or("")
        .contains("within 2s"));
    // Known limit: without a per-step `timeout` the target runs no `timeout(1)`, so the
    // controller gives up but the command goes on there (docs/security.md). Clean it up.
    for (pid, _, _) in processes() {
        if cmdline(pid) == "sleep 602 " {
            // SAFETY: kill(2) on the command this test started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }

    // Re-run without the hang: converges, then nothing changes.
    let inv = inventory(
        dir,
        &[
            spec("hangs", &s, base_var(dir, "h")),
            spec("fine", &s, base_var(dir, "f")),
        ],
    );
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.recap("hangs")["changed"].as_u64().unwrap_or(0) > 0);
    assert_eq!(r.recap("fine")["changed"], 0);
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.recap("hangs")["changed"], 0);
}

#[test]
fn sshd_killed_mid_command_fails_that_host_only() {
    let mut victim = Sshd::start();
    let other = Sshd::start();
    let dir = other.dir.path();
    let recipe = write_recipe(dir);
    let inv = inventory(
        dir,
        &[
            spec(
                "cut",
                &victim,
                format!("{}, slow = \"6.25\"", base_var(dir, "c")),
            ),
            spec(
                "other",
                &other,
                format!("{}, slow = \"3.25\"", base_var(dir, "o")),
            ),
        ],
    );
    let child = spawn_run(&recipe, &inv, &[]);
    wait_until("the slow command", 30, || running(&["sleep", "6.25"]));
    cut(&mut victim);
    let r = wait_run(child);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_one_screen(&r, &["cut"]);
    assert!(r.stdout.contains("connection lost"), "{}", r.all());
    assert!(
        r.stdout.contains("faults.rhai:21"),
        "names the step: {}",
        r.all()
    );
    assert!(dir.join("o/done").exists(), "the other host finished");
    assert!(!dir.join("c/done").exists());

    let _back = restart(&victim);
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.recap("other")["changed"], 0);
    assert!(dir.join("c/done").exists());
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.recap("cut")["changed"], 0, "{}", r.all());
}

#[test]
fn sshd_killed_mid_transfer_leaves_the_old_file_whole() {
    let mut s = Sshd::start();
    let dir = s.dir.path();
    let recipe = write_recipe(dir);
    // 50 MB of incompressible bytes: goes over a channel of its own with streamed stdin.
    let mut big = vec![0u8; 50 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
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
    let child = spawn_run(&recipe, &inv, &[]);
    // Cut as soon as the temporary file holds part of the new content.
    wait_until("the transfer to start", 60, || {
        leftovers(&base).iter().any(|n| {
            std::fs::metadata(base.join(n))
                .map(|m| m.len() > 1024 * 1024)
                .unwrap_or(false)
        })
    });
    cut(&mut s);
    let r = wait_run(child);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_one_screen(&r, &["t1"]);
    assert!(
        r.stdout.contains("faults.rhai:24"),
        "names the step: {}",
        r.all()
    );
    assert!(r.stdout.contains("connection lost"), "{}", r.all());
    // The remote shell outlives the cut for a moment: let it finish, then look.
    wait_until("the temporary file to go", 20, || {
        leftovers(&base).is_empty()
    });
    let now = std::fs::read(base.join("big.bin")).expect("target");
    assert!(
        now == old || now == big,
        "partial file: {} bytes, sha256 {}",
        now.len(),
        sha(&now)
    );

    let _back = restart(&s);
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        sha(&std::fs::read(base.join("big.bin")).expect("new")),
        sha(&big)
    );
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.recap("t1")["changed"], 0);
    assert!(leftovers(&base).is_empty());
}

/// A tmpfs mount, unmounted (lazily, even if busy) on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_full_disk_fails_the_write_and_keeps_the_old_file() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let s = Sshd::start();
    let dir = s.dir.path();
    let recipe = write_recipe(dir);
    let full = dir.join("full");
    std::fs::create_dir_all(&full).expect("dir");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&full)
        .status()
        .expect("mount");
    assert!(st.success(), "mount tmpfs");
    let _guard = Tmpfs(full.clone());
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
    let r = run(&recipe, &inv, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_one_screen(&r, &["full"]);
    assert!(r.stdout.contains("No space left"), "{}", r.all());
    assert!(
        r.stdout.contains("faults.rhai:24"),
        "names the step: {}",
        r.all()
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
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        std::fs::metadata(full.join("big.bin"))
            .map(|m| m.len())
            .unwrap_or(0),
        2 * 1024 * 1024
    );
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.recap("full")["changed"], 0);
    assert_eq!(r.recap("roomy")["changed"], 0);
}

// ---------------------------------------------------------------------------------------
// The write and command protocols, checked step by step on this machine.

/// Runs the atomic-write script with wrappers around chmod/chown/chgrp/cat/mv that record
/// the temporary file's mode and owner before and after each of them: the temporary file
/// must never grant more than the requested mode, nor belong to anyone but root or the
/// requested owner, at any point where it could be opened.
#[test]
fn the_temporary_file_is_never_wider_than_requested() {
    if !is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    use recipe::primitives::files::write_script;
    use recipe::primitives::{Attrs, Mode};
    let tmp = tempfile::tempdir().expect("tmp");
    let bin = tmp.path().join("bin");
    let target_dir = tmp.path().join("t");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::create_dir_all(&target_dir).expect("t");
    let log = tmp.path().join("log");
    for cmd in ["chmod", "chown", "chgrp", "cat", "mv"] {
        let real = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| format!("{d}/{cmd}"))
            .find(|p| Path::new(p).exists())
            .expect("coreutils");
        let w = format!(
            "#!/bin/sh\nfor f in {d}/.recipe.*; do [ -e \"$f\" ] && stat -c '{cmd}-before %a %U %G %s' \"$f\" >> {log}; done\n\
             {real} \"$@\"; s=$?\nfor f in {d}/.recipe.*; do [ -e \"$f\" ] && stat -c '{cmd}-after %a %U %G %s' \"$f\" >> {log}; done\nexit $s\n",
            d = target_dir.display(),
            log = log.display(),
        );
        let p = bin.join(cmd);
        std::fs::write(&p, w).expect("wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let target = target_dir.join("key file");
    let cases: Vec<(&str, Attrs, Option<&[u8]>)> = vec![
        (
            "new 0400 nobody:nogroup",
            Attrs {
                owner: Some("nobody".into()),
                group: Some("nogroup".into()),
                mode: Some(Mode(0o400)),
            },
            None,
        ),
        (
            "existing 0644 file rewritten as 0600",
            Attrs {
                owner: None,
                group: None,
                mode: Some(Mode(0o600)),
            },
            Some(b"old"),
        ),
        (
            "existing file, owner only",
            Attrs {
                owner: Some("nobody".into()),
                group: None,
                mode: Some(Mode(0o440)),
            },
            Some(b"old"),
        ),
    ];
    for (what, attrs, existing) in cases {
        std::fs::remove_file(&target).ok();
        std::fs::remove_file(&log).ok();
        if let Some(b) = existing {
            std::fs::write(&target, b).expect("old");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        let script = write_script(target.to_str().expect("utf8"), &attrs, true);
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()),
            )
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh");
        {
            use std::io::Write;
            let mut i = child.stdin.take().expect("stdin");
            i.write_all(b"secret content").expect("write");
        }
        assert!(child.wait().expect("wait").success(), "{what}");
        let want = attrs.mode.map(|m| m.0).unwrap_or(0o644);
        let owner = attrs.owner.clone().unwrap_or_else(|| "root".into());
        let seen = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!seen.is_empty(), "{what}: nothing recorded");
        for l in seen.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            let mode = u32::from_str_radix(f[1], 8).expect("mode");
            // Group and other bits beyond the requested ones would let someone open the
            // file now and read the content later, through the open descriptor.
            assert_eq!(
                mode & 0o077 & !want,
                0,
                "{what}: temporary file at {l} (wanted {want:o})\n{seen}"
            );
            assert!(
                f[2] == "root" || f[2] == owner,
                "{what}: temporary file owned by {} ({l})",
                f[2]
            );
            if f[0] == "cat-after" || f[0] == "mv-before" {
                assert_eq!(mode, want, "{what}: {l}");
                assert_eq!(f[2], owner, "{what}: {l}");
            }
        }
        assert_eq!(std::fs::read(&target).expect("written"), b"secret content");
    }
}

/// Records what a worker sends to its shell, and passes it on.
struct Tee {
    inner: tokio::process::ChildStdin,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncWrite for Tee {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            if let Ok(mut v) = self.seen.lock() {
                v.extend_from_slice(&buf[..*n]);
            }
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A command line cut short by a lost connection must never run, not even in part: a shell
/// runs an incomplete last line when its input ends, and a base64 argument cut at a multiple
/// of 4 still decodes (to a prefix of the command, or of its stdin). The frame a real worker
/// sends is recorded, then replayed to fresh shells cut at many points.
#[test]
fn a_truncated_command_frame_is_never_run() {
    use base64::Engine as _;
    use recipe::transport::shell::Worker;
    let tmp = tempfile::tempdir().expect("tmp");
    let marker = tmp.path().join("ran");
    // Any prefix of the command past its first line leaves a trace, as does any run of it
    // without its whole stdin.
    let cmd = format!("echo started > '{m}'\ncat > '{m}'\n", m = marker.display());
    let payload = b"complete payload of the command, 48 bytes long!!".to_vec();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (prelude_len, out) = rt.block_on(async {
        let mut child = tokio::process::Command::new("/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sh");
        let tee = Tee {
            inner: child.stdin.take().expect("stdin"),
            seen: seen.clone(),
        };
        let reader = child.stdout.take().expect("stdout");
        let mut w = Worker::start(Box::new(reader), Box::new(tee), Duration::from_secs(10))
            .await
            .expect("worker starts");
        let prelude_len = seen.lock().map(|v| v.len()).unwrap_or(0);
        let out = w.run(&cmd, Some(&payload), None).await.expect("runs");
        w.close().await;
        (prelude_len, out)
    });
    assert_eq!(out.status, 0);
    assert_eq!(
        std::fs::read(&marker).expect("the full frame runs"),
        payload
    );
    let all = seen.lock().expect("seen").clone();
    let prelude = &all[..prelude_len];
    let frame = text(&all[prelude_len..]);
    // The frame ends with its end marker (" .\n"); the quoted command holds newlines.
    let frame = frame.trim_start_matches('\n');
    let frame = frame[..frame.find(" .\n").map_or(frame.len(), |i| i + 3)].to_string();
    let b64 = base64::engine::general_purpose::STANDARD;
    let (qcmd, s64) = (recipe::transport::quote(&cmd), b64.encode(&payload));
    let cpos = frame.find(&qcmd).expect("the command is in the frame");
    let spos = frame.find(&s64).expect("stdin is in the frame");
    // Cuts at every byte of the (shell-quoted) command, inside stdin at each multiple of 4
    // (valid base64), and right after the last argument.
    let mut cuts: Vec<usize> = (1..qcmd.len()).map(|k| cpos + k).collect();
    cuts.push(cpos + qcmd.len());
    cuts.extend((4..=s64.len()).step_by(4).map(|k| spos + k));
    cuts.push(spos + s64.len());
    for cut_at in cuts {
        std::fs::remove_file(&marker).ok();
        let mut child = Command::new("/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        {
            use std::io::Write;
            let mut i = child.stdin.take().expect("stdin");
            i.write_all(prelude).expect("prelude");
            // No newline, then end of input: what a cut connection looks like.
            i.write_all(&frame.as_bytes()[..cut_at]).expect("line");
        }
        let _ = child.wait();
        assert!(
            !marker.exists(),
            "a frame cut at {cut_at} of {} ran: {:?}",
            frame.len(),
            std::fs::read(&marker).map(|b| text(&b)).unwrap_or_default()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Sandbox hosts (systemd-nspawn): one boot for every test that needs a real machine.

const SANDBOX: &str = "faults";

/// Takes the sandbox down when dropped, so a failing test leaves nothing running.
struct SandboxDown;

impl Drop for SandboxDown {
    fn drop(&mut self) {
        if let Err(e) = recipe::sandbox::down(SANDBOX) {
            eprintln!("teardown of sandbox {SANDBOX} failed: {e:#}");
        }
    }
}

/// `find` listing (path, size, mode, numeric owner and group, type, link target) plus the
/// sha256 of every regular file, of the folders a recipe may touch, read on the controller
/// through the host's overlay root. The journal is left out: journald writes it all the time.
fn fs_snapshot(root: &Path) -> Vec<String> {
    let script = "cd \"$1\" && { find etc usr/local var/lib var/log -xdev \\( -path var/log/journal -prune \\) -o -printf '%p %s %m %U %G %y %l\\n'; \
                  find etc usr/local var/lib var/log -xdev \\( -path var/log/journal -prune \\) -o -type f -print0 | xargs -0 -r sha256sum; } | sort";
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(root)
        .output()
        .expect("find");
    text(&out.stdout).lines().map(str::to_string).collect()
}

fn snapshot_diff(a: &[String], b: &[String]) -> String {
    let gone: Vec<_> = a.iter().filter(|l| !b.contains(l)).take(20).collect();
    let new: Vec<_> = b.iter().filter(|l| !a.contains(l)).take(20).collect();
    format!("before only: {gone:#?}\nafter only: {new:#?}")
}

/// `ssh root@ADDR CMD` with the sandbox's key and known_hosts.
fn sandbox_ssh(info: &recipe::sandbox::SandboxInfo, addr: &str, cmd: &str) -> String {
    let out = Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(&info.key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", info.known_hosts.display()))
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
            "-l",
            "root",
            addr,
            "--",
            cmd,
        ])
        .output()
        .expect("ssh");
    assert!(
        out.status.success(),
        "ssh {addr} {cmd}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Variables a shipped recipe needs to run on the sandbox: the first host is the master.
fn sandbox_vars(recipe: &Path, master: &str) -> Vec<String> {
    let dir = recipe.parent().unwrap_or(Path::new("."));
    let engine = recipe::engine::build(dir, None);
    let Ok(r) = recipe::recipe::load(&engine, recipe) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for (name, default, _) in &r.vars {
        if name == "master" || name.ends_with("_build_host") {
            v.push(format!("{name}={master}"));
        }
        if name == "slurm_proctrack_type" && default.is_string() {
            v.push(format!("{name}=proctrack/linuxproc"));
        }
        if name == "slurm_task_plugin" && default.is_string() {
            v.push(format!("{name}=task/none"));
        }
    }
    v
}

#[test]
fn on_sandbox_hosts() {
    if !is_root() {
        eprintln!("skipped: the sandbox needs root");
        return;
    }
    let _down = SandboxDown;
    let info = recipe::sandbox::up(&recipe::sandbox::UpOptions {
        name: SANDBOX.into(),
        hosts: vec!["f1".into(), "f2".into()],
        serve: None,
        packages: Vec::new(),
        release: recipe::sandbox::Release::default(),
    })
    .expect("sandbox up");
    let roots: Vec<PathBuf> = info
        .hosts
        .iter()
        .map(|(h, _)| info.dir.join("hosts").join(h).join("root"))
        .collect();
    let addr = |i: usize| info.hosts[i].1.to_string();

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
    for r in &recipes {
        let before: Vec<Vec<String>> = roots.iter().map(|p| fs_snapshot(p)).collect();
        let controller = std::fs::read_to_string(r)
            .unwrap_or_default()
            .contains("play(");
        let mut c = common::recipe();
        c.arg("run").arg(r).arg("-i").arg(&info.inventory);
        if !controller {
            c.args(["--group", "all"]);
        }
        c.args(["--dry-run", "--diff", "--timeout", "60"]);
        for v in sandbox_vars(r, &info.hosts[0].0) {
            c.args(["--var", &v]);
        }
        let out = c.output().expect("runs");
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!all.contains("panicked"), "{}: {all}", r.display());
        assert_ne!(out.status.code(), Some(2), "{}: {all}", r.display());
        if !out.status.success() {
            eprintln!(
                "note: the dry run of {} on fresh hosts ended with {:?}",
                r.display(),
                out.status.code()
            );
        }
        for (i, p) in roots.iter().enumerate() {
            let after = fs_snapshot(p);
            assert!(
                after == before[i],
                "the dry run of {} changed {}:\n{}",
                r.display(),
                info.hosts[i].0,
                snapshot_diff(&before[i], &after)
            );
        }
    }

    let work = tempfile::tempdir().expect("tmp");
    let recipe = write_recipe(work.path());
    let inv_text = std::fs::read_to_string(&info.inventory).expect("inventory");

    // 2. Sudo refused: a login user without sudo rights on f2, next to root on f1.
    sandbox_ssh(
        &info,
        &addr(1),
        "useradd -m -s /bin/sh rcpuser && mkdir -p ~rcpuser/.ssh && cp /root/.ssh/authorized_keys ~rcpuser/.ssh/ && chown -R rcpuser: ~rcpuser/.ssh",
    );
    let inv = work.path().join("sudo.toml");
    std::fs::write(
        &inv,
        format!(
            "known_hosts = \"{kh}\"\n[hosts.f1]\naddress = \"{a0}\"\nuser = \"root\"\nkey = \"{k}\"\nvars = {{ base = \"/etc/recipe-faults\" }}\n\
             [hosts.f2u]\naddress = \"{a1}\"\nuser = \"rcpuser\"\nkey = \"{k}\"\nvars = {{ base = \"/etc/recipe-faults\" }}\n",
            kh = info.known_hosts.display(),
            k = info.key.display(),
            a0 = addr(0),
            a1 = addr(1),
        ),
    )
    .expect("inventory");
    let r = run(&recipe, &inv, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_one_screen(&r, &["f2u"]);
    assert!(r.stdout.contains("sudo refused for rcpuser"), "{}", r.all());
    assert!(roots[0].join("etc/recipe-faults/done").exists());
    assert!(!roots[1].join("etc/recipe-faults").exists());
    sandbox_ssh(
        &info,
        &addr(1),
        "echo 'rcpuser ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/rcpuser && chmod 0440 /etc/sudoers.d/rcpuser",
    );
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.recap("f1")["changed"], 0);
    assert!(r.recap("f2u")["changed"].as_u64().unwrap_or(0) > 0);
    let owner = sandbox_ssh(&info, &addr(1), "stat -c %U /etc/recipe-faults/done");
    assert_eq!(owner.trim(), "root", "written through sudo");
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.recap("f2u")["changed"], 0);

    // 3. The link of f1 goes down in the middle of a command: f1 fails on the run's
    // --timeout naming the step, f2 finishes; with the link back, a re-run converges.
    let octet = info.bridge_addr.octets()[2];
    let veth = format!("rcp{octet}v0");
    let vars = |slow: &str| format!("{{ base = \"/etc/recipe-link\", slow = \"{slow}\" }}");
    let link_inv = |slow_f1: &str| {
        let p = work.path().join("link.toml");
        let mut t = inv_text.replace("[hosts.f1]", "[hosts.f1]\n# faults");
        t = t.replacen(
            "[hosts.f1]\n# faults",
            &format!("[hosts.f1]\nvars = {}", vars(slow_f1)),
            1,
        );
        t = t.replacen("[hosts.f2]", &format!("[hosts.f2]\nvars = {}", vars("")), 1);
        std::fs::write(&p, t).expect("inventory");
        p
    };
    let inv = link_inv("30.5");
    let child = spawn_run(&recipe, &inv, &["--timeout", "4"]);
    wait_until("the slow command on f1", 60, || running(&["sleep", "30.5"]));
    let st = Command::new("ip")
        .args(["link", "set", &veth, "down"])
        .status()
        .expect("ip");
    assert!(st.success(), "ip link set {veth} down");
    let r = wait_run(child);
    let st = Command::new("ip")
        .args(["link", "set", &veth, "up"])
        .status()
        .expect("ip");
    assert!(st.success());
    assert_eq!(r.code, 1, "{}", r.all());
    assert_one_screen(&r, &["f1"]);
    // The remote `timeout` (4 s) cannot report back over a dead link: the controller gives up 15 s later.
    assert!(r.stdout.contains("no answer within 19s"), "{}", r.all());
    assert!(r.stdout.contains("faults.rhai:21"), "{}", r.all());
    assert!(
        roots[1].join("etc/recipe-link/done").exists(),
        "f2 finished"
    );
    let inv = link_inv("0.1");
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.recap("f2")["changed"], 0);
    let r = run(&recipe, &inv, &["--json"]);
    assert_eq!(r.recap("f1")["changed"], 0, "{}", r.all());
}
