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
/// The recipe's declarations are read from `recipe list` (name = default).
fn sandbox_vars(recipe: &Path, master: &str) -> Vec<String> {
    let dir = recipe.parent().unwrap_or(Path::new("."));
    let file = recipe
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = common::recipe()
        .arg("list")
        .arg(dir)
        .output()
        .expect("recipe list runs");
    let listing = text(&out.stdout);
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
