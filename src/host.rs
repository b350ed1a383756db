//! Per-run host registry: one connection per host, opened on demand and shared; facts cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::inventory::{Inventory, Target};
use crate::transport::local::LocalSpawner;
use crate::transport::ssh::{self, Jumps, SshOptions};
use crate::transport::{Connection, Stats, TransportError};

/// Channels per connection: under OpenSSH's default MaxSessions (10), leaving room.
const MAX_WORKERS: usize = 6;

/// Tries per connection when none is set (OpenSSH's ConnectionAttempts is 1; a run reaching
/// many hosts at once, or a node whose sshd restarts, needs more).
pub const DEFAULT_CONNECTION_ATTEMPTS: u32 = 3;

/// A host's connection, or why it could not be opened (kept: every later step of that host
/// gets the same answer without trying again).
type Slot = Arc<tokio::sync::OnceCell<Result<Arc<Connection>, TransportError>>>;

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
    /// Connections closed by [`Hosts::release`] (for the count of connections opened).
    released: std::sync::atomic::AtomicUsize,
    /// The jump hosts' connections, one per hop for the whole run.
    jumps: Jumps,
    /// What opening a host's connection took, when worth saying (tries, jump hosts).
    notes: Mutex<HashMap<String, (u32, Vec<String>)>>,
}

/// Connection settings shared by every command that connects, free of clap types.
#[derive(Debug, Clone, Default)]
pub struct ConnConfig {
    pub known_hosts: Option<std::path::PathBuf>,
    pub accept_new: bool,
    pub local: bool,
    pub connect_timeout: u64,
    /// `--connection-attempts`: overrides the inventory's `connection_attempts`.
    pub connection_attempts: Option<u32>,
}

impl Hosts {
    /// The hosts of `inventory`, reached as `conn` says (`local`: every host is this machine).
    pub fn new(inventory: Arc<Inventory>, conn: &ConnConfig, local: bool) -> Hosts {
        let ssh = SshOptions {
            known_hosts: conn
                .known_hosts
                .clone()
                .unwrap_or_else(|| inventory.known_hosts_path()),
            accept_new: conn.accept_new,
            connect_timeout: std::time::Duration::from_secs(conn.connect_timeout.max(1)),
            attempts: conn
                .connection_attempts
                .or(inventory.connection_attempts)
                .unwrap_or(DEFAULT_CONNECTION_ATTEMPTS),
            interrupted: None,
        };
        Hosts {
            inventory,
            ssh,
            stats: Arc::new(Stats::default()),
            local,
            only: None,
            conns: Mutex::new(HashMap::new()),
            reached: Mutex::new(std::collections::HashSet::new()),
            facts: Mutex::new(HashMap::new()),
            released: std::sync::atomic::AtomicUsize::new(0),
            jumps: Jumps::default(),
            notes: Mutex::new(HashMap::new()),
        }
    }

    /// The connection to `t`, opened on first use and shared afterwards.
    pub async fn connection(&self, t: &Target) -> Result<Arc<Connection>, TransportError> {
        self.open(&t.name, Some(t)).await
    }

    /// The connection to `name` (an inventory host, else `ssh NAME`), by name.
    pub async fn connection_to(&self, name: &str) -> Result<Arc<Connection>, TransportError> {
        self.open(name, None).await
    }

    async fn open(
        &self,
        name: &str,
        given: Option<&Target>,
    ) -> Result<Arc<Connection>, TransportError> {
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
                    return Err(TransportError::Unreachable(format!(
                        "{name}: a node-local run (--via slurm) on {me} cannot reach other hosts; \
                         run recipes that read from other hosts over SSH instead"
                    )));
                }
                if self.local || name == "local" {
                    return Ok(Arc::new(Connection::new(
                        Box::new(LocalSpawner),
                        MAX_WORKERS,
                        self.stats.clone(),
                    )));
                }
                let target = match given {
                    Some(t) => t.clone(),
                    None => self
                        .inventory
                        .target(name)
                        .map_err(|e| TransportError::Unreachable(format!("{name}: {e}")))?,
                };
                let inv = self.inventory.path.as_deref();
                match ssh::connect(&target, &self.ssh, inv, &self.jumps).await {
                    Ok(done) => {
                        if done.tries.attempts > 1 || !done.notes.is_empty() {
                            let mut notes = done.notes;
                            notes.extend(done.tries.note());
                            if let Ok(mut n) = self.notes.lock() {
                                n.insert(name.to_string(), (done.tries.attempts, notes));
                            }
                        }
                        let c = Connection::new(
                            Box::new(done.spawner),
                            MAX_WORKERS,
                            self.stats.clone(),
                        );
                        c.sweep_stale();
                        Ok(Arc::new(c))
                    }
                    // A host whose key or login is refused cannot be reached either:
                    // "unreachable: host key: ...".
                    Err(e @ TransportError::Unreachable(_)) => Err(e),
                    Err(e) => Err(TransportError::Unreachable(e.to_string())),
                }
            })
            .await;
        res.clone()
    }

    /// The connection to `name` for another host's step: kept open until the run ends.
    pub async fn reach(&self, name: &str) -> Result<Arc<Connection>, TransportError> {
        if let Ok(mut r) = self.reached.lock() {
            r.insert(name.to_string());
        }
        self.connection_to(name).await
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

    /// Drops `name`'s connection whoever still holds it (a host that rebooted: its
    /// connection went down with the old boot), so that the next `connection` opens a new
    /// one. Closing it is bounded: a dead link must not hold the run.
    pub async fn forget(&self, name: &str) {
        let slot = self.conns.lock().ok().and_then(|mut c| c.remove(name));
        if let Some(conn) = slot.and_then(|s| s.get().and_then(|r| r.as_ref().ok().cloned())) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.close()).await;
            self.released
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// What opening `name`'s connection took when worth saying: its tries and notes (retries,
    /// the jump host's own tries). Given once.
    pub fn take_connect_notes(&self, name: &str) -> Option<(u32, Vec<String>)> {
        self.notes.lock().ok().and_then(|mut n| n.remove(name))
    }

    /// Connections opened successfully so far (jump hosts' included).
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
            + self.jumps.opened()
    }

    pub fn cached_facts(&self, name: &str) -> Option<rhai::Map> {
        self.facts.lock().ok().and_then(|f| f.get(name).cloned())
    }

    pub fn store_facts(&self, name: &str, facts: rhai::Map) {
        if let Ok(mut f) = self.facts.lock() {
            f.insert(name.to_string(), facts);
        }
    }

    /// Closes every connection (workers exit, channels close, sockets shut), all at once.
    pub async fn close_all(&self) {
        let conns: Vec<Arc<Connection>> = self
            .conns
            .lock()
            .map(|c| {
                c.values()
                    .filter_map(|s| s.get().and_then(|r| r.as_ref().ok().cloned()))
                    .collect()
            })
            .unwrap_or_default();
        let mut closing = tokio::task::JoinSet::new();
        for c in conns {
            closing.spawn(async move { c.close().await });
        }
        while closing.join_next().await.is_some() {}
        self.jumps.close_all().await;
    }
}
