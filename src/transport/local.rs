//! Local transport: the same worker protocol over a `/bin/sh` child of this process.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::shell::Worker;
use super::{BoxFut, ChunkSink, Chunks, ExecOutput, Spawner, TransportError};

/// Runs commands on this machine, as the current user.
pub struct LocalSpawner;

impl Spawner for LocalSpawner {
    fn spawn(&self) -> BoxFut<'_, Result<Worker, TransportError>> {
        Box::pin(async move {
            let mut child = tokio::process::Command::new("/bin/sh")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| TransportError::Unreachable(format!("cannot start /bin/sh: {e}")))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(TransportError::Unreachable("no pipes to /bin/sh".into()));
            };
            // The shell exits when its stdin closes; reap it in the background.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            Worker::start(Box::new(stdout), Box::new(stdin), Duration::from_secs(30)).await
        })
    }

    fn stream<'a>(
        &'a self,
        cmd: &'a str,
        input: Option<Chunks>,
        output: Option<ChunkSink>,
        timeout: Option<Duration>,
    ) -> BoxFut<'a, Result<ExecOutput, TransportError>> {
        Box::pin(async move {
            // The command ends with this process, as over SSH with its sshd.
            let run = super::shell::stream_command(cmd, &std::process::id().to_string(), timeout);
            let mut child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(run)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| TransportError::Unreachable(format!("cannot start /bin/sh: {e}")))?;
            let mut stdin = child.stdin.take();
            let feed = tokio::spawn(async move {
                if let (Some(i), Some(mut rx)) = (stdin.as_mut(), input) {
                    while let Some(chunk) = rx.recv().await {
                        if i.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                }
                if let Some(mut i) = stdin {
                    let _ = i.shutdown().await;
                }
            });
            let mut stdout = child.stdout.take();
            let mut stderr = child.stderr.take();
            let work = async {
                let mut out = ExecOutput::default();
                let errs = async {
                    let mut e = Vec::new();
                    if let Some(s) = stderr.as_mut() {
                        let _ = s.read_to_end(&mut e).await;
                    }
                    e
                };
                // Owns stdout, so that when the receiver is gone it is closed at once and the
                // command, still writing, gets EPIPE instead of waiting for a reader forever.
                let mut stdout = stdout.take();
                let outs = async move {
                    let mut collected = Vec::new();
                    if let Some(s) = stdout.as_mut() {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => match &output {
                                    Some(tx) => {
                                        if tx.send(buf[..n].to_vec()).await.is_err() {
                                            break;
                                        }
                                    }
                                    None => collected.extend_from_slice(&buf[..n]),
                                },
                            }
                        }
                    }
                    collected
                };
                let (e, o) = tokio::join!(errs, outs);
                out.stderr = e;
                out.stdout = o;
                let status = child
                    .wait()
                    .await
                    .map_err(|e| TransportError::Lost(e.to_string()))?;
                out.status = status.code().unwrap_or(128);
                Ok(out)
            };
            let res = match timeout {
                Some(t) => tokio::time::timeout(t + super::shell::GRACE, work)
                    .await
                    .unwrap_or_else(|_| {
                        Err(TransportError::Timeout(format!(
                            "no result within {}s",
                            (t + super::shell::GRACE).as_secs()
                        )))
                    }),
                None => work.await,
            };
            feed.abort();
            res
        })
    }
}
