//! What the primitives see of a run: its flags, reporter and hosts, and the host they run for.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::host::Hosts;
use crate::report::Reporter;
use crate::transport::{Connection, ExecOutput, Meter, TransportError, METER};

/// What every host of a run shares, plays included: set once when the run starts.
pub struct RunCtx {
    /// `--dry-run`: check and report, change nothing.
    pub dry_run: bool,
    /// `--timeout`: the limit of a command that names none.
    pub timeout: Duration,
    pub reporter: Reporter,
    pub hosts: Arc<Hosts>,
    pub rt: tokio::runtime::Handle,
    /// Set by Ctrl-C or SIGTERM: hosts stop after their current step.
    pub interrupted: Arc<AtomicBool>,
    pub planned: crate::planned::Planned,
    /// Files the controller fetched for hosts without curl or wget (`download`).
    pub downloads: crate::primitives::download::Cache,
}

/// `work`, unless a second Ctrl-C or SIGTERM abandons it first (its worker is dropped, and
/// the command on the host ends with its session).
async fn abortable<T>(
    work: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    use crate::run::signals;
    tokio::select! {
        r = work => r,
        _ = signals::reached(signals::Stop::Now) => Err(TransportError::Interrupted(format!(
            "{}, abandoned by a second signal",
            signals::reason()
        ))),
    }
}

thread_local! {
    /// The meter of the step this host's thread is running (see [`with_step_meter`]).
    static STEP_METER: std::cell::RefCell<Option<Arc<Meter>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a step, on its host's thread) with `m` as the meter of what it moves.
pub fn with_step_meter<T>(m: Arc<Meter>, f: impl FnOnce() -> T) -> T {
    let before = STEP_METER.with(|c| c.replace(Some(m)));
    let out = f();
    STEP_METER.with(|c| *c.borrow_mut() = before);
    out
}

/// The meter of the step running on this thread, if any.
pub fn step_meter() -> Option<Arc<Meter>> {
    STEP_METER.with(|c| c.borrow().clone())
}

/// `fut`, with the bytes it moves counted for the step running on this thread.
pub fn metered<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    let m = step_meter();
    async move {
        match m {
            Some(m) => METER.scope(m, fut).await,
            None => fut.await,
        }
    }
}

/// The recipe a host runs.
pub struct RecipeInfo {
    pub name: String,
    /// The recipe's path as given to the AST (`ctx.call_source()` of top-level calls).
    pub source: String,
    pub dir: PathBuf,
}

/// One host's view while its recipe runs; reached from primitives through the engine tag.
pub struct HostCtx {
    pub name: String,
    pub conn: Arc<Connection>,
    pub run: Arc<RunCtx>,
    pub recipe: Arc<RecipeInfo>,
    pub vars: rhai::Map,
    /// Probes asked ahead of the steps (`primitives::prefetch`).
    pub prefetch: crate::primitives::prefetch::Prefetch,
}

impl HostCtx {
    /// Runs a command on this host (blocking: primitives run on the host's own thread).
    /// The target stops the command after `timeout`, or the run's `--timeout`
    /// (`timeout(1)`), so a command the controller gives up on does not live on.
    pub fn exec(
        &self,
        cmd: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, TransportError> {
        // A command may change the host: probes asked ahead no longer hold.
        self.prefetch.forget();
        self.exec_via(&self.conn, cmd, stdin, self.remote_limit(timeout))
    }

    /// A read-only command that must answer within `limit` (no remote `timeout` process).
    pub fn exec_bounded(&self, cmd: &str, limit: Duration) -> Result<ExecOutput, TransportError> {
        self.exec_via(&self.conn, cmd, None, (None, limit))
    }

    /// The target's limit (`timeout:` or `--timeout`) and the controller's, 15 s later.
    fn remote_limit(&self, timeout: Option<Duration>) -> (Option<Duration>, Duration) {
        let t = timeout.unwrap_or(self.run.timeout);
        (Some(t), t + Duration::from_secs(15))
    }

    /// Runs `cmd` on `conn`: `remote` is stopped on the target, `limit` bounds the wait here.
    fn exec_via(
        &self,
        conn: &Connection,
        cmd: &str,
        stdin: Option<&[u8]>,
        (remote, limit): (Option<Duration>, Duration),
    ) -> Result<ExecOutput, TransportError> {
        if self.prefetch.collecting() {
            return Err(TransportError::Shell(
                crate::primitives::prefetch::STOP.into(),
            ));
        }
        outbound(cmd, stdin)?;
        // Boxed: the future (channel open, worker start, framing) would otherwise live on
        // this host's thread stack, one large copy per concurrently running host.
        let fut = Box::pin(metered(conn.exec(cmd, stdin, remote)));
        self.run.rt.block_on(abortable(async {
            tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                Err(TransportError::Timeout(format!(
                    "no answer within {}s",
                    limit.as_secs()
                )))
            })
        }))
    }

    /// Pipes `src_cmd`'s output on `host` into `dst_cmd` on this host, streamed through the
    /// controller in bounded chunks. Returns (source, destination) results.
    pub fn pipe_from(
        &self,
        host: &str,
        src_cmd: &str,
        dst_cmd: &str,
    ) -> Result<(ExecOutput, ExecOutput), TransportError> {
        if self.prefetch.collecting() {
            return Err(TransportError::Shell(
                crate::primitives::prefetch::STOP.into(),
            ));
        }
        self.prefetch.forget();
        outbound(src_cmd, None)?;
        outbound(dst_cmd, None)?;
        let src = self.run.rt.block_on(Box::pin(self.run.hosts.reach(host)))?;
        let (remote, limit) = self.remote_limit(None);
        let fut = Box::pin(metered(crate::transport::pipe(
            &src, src_cmd, &self.conn, dst_cmd, remote,
        )));
        let (a, b) = self.run.rt.block_on(async {
            let work = async { Ok(tokio::time::timeout(limit, fut).await) };
            match abortable(work).await {
                Ok(Ok(ab)) => ab,
                Ok(Err(_)) => {
                    let e = || {
                        Err(TransportError::Timeout(format!(
                            "no answer within {}s",
                            limit.as_secs()
                        )))
                    };
                    (e(), e())
                }
                Err(e) => (Err(TransportError::Interrupted(e.to_string())), Err(e)),
            }
        });
        // The destination's own failure says most (no folder, disk full); then the source's.
        let b = b?;
        let a = match a {
            Ok(a) => a,
            // The source was stopped because the destination had ended: its result says why.
            Err(_) if b.status != 0 => ExecOutput::default(),
            Err(e) => return Err(e),
        };
        Ok((a, b))
    }

    /// Runs a command on another inventory host, through the controller.
    pub fn exec_on(
        &self,
        host: &str,
        cmd: &str,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, TransportError> {
        if host == self.name {
            return self.exec(cmd, None, timeout);
        }
        let conn = self.run.rt.block_on(Box::pin(self.run.hosts.reach(host)))?;
        self.exec_via(&conn, cmd, None, self.remote_limit(timeout))
    }
}

/// The last look at what goes to a host: a secret's placeholder text never does.
fn outbound(cmd: &str, stdin: Option<&[u8]>) -> Result<(), TransportError> {
    crate::secrets::refuse_placeholder("the command", cmd.as_bytes())
        .and_then(|()| crate::secrets::refuse_placeholder("the input", stdin.unwrap_or(b"")))
        .map_err(TransportError::Refused)
}
