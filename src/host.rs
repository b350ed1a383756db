//! Per-run host registry (connections opened on demand, facts cached) and the per-host context primitives use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::inventory::{Inventory, Target};
use crate::report::Reporter;
use crate::transport::local::LocalSpawner;
use crate::transport::ssh::{self, SshOptions};
use crate::transport::{Connection, ExecOutput, Stats, TransportError};

/// Channels per connection: under OpenSSH's default MaxSessions (10), leaving room.
const MAX_WORKERS: usize = 6;

type Slot = Arc<tokio::sync::OnceCell<Result<Arc<Connection>, String>>>;

/// Every connection of a run, keyed by inventory name; one per host, reused.
pub struct Hosts {
    pub inventory: Arc<Inventory>,
    pub ssh: SshOptions,
    pub stats: Arc<Stats>,
    pub local: bool,
    /// A node-local run (`--via slurm`) stands for this one host and can reach no other.
    pub only: Option<String>,
    conns: Mutex<HashMap<String, Slot>>,
    /// Hosts another host has reached through the controller (`from_host`, `host(..)`):
    /// their connections stay open for the run, since others are likely to need them again.
    reached: Mutex<std::collections::HashSet<String>>,
    facts: Mutex<HashMap<String, rhai::Map>>,
    pub targets: Mutex<HashMap<String, Target>>,
    /// Connections closed by [`Hosts::release`] (for the count of connections opened).
    released: std::sync::atomic::AtomicUsize,
}

impl Hosts {
    pub fn new(inventory: Arc<Inventory>, ssh: SshOptions, local: bool) -> Hosts {
        Hosts {
            inventory,
            ssh,
            stats: Arc::new(Stats::default()),
            local,
            only: None,
            conns: Mutex::new(HashMap::new()),
            reached: Mutex::new(std::collections::HashSet::new()),
            facts: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
            released: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The target for `name`: one of this run's, else the inventory's, else `ssh NAME`.
    pub fn target(&self, name: &str) -> Result<Target, TransportError> {
        if let Some(t) = self.targets.lock().ok().and_then(|t| t.get(name).cloned()) {
            return Ok(t);
        }
        self.inventory
            .target(name)
            .map_err(|e| TransportError::Unreachable(format!("{name}: {e}")))
    }

    /// The connection to `name`, opened on first use and shared afterwards.
    pub async fn connection(&self, name: &str) -> Result<Arc<Connection>, TransportError> {
        let slot = {
            let mut c = self
                .conns
                .lock()
                .map_err(|_| TransportError::Lost("internal lock poisoned".into()))?;
            c.entry(name.to_string()).or_default().clone()
        };
        let res = slot
            .get_or_init(|| async {
                if let Some(me) = self.only.as_deref().filter(|me| *me != name) {
                    return Err(format!(
                        "{name}: a node-local run (--via slurm) on {me} cannot reach other hosts; \
                         run recipes that read from other hosts over SSH instead"
                    ));
                }
                if self.local || name == "local" {
                    return Ok(Arc::new(Connection::new(
                        Box::new(LocalSpawner),
                        MAX_WORKERS,
                        self.stats.clone(),
                    )));
                }
                let target = self.target(name).map_err(|e| e.to_string())?;
                match ssh::connect(&target, &self.ssh, self.inventory.path.as_deref()).await {
                    Ok(sp) => {
                        let c = Connection::new(Box::new(sp), MAX_WORKERS, self.stats.clone());
                        c.sweep_stale().await;
                        Ok(Arc::new(c))
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        match res {
            Ok(c) => Ok(c.clone()),
            // `e` is already "unreachable: ..." when the connection itself failed.
            Err(e) => Err(TransportError::Unreachable(
                e.strip_prefix("unreachable: ").unwrap_or(e).to_string(),
            )),
        }
    }

    /// The connection to `name` for another host's step: kept open until the run ends.
    pub async fn reach(&self, name: &str) -> Result<Arc<Connection>, TransportError> {
        if let Ok(mut r) = self.reached.lock() {
            r.insert(name.to_string());
        }
        self.connection(name).await
    }

    /// Ends `name`'s connection once its own run is over, so that a finished host holds no
    /// socket, buffers or session task: memory follows `--forks`, not the host count. Kept
    /// when other hosts reach it or still hold it (a copy in flight).
    pub async fn release(&self, name: &str) {
        if self
            .reached
            .lock()
            .map(|r| r.contains(name))
            .unwrap_or(true)
        {
            return;
        }
        let conn = {
            let Ok(mut c) = self.conns.lock() else { return };
            let free = c.get(name).is_some_and(|s| {
                Arc::strong_count(s) == 1
                    && matches!(s.get(), Some(Ok(conn)) if Arc::strong_count(conn) == 1)
            });
            if !free {
                return;
            }
            c.remove(name)
                .and_then(|s| s.get().and_then(|r| r.as_ref().ok().cloned()))
        };
        if let Some(conn) = conn {
            conn.close().await;
            self.released
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Connections opened successfully so far.
    pub fn connection_count(&self) -> usize {
        self.conns
            .lock()
            .map(|c| {
                c.values()
                    .filter(|s| matches!(s.get(), Some(Ok(_))))
                    .count()
            })
            .unwrap_or(0)
            + self.released.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn cached_facts(&self, name: &str) -> Option<rhai::Map> {
        self.facts.lock().ok().and_then(|f| f.get(name).cloned())
    }

    pub fn store_facts(&self, name: &str, facts: rhai::Map) {
        if let Ok(mut f) = self.facts.lock() {
            f.insert(name.to_string(), facts);
        }
    }

    /// Closes every connection (workers exit, channels close).
    pub async fn close_all(&self) {
        let slots: Vec<Slot> = self
            .conns
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        for s in slots {
            if let Some(Ok(c)) = s.get() {
                c.close().await;
            }
        }
    }
}

/// What every host of a run shares.
pub struct RunShared {
    pub recipe_name: String,
    /// The recipe's path as given to the AST (`ctx.call_source()` of top-level calls).
    pub recipe_source: String,
    pub recipe_dir: PathBuf,
    pub dry_run: bool,
    pub diff: bool,
    pub reporter: Reporter,
    pub hosts: Arc<Hosts>,
    pub rt: tokio::runtime::Handle,
    pub default_timeout: Duration,
    pub interrupted: Arc<AtomicBool>,
}

/// One host's view while its recipe runs; reached from primitives through the engine tag.
pub struct HostCtx {
    pub name: String,
    pub conn: Arc<Connection>,
    pub run: Arc<RunShared>,
    pub vars: rhai::Map,
    pub last_step: Mutex<Option<String>>,
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
        self.exec_via(&self.conn, cmd, stdin, self.remote_limit(timeout))
    }

    /// A read-only command that must answer within `limit` (no remote `timeout` process).
    pub fn exec_bounded(&self, cmd: &str, limit: Duration) -> Result<ExecOutput, TransportError> {
        self.exec_via(&self.conn, cmd, None, (None, limit))
    }

    /// The target's limit (`timeout:` or `--timeout`) and the controller's, 15 s later.
    fn remote_limit(&self, timeout: Option<Duration>) -> (Option<Duration>, Duration) {
        let t = timeout.unwrap_or(self.run.default_timeout);
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
        // Boxed: the future (channel open, worker start, framing) would otherwise live on
        // this host's thread stack, one large copy per concurrently running host.
        let fut = Box::pin(conn.exec(cmd, stdin, remote));
        self.run.rt.block_on(async {
            tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                Err(TransportError::Timeout(format!(
                    "no answer within {}s",
                    limit.as_secs()
                )))
            })
        })
    }

    /// Pipes `src_cmd`'s output on `host` into `dst_cmd` on this host, streamed through the
    /// controller in bounded chunks. Returns (source, destination) results.
    pub fn pipe_from(
        &self,
        host: &str,
        src_cmd: &str,
        dst_cmd: &str,
    ) -> Result<(ExecOutput, ExecOutput), TransportError> {
        let src = self.run.rt.block_on(Box::pin(self.run.hosts.reach(host)))?;
        let (remote, limit) = self.remote_limit(None);
        let fut = Box::pin(crate::transport::pipe(
            &src, src_cmd, &self.conn, dst_cmd, remote,
        ));
        let (a, b) = self.run.rt.block_on(async {
            tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                let e = || {
                    Err(TransportError::Timeout(format!(
                        "no answer within {}s",
                        limit.as_secs()
                    )))
                };
                (e(), e())
            })
        });
        // The destination's own failure says most (no folder, disk full); then the source's.
        let b = b?;
        let a = a?;
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
