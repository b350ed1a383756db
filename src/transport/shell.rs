//! The worker protocol: one long-lived `/bin/sh` per channel runs many framed commands.
//!
//! Opening a channel costs a login shell on the target (10–100 ms); a worker
//! started once and fed one line per command costs one round trip and no new
//! channel per step. Commands and their stdin travel base64-encoded on one
//! line; the worker answers `__RCP <id> <status> <out-len> <err-len>` followed by
//! exactly that many bytes of stdout and stderr, so any bytes survive.

use base64::Engine as _;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::{ExecOutput, TransportError};

/// POSIX sh prelude sent once per worker. Commands run in their own `/bin/sh`
/// with stdin from a file (or /dev/null), output captured in a private
/// 0700 folder, and a remote `timeout` so a hung command cannot wedge the worker.
pub const PRELUDE: &str = r#"set +e
umask 077
__d=$(mktemp -d "${TMPDIR:-/tmp}/.recipe.XXXXXXXX") || { echo "__RCP_FAIL cannot create a temporary folder"; exit 97; }
trap 'rm -rf "$__d"' EXIT HUP TERM
__rcp() {
  [ "$5" = . ] || { printf '__RCP %s 98 0 0\n' "$1"; return; }
  printf %s "$3" | base64 -d > "$__d/c" 2>/dev/null || { printf '__RCP %s 98 0 0\n' "$1"; return; }
  if [ "$4" = - ]; then : > "$__d/i"; else printf %s "$4" | base64 -d > "$__d/i"; fi
  if [ "$2" -gt 0 ] && command -v timeout >/dev/null 2>&1; then
    (umask 022; exec timeout -k 5 "$2" /bin/sh "$__d/c") < "$__d/i" > "$__d/o" 2> "$__d/e"
  else
    (umask 022; exec /bin/sh "$__d/c") < "$__d/i" > "$__d/o" 2> "$__d/e"
  fi
  __s=$?
  printf '__RCP %s %s %s %s\n' "$1" "$__s" "$(wc -c < "$__d/o" | tr -d ' ')" "$(wc -c < "$__d/e" | tr -d ' ')"
  cat "$__d/o" "$__d/e"
}
printf '__RCP_READY %s\n' "$(id -u)"
"#;

/// A started worker: a byte pipe to a shell that has run the prelude.
pub struct Worker {
    reader: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    next_id: u64,
    /// The uid the worker runs as (0 after sudo).
    pub uid: u32,
}

/// Exit status a remote `timeout` uses when it had to stop the command.
pub const TIMEOUT_STATUS: i32 = 124;

impl Worker {
    /// Sends the prelude and waits for the ready line; whatever the shell
    /// printed before it (a sudo refusal, a login banner error) becomes the error.
    pub async fn start(
        reader: Box<dyn AsyncRead + Send + Unpin>,
        mut writer: Box<dyn AsyncWrite + Send + Unpin>,
        wait: Duration,
    ) -> Result<Worker, TransportError> {
        writer
            .write_all(PRELUDE.as_bytes())
            .await
            .map_err(|e| TransportError::Lost(format!("cannot start the remote shell: {e}")))?;
        writer
            .flush()
            .await
            .map_err(|e| TransportError::Lost(format!("cannot start the remote shell: {e}")))?;
        let mut reader = BufReader::new(reader);
        let mut before = String::new();
        let ready = async {
            loop {
                let mut line = String::new();
                let n = reader.read_line(&mut line).await?;
                if n == 0 {
                    return Ok::<Option<u32>, std::io::Error>(None);
                }
                if let Some(rest) = line.strip_prefix("__RCP_READY ") {
                    return Ok(Some(rest.trim().parse().unwrap_or(u32::MAX)));
                }
                if let Some(rest) = line.strip_prefix("__RCP_FAIL ") {
                    before.push_str(rest);
                    return Ok(None);
                }
                if before.len() < 4096 {
                    before.push_str(&line);
                }
            }
        };
        match tokio::time::timeout(wait, ready).await {
            Ok(Ok(Some(uid))) => Ok(Worker {
                reader,
                writer,
                next_id: 1,
                uid,
            }),
            Ok(Ok(None)) => Err(TransportError::Shell(if before.trim().is_empty() {
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

    /// Runs one command. A controller-side deadline backs up the remote
    /// `timeout`; on expiry the worker must be discarded by the caller.
    pub async fn run(
        &mut self,
        cmd: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, TransportError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let id = self.next_id;
        self.next_id += 1;
        let secs = timeout.map(|t| t.as_secs().max(1)).unwrap_or(0);
        let mut line = format!("__rcp {id} {secs} {} ", b64.encode(cmd.as_bytes()));
        match stdin {
            Some(data) => line.push_str(&b64.encode(data)),
            None => line.push('-'),
        }
        // The end marker: a line cut short by a lost connection lacks it and is not run
        // (a shell runs an incomplete last line when its input ends).
        line.push_str(" .\n");
        let fut = async {
            self.writer.write_all(line.as_bytes()).await?;
            self.writer.flush().await?;
            let mut header = String::new();
            loop {
                header.clear();
                if self.reader.read_line(&mut header).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed",
                    ));
                }
                if header.starts_with("__RCP ") {
                    break;
                }
            }
            let parts: Vec<&str> = header.split_whitespace().collect();
            let num = |i: usize| -> std::io::Result<i64> {
                parts
                    .get(i)
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("bad reply from the remote shell: {header:?}"),
                        )
                    })
            };
            let (rid, status, olen, elen) = (num(1)?, num(2)?, num(3)?, num(4)?);
            if rid != id as i64 || olen < 0 || elen < 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "reply out of sequence from the remote shell",
                ));
            }
            let mut stdout = vec![0u8; olen as usize];
            self.reader.read_exact(&mut stdout).await?;
            let mut stderr = vec![0u8; elen as usize];
            self.reader.read_exact(&mut stderr).await?;
            Ok(ExecOutput {
                status: status as i32,
                stdout,
                stderr,
            })
        };
        let started = std::time::Instant::now();
        let limit = timeout.map(|t| t + Duration::from_secs(15));
        let res = match limit {
            Some(l) => match tokio::time::timeout(l, fut).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(TransportError::Timeout(format!(
                        "no answer within {}s",
                        l.as_secs()
                    )))
                }
            },
            None => fut.await,
        };
        let out = res.map_err(|e| TransportError::Lost(e.to_string()))?;
        if secs > 0 && out.status == TIMEOUT_STATUS && started.elapsed().as_secs() >= secs {
            return Err(TransportError::Timeout(format!(
                "command did not finish within {secs}s and was stopped"
            )));
        }
        Ok(out)
    }

    /// Asks the shell to exit; errors are irrelevant at this point.
    pub async fn close(mut self) {
        let _ = self.writer.write_all(b"exit 0\n").await;
        let _ = self.writer.flush().await;
        let _ = self.writer.shutdown().await;
    }
}
