//! How commands reach a host: a connection per host, a small pool of shell workers on it.

pub mod local;
pub mod shell;
pub mod ssh;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

use shell::Worker;

/// A boxed future that can move between threads: what the [`Spawner`] methods return.
pub type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a command produced on the target.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("host key: {0}")]
    HostKey(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Shell(String),
    /// Refused before it left: a secret's placeholder text in a command or its input.
    #[error("{0}")]
    Refused(String),
    /// A second Ctrl-C or SIGTERM abandoned the command.
    #[error("{0}")]
    Interrupted(String),
}

/// Counters the benchmark reports: channels opened and commands sent.
#[derive(Debug, Default)]
pub struct Stats {
    pub channels: AtomicU64,
    pub round_trips: AtomicU64,
    /// Processes (and threads) the targets started for our commands: how far each target's
    /// last pid (the last field of `/proc/loadavg`, per pid namespace) moved during the
    /// command, so exact on a quiet host or container and an upper bound where other work runs.
    pub remote_pids: AtomicU64,
    /// Probes answered from one script asked ahead of their steps (`primitives::prefetch`).
    pub probes_ahead: AtomicU64,
}

/// What the step under way has moved and printed, for the live status line and
/// `--json-progress`: atomics the transport bumps as chunks pass, no round trip of its own.
/// The host's thread puts its step's meter in [`METER`] around the work it awaits.
#[derive(Debug, Default)]
pub struct Meter {
    done: AtomicU64,
    /// 0: not known.
    total: AtomicU64,
    /// Keep the last line of stdout (`sh(.., #{progress: true})`).
    lines: std::sync::atomic::AtomicBool,
    last: Mutex<LineTail>,
}

/// The line being received and the last whole one.
#[derive(Debug, Default)]
struct LineTail {
    partial: Vec<u8>,
    /// The line in progress is longer than [`LINE_MAX`]: it is not shown (cutting it could
    /// cut a secret in it too, which redaction would then miss).
    overlong: bool,
    last: Option<String>,
}

/// A line of a command's output that gives the bytes it has so far (a download on the
/// host prints one a second): `__RCP_BYTES N`.
pub const BYTES_LINE: &str = "__RCP_BYTES";

/// Longest line a status line takes from a command's output.
const LINE_MAX: usize = 4096;

impl Meter {
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
    /// The size of the transfer, when known.
    pub fn set_total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
    }
    /// Bytes moved, and the total when known.
    pub fn bytes(&self) -> (u64, Option<u64>) {
        let t = self.total.load(Ordering::Relaxed);
        (self.done.load(Ordering::Relaxed), (t > 0).then_some(t))
    }
    /// Asks for the last line of the command's stdout, as it comes.
    pub fn keep_lines(&self) {
        self.lines.store(true, Ordering::Relaxed);
    }
    pub fn wants_lines(&self) -> bool {
        self.lines.load(Ordering::Relaxed)
    }
    /// The last whole line the command printed (raw: the reporter redacts and escapes it).
    pub fn last_line(&self) -> Option<String> {
        self.last.lock().ok().and_then(|t| t.last.clone())
    }
    /// Output of the command, as it arrives; a line ends at `\n` or `\r` (progress bars).
    pub fn saw(&self, bytes: &[u8]) {
        let Ok(mut t) = self.last.lock() else { return };
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut t.partial);
                let long = std::mem::replace(&mut t.overlong, false);
                let text = String::from_utf8_lossy(&line);
                if let Some(n) = text.strip_prefix(BYTES_LINE) {
                    if let Ok(n) = n.trim().parse::<u64>() {
                        self.done.fetch_max(n, Ordering::Relaxed);
                    }
                }
                // The worker's own markers (a guard's skip) are not the command's output.
                // Kept untrimmed: the reporter redacts before it trims (a secret may end in
                // blanks).
                if !long && !text.trim().is_empty() && !text.starts_with("__RCP_") {
                    t.last = Some(text.into_owned());
                }
            } else if t.partial.len() < LINE_MAX {
                t.partial.push(b);
            } else {
                t.overlong = true;
            }
        }
    }
}

tokio::task_local! {
    /// The meter of the step whose work is being awaited (see [`Meter`]).
    pub static METER: Arc<Meter>;
}

/// Counts `n` bytes moved for the step under way, if any.
fn moved(n: usize) {
    let _ = METER.try_with(|m| m.add(n as u64));
}

/// Opens a new worker (a channel or a local process running `/bin/sh`).
pub trait Spawner: Send + Sync {
    fn spawn(&self) -> BoxFut<'_, Result<Worker, TransportError>>;
    /// Runs one command on a channel of its own, streaming stdin (for large payloads).
    fn oneshot<'a>(
        &'a self,
        cmd: &'a str,
        stdin: &'a [u8],
        timeout: Option<Duration>,
    ) -> BoxFut<'a, Result<ExecOutput, TransportError>> {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(PIPE_DEPTH);
            let _ = METER.try_with(|m| m.set_total(stdin.len() as u64));
            // The sender goes out of scope when all is sent: the command sees the end.
            let feed = async move {
                for chunk in stdin.chunks(64 * 1024) {
                    if tx.send(chunk.to_vec()).await.is_err() {
                        break;
                    }
                    moved(chunk.len());
                }
            };
            let (_, res) = tokio::join!(feed, self.stream(cmd, Some(rx), None, timeout));
            res
        })
    }
    /// Runs one command on a channel of its own with bounded buffers: stdin comes chunk by
    /// chunk from `input` (none: empty), stdout goes chunk by chunk to `output` (none: it is
    /// collected). Host-to-host copies use it so that no file is ever held whole here.
    fn stream<'a>(
        &'a self,
        cmd: &'a str,
        input: Option<Chunks>,
        output: Option<ChunkSink>,
        timeout: Option<Duration>,
    ) -> BoxFut<'a, Result<ExecOutput, TransportError>>;
    /// Ends the connection politely once its workers are closed.
    fn shutdown(&self) -> BoxFut<'_, ()> {
        Box::pin(async {})
    }
}

/// Chunks of a stream on their way to a command's stdin.
pub type Chunks = tokio::sync::mpsc::Receiver<Vec<u8>>;
/// Where a command's stdout chunks go.
pub type ChunkSink = tokio::sync::mpsc::Sender<Vec<u8>>;
/// Chunks in flight between two hosts: with SSH packets of up to 32 KiB, at most about
/// 0.5 MiB of a copy is in this process at any time.
const PIPE_DEPTH: usize = 16;

/// Payloads bigger than this go over a channel of their own instead of inline.
const INLINE_LIMIT: usize = 512 * 1024;

/// A connection to one host: workers are reused; at most `max_workers` at once
/// (OpenSSH's MaxSessions defaults to 10).
pub struct Connection {
    spawner: Box<dyn Spawner>,
    idle: Mutex<Vec<Worker>>,
    slots: Semaphore,
    pub stats: Arc<Stats>,
    broken: Mutex<Option<String>>,
    /// The sweep of dead runs' folders rides along with the first worker command.
    sweep: std::sync::atomic::AtomicBool,
}

impl Connection {
    pub fn new(spawner: Box<dyn Spawner>, max_workers: usize, stats: Arc<Stats>) -> Connection {
        Connection {
            spawner,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(max_workers.max(1)),
            stats,
            broken: Mutex::new(None),
            sweep: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Runs `cmd` with `/bin/sh` on the target (as root when `become` applies).
    pub async fn exec(
        &self,
        cmd: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, TransportError> {
        if let Some(why) = self.broken.lock().ok().and_then(|b| b.clone()) {
            return Err(TransportError::Lost(why));
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| TransportError::Lost("connection closed".into()))?;
        self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        if let Some(data) = stdin.filter(|d| d.len() > INLINE_LIMIT) {
            self.stats.channels.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let out = self.spawner.oneshot(cmd, data, timeout).await?;
            let secs = timeout.map(|t| t.as_secs().max(1)).unwrap_or(0);
            return shell::stopped_in_time(out, secs, started);
        }
        let worker = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut worker = match worker {
            Some(w) => w,
            None => {
                self.stats.channels.fetch_add(1, Ordering::Relaxed);
                self.spawner.spawn().await?
            }
        };
        if self.sweep.swap(false, Ordering::Relaxed) {
            worker.sweep_before_next();
        }
        match worker.run(cmd, stdin, timeout).await {
            Ok(out) => {
                self.stats
                    .remote_pids
                    .fetch_add(worker.pids, Ordering::Relaxed);
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(worker);
                }
                Ok(out)
            }
            Err(e) => {
                // The worker's state is unknown: drop it, the next command gets a fresh one.
                if let TransportError::Lost(why) = &e {
                    if let Ok(mut b) = self.broken.lock() {
                        *b = Some(why.clone());
                    }
                }
                tokio::spawn(worker.close());
                Err(e)
            }
        }
    }

    /// [`Spawner::stream`] within this connection's channel limit.
    pub async fn stream(
        &self,
        cmd: &str,
        input: Option<Chunks>,
        output: Option<ChunkSink>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, TransportError> {
        if let Some(why) = self.broken.lock().ok().and_then(|b| b.clone()) {
            return Err(TransportError::Lost(why));
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| TransportError::Lost("connection closed".into()))?;
        self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        self.stats.channels.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let out = self.spawner.stream(cmd, input, output, timeout).await?;
        let secs = timeout.map(|t| t.as_secs().max(1)).unwrap_or(0);
        shell::stopped_in_time(out, secs, started)
    }

    /// Removes what killed runs of earlier versions left in the target's temporary folder
    /// (see [`shell::SWEEP`]) just before the first command that runs in a worker: no
    /// round trip of its own; a failure there is not the run's business.
    pub fn sweep_stale(&self) {
        self.sweep.store(true, Ordering::Relaxed);
    }

    /// Closes every idle worker.
    pub async fn close(&self) {
        let workers: Vec<Worker> = self
            .idle
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        for w in workers {
            w.close().await;
        }
        self.spawner.shutdown().await;
    }
}

/// Pipes `src_cmd`'s stdout on `src` into `dst_cmd`'s stdin on `dst`, both at once, through
/// a bounded queue. Returns both results; a source that stops early leaves the destination
/// with a short stream, which it must detect (size and checksum) before using it.
pub async fn pipe(
    src: &Connection,
    src_cmd: &str,
    dst: &Connection,
    dst_cmd: &str,
    timeout: Option<Duration>,
) -> (
    Result<ExecOutput, TransportError>,
    Result<ExecOutput, TransportError>,
) {
    let (tx, mut from_src) = tokio::sync::mpsc::channel(PIPE_DEPTH / 2);
    let (to_dst, rx) = tokio::sync::mpsc::channel(PIPE_DEPTH / 2);
    let read = Box::pin(src.stream(src_cmd, None, Some(tx), timeout));
    let write = Box::pin(dst.stream(dst_cmd, Some(rx), None, timeout));
    // Counts what passes; a destination that stops reading stops the source, as before.
    let relay = async move {
        while let Some(chunk) = from_src.recv().await {
            let n = chunk.len();
            if to_dst.send(chunk).await.is_err() {
                break;
            }
            moved(n);
        }
    };
    let (a, b, ()) = tokio::join!(read, write, relay);
    (a, b)
}

/// Quotes one word for a POSIX shell, whatever bytes it holds (shlex; NUL,
/// which no argument can carry, is rejected earlier by the primitives).
pub fn quote(s: &str) -> String {
    match shlex::try_quote(s) {
        Ok(q) => q.into_owned(),
        Err(_) => format!("'{}'", s.replace('\0', "").replace('\'', "'\\''")),
    }
}

#[cfg(test)]
mod frame_tests;

#[cfg(test)]
mod tests {
    use super::quote;
    use proptest::prelude::*;

    /// A destination that stops reading ends the pipe at once, its source too, on this
    /// machine's transport as over SSH (tests/stream_copy.rs): nobody waits for a reader.
    #[test]
    fn a_pipe_whose_destination_ends_early_ends_at_once() {
        use super::{local::LocalSpawner, pipe, Connection, Stats};
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let conn = || Connection::new(Box::new(LocalSpawner), 2, Arc::new(Stats::default()));
        let (src, dst) = (conn(), conn());
        let started = Instant::now();
        let (a, b) = rt.block_on(pipe(
            &src,
            "head -c 268435456 /dev/zero",
            &dst,
            "head -c 10 >/dev/null; exit 3",
            Some(Duration::from_secs(60)),
        ));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(b.map(|o| o.status).ok(), Some(3));
        // The source was stopped (EPIPE), not left writing into a pipe nobody reads.
        assert!(a.map(|o| o.status != 0).unwrap_or(true));
    }

    #[test]
    fn a_meter_keeps_the_last_whole_line_of_output() {
        let m = super::Meter::default();
        m.saw(b"CC a.o\nCC b");
        assert_eq!(m.last_line().as_deref(), Some("CC a.o"));
        m.saw(b".o\n\n  \n");
        assert_eq!(m.last_line().as_deref(), Some("CC b.o"));
        m.saw(b" 40%\r 80%\r");
        assert_eq!(m.last_line().as_deref(), Some(" 80%"));
        // A line too long to show whole is not shown cut (a secret in it could be cut too).
        m.saw(&vec![b'x'; 10_000]);
        m.saw(b"\n");
        assert_eq!(m.last_line().as_deref(), Some(" 80%"));
        // A download's size lines count bytes and are not shown.
        m.saw(b"__RCP_BYTES 4096\n__RCP_BYTES 1048576\n");
        assert_eq!(m.bytes(), (1 << 20, None));
        assert_eq!(m.last_line().as_deref(), Some(" 80%"));
    }

    /// The worker shows a watching meter its command's stdout line by line as it comes,
    /// before the command ends, and never its own markers.
    #[test]
    fn a_worker_shows_output_lines_as_they_come() {
        use super::{local::LocalSpawner, Meter, Spawner, METER};
        use std::sync::Arc;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tmp");
        let go = dir.path().join("go");
        let m = Arc::new(Meter::default());
        m.keep_lines();
        let cmd = format!(
            "echo one; echo two; while [ ! -e {} ]; do sleep 0.05; done; echo three",
            go.display()
        );
        rt.block_on(METER.scope(m.clone(), async {
            let mut w = LocalSpawner.spawn().await.expect("worker");
            let run = w.run(&cmd, None, None);
            // Bounded only so that a broken meter fails instead of hanging.
            let watch = async {
                for _ in 0..3000 {
                    if m.last_line().as_deref() == Some("two") {
                        std::fs::write(&go, "").expect("go");
                        return true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                std::fs::write(&go, "").expect("go");
                false
            };
            let (out, seen) = tokio::join!(run, watch);
            assert!(
                seen,
                "the line before the wait was not seen while the command ran"
            );
            assert_eq!(out.expect("run").stdout, b"one\ntwo\nthree\n");
        }));
        assert_eq!(m.last_line().as_deref(), Some("three"));
    }

    fn echo_through_sh(arg: &str) -> Vec<u8> {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(arg)))
            .output()
            .expect("sh runs");
        out.stdout
    }

    #[test]
    fn awkward_words_survive_the_shell() {
        for w in [
            "",
            "-n",
            "a b",
            "'",
            "\"",
            "$HOME",
            "`id`",
            "a\nb",
            "é✓",
            "*",
            "--",
            "\\",
            "$(rm -rf /)",
        ] {
            assert_eq!(echo_through_sh(w), w.as_bytes(), "{w:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_string_reaches_the_shell_byte_exact(s in "[^\\x00]{0,40}") {
            prop_assert_eq!(echo_through_sh(&s), s.as_bytes());
        }
    }
}
