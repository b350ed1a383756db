//! The worker protocol: one long-lived `/bin/sh` per channel runs many framed commands.
//!
//! Opening a channel costs a login shell on the target (10–100 ms); a worker
//! started once and fed one frame per command costs one round trip and no new
//! channel per step. A frame is `__rcp TIMEOUT 'quoted command' STDIN-BASE64|- .`;
//! the trailing `.` proves the frame arrived whole. The command's stdout streams
//! back as is, then `\n<marker> <status> <pids>\n`, its stderr, and `\n<marker>\n`, where
//! the marker is random per worker, so any bytes survive. `<pids>` is how far the host's last
//! pid moved during the command (read by builtins: no process of its own), which
//! `RECIPE_STATS` sums as the processes our commands cost the host.

use base64::Engine as _;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ExecOutput, TransportError};

/// POSIX sh prelude sent once per worker (`@MARKER@` is replaced by a random marker).
/// Nothing a command carries touches the target's disk: its stdin is decoded from the frame
/// (held in the shell's memory) into a pipe, and its stderr is collected by a command
/// substitution (a pipe) while its stdout goes straight to the channel (fd 3). So nothing
/// needs cleaning up when the shell is killed. Each command costs the worker two forks (the
/// substitution and a subshell that `eval`s it), or `timeout` plus `/bin/sh -c` when it has
/// a time limit.
///
/// A command with a time limit also ends with its session: `timeout` puts it in a process
/// group of its own, and a watcher waits on the worker's input (fd 4), where nothing comes
/// while a command runs. When the controller dies or the connection drops, that input ends
/// and the watcher stops the group (TERM, KILL 5 s later), instead of leaving the command
/// to PID 1 until its limit. The watcher is reaped before the reply goes out, so it never
/// reads the next frame. It is stopped with SIGPIPE, quietly: dash (and bash, at times) print
/// "Terminated" for a job killed by SIGTERM, which would land in the command's stderr.
pub const PRELUDE: &str = r#"set +e
umask 077
exec 4<&0
__m=@MARKER@
__lp=/proc/loadavg
__px=0; [ -r /proc/sys/kernel/pid_max ] && read -r __px </proc/sys/kernel/pid_max
__x() {
  if [ "$1" -gt 0 ] && command -v timeout >/dev/null 2>&1; then
    exec 5<&0
    (umask 022; exec timeout -k 5 "$1" /bin/sh -c "$2") <&5 4<&- 5<&- &
    __p=$!
    exec 5<&-
    (read -r __l; kill -TERM "$__p") <&4 >/dev/null 2>&1 &
    __w=$!
    wait "$__p"
    __s=$?
    { kill -PIPE "$__w"; wait "$__w"; } 2>/dev/null
    return $__s
  else
    (__c=$2; set --; umask 022; eval "$__c") 4<&-
  fi
}
__rcp() {
  # A line cut short by a lost connection lacks the end marker: never run part of a frame.
  [ "$4" = . ] || { printf '\n%s 98\n\n%s\n' "$__m" "$__m"; return; }
  __n0=0; [ -r "$__lp" ] && read -r __z __z __z __z __n0 <"$__lp"
  # The trailing x keeps the trailing newlines of stderr, which $(...) would strip.
  { __e=$(
      if [ "$3" = - ]; then
        __x "$1" "$2" </dev/null 2>&1 >&3 3>&-
      else
        printf '%s\n' "$3" | base64 -d 2>/dev/null | __x "$1" "$2" 2>&1 >&3 3>&-
      fi
      __s=$?
      printf x
      exit $__s
    ); __s=$?; } 3>&1
  __n1=0; [ -r "$__lp" ] && read -r __z __z __z __z __n1 <"$__lp"
  # Past pid_max the kernel starts again at 300.
  __n1=$((__n1 - __n0)); [ "$__n1" -ge 0 ] || __n1=$((__n1 + __px - 300))
  printf '\n%s %s %s\n%s\n%s\n' "$__m" "$__s" "$__n1" "${__e%x}" "$__m"
  __e=
}
printf '__RCP_READY\n'
"#;

/// Removes the private folders (`.recipe.XXXXXXXX` holding a command's stdin `i` and stderr
/// `e`) that versions before streaming stdin left behind when their shell was killed: they
/// may hold secrets. Run once per connection, in the background from a line of its own sent
/// just before the connection's first command ([`Worker::sweep_before_next`]): no round
/// trip and no wait of its own (at most 60 s where `timeout` exists). Only folders of dead runs go: owned by this
/// user, holding nothing else, untouched for 5 minutes (a live worker rewrites `e` at each
/// command) and with no file open in them (a running command keeps `e` open).
pub const SWEEP: &str = r#"[ -d /proc/self/fd ] || exit 0
for d in "${TMPDIR:-/tmp}"/.recipe.????????; do
  [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] || continue
  for f in "$d"/* "$d"/.[!.]*; do
    case "${f##*/}" in i|e|'*'|'.[!.]*') ;; *) continue 2 ;; esac
  done
  [ -z "$(find "$d" -maxdepth 1 -mmin -5 2>/dev/null)" ] || continue
  ! ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -qF -- "$d/" || continue
  rm -rf -- "$d"
done
exit 0
"#;

/// The worker line that starts [`SWEEP`] in the background when a folder it may remove
/// exists (builtins only until then: no process on a host without one).
pub fn sweep_line() -> String {
    format!(
        "for __sd in \"${{TMPDIR:-/tmp}}\"/.recipe.????????; do [ -d \"$__sd\" ] || continue\n{{ __sw={}\nif command -v timeout >/dev/null 2>&1; then timeout -k 5 60 /bin/sh -c \"$__sw\"; else (eval \"$__sw\"); fi; }} </dev/null >/dev/null 2>&1 &\nbreak; done; __sd=\n",
        super::quote(SWEEP)
    )
}

/// How a command on a channel of its own (streamed stdin, host-to-host copies, srun) runs:
/// `/bin/sh -c STREAM sh SESSION SECS CMD`. Its stdin is the data, so the worker's watcher
/// cannot tell the end of the data from the end of the session; instead a watcher checks
/// each second that SESSION (the sshd process of the connection, or this controller for the
/// local transport) still lives. When it is gone, or after SECS (0: no limit), the command's
/// process group is stopped (`timeout` gives it one: TERM, KILL 5 s later).
pub const STREAM: &str = r#"s=$1 t=$2 c=$3
exec 5<&0
if command -v timeout >/dev/null 2>&1; then
  timeout -k 5 "$t" /bin/sh -c "$c" <&5 5<&- &
else
  /bin/sh -c "$c" <&5 5<&- &
fi
p=$!
exec 5<&- 0</dev/null
(while kill -0 "$s" 2>/dev/null; do sleep 1; done; kill -TERM "$p") </dev/null >/dev/null 2>&1 &
w=$!
wait "$p"
r=$?
kill "$w" 2>/dev/null
exit $r"#;

/// The command line that runs `cmd` under [`STREAM`], `session` being a shell word for the
/// pid the command lives with (`"$PPID"` in an SSH login shell: its sshd).
pub fn stream_command(cmd: &str, session: &str, limit: Option<Duration>) -> String {
    format!(
        "/bin/sh -c {} sh {session} {} {}",
        super::quote(STREAM),
        limit.map(|t| t.as_secs().max(1)).unwrap_or(0),
        super::quote(cmd)
    )
}

/// A command's result, or the time-limit error when the target's `timeout` stopped it: it
/// exits 124 after SIGTERM, or 137 when the command ignored SIGTERM and needed the SIGKILL
/// that follows 5 s later.
pub fn stopped_in_time(
    out: ExecOutput,
    secs: u64,
    started: std::time::Instant,
) -> Result<ExecOutput, TransportError> {
    let stopped = out.status == TIMEOUT_STATUS || out.status == TIMEOUT_KILLED_STATUS;
    if secs > 0 && stopped && started.elapsed().as_secs() >= secs {
        return Err(TransportError::Timeout(format!(
            "command did not finish within {secs}s and was stopped{}",
            if out.status == TIMEOUT_KILLED_STATUS {
                " (it ignored SIGTERM and was killed 5 s later)"
            } else {
                ""
            }
        )));
    }
    Ok(out)
}

/// How long the controller waits past a command's own limit for the target to stop it.
pub const GRACE: Duration = Duration::from_secs(15);

/// Free space made in the buffer before a read. Small: every waiting host holds one, and
/// the buffer doubles as needed for large outputs.
const READ_CHUNK: usize = 4 * 1024;

/// A started worker: a byte pipe to a shell that has run the prelude.
pub struct Worker {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    /// Bytes read but not consumed yet.
    buf: Vec<u8>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    marker: Vec<u8>,
    /// The prelude's ready line is still to be read (within this long): the first command
    /// is sent right behind the prelude, without a round trip of its own.
    ready: Option<Duration>,
    /// Sent (unanswered) just before the next frame.
    before_next: Option<String>,
    /// Pids the target allocated during the last command (see the module's note).
    pub pids: u64,
}

pub(crate) fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; mix in time and a counter.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut x: u128 = 0;
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        x = (x << 64) | h.finish() as u128;
    }
    x
}

/// Exit status a remote `timeout` uses when it had to stop the command.
pub const TIMEOUT_STATUS: i32 = 124;
/// Exit status of a remote `timeout` that had to kill the command (128 + SIGKILL).
pub const TIMEOUT_KILLED_STATUS: i32 = 137;

impl Worker {
    /// Sends the prelude. Its ready line is read with the first command's answer (one
    /// round trip for both); whatever the shell printed before it (a sudo refusal, a login
    /// banner error) becomes that command's error.
    pub async fn start(
        reader: Box<dyn AsyncRead + Send + Unpin>,
        mut writer: Box<dyn AsyncWrite + Send + Unpin>,
        wait: Duration,
    ) -> Result<Worker, TransportError> {
        let marker = format!("__RCP_{:032x}", rand_u128());
        writer
            .write_all(PRELUDE.replace("@MARKER@", &marker).as_bytes())
            .await
            .map_err(|e| TransportError::Lost(format!("cannot start the remote shell: {e}")))?;
        writer
            .flush()
            .await
            .map_err(|e| TransportError::Lost(format!("cannot start the remote shell: {e}")))?;
        Ok(Worker {
            reader,
            buf: Vec::new(),
            writer,
            marker: marker.into_bytes(),
            ready: Some(wait),
            before_next: None,
            pids: 0,
        })
    }

    /// Reads up to the prelude's ready line (once, before the first answer).
    async fn await_ready(&mut self, wait: Duration) -> Result<(), TransportError> {
        let mut before = String::new();
        let ready = async {
            loop {
                let line = match self.read_until(b"\n").await {
                    Ok(l) => String::from_utf8_lossy(&l).into_owned(),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
                    Err(e) => return Err(e),
                };
                if line.starts_with("__RCP_READY") {
                    return Ok::<bool, std::io::Error>(true);
                }
                if let Some(rest) = line.strip_prefix("__RCP_FAIL ") {
                    before.push_str(rest);
                    return Ok(false);
                }
                if before.len() < 4096 {
                    before.push_str(&line);
                    before.push('\n');
                }
            }
        };
        match tokio::time::timeout(wait, ready).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(TransportError::Shell(if before.trim().is_empty() {
                "the remote shell exited before it was ready".to_string()
            } else {
                before.trim().to_string()
            })),
            Ok(Err(e)) => Err(TransportError::Lost(format!("remote shell: {e}"))),
            Err(_) => Err(TransportError::Timeout(format!(
                "the remote shell did not start within {}s",
                wait.as_secs()
            ))),
        }
    }

    /// Starts [`SWEEP`] in the background just before the next command, from a line of its
    /// own whose output goes nowhere: no reply, no round trip, no wait. Only where the shell's
    /// own glob finds a candidate folder: almost every host has none, and the sweep's
    /// `timeout` and shell were most of what a re-run with nothing to change cost the host.
    pub fn sweep_before_next(&mut self) {
        self.before_next = Some(sweep_line());
    }

    /// Runs one command; `timeout` is enforced on the target by `timeout(1)`. The caller
    /// bounds the wait; a worker whose command was abandoned must be dropped.
    pub async fn run(
        &mut self,
        cmd: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, TransportError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let secs = timeout.map(|t| t.as_secs().max(1)).unwrap_or(0);
        // The command travels shell-quoted and runs with `eval` in a subshell: no decoding
        // process and no new /bin/sh per command (a quote cut short by a lost connection is
        // a syntax error, and the end marker below is missing anyway).
        let mut line = self.before_next.take().unwrap_or_default();
        line.push_str(&format!("__rcp {secs} {} ", super::quote(cmd)));
        match stdin {
            // An empty payload is an empty stdin, which `-` (no stdin) already is; an empty
            // base64 field would vanish from the frame and leave it short.
            Some(data) if !data.is_empty() => line.push_str(&b64.encode(data)),
            _ => line.push('-'),
        }
        // The end marker: the shell runs an incomplete last line when its input ends.
        line.push_str(" .\n");
        let started = std::time::Instant::now();
        let lost = |e: std::io::Error| TransportError::Lost(e.to_string());
        let sent = match self.writer.write_all(line.as_bytes()).await {
            Ok(()) => self.writer.flush().await,
            Err(e) => Err(e),
        };
        // A shell that never got ready (sudo refused) says why, rather than a broken pipe.
        if let Some(wait) = self.ready.take() {
            self.await_ready(wait).await?;
        }
        sent.map_err(lost)?;
        // stdout, then "\n<marker> <status>\n", stderr, "\n<marker>\n".
        let mut head = Vec::with_capacity(self.marker.len() + 2);
        head.push(b'\n');
        head.extend_from_slice(&self.marker);
        head.push(b' ');
        // `sh(.., #{progress: true})`: its stdout's lines are seen as they come.
        let watch = super::METER
            .try_with(|m| m.wants_lines().then(|| m.clone()))
            .ok()
            .flatten();
        let stdout = self
            .read_until_seen(&head, watch.as_deref())
            .await
            .map_err(lost)?;
        let status_line = self.read_until(b"\n").await.map_err(lost)?;
        let text = String::from_utf8_lossy(&status_line);
        let mut words = text.split_whitespace();
        let status: i32 = words.next().and_then(|w| w.parse().ok()).ok_or_else(|| {
            TransportError::Lost(format!("bad reply from the remote shell: {status_line:?}"))
        })?;
        // No pid counter (or one that wrapped where pid_max cannot be read) counts nothing.
        self.pids = words
            .next()
            .and_then(|w| w.parse::<i64>().ok())
            .filter(|p| *p > 0)
            .unwrap_or(0) as u64;
        let mut tail = Vec::with_capacity(self.marker.len() + 2);
        tail.push(b'\n');
        tail.extend_from_slice(&self.marker);
        tail.push(b'\n');
        let stderr = self.read_until(&tail).await.map_err(lost)?;
        let out = ExecOutput {
            status,
            stdout,
            stderr,
        };
        stopped_in_time(out, secs, started)
    }

    /// Reads up to (and consumes) `delim`, returning what came before it.
    async fn read_until(&mut self, delim: &[u8]) -> std::io::Result<Vec<u8>> {
        self.read_until_seen(delim, None).await
    }

    /// [`Self::read_until`], showing `meter` the bytes before `delim` as they arrive.
    async fn read_until_seen(
        &mut self,
        delim: &[u8],
        meter: Option<&super::Meter>,
    ) -> std::io::Result<Vec<u8>> {
        let finder = memchr::memmem::Finder::new(delim);
        let mut from = 0;
        // Bytes shown to the meter so far: never a part of what may be the delimiter.
        let mut seen = 0;
        loop {
            if let Some(at) = finder.find(&self.buf[from..]) {
                let at = from + at;
                if let Some(m) = meter {
                    m.saw(&self.buf[seen.min(at)..at]);
                }
                let rest = self.buf.split_off(at + delim.len());
                let mut found = std::mem::replace(&mut self.buf, rest);
                found.truncate(at);
                if found.capacity() > 2 * found.len() + 4096 {
                    found.shrink_to_fit();
                }
                return Ok(found);
            }
            from = self.buf.len().saturating_sub(delim.len());
            if let Some(m) = meter {
                // Held back: the end of the buffer that may begin the delimiter.
                let held = (1..delim.len())
                    .rev()
                    .find(|&k| self.buf.ends_with(&delim[..k]))
                    .unwrap_or(0);
                let safe = self.buf.len() - held;
                if safe > seen {
                    m.saw(&self.buf[seen..safe]);
                    seen = safe;
                }
                // The delimiter starts with a line break: what comes before a held one is a
                // whole line either way.
                if held > 0 && delim[0] == b'\n' {
                    m.saw(b"\n");
                }
            }
            // Straight into the buffer: a 64 KiB array here would live in every future that
            // waits for a command (one per running host), 64 KiB each.
            self.buf.reserve(READ_CHUNK);
            let n = self.reader.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
        }
    }

    /// Asks the shell to exit; errors are irrelevant at this point.
    pub async fn close(mut self) {
        let _ = self.writer.write_all(b"exit 0\n").await;
        let _ = self.writer.flush().await;
        let _ = self.writer.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use crate::transport::local::LocalSpawner;
    use crate::transport::Spawner;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn frames_any_bytes_stdout_stderr_and_status() {
        rt().block_on(async {
            let mut w = LocalSpawner.spawn().await.expect("worker");
            let out = w
                .run("printf 'a\\000b'; printf 'e\\n' >&2; exit 7", None, None)
                .await
                .expect("run");
            assert_eq!(out.stdout, b"a\0b");
            assert_eq!(out.stderr, b"e\n");
            assert_eq!(out.status, 7);
            // Output that spans many reads, then the same worker again.
            let big = w
                .run("head -c 300000 /dev/zero | tr '\\0' x", None, None)
                .await
                .expect("run");
            assert_eq!(big.stdout.len(), 300_000);
            let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
            let echo = w.run("cat", Some(&data), None).await.expect("run");
            assert_eq!(echo.stdout, data);
            let empty = w.run("true", None, None).await.expect("run");
            assert!(empty.stdout.is_empty() && empty.stderr.is_empty() && empty.status == 0);
            // An empty stdin is a stdin with nothing in it, not a short frame.
            let none = w.run("wc -c", Some(b""), None).await.expect("run");
            assert_eq!((none.status, none.stdout_str().trim()), (0, "0"));
        });
    }

    /// The sweep starts a process only where its glob finds a folder: a stand-in `timeout`
    /// first on PATH says whether it was started.
    #[test]
    fn the_sweep_starts_nothing_without_a_candidate_folder() {
        let d = tempfile::tempdir().expect("tempdir");
        let bin = d.path().join("bin");
        let tmp = d.path().join("tmp");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::create_dir_all(&tmp).expect("mkdir");
        let seen = d.path().join("started");
        let script = format!("#!/bin/sh\necho \"$@\" >> '{}'\n", seen.display());
        crate::test_bin::stand_in(&bin, "timeout", &script);
        let path = crate::test_bin::path_first(&bin);
        let run = || {
            let st = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("{}wait", super::sweep_line()))
                .env("TMPDIR", &tmp)
                .env("PATH", &path)
                .status()
                .expect("sh");
            assert!(st.success());
            std::fs::read_to_string(&seen).unwrap_or_default()
        };
        assert_eq!(run(), "", "empty folder");
        // A file with a matching name is no candidate (the sweep removes folders only).
        std::fs::write(tmp.join(".recipe.FiLeFiLe"), b"").expect("write");
        assert_eq!(run(), "", "a file only");
        std::fs::create_dir(tmp.join(".recipe.DeAdRuN1")).expect("mkdir");
        let started = run();
        assert!(
            started.starts_with("-k 5 60 /bin/sh -c [ -d /proc/self/fd ]"),
            "{started}"
        );
        assert_eq!(started.matches("-k 5 60").count(), 1, "{started}");
    }

    /// Processes of this machine whose argv is exactly `argv`.
    fn running(argv: &[&str]) -> bool {
        let want: Vec<u8> = argv
            .iter()
            .flat_map(|a| [a.as_bytes(), b"\0"].concat())
            .collect();
        std::fs::read_dir("/proc")
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
            })
            .unwrap_or(false)
    }

    /// The controller gives up on a command and drops its worker (as when it dies, or the
    /// connection does): the command, and what it started, end with the session instead of
    /// running on under its one-hour limit.
    #[test]
    fn a_command_with_a_limit_keeps_its_stderr_as_it_wrote_it() {
        // The watcher's end must not add a job notice ("Terminated") to the command's stderr.
        rt().block_on(async {
            let mut w = LocalSpawner.spawn().await.expect("worker");
            for _ in 0..5 {
                let out = w
                    .run(
                        "echo out; echo err >&2",
                        None,
                        Some(std::time::Duration::from_secs(60)),
                    )
                    .await
                    .expect("run");
                assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
                assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
            }
        });
    }

    #[test]
    fn a_command_ends_with_its_session() {
        let arg = format!("777.{}", std::process::id());
        let argv = ["sleep", arg.as_str()];
        rt().block_on(async {
            let mut w = LocalSpawner.spawn().await.expect("worker");
            let cmd = format!("sleep {arg} & sleep {arg}; wait");
            let run = w.run(&cmd, Some(b"x"), Some(std::time::Duration::from_secs(3600)));
            let gave_up = tokio::time::timeout(std::time::Duration::from_secs(1), run).await;
            assert!(gave_up.is_err(), "the command ended on its own");
            assert!(running(&argv), "the command never started");
            drop(w);
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while running(&argv) {
            assert!(
                std::time::Instant::now() < deadline,
                "`sleep {arg}` still runs after its session ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[test]
    fn a_remote_timeout_is_reported_as_such() {
        rt().block_on(async {
            let mut w = LocalSpawner.spawn().await.expect("worker");
            let r = w
                .run("sleep 5", None, Some(std::time::Duration::from_secs(1)))
                .await;
            assert!(
                matches!(r, Err(crate::transport::TransportError::Timeout(_))),
                "{r:?}"
            );
            let ok = w
                .run("echo still here", None, None)
                .await
                .expect("worker survives");
            assert_eq!(ok.stdout, b"still here\n");
        });
    }
}
