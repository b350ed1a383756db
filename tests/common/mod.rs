//! Test support: [`Test`], the one way the integration tests drive the `recipe` binary (in
//! the manner of just's `Test`: build the command line, run it, look at the [`Output`]);
//! a real OpenSSH server on loopback with its own host key and client key ([`Sshd`]) and an
//! inventory pointing at it; the loopback fault helpers ([`loopback`]), a terminal to watch
//! status lines on ([`pty`]) and the sandbox end-to-end harness ([`sandbox`]).
#![allow(dead_code)]

pub mod k8s_standins;
pub mod leaks;
pub mod loopback;
pub mod netns;
#[path = "../../src/test_precondition.rs"]
pub mod precondition;
pub mod pty;
pub mod sandbox;
#[allow(unused_imports)]
pub use precondition::{is_root, require, require_root};

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The fixtures of bad input (recipes, inventories, templates).
pub const BAD: &str = "tests/fixtures/bad";

/// `tests/fixtures/bad/NAME`.
pub fn bad(name: &str) -> String {
    format!("{BAD}/{name}")
}

/// Runs `recipe ARGS` expecting an error: no panic, exit status `code`, every piece in the
/// output.
pub fn expect_error(args: &[&str], code: i32, pieces: &[&str]) -> Output {
    Test::new()
        .args(args)
        .run()
        .expect_no_panic()
        .expect_code(code)
        .expect_contains(pieces)
}

/// [`expect_error`] whose error also fits a screen (25 lines, 4000 bytes).
pub fn expect_short(args: &[&str], code: i32, pieces: &[&str]) -> Output {
    expect_error(args, code, pieces).expect_at_most(25, 4000)
}

/// A small tmpfs mounted by a test (root only), unmounted (lazily, even if busy) when
/// dropped, also when the test fails.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`1m`, `4m`) on `dir`, made first.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(st.success(), "cannot mount a tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A running `sshd -D` owned by the test; killed on drop (also when the test fails).
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub addr: String,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether process `pid` holds a TCP socket listening on `port` (from /proc/net/tcp{,6} and
/// the process's file descriptors).
pub fn listens(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode (10th field); 0A = LISTEN.
            if f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
}

pub fn sshd_path() -> PathBuf {
    for p in ["/usr/sbin/sshd", "/usr/bin/sshd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("sshd not found: apt-get install openssh-server (the tests need a real OpenSSH server)");
}

/// A fresh ed25519 key pair at `path` (and `path.pub`), without a passphrase.
pub fn keygen(path: &Path) {
    keygen_with(path, "");
}

/// [`keygen`] with this passphrase.
pub fn keygen_with(path: &Path, passphrase: &str) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success(), "ssh-keygen failed");
}

/// The sha256 of `b`, in hex.
pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The sha256 of the file at `p`, in hex.
pub fn sha256_file(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// The sha512 of the file at `p`, in hex.
pub fn sha512_file(p: &Path) -> String {
    use sha2::Digest;
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    hex::encode(sha2::Sha512::digest(b))
}

/// A progress line on stderr for long tests: `[TEST-BINARY SECONDS] what`.
pub fn log(t0: Instant, what: &str) {
    let exe = std::env::current_exe().unwrap_or_default();
    let stem = exe.file_stem().map(|s| s.to_string_lossy().into_owned());
    let bin = stem.as_deref().unwrap_or("test");
    let bin = bin.rsplit_once('-').map_or(bin, |(b, _)| b);
    eprintln!("[{bin} {:>6.1}s] {what}", t0.elapsed().as_secs_f64());
}

impl Sshd {
    /// Starts sshd on 127.0.0.1 (or `addr`) with a fresh host key; root logs in with the
    /// generated client key. Extra sshd_config lines can be passed.
    pub fn start_with(addr: &str, extra: &str) -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("copy key");
        std::fs::create_dir_all("/run/sshd").ok();
        // A free port may be taken by someone else before sshd binds it: then sshd exits (or
        // another process answers there), and we start again on another port. Listening is
        // judged by the socket sshd itself holds, not by a connect that anyone could answer.
        let mut attempt = 0;
        let (port, child) = loop {
            attempt += 1;
            let port = free_port();
            let cfg = format!(
                "Port {port}\nListenAddress {addr}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {pid}\n\
                 Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 200:30:400\n{extra}\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            );
            std::fs::write(d.join("sshd_config"), cfg).expect("write config");
            let mut child = Command::new(sshd_path())
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(d.join("sshd_config"))
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(d.join("sshd.log"))
                        .map(Stdio::from)
                        .unwrap_or(Stdio::null()),
                )
                .spawn()
                .expect("sshd starts");
            let deadline = Instant::now() + Duration::from_secs(30);
            let up = loop {
                if listens(child.id(), port) {
                    break true;
                }
                if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                break (port, child);
            }
            let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
            assert!(attempt < 5, "sshd did not listen (5 ports tried): {log}");
        };
        let s = Sshd {
            dir,
            port,
            addr: addr.to_string(),
            child: Some(child),
        };
        let pubkey = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let mut parts = pubkey.split_whitespace();
        let line = format!(
            "[{addr}]:{port} {} {}\n",
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("")
        );
        std::fs::write(d.join("known_hosts"), line).expect("known_hosts");
        s
    }

    pub fn start() -> Sshd {
        Sshd::start_with("127.0.0.1", "")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An inventory with this server as host `name` (plus any extra TOML).
    pub fn inventory(&self, name: &str, extra: &str) -> PathBuf {
        let p = self.path(&format!("inventory-{name}.toml"));
        let text = format!(
            "known_hosts = \"{kh}\"\n\n[hosts.{name}]\naddress = \"{a}\"\nport = {port}\nuser = \"root\"\nkey = \"{key}\"\n{extra}\n",
            kh = self.path("known_hosts").display(),
            a = self.addr,
            port = self.port,
            key = self.path("client_key").display(),
        );
        std::fs::write(&p, text).expect("inventory");
        p
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `recipe run RECIPE --group all -i INV`.
pub fn run_all(recipe: &Path, inv: &Path) -> Test {
    Test::new()
        .arg("run")
        .arg(recipe)
        .args(["--group", "all", "-i"])
        .arg(inv)
}

pub fn recaps(ev: &[serde_json::Value]) -> Vec<serde_json::Value> {
    ev.iter()
        .filter(|e| e["event"] == "recap")
        .cloned()
        .collect()
}

pub fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The repository root, where every run starts unless told otherwise.
pub fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// How long a run may take before it is killed and the test fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// One run of the real `recipe` binary: `Test::new().args([..]).env(k, v).run()`.
///
/// Always the binary cargo built for this test, from the repository root, with
/// `NO_COLOR=1`, stdin empty (or the bytes given), stdout and stderr captured, and killed
/// (the test failing) after [`DEFAULT_TIMEOUT`] unless told otherwise.
pub struct Test {
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
    dir: PathBuf,
    timeout: Duration,
    stderr_to: Option<Stdio>,
    /// A network namespace to run in (`ip netns exec`): the controller's view of a site.
    netns: Option<String>,
}

impl Default for Test {
    fn default() -> Self {
        Test::new()
    }
}

impl Test {
    pub fn new() -> Test {
        Test {
            args: Vec::new(),
            env: vec![("NO_COLOR".into(), Some("1".into()))],
            stdin: None,
            dir: project().to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
            stderr_to: None,
            netns: None,
        }
    }

    /// Runs `recipe` inside network namespace `ns` (None: here).
    pub fn netns(mut self, ns: Option<&str>) -> Test {
        self.netns = ns.map(str::to_string);
        self
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Test {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Test {
        self.env
            .push((k.as_ref().to_os_string(), Some(v.as_ref().to_os_string())));
        self
    }

    /// Runs without this variable, even if the test's own environment has it.
    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Test {
        self.env.push((k.as_ref().to_os_string(), None));
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Test {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Test {
        self.dir = dir.as_ref().to_path_buf();
        self
    }

    pub fn timeout(mut self, d: Duration) -> Test {
        self.timeout = d;
        self
    }

    /// Sends stderr there (a terminal, say) instead of capturing it; `Output::stderr` is
    /// then empty.
    pub fn stderr_to(mut self, to: impl Into<Stdio>) -> Test {
        self.stderr_to = Some(to.into());
        self
    }

    /// The command line, for messages: `recipe ARG...`.
    fn line(&self) -> String {
        std::iter::once("recipe".to_string())
            .chain(self.args.iter().map(|a| {
                let a = a.to_string_lossy();
                if a.is_empty() || a.contains([' ', '"', '\'', '\n']) {
                    format!("{a:?}")
                } else {
                    a.into_owned()
                }
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts the run in the background (to break something while it works); see
    /// [`Running::finish`]. Stdout and stderr are read as they come, so a chatty run never
    /// blocks on a full pipe.
    pub fn spawn(self) -> Running {
        self.try_spawn().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_spawn(self) -> Result<Running, String> {
        let line = self.line();
        let mut c = match &self.netns {
            None => Command::new(env!("CARGO_BIN_EXE_recipe")),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_recipe")]);
                c
            }
        };
        c.current_dir(&self.dir).args(&self.args);
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        c.stdout(Stdio::piped());
        let captured_stderr = self.stderr_to.is_none();
        c.stderr(self.stderr_to.unwrap_or_else(Stdio::piped));
        let mut child = c
            .spawn()
            .map_err(|e| format!("{line}: cannot start: {e}"))?;
        let stdin = match (self.stdin, child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
                // The run may stop reading early; that is its business.
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };
        let drain = |r: Option<Box<dyn Read + Send>>| {
            r.map(|mut r| {
                std::thread::spawn(move || {
                    let mut v = Vec::new();
                    let _ = r.read_to_end(&mut v);
                    v
                })
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .filter(|_| captured_stderr)
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        Ok(Running {
            line,
            child,
            reaped: false,
            deadline: Instant::now() + self.timeout,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Runs to the end; panics if the binary cannot start or outlives its timeout.
    pub fn run(self) -> Output {
        self.try_run().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Test::run`], without panicking (for Drop guards).
    pub fn try_run(self) -> Result<Output, String> {
        self.try_spawn()?.try_finish()
    }
}

/// A run started with [`Test::spawn`]; killed if dropped before [`Running::finish`] (when the
/// test fails on the way).
pub struct Running {
    line: String,
    child: Child,
    reaped: bool,
    deadline: Instant,
    stdin: Option<JoinHandle<()>>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (libc::SIGTERM, ...) to the run.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the child this test started (not yet waited for).
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// The exit code once the run has ended (-1 if killed by a signal), without waiting.
    pub fn try_wait(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .expect("wait for recipe")
            .map(|s| s.code().unwrap_or(-1))
    }

    /// Waits for the end (the test fails if the timeout passes first) and collects the output.
    pub fn finish(self) -> Output {
        self.try_finish().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_finish(mut self) -> Result<Output, String> {
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = self
                .child
                .try_wait()
                .map_err(|e| format!("{}: cannot wait: {e}", self.line))?
            {
                break s;
            }
            if Instant::now() >= self.deadline {
                timed_out = true;
                let _ = self.child.kill();
                break self
                    .child
                    .wait()
                    .map_err(|e| format!("{}: cannot wait: {e}", self.line))?;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.reaped = true;
        if let Some(t) = self.stdin.take() {
            let _ = t.join();
        }
        let join = |t: Option<JoinHandle<Vec<u8>>>| {
            t.map(|t| t.join().unwrap_or_default()).unwrap_or_default()
        };
        let (stdout, stderr) = (join(self.stdout.take()), join(self.stderr.take()));
        let out = Output {
            line: std::mem::take(&mut self.line),
            code: status.code().unwrap_or(-1),
            stdout: text(&stdout),
            stderr: text(&stderr),
            stdout_bytes: stdout,
            stderr_bytes: stderr,
        };
        if timed_out {
            return Err(format!("timed out, killed:\n{}", out.show()));
        }
        Ok(out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a run printed, and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub line: String,
    /// The exit code; -1 if a signal ended the run.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr_bytes: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Stdout then stderr, as one text.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Stdout then stderr, as bytes (to look for a secret's raw bytes).
    pub fn all_bytes(&self) -> Vec<u8> {
        let mut v = self.stdout_bytes.clone();
        v.extend_from_slice(&self.stderr_bytes);
        v
    }

    /// The whole of it for a failure message: the command line, its exit code, stdout, stderr.
    pub fn show(&self) -> String {
        format!(
            "$ {}\n--- exit code {} --- stdout ---\n{}\n--- stderr ---\n{}",
            self.line, self.code, self.stdout, self.stderr
        )
    }

    /// The `--json` events on stdout; every line must be one.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", self.show()))
            })
            .collect()
    }

    /// The `step` events, in order.
    pub fn steps(&self) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "step")
            .collect()
    }

    pub fn recaps(&self) -> Vec<serde_json::Value> {
        recaps(&self.events())
    }

    /// The recap of `host`; the test fails if there is none.
    pub fn recap(&self, host: &str) -> serde_json::Value {
        self.recaps()
            .into_iter()
            .find(|r| r["host"] == host)
            .unwrap_or_else(|| panic!("no recap for {host}:\n{}", self.show()))
    }

    pub fn expect_code(self, code: i32) -> Output {
        assert_eq!(self.code, code, "exit code\n{}", self.show());
        self
    }

    pub fn expect_success(self) -> Output {
        self.expect_code(0)
    }

    /// Every piece is in stdout or stderr.
    pub fn expect_contains(self, pieces: &[&str]) -> Output {
        let all = self.all();
        for p in pieces {
            assert!(all.contains(p), "no {p:?} in the output:\n{}", self.show());
        }
        self
    }

    pub fn expect_stdout_contains(self, pieces: &[&str]) -> Output {
        for p in pieces {
            assert!(
                self.stdout.contains(p),
                "no {p:?} on stdout:\n{}",
                self.show()
            );
        }
        self
    }

    pub fn expect_stderr_contains(self, pieces: &[&str]) -> Output {
        for p in pieces {
            assert!(
                self.stderr.contains(p),
                "no {p:?} on stderr:\n{}",
                self.show()
            );
        }
        self
    }

    /// None of the pieces is in stdout or stderr.
    pub fn expect_lacks(self, pieces: &[&str]) -> Output {
        let all = self.all();
        for p in pieces {
            assert!(!all.contains(p), "{p:?} in the output:\n{}", self.show());
        }
        self
    }

    /// The binary did not panic.
    pub fn expect_no_panic(self) -> Output {
        let all = self.all();
        assert!(
            !all.contains("panicked") && !all.contains("RUST_BACKTRACE"),
            "panicked:\n{}",
            self.show()
        );
        self
    }

    /// Stdout and stderr together fit in `lines` lines and `bytes` bytes (an error that fits
    /// a screen).
    pub fn expect_at_most(self, lines: usize, bytes: usize) -> Output {
        let all = self.all();
        assert!(
            all.lines().count() <= lines && all.len() <= bytes,
            "more than {lines} lines or {bytes} bytes ({} lines, {} bytes):\n{}",
            all.lines().count(),
            all.len(),
            self.show()
        );
        self
    }
}

/// `recipe sandbox serve-files DIR 127.0.0.1:PORT` (the sandbox's file server on loopback),
/// stopped when dropped; `.1` is its URL.
pub struct ServedFiles(Child, pub String);

impl ServedFiles {
    pub fn start(dir: &Path) -> ServedFiles {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_recipe"))
            .args(["sandbox", "serve-files"])
            .arg(dir)
            .arg(&addr)
            .stderr(Stdio::null())
            .spawn()
            .expect("recipe sandbox serve-files");
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        ServedFiles(child, format!("http://{addr}"))
    }
}

impl Drop for ServedFiles {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
