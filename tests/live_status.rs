//! The live status lines of `recipe run` on a terminal (a real pseudo-terminal from
//! util-linux `script`, read back through the `vt100` terminal emulator): a long step shows
//! its host, place and elapsed time while it runs, on one host and on several; a streamed
//! copy shows its bytes; `sh(.., #{progress: true})` shows its last output line with
//! secrets redacted; the lines are gone before the step's own line, and a redirected stdout
//! never gets them. Each long step waits on a file the test creates, so "while it runs"
//! needs no clock.

mod common;
use common::loopback::{inventory_of, write};
use common::pty::{final_screen, parser, Terminal, COLS, ROWS};
use common::*;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `recipe ARGS` on a pseudo-terminal of ROWS x COLS; stdout to `stdout_to` when given
/// (a file), else to the terminal too. Killed on drop.
struct Pty {
    child: Child,
    seen: Arc<Mutex<Vec<u8>>>,
}

fn sh_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Pty {
    fn run(args: &[&str], stdout_to: Option<&Path>) -> Pty {
        Pty::run_env(args, stdout_to, &[])
    }

    fn run_env(args: &[&str], stdout_to: Option<&Path>, env: &[(&str, &str)]) -> Pty {
        let mut line = format!(
            "stty cols {COLS} rows {ROWS}; exec {}",
            sh_word(env!("CARGO_BIN_EXE_recipe"))
        );
        for a in args {
            line.push(' ');
            line.push_str(&sh_word(a));
        }
        if let Some(f) = stdout_to {
            line.push_str(&format!(" >{}", sh_word(&f.display().to_string())));
        }
        let mut child = Command::new("script")
            .args(["-qfec", &line, "/dev/null"])
            .current_dir(project())
            .env_remove("NO_COLOR")
            .env("TERM", "xterm")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("script (util-linux) runs");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut out = child.stdout.take().expect("stdout");
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Pty { child, seen }
    }

    fn bytes(&self) -> Vec<u8> {
        self.seen.lock().expect("lock").clone()
    }

    /// The screen as the terminal shows it now.
    fn screen(&self) -> String {
        let mut p = parser();
        p.process(&self.bytes());
        p.screen().contents()
    }

    /// Waits (up to a minute: the step is held, so this is no timing check) until the
    /// screen shows a line with every piece; returns that line.
    fn wait_for_line(&mut self, pieces: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if let Some(l) = screen
                .lines()
                .find(|l| pieces.iter().all(|p| l.contains(p)))
            {
                return l.to_string();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("the run ended ({st}) before {pieces:?} was shown:\n{screen}");
            }
            assert!(
                Instant::now() < deadline,
                "no line with {pieces:?} on the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the end; the exit status of `recipe`.
    fn finish(mut self) -> (i32, Vec<u8>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let st = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            assert!(Instant::now() < deadline, "the run did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader gets the rest once the terminal closes.
        std::thread::sleep(Duration::from_millis(200));
        (st.code().unwrap_or(-1), self.bytes())
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command that runs until the test creates `go`.
fn wait_on(go: &Path) -> String {
    format!("while [ ! -e {} ]; do sleep 0.1; done", go.display())
}

#[test]
fn one_host_shows_the_running_step_and_clears_it_before_its_line() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("h1", "");
    let dir = tempfile::tempdir().expect("tmp");
    let go = dir.path().join("go");
    let recipe = write(
        dir.path(),
        "long.rhai",
        &format!(
            "sh({:?}, #{{name: \"waits for the test\"}});\nsh(\"true\", #{{name: \"after\"}});\n",
            wait_on(&go)
        ),
    );
    let r = recipe.display().to_string();
    let i = inv.display().to_string();
    let args = ["run", &r, "--group", "all", "-i", &i];

    // stdout redirected: the status goes to the terminal (stderr), never into the file.
    let out = dir.path().join("stdout.txt");
    let mut pty = Pty::run(&args, Some(&out));
    let status = pty.wait_for_line(&["h1", "long.rhai:1", "sh waits for the test"]);
    assert!(status.contains('s'), "elapsed time: {status}");
    std::fs::write(&go, "").expect("go");
    let (code, seen) = pty.finish();
    assert_eq!(code, 0, "{}", text(&seen));
    let file = std::fs::read_to_string(&out).expect("stdout file");
    assert!(
        file.contains("sh waits for the test changed"),
        "the step line: {file}"
    );
    assert!(
        !file.contains('\x1b') && !file.contains('\r'),
        "terminal codes in a redirected stdout: {file:?}"
    );
    assert_eq!(
        file.matches("waits for the test").count(),
        2,
        "one step line and its change, nothing else: {file}"
    );
    let left = final_screen(&seen);
    assert!(
        left.is_empty(),
        "status lines left on the terminal: {left:?}"
    );

    // stdout on the terminal too: the step's line replaces the status line.
    std::fs::remove_file(&go).expect("rm go");
    let mut pty = Pty::run(&args, None);
    pty.wait_for_line(&["h1", "long.rhai:1", "sh waits for the test"]);
    std::fs::write(&go, "").expect("go");
    let (code, seen) = pty.finish();
    assert_eq!(code, 0, "{}", text(&seen));
    // Once the step's line is out, its status line is never drawn again.
    let t = text(&seen);
    let at = t
        .find("- run: waits for the test")
        .expect("the step's change line");
    assert!(
        !t[at..].contains("long.rhai:1"),
        "a status line after the step's line: {:?}",
        &t[at..]
    );
    let screen = final_screen(&seen);
    let with: Vec<&String> = screen
        .iter()
        .filter(|l| l.contains("waits for the test"))
        .collect();
    assert_eq!(with.len(), 2, "{screen:#?}");
    assert!(
        with[0].starts_with("h1") && with[0].ends_with("sh waits for the test changed"),
        "{screen:#?}"
    );
    assert!(with[1].trim() == "- run: waits for the test", "{screen:#?}");
    assert!(screen.iter().any(|l| l.starts_with("RECAP")), "{screen:#?}");
}

#[test]
fn several_hosts_show_a_line_each_and_the_count_done() {
    let sshd = Sshd::start();
    let names = ["ha", "hb", "hc"];
    let inv = inventory_of(&sshd, &names, "");
    let dir = tempfile::tempdir().expect("tmp");
    let go = dir.path().join("go");
    let recipe = write(
        dir.path(),
        "many.rhai",
        &format!("sh({:?}, #{{name: \"held\"}});\n", wait_on(&go)),
    );
    let (r, i) = (recipe.display().to_string(), inv.display().to_string());
    let out = dir.path().join("stdout.txt");
    let mut pty = Pty::run(&["run", &r, "--group", "all", "-i", &i], Some(&out));
    pty.wait_for_line(&["0/3 hosts done"]);
    for h in names {
        pty.wait_for_line(&[h, "many.rhai:1", "sh held"]);
    }
    std::fs::write(&go, "").expect("go");
    let (code, seen) = pty.finish();
    assert_eq!(code, 0, "{}", text(&seen));
    let left = final_screen(&seen);
    assert!(left.is_empty(), "status lines left: {left:?}");
    let file = std::fs::read_to_string(&out).expect("stdout");
    assert!(!file.contains("hosts done"), "{file}");
}

/// Controller mode (the demo's way): each `play()` shows its hosts' steps and how many of
/// them are done.
#[test]
fn a_controller_play_shows_its_hosts() {
    let sshd = Sshd::start();
    let inv = inventory_of(&sshd, &["pa", "pb"], "");
    let dir = tempfile::tempdir().expect("tmp");
    let go = dir.path().join("go");
    write(
        dir.path(),
        "held.rhai",
        &format!("sh({:?}, #{{name: \"held\"}});\n", wait_on(&go)),
    );
    let ctl = write(
        dir.path(),
        "ctl.rhai",
        "play(\"held.rhai\", #{group: \"all\"});\n",
    );
    let (r, i) = (ctl.display().to_string(), inv.display().to_string());
    let out = dir.path().join("stdout.txt");
    let mut pty = Pty::run(&["run", &r, "-i", &i], Some(&out));
    pty.wait_for_line(&["0/2 hosts done"]);
    for h in ["pa", "pb"] {
        pty.wait_for_line(&[h, "held.rhai:1", "sh held"]);
    }
    std::fs::write(&go, "").expect("go");
    let (code, seen) = pty.finish();
    assert_eq!(code, 0, "{}", text(&seen));
    let left = final_screen(&seen);
    assert!(left.is_empty(), "status lines left: {left:?}");
}

/// A TCP relay to `port` that lets `budget` bytes go towards the server, then holds that
/// direction until `open` is set: a link the test slows down, under a real sshd.
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
}

impl Gate {
    fn start(to: u16, budget: u64) -> Gate {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(false));
        let passed = Arc::new(AtomicU64::new(0));
        let o = open.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let (mut c2, mut s2) =
                    (c.try_clone().expect("clone"), s.try_clone().expect("clone"));
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                let (o, passed) = (o.clone(), passed.clone());
                std::thread::spawn(move || {
                    let (mut c, mut s) = (c, s);
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let n = match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        while passed.load(Ordering::Relaxed) >= budget && !o.load(Ordering::Relaxed)
                        {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        passed.fetch_add(n as u64, Ordering::Relaxed);
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Gate { port, open }
    }
}

#[test]
fn a_streamed_copy_shows_its_bytes_and_total() {
    let sshd = Sshd::start();
    let gate = Gate::start(sshd.port, 3 * 1024 * 1024);
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("big.bin");
    std::fs::write(&src, leaks::random_bytes(8 * 1024 * 1024)).expect("src");
    let dest = dir.path().join("copy.bin");
    // Host `dst` is the same sshd behind the gate.
    let key = std::fs::read_to_string(sshd.path("known_hosts")).expect("kh");
    let key = key.split_once(' ').map(|(_, k)| k).unwrap_or("").trim();
    let kh = dir.path().join("known_hosts");
    std::fs::write(
        &kh,
        format!(
            "[127.0.0.1]:{} {key}\n[127.0.0.1]:{} {key}\n",
            sshd.port, gate.port
        ),
    )
    .expect("kh");
    let host = |name: &str, port: u16| {
        format!(
            "\n[hosts.{name}]\naddress = \"127.0.0.1\"\nport = {port}\nuser = \"root\"\nkey = \"{}\"\n",
            sshd.path("client_key").display()
        )
    };
    let inv = write(
        dir.path(),
        "inv.toml",
        &format!(
            "known_hosts = \"{}\"\n{}{}",
            kh.display(),
            host("src", sshd.port),
            host("dst", gate.port)
        ),
    );
    let recipe = write(
        dir.path(),
        "copy.rhai",
        &format!(
            "file({:?}, #{{from_host: \"src\", src: {:?}}});\n",
            dest.display().to_string(),
            src.display().to_string()
        ),
    );
    let (r, i) = (recipe.display().to_string(), inv.display().to_string());
    let out = dir.path().join("stdout.txt");
    let mut pty = Pty::run(&["run", &r, "--host", "dst", "-i", &i], Some(&out));
    let line = pty.wait_for_line(&["dst", "copy.rhai:1", "/8.00 MiB", "MiB/s", "file "]);
    assert!(!line.contains(" 0 B/"), "no bytes counted: {line}");
    gate.open.store(true, Ordering::Relaxed);
    let (code, seen) = pty.finish();
    assert_eq!(code, 0, "{}", text(&seen));
    assert_eq!(sha256_file(&dest), sha256_file(&src));
    let left = final_screen(&seen);
    assert!(left.is_empty(), "status lines left: {left:?}");
}

/// An HTTP server of one file of `size` bytes that sends `first` bytes, then the rest once
/// `open` is set. Its URL.
fn held_download(size: usize, first: usize, open: Arc<AtomicBool>) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut req = [0u8; 4096];
            let _ = c.read(&mut req);
            let body = vec![b'x'; size];
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n\r\n");
            if c.write_all(head.as_bytes()).is_err() || c.write_all(&body[..first]).is_err() {
                continue;
            }
            while !open.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.write_all(&body[first..]);
        }
    });
    format!("http://127.0.0.1:{port}/big.bin")
}

/// The host's own curl or wget fetches: the status shows the bytes it has so far.
#[test]
fn a_download_on_the_host_shows_its_bytes() {
    let dir = tempfile::tempdir().expect("tmp");
    let open = Arc::new(AtomicBool::new(false));
    let url = held_download(6 << 20, 3 << 20, open.clone());
    let dest = dir.path().join("big.bin");
    let recipe = write(
        dir.path(),
        "dl.rhai",
        &format!(
            "download({url:?}, {:?}, #{{sha256: {:?}}});\n",
            dest.display().to_string(),
            sha256_hex(&vec![b'x'; 6 << 20])
        ),
    );
    let r = recipe.display().to_string();
    let out = dir.path().join("stdout.txt");
    let mut pty = Pty::run(&["run", &r, "--local"], Some(&out));
    let line = pty.wait_for_line(&["local", "dl.rhai:1", "3.00 MiB", "download "]);
    open.store(true, Ordering::Relaxed);
    let (code, seen) = pty.finish();
    assert_eq!(code, 0, "{line}\n{}", text(&seen));
    assert_eq!(
        std::fs::metadata(&dest).map(|m| m.len()).ok(),
        Some(6 << 20)
    );
    let file = std::fs::read_to_string(&out).expect("stdout");
    assert!(!file.contains("__RCP"), "{file}");
}

#[test]
fn a_progress_step_shows_its_last_line_with_secrets_redacted() {
    const PW: &str = "pw-Live-Status-7f3a";
    let dir = tempfile::tempdir().expect("tmp");
    let go = dir.path().join("go");
    let recipe = write(
        dir.path(),
        "make.rhai",
        &format!(
            "let s = secret(\"{PW}\");\n\
             sh(`echo CC first.o; printf 'token %s ok\\n' \"$(cat)\"; {}`, \
             #{{stdin: s, progress: true, name: \"build\"}});\n",
            wait_on(&go)
        ),
    );
    let r = recipe.display().to_string();
    let out = dir.path().join("stdout.txt");
    let mut pty = Pty::run(&["run", &r, "--local"], Some(&out));
    let line = pty.wait_for_line(&["local", "make.rhai:2", "sh build", "| token ", " ok"]);
    assert!(!line.contains("CC first.o"), "the last line only: {line}");
    std::fs::write(&go, "").expect("go");
    let (code, seen) = pty.finish();
    assert_eq!(code, 0, "{}", text(&seen));
    let file = std::fs::read(&out).expect("stdout");
    leaks::assert_clean("the terminal", &seen, &[("the secret", PW.as_bytes())]);
    leaks::assert_clean("stdout", &file, &[("the secret", PW.as_bytes())]);
}

/// What a real `make` prints, on a 120-column terminal and with `--json` (the events on
/// stdout, the status lines on stderr, as tests/slurm_e2e.rs watches the Slurm build): a
/// libtool command longer than the terminal is cut to its width (one line, nothing wrapped
/// or left behind), a compiler's colours are spelt out, a secret is redacted before blanks
/// are squeezed (`  CC       log.lo` reads `CC log.lo`), and stdout stays JSON.
#[test]
fn make_output_on_a_narrow_terminal_with_json() {
    const PW: &str = "pw  with  blanks-9c1e";
    const LIBTOOL: &str = "/bin/bash ../../libtool  --tag=CC   --mode=compile gcc -DHAVE_CONFIG_H \
        -I. -I../.. -I../../slurm  -I../.. -DNUMA_VERSION1_COMPATIBILITY -g -O2 -fno-omit-frame-pointer \
        -pthread -ggdb3 -Wall -g -O1 -fno-strict-aliasing -MT slurm_protocol_pack.lo -MD -MP -MF \
        .deps/slurm_protocol_pack.Tpo -c -o slurm_protocol_pack.lo slurm_protocol_pack.c";
    let (rows, cols) = (24, 120);
    let dir = tempfile::tempdir().expect("tmp");
    let go: Vec<_> = (0..4).map(|i| dir.path().join(format!("go{i}"))).collect();
    let script = format!(
        "printf '%s\\n' '{LIBTOOL}'; {}; \
         printf '\\033[01;35mwarning:\\033[m unused\\n'; {}; \
         printf 'key %s ok\\n' \"$(cat)\"; {}; \
         printf 'Making all in common\\n  CC       log.lo\\n'; {}",
        wait_on(&go[0]),
        wait_on(&go[1]),
        wait_on(&go[2]),
        wait_on(&go[3])
    );
    let recipe = write(
        dir.path(),
        "make.rhai",
        &format!(
            "let s = secret(\"{PW}\");\nsh({script:?}, #{{stdin: s, progress: true, name: \"make -j2\"}});\n"
        ),
    );
    let mut term = Terminal::open(rows, cols);
    let run = Test::new()
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stderr_to(term.stderr())
        .arg("run")
        .arg(&recipe)
        .args(["--local", "--json"])
        .spawn();
    let status = ["local", "make.rhai:2", "sh make -j2"];
    let with = |last: &'static str| [&status[..], &[last]].concat();
    // Cut to the width: the status line is the only line on the screen, no wrapped rest.
    let line = term.wait_for_line(&with(
        "| /bin/bash ../../libtool --tag=CC --mode=compile gcc",
    ));
    assert!(!line.contains(".deps/"), "not cut: {line}");
    assert_eq!(term.screen(), vec![line.clone()], "a wrapped status line");
    std::fs::write(&go[0], "").expect("go");
    term.wait_for_line(&with("| \\x1b[01;35mwarning:\\x1b[m unused"));
    std::fs::write(&go[1], "").expect("go");
    let line = term.wait_for_line(&with("| key "));
    assert!(line.ends_with(" ok") && !line.contains("blanks"), "{line}");
    std::fs::write(&go[2], "").expect("go");
    term.wait_for_line(&with("| CC log.lo"));
    std::fs::write(&go[3], "").expect("go");
    let out = run.finish();
    assert_eq!(out.code, 0, "{}", out.show());
    let seen = term.settled();
    assert!(
        term.screen().is_empty(),
        "left on the terminal: {:?}",
        term.screen()
    );
    leaks::assert_clean(
        "the terminal",
        &seen,
        &[
            ("the secret", PW.as_bytes()),
            (
                "the secret with its blanks squeezed",
                b"pw with blanks-9c1e",
            ),
        ],
    );
    // stdout: the events only (each line JSON), nothing of the status lines.
    let ev = out.steps();
    assert_eq!(ev.len(), 1, "{}", out.show());
    assert_eq!(ev[0]["target"], "make -j2");
    assert!(
        !out.stdout.contains("libtool") && !out.stdout.contains('\x1b'),
        "{}",
        out.stdout
    );
}

/// A plain terminal (`NO_COLOR`, or `TERM=dumb`) gets the step lines and no status lines.
#[test]
fn a_plain_terminal_gets_no_status_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let recipe = write(
        dir.path(),
        "slow.rhai",
        "sh(\"sleep 1.5; echo x\", #{progress: true, name: \"slow\"});\n",
    );
    let r = recipe.display().to_string();
    for env in [("NO_COLOR", "1"), ("TERM", "dumb")] {
        let pty = Pty::run_env(&["run", &r, "--local"], None, &[env]);
        let (code, seen) = pty.finish();
        let t = text(&seen);
        assert_eq!(code, 0, "{t}");
        assert_eq!(t.matches("sh slow").count(), 1, "{env:?}: {t:?}");
        assert!(!t.contains("\x1b[2K"), "{env:?}: {t:?}");
    }
}

/// A `--via slurm` task (here started by hand, as srun would: `SLURMD_NODENAME` and the
/// node file) tells the controller about its running step every 2 s, so that the controller
/// can show it; the step's own event follows. The controller's side is unit-tested
/// (`report::tests::a_via_nodes_running_step_is_shown_until_its_step_ends`): a real
/// `--via` run needs the Slurm sandbox.
#[test]
fn a_via_node_reports_its_running_step() {
    let dir = tempfile::tempdir().expect("tmp");
    let go = dir.path().join("go");
    let recipe = write(
        dir.path(),
        "held.rhai",
        &format!("sh({:?}, #{{name: \"held\"}});\n", wait_on(&go)),
    );
    let nodes = write(
        dir.path(),
        "nodes.json",
        "{\"nodes\": {\"n1\": {\"host\": \"w1\", \"vars\": {}}}}",
    );
    let out = dir.path().join("events.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_recipe"))
        .arg("run")
        .arg(&recipe)
        .arg("--slurm-node")
        .arg(&nodes)
        .env("SLURMD_NODENAME", "n1")
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(Stdio::null())
        .spawn()
        .expect("recipe runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(l) = t.lines().find(|l| l.contains("\"progress\"")) {
            break l.to_string();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no progress event from the node while its step was held: {t}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::fs::write(&go, "").expect("go");
    assert!(child.wait().expect("wait").success());
    let ev: serde_json::Value = serde_json::from_str(&progress).expect("JSON");
    assert_eq!(
        (&ev["host"], &ev["line"], &ev["op"], &ev["target"]),
        (&"w1".into(), &1.into(), &"sh".into(), &"held".into()),
        "{ev}"
    );
    let t = std::fs::read_to_string(&out).expect("events");
    assert!(t.contains("\"event\":\"step\""), "{t}");
}

/// Without a terminal (the test harness's pipes) nothing of the status reaches the output.
#[test]
fn no_status_without_a_terminal() {
    let dir = tempfile::tempdir().expect("tmp");
    let recipe = write(
        dir.path(),
        "slow.rhai",
        "sh(\"sleep 1.5; echo x\", #{progress: true, name: \"slow\"});\n",
    );
    let out = Test::new()
        .arg("run")
        .arg(&recipe)
        .arg("--local")
        .env_remove("NO_COLOR")
        .run()
        .expect_success();
    let all = out.all();
    assert!(!all.contains('\x1b') && !all.contains('\r'), "{all:?}");
    assert_eq!(all.matches("sh slow").count(), 1, "{all}");
}
