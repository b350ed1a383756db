//! `recipe run --via slurm`: run a recipe node-local on Slurm nodes through `srun`, from one SSH connection to a login node.
//!
//! The controller checks the recipe and computes every host's variables as usual, then
//! connects to the login node only. There it stages this binary, the recipe's folder, the
//! stdlib and a file of per-node variables, and starts one `srun` task per usable node with
//! the bundle on the task's standard input (srun broadcasts it). Each task unpacks it into a
//! private temporary folder, runs `recipe run --local --json` as the inventory host it stands
//! for, and removes the folder. The tasks' JSON Lines come back through srun and feed the
//! same reporter, recap and exit status as the SSH path: the run pipeline of
//! `commands/run.rs` drives it like any other mode; this file holds only what is Slurm's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::node::{NodeEntry, NodeFile};
use crate::errors::{usage, Error};
use crate::inventory::{Inventory, Target};
use crate::report::{NoteEvent, ProgressEvent, Recap, Reporter, StepEvent};
use crate::run::{signals, Prepared, Run};
use crate::transport::{quote, Connection, TransportError};

/// The host variable naming a host's Slurm node when it differs from the inventory name.
pub const NODE_VAR: &str = "slurm_node";

/// Files bigger than this in the recipe's folder are refused: they would be sent to every node.
const MAX_BUNDLE: u64 = 64 * 1024 * 1024;

/// The start of a node's task: `$d` becomes a private folder (removed at exit) in the first
/// of the runtime folder, TMPDIR, /tmp, /var/tmp, /dev/shm and the home folder that is
/// writable and lets a program run from it (hardened nodes mount the temporary ones
/// `noexec`); none: exit 97 naming those tried.
const NODE_DIR: &str = r#"n=${SLURMD_NODENAME:-this node}; d=; tried=; trap 'rm -rf "$d"' EXIT;
for b in "${XDG_RUNTIME_DIR:-}" "${TMPDIR:-}" /tmp /var/tmp /dev/shm "${HOME:-}"; do
  [ -n "$b" ] && [ -d "$b" ] && [ -w "$b" ] || continue;
  d=$(umask 077 && mktemp -d "$b/recipe-node.XXXXXXXX" 2>/dev/null) || { d=; continue; };
  printf '#!/bin/sh
' > "$d/x" && chmod 700 "$d/x" && "$d/x" 2>/dev/null && { rm -f "$d/x"; break; };
  tried="$tried $b"; rm -rf "$d"; d=;
done;
[ -n "$d" ] || { echo "no folder on $n lets this user run a program: tried$tried (mounted noexec?) and no other was writable; give the user a home or runtime folder that allows it" >&2; exit 97; };"#;

/// How long srun may wait for the nodes to be allocated before it gives up.
const ALLOC_WAIT_SECS: u64 = 60;

/// `--via` parsed: `slurm` or `slurm:PARTITION`, with `--login` and `--slurm-prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Via {
    pub partition: Option<String>,
    /// `--login`: the inventory host srun runs on.
    pub login: Option<String>,
    /// `--slurm-prefix`: where Slurm is installed on the login node (its programs in `bin/`).
    pub slurm_prefix: Option<String>,
}

impl Via {
    pub fn parse(spec: &str) -> Result<Via, String> {
        let (engine, part) = match spec.split_once(':') {
            Some((e, p)) => (e, Some(p)),
            None => (spec, None),
        };
        if engine != "slurm" {
            return Err(format!(
                "--via {spec}: unknown engine `{engine}`; the one known is `slurm` (--via slurm or --via slurm:PARTITION)"
            ));
        }
        match part {
            Some(p)
                if p.is_empty()
                    || !p
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                Err(format!(
                    "--via {spec}: `{p}` is not a Slurm partition name (letters, digits, - _ .)"
                ))
            }
            p => Ok(Via {
                partition: p.map(str::to_string),
                ..Via::default()
            }),
        }
    }
}

/// A Slurm node's state as `sinfo` shows it, and whether a task can start there now.
fn usable(state: &str) -> bool {
    // sinfo marks states with suffixes: `*` not responding, `~` powered off, `#` powering
    // up, `!` powering down, `%` ... ; any of them means "not now".
    matches!(state, "idle" | "mixed")
}

impl Via {
    /// The flags `--via` needs and those it refuses, before anything is read: an inventory,
    /// hosts or groups to run on, and not `--local`.
    pub fn check(&self, inventory: bool, targets: bool, local: bool) -> Result<(), Error> {
        if self.login.is_none() {
            return Err(usage("--via slurm needs --login HOST: the login or master node (an inventory host) the controller connects to and runs srun on"));
        }
        if !inventory || !targets {
            return Err(usage(
                "--via slurm needs -i INVENTORY and the nodes to run on (--host NAME or --group NAME)",
            ));
        }
        if local {
            return Err(usage(
                "--via slurm and --local do not go together: --local runs on this machine",
            ));
        }
        Ok(())
    }
}

/// The run flags each node's own run is given.
pub struct NodeFlags {
    pub timeout: u64,
    pub dry_run: bool,
    pub diff: bool,
}

/// What `--via` adds before any host is touched: the login node, the Slurm node each host
/// stands for with its variables, and the files the nodes need.
pub fn plan(cfg: NodeFlags, via: Via, inv: &Inventory, prepared: &Prepared) -> Result<Job, Error> {
    let login = via.login.clone().unwrap_or_default();
    let login_host = inv
        .target(&login)
        .map_err(|e| usage(format!("--login {login}: {e}")))?;
    // Named on the command line like a --host: a name that does not resolve is a typo.
    crate::inventory::check_resolvable(std::slice::from_ref(&login_host))
        .map_err(|e| usage(format!("--login {login}: {}", e.message)))?;
    let slurm_dirs = slurm_dirs(&login_host, via.slurm_prefix.as_deref());
    // Slurm node name -> inventory host, and the node file.
    let mut nodes = NodeFile {
        nodes: BTreeMap::new(),
    };
    let mut host_of: HashMap<String, String> = HashMap::new();
    for (t, vars) in &prepared.per_host {
        let node = slurm_name(t);
        if let Some(other) = host_of.get(&node) {
            return Err(usage(format!(
                "hosts {other} and {} both stand for Slurm node {node}: give each a distinct `{NODE_VAR}` variable",
                t.name
            )));
        }
        let json: serde_json::Value =
            rhai::serde::from_dynamic(&rhai::Dynamic::from_map(vars.clone())).map_err(|e| {
                usage(format!(
                    "variables of {}: cannot be sent to the node: {e}",
                    t.name
                ))
            })?;
        let vars = match json {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        host_of.insert(node.clone(), t.name.clone());
        nodes.nodes.insert(
            node,
            NodeEntry {
                host: t.name.clone(),
                vars,
            },
        );
    }
    let files = bundle_files(&prepared.dir).map_err(usage)?;
    let recipe_file = match Path::new(&prepared.source).file_name() {
        Some(f) => f.to_string_lossy().into_owned(),
        None => return Err(usage(format!("{}: not a recipe file", prepared.source))),
    };
    // The node's own run: node-local, JSON Lines back, the controller's run flags.
    let mut node_args = vec![
        "--local".to_string(),
        "--slurm-node".into(),
        "\"$d/nodes.json\"".into(),
        "--json".into(),
        "--timeout".into(),
        cfg.timeout.to_string(),
    ];
    if cfg.dry_run {
        node_args.push("--dry-run".into());
    }
    if cfg.diff {
        node_args.push("--diff".into());
    }
    Ok(Job {
        partition: via.partition,
        login,
        slurm_dirs,
        nodes,
        host_of,
        hosts: prepared
            .per_host
            .iter()
            .map(|(t, _)| t.name.clone())
            .collect(),
        files,
        recipe_file,
        node_args,
        timeout: cfg.timeout,
    })
}

/// The Slurm node name of an inventory host: its `slurm_node` variable, else its name.
fn slurm_name(t: &Target) -> String {
    t.vars
        .get(NODE_VAR)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| t.name.clone())
}

/// The folders where the login node's `sinfo` and `srun` may be, in order, each with why:
/// `--slurm-prefix`, else what the recipes would use for that host (its `slurm_install` and
/// `slurm_prefix` from the inventory, with the recipes' defaults `source` and `/usr/local`).
/// The login shell's PATH is tried after them.
fn slurm_dirs(login: &Target, option: Option<&str>) -> Vec<(String, String)> {
    if let Some(p) = option {
        return vec![(
            format!("{}/bin", p.trim_end_matches('/')),
            "--slurm-prefix".into(),
        )];
    }
    let var = |k: &str| {
        login
            .vars
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let install = var("slurm_install");
    let prefix = var("slurm_prefix");
    let why = |what: &str| format!("{what} of {} in the inventory", login.name);
    match (install.as_deref(), prefix) {
        (Some("packages"), _) => vec![("/usr/bin".into(), why("slurm_install = \"packages\""))],
        (_, Some(p)) => vec![(
            format!("{}/bin", p.trim_end_matches('/')),
            why(&format!("slurm_prefix = {p:?}")),
        )],
        _ => vec![(
            "/usr/local/bin".into(),
            "the recipes' default slurm_prefix".into(),
        )],
    }
}

/// A command that finds `sinfo` and `srun` in `dirs`, then on PATH, and runs `sinfo ARGS`.
/// Its first two lines are the two programs' paths, or `-` and the PATH it searched.
fn sinfo_cmd(dirs: &[(String, String)], args: &str) -> String {
    let list: Vec<String> = dirs.iter().map(|(d, _)| quote(d)).collect();
    format!(
        "S=; R=; for d in {}; do if [ -x \"$d/sinfo\" ] && [ -x \"$d/srun\" ]; then S=$d/sinfo; R=$d/srun; break; fi; done; \
         [ -n \"$S\" ] || {{ S=$(command -v sinfo) && R=$(command -v srun); }} || S=; \
         case $S in /*) ;; *) S=;; esac; case $R in /*) ;; *) S=;; esac; \
         [ -n \"$S\" ] || {{ printf -- '-\\n%s\\n' \"$PATH\"; exit 0; }}; \
         printf '%s\\n%s\\n' \"$S\" \"$R\"; exec \"$S\" {args}",
        list.join(" ")
    )
}

/// The first two lines of [`sinfo_cmd`]'s reply: the two programs, or an error that says
/// what was tried.
fn found_slurm(
    reply: &str,
    dirs: &[(String, String)],
    login: &str,
) -> Result<(String, String), String> {
    let mut lines = reply.lines();
    let (s, r) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    if s.starts_with('/') && r.starts_with('/') {
        return Ok((s.to_string(), r.to_string()));
    }
    let tried: Vec<String> = dirs.iter().map(|(d, why)| format!("{d} ({why})")).collect();
    Err(format!(
        "sinfo and srun not found on the login node {login}: tried {}, then its PATH ({r}). \
         Set `slurm_prefix` (or `slurm_install = \"packages\"`) for {login} in the inventory, as \
         the recipes that installed Slurm read them, or give --slurm-prefix DIR",
        tried.join(", ")
    ))
}

/// Files the nodes need, as (path in the bundle, path here): the recipe's folder as
/// `recipes/`, and the first stdlib folder the engine would search as `stdlib/`.
fn bundle_files(recipe_dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out = Vec::new();
    let mut total = 0u64;
    walk(recipe_dir, "recipes", &mut out, &mut total)?;
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let here = canon(recipe_dir);
    if let Some(lib) = crate::modules::module_paths(recipe_dir)
        .into_iter()
        .find(|p| canon(p) != here)
    {
        walk(&lib, "stdlib", &mut out, &mut total)?;
    }
    Ok(out)
}

fn walk(
    dir: &Path,
    prefix: &str,
    out: &mut Vec<(String, PathBuf)>,
    total: &mut u64,
) -> Result<(), String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let rel = format!("{prefix}/{name}");
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, &rel, out, total)?;
        } else if meta.is_file() {
            *total += meta.len();
            if *total > MAX_BUNDLE {
                return Err(format!(
                    "{}: the recipe's folder holds over {} MiB; --via slurm sends it to every node, so keep large files (tarballs) on a file server and fetch them with download()",
                    path.display(),
                    MAX_BUNDLE >> 20
                ));
            }
            out.push((rel, path));
        }
    }
    Ok(())
}

/// A `--via` run, checked and ready: everything the login node and the nodes are sent.
pub struct Job {
    partition: Option<String>,
    login: String,
    /// Folders that may hold `sinfo` and `srun` on the login node, each with why it is tried.
    slurm_dirs: Vec<(String, String)>,
    nodes: NodeFile,
    host_of: HashMap<String, String>,
    /// The inventory hosts, in the order given.
    pub hosts: Vec<String>,
    files: Vec<(String, PathBuf)>,
    recipe_file: String,
    /// The flags of each node's own `recipe run`.
    node_args: Vec<String>,
    /// `--timeout`, in seconds.
    timeout: u64,
}

impl Job {
    /// Runs the job through the run's reporter and connections; every host ends with a
    /// recap: its node's, or why it did not run.
    pub async fn drive(&self, r: &Run) {
        let rep = &r.ctx.reporter;
        let res = match r.ctx.hosts.connection_to(&self.login).await {
            Ok(c) => self.run(&c, rep).await,
            Err(e) => Err(format!("login node {}: {e}", self.login)),
        };
        if let Err(e) = res {
            // Nothing ran: every selected host gets the reason.
            for h in &self.hosts {
                if !rep.has_recap(h) {
                    rep.finish_host(h, true, Some(format!("not run: {e}")), None);
                }
            }
        }
    }

    async fn run(&self, conn: &Arc<Connection>, rep: &Reporter) -> Result<(), String> {
        let login = &self.login;
        let t = Some(Duration::from_secs(120));
        let out = conn
            .exec("umask 077 && mktemp -d /tmp/recipe-via.XXXXXXXX", None, t)
            .await
            .map_err(|e| e.to_string())?;
        let stage = out.stdout_str().trim().to_string();
        if !out.ok() || !stage.starts_with("/tmp/recipe-via.") {
            return Err(format!(
                "cannot make a staging folder on {login}: {}",
                out.stderr_str().trim()
            ));
        }
        let res = self.staged(conn, &stage, rep).await;
        let _ = conn
            .exec(&format!("rm -rf -- {}", quote(&stage)), None, t)
            .await;
        res
    }

    async fn staged(
        &self,
        conn: &Arc<Connection>,
        stage: &str,
        rep: &Reporter,
    ) -> Result<(), String> {
        let login = &self.login;
        let t = Some(Duration::from_secs(600));
        let qs = quote(stage);
        let put = |rel: String, data: Vec<u8>, mode: &'static str| {
            let path = format!("{stage}/b/{rel}");
            let dir = Path::new(&path)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| stage.to_string());
            let cmd = format!(
                "mkdir -p -- {} && cat > {} && chmod {mode} {}",
                quote(&dir),
                quote(&path),
                quote(&path)
            );
            async move {
                let out = conn
                    .exec(&cmd, Some(&data), t)
                    .await
                    .map_err(|e| e.to_string())?;
                if out.ok() {
                    Ok(())
                } else {
                    Err(format!(
                        "cannot stage {rel} on {login}: {}",
                        out.stderr_str().trim()
                    ))
                }
            }
        };
        let exe = std::env::current_exe().map_err(|e| {
            format!("cannot find this program's own binary to send to the nodes: {e}")
        })?;
        let bin = std::fs::read(&exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
        put("recipe".into(), bin, "0755").await?;
        for (rel, path) in &self.files {
            let data =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            put(rel.clone(), data, "0644").await?;
        }
        let node_json =
            serde_json::to_vec(&self.nodes).map_err(|e| format!("internal error: {e}"))?;
        put("nodes.json".into(), node_json, "0600").await?;

        // Which nodes can take a task now; the others are reported and left out.
        let names: Vec<&str> = self.nodes.nodes.keys().map(String::as_str).collect();
        let part = self
            .partition
            .as_ref()
            .map(|p| format!(" -p {}", quote(p)))
            .unwrap_or_default();
        // Where Slurm is, then which nodes can take a task now: one round trip.
        let q = sinfo_cmd(
            &self.slurm_dirs,
            &format!("-h -N{part} -n {} -o '%N|%T|%E'", quote(&names.join(","))),
        );
        let out = conn.exec(&q, None, t).await.map_err(|e| e.to_string())?;
        let reply = out.stdout_str();
        let (sinfo, srun_bin) = found_slurm(&reply, &self.slurm_dirs, login)?;
        if !out.ok() {
            return Err(format!(
                "{sinfo} failed on {login} (is Slurm up there?): {}",
                out.stderr_str().trim()
            ));
        }
        let mut state: HashMap<String, (String, String)> = HashMap::new();
        for l in reply.lines().skip(2) {
            let mut it = l.splitn(3, '|');
            if let (Some(n), Some(s)) = (it.next(), it.next()) {
                let reason = it.next().unwrap_or("none").trim().to_string();
                state
                    .entry(n.trim().to_string())
                    .or_insert((s.trim().to_string(), reason));
            }
        }
        let mut run_on = Vec::new();
        for (node, e) in &self.nodes.nodes {
            match state.get(node) {
                Some((s, _)) if usable(s) => run_on.push(node.clone()),
                Some((s, reason)) => {
                    let why = if reason == "none" || reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    };
                    rep.finish_host(
                        &e.host,
                        true,
                        Some(format!(
                            "Slurm node {node} is {s}{why}: not run (it runs when the node is idle or mixed)"
                        )),
                        None,
                    );
                }
                None => rep.finish_host(
                    &e.host,
                    true,
                    Some(format!(
                        "{node} is not a Slurm node{}: not run (sinfo on {login} does not list it; set the host's `{NODE_VAR}` variable if its Slurm name differs)",
                        self.partition.as_ref().map(|p| format!(" of partition {p}")).unwrap_or_default()
                    )),
                    None,
                ),
            }
        }
        if run_on.is_empty() {
            return Ok(());
        }
        // Stopped before srun: nothing started on any node.
        if signals::stop() != signals::Stop::Running {
            return Err(signals::reason());
        }
        // Each task: a private folder it may run programs from, the bundle from stdin, the
        // run, the folder removed.
        let node_script = format!(
            "{NODE_DIR} tar -xzf - -C \"$d\" || {{ echo \"cannot unpack the recipe bundle on $n\" >&2; exit 97; }}; \
             \"$d/recipe\" run \"$d/recipes/\"{} {}",
            quote(&self.recipe_file),
            self.node_args.join(" ")
        );
        let srun = format!(
            "cd {qs}/b && tar -czf ../bundle.tgz . && \
             exec {} -J recipe-via{part} -N {n} -n {n} --ntasks-per-node=1 -w {} --immediate={ALLOC_WAIT_SECS} \
             --no-kill --kill-on-bad-exit=0 --input=all -l sh -c {} < ../bundle.tgz",
            quote(&srun_bin),
            quote(&run_on.join(",")),
            quote(&node_script),
            n = run_on.len(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let limit = Duration::from_secs(self.timeout.max(1) + ALLOC_WAIT_SECS + 60);
        let srun_fut = Box::pin(conn.stream(&srun, None, Some(tx), Some(limit)));
        let mut seen: HashMap<String, bool> = HashMap::new();
        let mut pending = Vec::new();
        let read = async {
            while let Some(chunk) = rx.recv().await {
                pending.extend_from_slice(&chunk);
                while let Some(at) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=at).collect();
                    self.line(&String::from_utf8_lossy(&line), &mut seen, rep);
                }
            }
            if !pending.is_empty() {
                self.line(&String::from_utf8_lossy(&pending), &mut seen, rep);
            }
        };
        // A second Ctrl-C abandons the tasks: their channel closes, and srun with it.
        let res = tokio::select! {
            (res, ()) = async { tokio::join!(srun_fut, read) } => res,
            _ = signals::reached(signals::Stop::Now) => {
                Err(TransportError::Interrupted(signals::reason()))
            }
        };
        let (status, stderr) = match res {
            Ok(o) => (o.status, o.stderr_str()),
            Err(e) => (-1, e.to_string()),
        };
        // Every node that ran gives its own recap; one that did not says why, from srun.
        for node in &run_on {
            let Some(host) = self.host_of.get(node) else {
                continue;
            };
            if seen.get(host).copied().unwrap_or(false) {
                continue;
            }
            let said = stderr_about(&stderr, node, &run_on);
            rep.finish_host(
                host,
                false,
                Some(format!(
                    "no report from Slurm node {node} (srun exit status {status}){}",
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(":\n{said}")
                    }
                )),
                None,
            );
        }
        Ok(())
    }

    /// One line of srun's output: `TASK: {json}`.
    fn line(&self, raw: &str, seen: &mut HashMap<String, bool>, rep: &Reporter) {
        let l = raw.trim_end_matches(['\n', '\r']);
        let json = match l.split_once(": ") {
            Some((task, rest)) if task.trim().chars().all(|c| c.is_ascii_digit()) => rest,
            _ => l,
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            if !json.trim().is_empty() {
                rep.note("slurm", json);
            }
            return;
        };
        // A node reports only for the host it was given; anything else is ignored.
        match v.get("event").and_then(|e| e.as_str()) {
            Some("step") => {
                if let Ok(s) = serde_json::from_value::<StepEvent>(v) {
                    if self.known(&s.host) {
                        rep.step(s);
                    }
                }
            }
            Some("note") => {
                if let Ok(n) = serde_json::from_value::<NoteEvent>(v) {
                    if self.known(&n.host) {
                        rep.note(&n.host, &n.msg);
                    }
                }
            }
            Some("progress") => {
                if let Ok(p) = serde_json::from_value::<ProgressEvent>(v) {
                    if self.known(&p.host) {
                        rep.remote_running(p);
                    }
                }
            }
            Some("recap") => {
                if let Ok(r) = serde_json::from_value::<Recap>(v) {
                    if self.known(&r.host) {
                        seen.insert(r.host.clone(), true);
                        rep.finish_host(&r.host, r.unreachable, r.msg, r.stopped_at);
                    }
                }
            }
            _ => {}
        }
    }

    /// A node reports only for the host it was given; anything else is ignored.
    fn known(&self, host: &str) -> bool {
        self.host_of.values().any(|h| h == host)
    }
}

/// srun's error lines about `node` (by name or by its task number), else all of them.
fn stderr_about(stderr: &str, node: &str, run_on: &[String]) -> String {
    let task = run_on.iter().position(|n| n == node);
    let mine: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains(node) || task.is_some_and(|t| l.trim_start().starts_with(&format!("{t}: ")))
        })
        .collect();
    let lines: Vec<&str> = if mine.is_empty() {
        stderr.lines().collect()
    } else {
        mine
    };
    let n = lines.len();
    lines[n.saturating_sub(10)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_spec_is_checked() {
        assert_eq!(Via::parse("slurm"), Ok(Via::default()));
        assert_eq!(
            Via::parse("slurm:debug"),
            Ok(Via {
                partition: Some("debug".into()),
                ..Via::default()
            })
        );
        let e = Via::parse("pbs").err().unwrap_or_default();
        assert!(e.contains("unknown engine `pbs`"), "{e}");
        let e = Via::parse("slurm:a b").err().unwrap_or_default();
        assert!(e.contains("not a Slurm partition name"), "{e}");
    }

    #[test]
    fn only_idle_and_mixed_nodes_take_a_task() {
        for s in ["idle", "mixed"] {
            assert!(usable(s));
        }
        for s in [
            "down*",
            "drained",
            "draining",
            "allocated",
            "idle~",
            "idle*",
            "completing",
        ] {
            assert!(!usable(s), "{s}");
        }
    }

    fn login(vars: serde_json::Value) -> Target {
        let mut t = crate::run::this_machine("login1", &crate::inventory::Inventory::empty());
        if let serde_json::Value::Object(m) = vars {
            t.vars = m.into_iter().collect();
        }
        t
    }

    #[test]
    fn slurm_is_looked_for_where_the_recipes_put_it() {
        let dirs = |v, o| {
            slurm_dirs(&login(v), o)
                .into_iter()
                .map(|(d, _)| d)
                .collect::<Vec<_>>()
        };
        assert_eq!(dirs(serde_json::json!({}), None), ["/usr/local/bin"]);
        assert_eq!(
            dirs(serde_json::json!({"slurm_prefix": "/opt/hpc/slurm/"}), None),
            ["/opt/hpc/slurm/bin"]
        );
        assert_eq!(
            dirs(
                serde_json::json!({"slurm_install": "packages", "slurm_prefix": "/opt/x"}),
                None
            ),
            ["/usr/bin"]
        );
        assert_eq!(
            dirs(
                serde_json::json!({"slurm_prefix": "/opt/x"}),
                Some("/site/slurm")
            ),
            ["/site/slurm/bin"]
        );
    }

    /// The lookup runs in /bin/sh here against a folder with the two programs in it (empty
    /// scripts: only where they are matters), then against none.
    #[test]
    fn the_lookup_finds_the_programs_or_says_what_it_tried() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("slurm/bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        for p in ["sinfo", "srun"] {
            let f = bin.join(p);
            std::fs::write(&f, "#!/bin/sh\necho \"node1|idle|none $*\"\n").expect("write");
            std::process::Command::new("chmod")
                .arg("755")
                .arg(&f)
                .status()
                .expect("chmod");
        }
        let run = |dirs: &[(String, String)]| {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(sinfo_cmd(dirs, "-h"))
                .env("PATH", "/usr/bin:/bin")
                .output()
                .expect("sh");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let here = vec![(bin.display().to_string(), "a test".to_string())];
        let reply = run(&here);
        let (s, r) = found_slurm(&reply, &here, "login1").expect("found");
        assert_eq!(s, bin.join("sinfo").display().to_string());
        assert_eq!(r, bin.join("srun").display().to_string());
        assert_eq!(reply.lines().nth(2), Some("node1|idle|none -h"), "{reply}");
        let nowhere = vec![(
            "/no/such/bin".to_string(),
            "slurm_prefix of login1".to_string(),
        )];
        let e = found_slurm(&run(&nowhere), &nowhere, "login1").expect_err("not found");
        assert!(
            e.contains(
                "tried /no/such/bin (slurm_prefix of login1), then its PATH (/usr/bin:/bin)"
            ) && e.contains("--slurm-prefix"),
            "{e}"
        );
    }

    #[test]
    fn srun_errors_are_attributed_to_their_node() {
        let err =
            "srun: error: w2: task 1: Exited with exit code 97\n1: cannot unpack\nsrun: other\n";
        let run_on = vec!["w1".to_string(), "w2".to_string()];
        let s = stderr_about(err, "w2", &run_on);
        assert!(s.contains("task 1: Exited"), "{s}");
        assert!(s.contains("cannot unpack"), "{s}");
        assert!(!s.contains("srun: other"), "{s}");
    }
}
