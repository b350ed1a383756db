//! `recipe run --via slurm`: run a recipe node-local on Slurm nodes through `srun`, from one SSH connection to a login node.
//!
//! The controller checks the recipe and computes every host's variables as usual, then
//! connects to the login node only. There it stages this binary, the recipe's folder, the
//! stdlib and a file of per-node variables, and starts one `srun` task per usable node with
//! the bundle on the task's standard input (srun broadcasts it). Each task unpacks it into a
//! private temporary folder, runs `recipe run --local --json` as the inventory host it stands
//! for, and removes the folder. The tasks' JSON Lines come back through srun and feed the
//! same reporter, recap and exit status as the SSH path.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::node::{NodeEntry, NodeFile};
use super::run::RunConfig;
use crate::errors::{usage, Error};
use crate::host::Hosts;
use crate::inventory::Target;
use crate::report::{Reporter, Status, StepEvent};
use crate::run;
use crate::secrets::Redactor;
use crate::transport::{quote, Connection};

/// The host variable naming a host's Slurm node when it differs from the inventory name.
pub const NODE_VAR: &str = "slurm_node";

/// Files bigger than this in the recipe's folder are refused: they would be sent to every node.
const MAX_BUNDLE: u64 = 64 * 1024 * 1024;

/// How long srun may wait for the nodes to be allocated before it gives up.
const ALLOC_WAIT_SECS: u64 = 60;

/// `--via` parsed: `slurm` or `slurm:PARTITION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub partition: Option<String>,
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

/// One step event as a node printed it (owned strings, unlike [`StepEvent`]).
#[derive(Debug, serde::Deserialize)]
struct NodeStep {
    host: String,
    recipe: String,
    line: usize,
    #[serde(default)]
    source: Option<String>,
    op: String,
    target: String,
    status: Status,
    dry_run: bool,
    ms: u64,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    changes: Vec<String>,
    #[serde(default)]
    diff: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct NodeRecap {
    host: String,
    #[serde(default)]
    unreachable: bool,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    stopped_at: Option<String>,
}

/// Runs `cfg.recipe` on the selected hosts through Slurm, from the login node `login`.
pub fn run(cfg: RunConfig, via: Via, login: Option<String>) -> Result<(), Error> {
    let Some(login) = login else {
        return Err(usage("--via slurm needs --login HOST: the login or master node (an inventory host) the controller connects to and runs srun on"));
    };
    if cfg.inventory.is_none() || (cfg.hosts.is_empty() && cfg.groups.is_empty()) {
        return Err(usage(
            "--via slurm needs -i INVENTORY and the nodes to run on (--host NAME or --group NAME)",
        ));
    }
    if cfg.conn.local {
        return Err(usage(
            "--via slurm and --local do not go together: --local runs on this machine",
        ));
    }
    let (inv, targets) = run::targets(&cfg.inventory, &cfg.hosts, &cfg.groups, false)?;
    inv.target(&login)
        .map_err(|e| usage(format!("--login {login}: {e}")))?;
    let redactor = Redactor::default();
    let hide = |e: Error| e.map_text(|t| redactor.redact(t));
    let cli = run::cli_vars(&cfg.vars, &redactor).map_err(hide)?;
    let prepared =
        run::prepare(&cfg.recipe, &targets, &cli, &rhai::Map::new(), &redactor).map_err(hide)?;
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
    let rt = run::runtime()?;
    let reporter = cfg.reporter(redactor);
    let hosts = Hosts::new(Arc::new(inv), &cfg.conn, false);
    reporter.start(prepared.per_host.len());
    let job = Job {
        cfg: &cfg,
        via: &via,
        login: &login,
        nodes,
        host_of,
        files,
        recipe_file,
        reporter: &reporter,
    };
    let res = rt.block_on(async {
        let conn = match hosts.connection_to(&login).await {
            Ok(c) => c,
            Err(e) => return Err(format!("login node {login}: {e}")),
        };
        let r = job.run(&conn).await;
        hosts.close_all().await;
        r
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    if let Err(e) = res {
        // Nothing ran: every selected host gets the reason.
        for (t, _) in &prepared.per_host {
            if !reporter.has_recap(&t.name) {
                reporter.finish_host(&t.name, true, Some(format!("not run: {e}")), None);
            }
        }
    }
    if reporter.finish(cfg.dry_run) {
        Ok(())
    } else {
        Err(Error::HostsFailed)
    }
}

/// The Slurm node name of an inventory host: its `slurm_node` variable, else its name.
fn slurm_name(t: &Target) -> String {
    t.vars
        .get(NODE_VAR)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| t.name.clone())
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

struct Job<'a> {
    cfg: &'a RunConfig,
    via: &'a Via,
    login: &'a str,
    nodes: NodeFile,
    host_of: HashMap<String, String>,
    files: Vec<(String, PathBuf)>,
    recipe_file: String,
    reporter: &'a Reporter,
}

impl Job<'_> {
    async fn run(self, conn: &Arc<Connection>) -> Result<(), String> {
        let login = self.login;
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
        let res = self.staged(conn, &stage).await;
        let _ = conn
            .exec(&format!("rm -rf -- {}", quote(&stage)), None, t)
            .await;
        res
    }

    async fn staged(&self, conn: &Arc<Connection>, stage: &str) -> Result<(), String> {
        let login = self.login;
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
            .via
            .partition
            .as_ref()
            .map(|p| format!(" -p {}", quote(p)))
            .unwrap_or_default();
        let q = format!(
            "sinfo -h -N{part} -n {} -o '%N|%T|%E'",
            quote(&names.join(","))
        );
        let out = conn.exec(&q, None, t).await.map_err(|e| e.to_string())?;
        if !out.ok() {
            return Err(format!(
                "sinfo failed on {login} (is Slurm up there?): {}",
                out.stderr_str().trim()
            ));
        }
        let mut state: HashMap<String, (String, String)> = HashMap::new();
        for l in out.stdout_str().lines() {
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
                    self.reporter.finish_host(
                        &e.host,
                        true,
                        Some(format!(
                            "Slurm node {node} is {s}{why}: not run (it runs when the node is idle or mixed)"
                        )),
                        None,
                    );
                }
                None => self.reporter.finish_host(
                    &e.host,
                    true,
                    Some(format!(
                        "{node} is not a Slurm node{}: not run (sinfo on {login} does not list it; set the host's `{NODE_VAR}` variable if its Slurm name differs)",
                        self.via.partition.as_ref().map(|p| format!(" of partition {p}")).unwrap_or_default()
                    )),
                    None,
                ),
            }
        }
        if run_on.is_empty() {
            return Ok(());
        }
        let mut args = vec![
            "--local".to_string(),
            "--slurm-node".into(),
            "\"$d/nodes.json\"".into(),
            "--json".into(),
            "--timeout".into(),
            self.cfg.timeout.to_string(),
        ];
        if self.cfg.dry_run {
            args.push("--dry-run".into());
        }
        if self.cfg.diff {
            args.push("--diff".into());
        }
        // Each task: a private folder, the bundle from stdin, the run, the folder removed.
        let node_script = format!(
            "d=$(umask 077 && mktemp -d /tmp/recipe-node.XXXXXXXX) || exit 97; trap 'rm -rf \"$d\"' EXIT; \
             tar -xzf - -C \"$d\" || {{ echo \"cannot unpack the recipe bundle on $SLURMD_NODENAME\" >&2; exit 97; }}; \
             \"$d/recipe\" run \"$d/recipes/\"{} {}",
            quote(&self.recipe_file),
            args.join(" ")
        );
        let srun = format!(
            "cd {qs}/b && tar -czf ../bundle.tgz . && \
             exec srun -J recipe-via{part} -N {n} -n {n} --ntasks-per-node=1 -w {} --immediate={ALLOC_WAIT_SECS} \
             --no-kill --kill-on-bad-exit=0 --input=all -l sh -c {} < ../bundle.tgz",
            quote(&run_on.join(",")),
            quote(&node_script),
            n = run_on.len(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let limit = Duration::from_secs(self.cfg.timeout.max(1) + ALLOC_WAIT_SECS + 60);
        let srun_fut = Box::pin(conn.stream(&srun, None, Some(tx), Some(limit)));
        let mut seen: HashMap<String, bool> = HashMap::new();
        let mut pending = Vec::new();
        let read = async {
            while let Some(chunk) = rx.recv().await {
                pending.extend_from_slice(&chunk);
                while let Some(at) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=at).collect();
                    self.line(&String::from_utf8_lossy(&line), &mut seen);
                }
            }
            if !pending.is_empty() {
                self.line(&String::from_utf8_lossy(&pending), &mut seen);
            }
        };
        let (res, ()) = tokio::join!(srun_fut, read);
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
            self.reporter.finish_host(
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
    fn line(&self, raw: &str, seen: &mut HashMap<String, bool>) {
        let l = raw.trim_end_matches(['\n', '\r']);
        let json = match l.split_once(": ") {
            Some((task, rest)) if task.trim().chars().all(|c| c.is_ascii_digit()) => rest,
            _ => l,
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            if !json.trim().is_empty() {
                self.reporter.note("slurm", json);
            }
            return;
        };
        match v.get("event").and_then(|e| e.as_str()) {
            Some("step") => {
                if let Ok(s) = serde_json::from_value::<NodeStep>(v) {
                    if !self.known(&s.host) {
                        return;
                    }
                    self.reporter.step(StepEvent {
                        event: "step",
                        host: s.host,
                        recipe: s.recipe,
                        line: s.line,
                        source: s.source,
                        op: s.op,
                        target: s.target,
                        status: s.status,
                        dry_run: s.dry_run,
                        ms: s.ms,
                        msg: s.msg,
                        changes: s.changes,
                        diff: s.diff,
                    });
                }
            }
            Some("recap") => {
                if let Ok(r) = serde_json::from_value::<NodeRecap>(v) {
                    if !self.known(&r.host) {
                        return;
                    }
                    seen.insert(r.host.clone(), true);
                    self.reporter
                        .finish_host(&r.host, r.unreachable, r.msg, r.stopped_at);
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
        assert_eq!(Via::parse("slurm"), Ok(Via { partition: None }));
        assert_eq!(
            Via::parse("slurm:debug"),
            Ok(Via {
                partition: Some("debug".into())
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
