//! The worker's command frames replayed to real shells, cut short at every point.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::shell::Worker;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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
    let (qcmd, s64) = (super::quote(&cmd), b64.encode(&payload));
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
