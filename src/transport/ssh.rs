//! SSH transport on russh: one authenticated connection per host, workers on its channels;
//! one shared connection per jump host, retries of connections turned away before login.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{load_secret_key, PrivateKeyWithHashAlg};
use russh::{ChannelMsg, Disconnect};

use super::shell::Worker;
use super::{BoxFut, ChunkSink, Chunks, ExecOutput, Spawner, TransportError};
use crate::inventory::Target;
use crate::known_hosts::{self, HostKeyStatus};

/// Settings shared by every connection of a run.
#[derive(Debug, Clone)]
pub struct SshOptions {
    pub known_hosts: PathBuf,
    pub accept_new: bool,
    pub connect_timeout: Duration,
    /// Tries per connection when it is reset, refused or closed before the key exchange ends.
    pub attempts: u32,
    /// Set on Ctrl-C: no more waiting to try again.
    pub interrupted: Option<Arc<AtomicBool>>,
}

struct Client {
    host: String,
    port: u16,
    opts: SshOptions,
    verdict: Arc<Mutex<Option<String>>>,
}

/// The session's byte stream (a socket, or a channel through a jump host), telling when it
/// is dropped: the socket is closed then. [`SshSpawner::disconnect`] waits for that (the
/// handler may be dropped before the stream, and a loaded machine then shows the socket
/// still open when the next host connects).
struct Watched<S> {
    inner: S,
    _alive: tokio::sync::watch::Sender<()>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
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

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            _ => {
                self.say(
                    "the server offered a host certificate; only plain host keys are supported",
                );
                return Ok(false);
            }
        };
        let path = &self.opts.known_hosts;
        let fp = key.fingerprint(Default::default());
        match known_hosts::check(path, &self.host, self.port, key) {
            Ok(HostKeyStatus::Known) => Ok(true),
            Ok(HostKeyStatus::Unknown) if self.opts.accept_new => {
                if let Err(e) = known_hosts::append(path, &self.host, self.port, key) {
                    self.say(&format!(
                        "cannot record the new host key in {}: {e}",
                        path.display()
                    ));
                    return Ok(false);
                }
                tracing::info!(host = %self.host, %fp, "recorded new host key");
                Ok(true)
            }
            Ok(HostKeyStatus::Unknown) => {
                self.say(&format!(
                    "unknown host key {fp} (not in {}); verify it, then run once with --accept-new-host-keys",
                    path.display()
                ));
                Ok(false)
            }
            Ok(HostKeyStatus::Changed { path, line, fix }) => {
                self.say(&format!(
                    "HOST KEY CHANGED: the server now offers {fp}, which differs from {}:{line}. \
                     This may be an attack. If the host was really reinstalled, remove the old key with: {fix}",
                    path.display()
                ));
                Ok(false)
            }
            Ok(HostKeyStatus::Revoked) => {
                self.say(&format!(
                    "the host key {fp} is marked @revoked in {}",
                    path.display()
                ));
                Ok(false)
            }
            Err(e) => {
                self.say(&format!("cannot read {}: {e}", path.display()));
                Ok(false)
            }
        }
    }
}

impl Client {
    fn say(&self, msg: &str) {
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(msg.to_string());
        }
    }
}

/// An open, authenticated SSH connection; keeps the jump host's connection alive.
pub struct SshSpawner {
    handle: Arc<Handle<Client>>,
    /// Sees the session's end (its sender is dropped then).
    ended: tokio::sync::watch::Receiver<()>,
    _jump: Option<Arc<SshSpawner>>,
    become_: bool,
    user: String,
}

fn config() -> Arc<client::Config> {
    Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    })
}

/// How the first tries of a connection went, when one try was not enough.
#[derive(Debug, Clone, Default)]
pub struct Tries {
    /// Tries it took (1 = the first one succeeded).
    pub attempts: u32,
    /// What stopped the first try.
    pub first: Option<String>,
}

impl Tries {
    /// "connected at try N (the first: why)" when it took more than one try.
    pub fn note(&self) -> Option<String> {
        (self.attempts > 1).then(|| {
            format!(
                "connected at try {} (the first: {})",
                self.attempts,
                self.first.as_deref().unwrap_or_default()
            )
        })
    }
}

/// A connection and what it took to open it, for the report.
pub struct Connected {
    pub spawner: SshSpawner,
    pub tries: Tries,
    /// Notes on the jump hosts this connection opened (tries, reuse of a failed one).
    pub notes: Vec<String>,
}

/// One try at the transport and key exchange failed: again, or give up.
enum Fail {
    /// Reset, refused or closed before the key exchange ended: worth another try.
    Again(String),
    Final(TransportError),
}

/// Connects and authenticates to `target`, through its jump host if any: that one's
/// connection comes from `jumps`, opened once per run and shared by every host behind it.
/// A connection reset, refused or closed before the key exchange ends is tried again, up to
/// `opts.attempts` tries in all; host key and authentication failures never are.
pub fn connect<'a>(
    target: &'a Target,
    opts: &'a SshOptions,
    inventory: Option<&'a Path>,
    jumps: &'a Jumps,
) -> BoxFut<'a, Result<Connected, TransportError>> {
    Box::pin(async move {
        let mut notes = Vec::new();
        let jump = match &target.jump {
            None => None,
            Some(j) => {
                let (sp, note) = jumps.get(j, opts, inventory).await?;
                notes.extend(note);
                Some(sp)
            }
        };
        let mut tries = Tries::default();
        let (mut handle, ended) = loop {
            tries.attempts += 1;
            match handshake(target, opts, jump.as_deref()).await {
                Ok(h) => break h,
                Err(Fail::Final(e)) => return Err(e),
                Err(Fail::Again(why)) => {
                    if tries.first.is_none() {
                        tries.first = Some(why.clone());
                    }
                    if tries.attempts >= opts.attempts.max(1) {
                        let n = tries.attempts;
                        return Err(TransportError::Unreachable(if n == 1 {
                            why
                        } else {
                            format!("{why} ({n} tries; connection_attempts in the inventory or --connection-attempts gives more)")
                        }));
                    }
                    if !backoff(tries.attempts, opts.interrupted.as_deref()).await {
                        return Err(TransportError::Unreachable(format!(
                            "{why}; interrupted before trying again"
                        )));
                    }
                }
            }
        };
        authenticate(&mut handle, target, inventory).await?;
        Ok(Connected {
            spawner: SshSpawner {
                handle: Arc::new(handle),
                ended,
                _jump: jump,
                become_: target.become_ && target.user != "root",
                user: target.user.clone(),
            },
            tries,
            notes,
        })
    })
}

/// Waits before try `done + 1`: 0.25 s doubling per try, up to 4 s, jittered to half or
/// one and a half of that, so hosts turned away together do not come back together (as
/// many at once is what sshd's MaxStartups refuses). False when the run was interrupted.
async fn backoff(done: u32, interrupted: Option<&AtomicBool>) -> bool {
    use std::hash::{BuildHasher, Hasher};
    let base = 250u64 << done.saturating_sub(1).min(4);
    // A randomly seeded hasher: a random number without another dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(done);
    let wait = Duration::from_millis(base / 2 + h.finish() % base.max(1));
    let until = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < until {
        if interrupted.is_some_and(|f| f.load(Ordering::Relaxed)) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50).min(wait)).await;
    }
    !interrupted.is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Whether an I/O error is the peer turning the connection away (and may not next time).
fn turned_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe
    )
}

/// One try: the TCP connection (or a channel through `jump`) and the key exchange.
async fn handshake(
    target: &Target,
    opts: &SshOptions,
    jump: Option<&SshSpawner>,
) -> Result<(Handle<Client>, tokio::sync::watch::Receiver<()>), Fail> {
    let verdict = Arc::new(Mutex::new(None));
    let (alive, ended) = tokio::sync::watch::channel(());
    let handler = Client {
        host: target.address.clone(),
        port: target.port,
        opts: opts.clone(),
        verdict: verdict.clone(),
    };
    let where_ = match (jump, &target.jump) {
        (Some(_), Some(j)) => format!("{}:{} (through {})", target.address, target.port, j.name),
        _ => format!("{}:{}", target.address, target.port),
    };
    let secs = opts.connect_timeout.as_secs();
    let session = match jump {
        None => {
            let tcp = tokio::time::timeout(
                opts.connect_timeout,
                tokio::net::TcpStream::connect((target.address.as_str(), target.port)),
            )
            .await
            .map_err(|_| {
                Fail::Final(TransportError::Unreachable(format!(
                    "no answer from {where_} within {secs}s"
                )))
            })?
            .map_err(|e| {
                let msg = format!("{where_}: {e}");
                if turned_away(&e) {
                    Fail::Again(msg)
                } else {
                    Fail::Final(TransportError::Unreachable(msg))
                }
            })?;
            let _ = tcp.set_nodelay(true);
            tokio::time::timeout(
                opts.connect_timeout,
                client::connect_stream(
                    config(),
                    Watched {
                        inner: tcp,
                        _alive: alive,
                    },
                    handler,
                ),
            )
            .await
        }
        Some(j) => {
            let ch = j
                .handle
                .channel_open_direct_tcpip(target.address.clone(), target.port as u32, "127.0.0.1", 0)
                .await
                .map_err(|e| match e {
                    // The jump host could not connect (refused, reset): as a direct refusal.
                    russh::Error::ChannelOpenFailure(russh::ChannelOpenFailure::ConnectFailed) => {
                        Fail::Again(format!("{where_}: the jump host could not connect"))
                    }
                    russh::Error::ChannelOpenFailure(
                        russh::ChannelOpenFailure::AdministrativelyProhibited,
                    ) => Fail::Final(TransportError::Unreachable(format!(
                        "{where_}: the jump host refuses to forward (its sshd_config has AllowTcpForwarding no or DisableForwarding yes)"
                    ))),
                    e => Fail::Final(TransportError::Unreachable(format!("{where_}: {e}"))),
                })?;
            tokio::time::timeout(
                opts.connect_timeout,
                client::connect_stream(
                    config(),
                    Watched {
                        inner: Forwarded::new(ch),
                        _alive: alive,
                    },
                    handler,
                ),
            )
            .await
        }
    };
    match session {
        Err(_) => Err(Fail::Final(TransportError::Unreachable(format!(
            "{where_}: SSH handshake did not finish within {secs}s"
        )))),
        Ok(Err(e)) => {
            if let Some(msg) = verdict.lock().ok().and_then(|v| v.clone()) {
                return Err(Fail::Final(TransportError::HostKey(msg)));
            }
            match &e {
                russh::Error::Disconnect | russh::Error::HUP => Err(Fail::Again(format!(
                    "{where_}: the server closed the connection during the SSH handshake \
                     (its MaxStartups, a restart, or a connection limit)"
                ))),
                russh::Error::IO(io) if turned_away(io) => Err(Fail::Again(format!(
                    "{where_}: {io} during the SSH handshake"
                ))),
                _ => Err(Fail::Final(TransportError::Unreachable(format!(
                    "{where_}: {e}"
                )))),
            }
        }
        Ok(Ok(h)) => Ok((h, ended)),
    }
}

/// A channel through a jump host as a byte stream whose incoming side is read at once:
/// russh hands a connection's incoming data to its channels one at a time and waits while a
/// channel's queue is full, so one host behind a shared jump connection that is slow to read
/// (a copy's destination) would stall every other host on it, and a copy between two hosts
/// behind it would wait on itself. What waits here is bounded by the inner connection's own
/// SSH window (its sshd sends no more until the inner session has read it).
struct Forwarded {
    rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Vec<u8>,
    pos: usize,
    writer: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>,
    _half: russh::ChannelWriteHalf<client::Msg>,
}

impl Forwarded {
    fn new(ch: russh::Channel<client::Msg>) -> Forwarded {
        let (mut rd, wr) = ch.split();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = rd.wait().await {
                match msg {
                    ChannelMsg::Data { data } if tx.send(data.to_vec()).is_err() => break,
                    ChannelMsg::Eof | ChannelMsg::Close => break,
                    _ => {}
                }
            }
        });
        Forwarded {
            rx,
            pending: Vec::new(),
            pos: 0,
            writer: Box::pin(wr.make_writer()),
            _half: wr,
        }
    }
}

impl tokio::io::AsyncRead for Forwarded {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let me = &mut *self;
        loop {
            if me.pos < me.pending.len() {
                let n = (me.pending.len() - me.pos).min(buf.remaining());
                buf.put_slice(&me.pending[me.pos..me.pos + n]);
                me.pos += n;
                return Poll::Ready(Ok(()));
            }
            match me.rx.poll_recv(cx) {
                Poll::Ready(Some(v)) => {
                    me.pending = v;
                    me.pos = 0;
                }
                // The channel ended: end of stream.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl tokio::io::AsyncWrite for Forwarded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

/// The connections to jump hosts of a run: one per hop (user, address, port, keys and its
/// own jump), opened by the first host behind it and shared by all of them, each host's
/// connection a direct-tcpip channel on it. A hop that failed stays failed for the run, so
/// its failure is one handshake and one message, not one per host behind it.
#[derive(Default)]
pub struct Jumps {
    hops: Mutex<HashMap<String, Hop>>,
    opened: AtomicUsize,
}

type Hop = Arc<tokio::sync::Mutex<Option<Result<Arc<SshSpawner>, String>>>>;

/// What names a hop: two jump entries with the same key share one connection.
fn hop_key(t: &Target) -> String {
    let mut k = format!("{}@{}:{} {:?}", t.user, t.address, t.port, t.keys);
    if let Some(j) = &t.jump {
        k.push_str(" via ");
        k.push_str(&hop_key(j));
    }
    k
}

impl Jumps {
    /// The connection to jump host `j` (opened now if needed, again if it was lost), and a
    /// note on it when it took more than one try.
    async fn get(
        &self,
        j: &Target,
        opts: &SshOptions,
        inventory: Option<&Path>,
    ) -> Result<(Arc<SshSpawner>, Vec<String>), TransportError> {
        let hop = {
            let mut hops = self
                .hops
                .lock()
                .map_err(|_| TransportError::Lost("internal lock poisoned".into()))?;
            hops.entry(hop_key(j)).or_default().clone()
        };
        let mut slot = hop.lock().await;
        match slot.as_ref() {
            Some(Ok(sp)) if !sp.handle.is_closed() => return Ok((sp.clone(), Vec::new())),
            Some(Err(msg)) => return Err(TransportError::Unreachable(msg.clone())),
            _ => {}
        }
        let name = format!("jump host {} ({}@{}:{})", j.name, j.user, j.address, j.port);
        match connect(j, opts, inventory, self).await {
            Ok(c) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                let mut notes = c.notes;
                notes.extend(c.tries.note().map(|n| format!("{name}: {n}")));
                let sp = Arc::new(c.spawner);
                *slot = Some(Ok(sp.clone()));
                Ok((sp, notes))
            }
            Err(e) => {
                let msg = format!(
                    "{name}: {e} (one connection serves every host behind it: they all stop here)"
                );
                *slot = Some(Err(msg.clone()));
                Err(TransportError::Unreachable(msg))
            }
        }
    }

    /// Jump host connections opened so far.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    /// Ends every jump host connection (after the hosts behind them are done).
    pub async fn close_all(&self) {
        let hops: Vec<Hop> = self
            .hops
            .lock()
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default();
        for hop in hops {
            if let Some(Ok(sp)) = hop.lock().await.as_ref() {
                sp.disconnect().await;
            }
        }
    }
}

/// The signature hash for RSA keys (what the server supports best); `None` otherwise.
async fn rsa_hash(
    handle: &Handle<Client>,
    alg: russh::keys::Algorithm,
) -> Option<russh::keys::HashAlg> {
    if alg.is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten()
    } else {
        None
    }
}

/// Tries the inventory's keys first (an encrypted one through the agent's copy of it), then
/// the agent's other keys, like OpenSSH with IdentitiesOnly: a server stops listening after
/// MaxAuthTries (6) offers, so a full agent must not hide the key that was asked for. A
/// failure says what was offered and why each key was not used.
async fn authenticate(
    handle: &mut Handle<Client>,
    target: &Target,
    inventory: Option<&Path>,
) -> Result<(), TransportError> {
    let user = target.user.clone();
    let mut tried: Vec<String> = Vec::new();
    let mut offered: Vec<russh::keys::PublicKey> = Vec::new();
    let mut agent = match std::env::var_os("SSH_AUTH_SOCK") {
        Some(_) => match AgentClient::connect_env().await {
            Ok(a) => Some(a),
            Err(e) => {
                tried.push(format!("ssh-agent (cannot connect: {e})"));
                None
            }
        },
        None => None,
    };
    let origin = match inventory {
        Some(p) => format!("`key =` of host {} in {}", target.name, p.display()),
        None => format!("the key of host {}", target.name),
    };
    for path in &target.keys {
        if !path.exists() {
            tried.push(format!(
                "{} (missing: no such file; it is {origin})",
                path.display()
            ));
            continue;
        }
        match load_secret_key(path, None) {
            Ok(key) => {
                let public = key.public_key().clone();
                let hash = rsa_hash(handle, key.algorithm()).await;
                let r = handle
                    .authenticate_publickey(
                        user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await;
                offered.push(public);
                match r {
                    Ok(r) if r.success() => return Ok(()),
                    Ok(_) => tried.push(format!("{} (refused)", path.display())),
                    Err(e) => tried.push(format!("{} (error: {e})", path.display())),
                }
            }
            Err(russh::keys::Error::KeyIsEncrypted) => {
                // The agent may hold it unlocked: offer the agent's copy now, first.
                let public = russh::keys::PrivateKey::read_openssh_file(path)
                    .map(|k| k.public_key().clone())
                    .ok()
                    .or_else(|| {
                        russh::keys::load_public_key(format!("{}.pub", path.display())).ok()
                    });
                let Some(public) = public else {
                    tried.push(format!(
                        "{} (encrypted, and its public key is unreadable)",
                        path.display()
                    ));
                    continue;
                };
                let in_agent = match agent.as_mut() {
                    Some(a) => a
                        .request_identities()
                        .await
                        .map(|ids| {
                            ids.iter().any(|id| {
                                matches!(id, AgentIdentity::PublicKey { key, .. } if key.key_data() == public.key_data())
                            })
                        })
                        .unwrap_or(false),
                    None => false,
                };
                let Some(a) = agent.as_mut().filter(|_| in_agent) else {
                    tried.push(format!(
                        "{} (encrypted and not in ssh-agent: load it with ssh-add)",
                        path.display()
                    ));
                    continue;
                };
                let hash = rsa_hash(handle, public.algorithm()).await;
                let r = handle
                    .authenticate_publickey_with(user.clone(), public.clone(), hash, a)
                    .await;
                offered.push(public);
                match r {
                    Ok(r) if r.success() => return Ok(()),
                    Ok(_) => tried.push(format!("{} (through ssh-agent: refused)", path.display())),
                    Err(e) => tried.push(format!("{} (through ssh-agent: {e})", path.display())),
                }
            }
            Err(e) => tried.push(format!("{} (unreadable: {e})", path.display())),
        }
        if handle.is_closed() {
            return Err(closed_during_auth(&user, offered.len(), &tried));
        }
    }
    if let Some(a) = agent.as_mut() {
        match a.request_identities().await {
            Ok(ids) => {
                let mut refused = Vec::new();
                for id in ids {
                    let AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    if offered.iter().any(|k| k.key_data() == key.key_data()) {
                        continue;
                    }
                    let name = if comment.is_empty() {
                        key.fingerprint(Default::default()).to_string()
                    } else {
                        comment.clone()
                    };
                    let hash = rsa_hash(handle, key.algorithm()).await;
                    let r = handle
                        .authenticate_publickey_with(user.clone(), key.clone(), hash, a)
                        .await;
                    offered.push(key);
                    match r {
                        Ok(r) if r.success() => return Ok(()),
                        Ok(_) => refused.push(name),
                        Err(e) => refused.push(format!("{name}: {e}")),
                    }
                    if handle.is_closed() {
                        tried.push(format!("ssh-agent keys {}", refused.join(", ")));
                        return Err(closed_during_auth(&user, offered.len(), &tried));
                    }
                }
                if !refused.is_empty() {
                    tried.push(format!("ssh-agent keys {} (refused)", refused.join(", ")));
                }
            }
            Err(e) => tried.push(format!("ssh-agent (cannot list its keys: {e})")),
        }
    }
    Err(TransportError::Auth(if tried.is_empty() {
        format!(
            "no key to offer for user {user}: give one with `key =` in the inventory or load ssh-agent"
        )
    } else if offered.is_empty() {
        format!(
            "no key could be offered for user {user}: {}",
            tried.join("; ")
        )
    } else {
        format!(
            "the server refused user {user}; tried: {}",
            tried.join("; ")
        )
    }))
}

fn closed_during_auth(user: &str, offers: usize, tried: &[String]) -> TransportError {
    TransportError::Auth(format!(
        "the server closed the connection after {offers} refused keys for user {user} \
         (its MaxAuthTries?); tried: {}. Give the right key with `key =` in the inventory",
        tried.join("; ")
    ))
}

impl SshSpawner {
    fn shell_command(&self) -> String {
        if self.become_ {
            format!(
                "if sudo -n true 2>&1; then exec sudo -n /bin/sh; else echo '__RCP_FAIL sudo refused for {}: passwordless sudo (NOPASSWD) is required'; fi",
                self.user.replace('\'', "")
            )
        } else {
            "exec /bin/sh".to_string()
        }
    }

    /// Disconnects politely, and returns once the socket is shut: `disconnect` only
    /// queues the message, and the session's task closes the socket after sending it (the
    /// stream's `Watched::_alive` goes with it). A released host must hold no connection when
    /// its fork goes to the next one (README); a session that does not end within a few
    /// seconds is left to end on its own.
    pub async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while ended.changed().await.is_ok() {}
        })
        .await;
    }
}

impl Spawner for SshSpawner {
    fn spawn(&self) -> BoxFut<'_, Result<Worker, TransportError>> {
        Box::pin(async move {
            let ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| TransportError::Lost(format!("cannot open a channel: {e}")))?;
            ch.exec(true, self.shell_command())
                .await
                .map_err(|e| TransportError::Lost(format!("cannot start a shell: {e}")))?;
            let (r, w) = tokio::io::split(ch.into_stream());
            Worker::start(Box::new(r), Box::new(w), Duration::from_secs(60)).await
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
            let ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| TransportError::Lost(format!("cannot open a channel: {e}")))?;
            // The command ends with this connection's sshd ("$PPID" of the login shell).
            let run = super::shell::stream_command(cmd, "\"$PPID\"", timeout);
            let wrapped = if self.become_ {
                format!("exec sudo -n {run}")
            } else {
                format!("exec {run}")
            };
            ch.exec(true, wrapped)
                .await
                .map_err(|e| TransportError::Lost(e.to_string()))?;
            let (mut rd, wr) = ch.split();
            let send = async {
                if let Some(mut rx) = input {
                    while let Some(chunk) = rx.recv().await {
                        wr.data(&chunk[..])
                            .await
                            .map_err(|e| TransportError::Lost(e.to_string()))?;
                    }
                }
                wr.eof()
                    .await
                    .map_err(|e| TransportError::Lost(e.to_string()))
            };
            let recv = async {
                let mut out = ExecOutput {
                    status: -1,
                    ..Default::default()
                };
                let mut ended = false;
                while let Some(msg) = rd.wait().await {
                    match msg {
                        ChannelMsg::Data { data } => match &output {
                            Some(tx) => {
                                if tx.send(data.to_vec()).await.is_err() {
                                    return Err(TransportError::Shell(
                                        "the receiving host stopped reading".into(),
                                    ));
                                }
                            }
                            None => out.stdout.extend_from_slice(&data),
                        },
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            out.stderr.extend_from_slice(&data)
                        }
                        ChannelMsg::ExitStatus { exit_status } => {
                            out.status = exit_status as i32;
                            ended = true;
                        }
                        ChannelMsg::ExitSignal { signal_name, .. } => {
                            ended = true;
                            out.status = 128;
                            out.stderr.extend_from_slice(
                                format!("killed by signal {signal_name:?}").as_bytes(),
                            );
                        }
                        ChannelMsg::Close => break,
                        _ => {}
                    }
                }
                if !ended {
                    return Err(TransportError::Lost(
                        "connection closed before the command finished".into(),
                    ));
                }
                Ok(out)
            };
            let work = async {
                // When the command ends, what is still being sent is dropped: a command that
                // stopped reading (its disk full) never makes room again, and the source feeding
                // it sees the end of the pipe and stops too.
                tokio::pin!(send, recv);
                let mut sent = None;
                let out = loop {
                    tokio::select! {
                        s = &mut send, if sent.is_none() => sent = Some(s),
                        r = &mut recv => break r?,
                    }
                };
                // A command that succeeded without reading all of its input is its own
                // business (`head`); a failure to send counts only when it did not fail itself.
                if let (0, Some(s)) = (out.status, sent) {
                    s?;
                }
                Ok(out)
            };
            let closed = async {
                while !self.handle.is_closed() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            let guarded = async {
                tokio::select! {
                    r = work => r,
                    _ = closed => Err(TransportError::Lost("connection closed during the transfer".into())),
                }
            };
            let res = match timeout {
                Some(t) => tokio::time::timeout(t + super::shell::GRACE, guarded)
                    .await
                    .unwrap_or_else(|_| {
                        Err(TransportError::Timeout(format!(
                            "no result within {}s",
                            (t + super::shell::GRACE).as_secs()
                        )))
                    }),
                None => guarded.await,
            };
            let _ = wr.close().await;
            res
        })
    }

    fn shutdown(&self) -> BoxFut<'_, ()> {
        Box::pin(self.disconnect())
    }
}
