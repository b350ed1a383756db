//! `recipe run`: pick the mode (hosts, controller, a `--via slurm` node), build the run and drive it.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::context::RunCtx;
use crate::errors::{failed, usage, Error};
use crate::host::{ConnConfig, Hosts};
use crate::inventory::{self, Inventory, Target};
use crate::report::{Mode, Reporter};
use crate::run::{self, signals, Run};
use crate::secrets::Redactor;

/// Everything `recipe run` needs, free of clap types.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub recipe: String,
    pub hosts: Vec<String>,
    pub groups: Vec<String>,
    pub inventory: Option<PathBuf>,
    pub vars: Vec<String>,
    pub dry_run: bool,
    pub diff: bool,
    pub forks: usize,
    pub json: bool,
    pub verbose: u8,
    pub quiet: bool,
    pub conn: ConnConfig,
    pub timeout: u64,
    /// Node side of `--via slurm`: the file of per-node hosts and variables.
    pub slurm_node: Option<PathBuf>,
}

impl RunConfig {
    /// The reporter these flags ask for.
    pub fn reporter(&self, redactor: Redactor) -> Reporter {
        let mode = if self.json { Mode::Json } else { Mode::Human };
        Reporter::new(mode, self.verbose, self.quiet, self.diff, redactor)
    }
}

/// Who the recipe runs for.
enum RunsOn {
    /// `--host`/`--group`/`--local`: on each target.
    Hosts,
    /// `-i` and no hosts: once here, orchestrating others with `play()`.
    Controller,
    /// A task of `--via slurm`: this machine, as the inventory host it stands for.
    Node(String),
}

pub fn run(cfg: RunConfig) -> Result<(), Error> {
    let node = match &cfg.slurm_node {
        Some(f) => Some(super::node::node_entry(f).map_err(usage)?),
        None => None,
    };
    let mode = match &node {
        Some(e) => RunsOn::Node(e.host.clone()),
        None if cfg.hosts.is_empty() && cfg.groups.is_empty() && !cfg.conn.local => {
            RunsOn::Controller
        }
        None => RunsOn::Hosts,
    };
    let (inv, targets) = match (&mode, &node) {
        (RunsOn::Node(_), Some(e)) => {
            // The variables the controller computed for that host.
            let inv = Inventory::empty();
            let mut t = run::this_machine(&e.host, &inv);
            t.vars = e.vars.clone();
            (inv, vec![t])
        }
        (RunsOn::Controller, _) => match &cfg.inventory {
            Some(p) => {
                let inv = inventory::load(p).map_err(usage)?;
                let me = run::this_machine("controller", &inv);
                (inv, vec![me])
            }
            None => return Err(usage("no hosts: give --host NAME, --group NAME (with -i INVENTORY), or --local; \
                                      with -i and no hosts the recipe runs on the controller (for play())")),
        },
        _ => run::targets(&cfg.inventory, &cfg.hosts, &cfg.groups, cfg.conn.local)?,
    };
    let redactor = Redactor::default();
    let hide = |e: Error| e.map_text(|t| redactor.redact(t));
    let cli = run::cli_vars(&cfg.vars, &redactor).map_err(hide)?;
    let prepared =
        run::prepare(&cfg.recipe, &targets, &cli, &rhai::Map::new(), &redactor).map_err(hide)?;
    // A `--host` whose name does not resolve is a typo, not an outage: refuse it before any
    // connection. Group members are left to the run (one stale DNS entry must not stop a
    // thousand hosts) and reported unreachable there.
    if matches!(mode, RunsOn::Hosts) && !cfg.conn.local {
        let named: Vec<Target> = targets
            .iter()
            .filter(|t| cfg.hosts.contains(&t.name))
            .cloned()
            .collect();
        inventory::check_resolvable(&named).map_err(usage)?;
    }
    let rt = run::runtime()?;
    let reporter = cfg.reporter(redactor);
    let mut hosts = Hosts::new(Arc::new(inv), &cfg.conn, cfg.conn.local || node.is_some());
    if let RunsOn::Node(me) = &mode {
        hosts.only = Some(me.clone());
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    hosts.ssh.interrupted = Some(interrupted.clone());
    let r = Run {
        ctx: Arc::new(RunCtx {
            dry_run: cfg.dry_run,
            timeout: Duration::from_secs(cfg.timeout.max(1)),
            reporter: reporter.clone(),
            hosts: Arc::new(hosts),
            rt: rt.handle().clone(),
            interrupted,
            planned: Default::default(),
            downloads: Default::default(),
        }),
        forks: cfg.forks,
        keep_connections: matches!(mode, RunsOn::Controller),
    };
    let controller = matches!(mode, RunsOn::Controller);
    if !controller {
        reporter.start(prepared.per_host.len());
    }
    let res = rt.block_on(async {
        tokio::spawn(signals::watch(r.ctx.interrupted.clone()));
        let stopped = if controller {
            let b = r.clone();
            match tokio::task::spawn_blocking(move || crate::controller::run(b, prepared)).await {
                Ok(res) => res,
                Err(e) => Err(failed(format!("internal error: {e}"))),
            }
        } else {
            r.execute(prepared).await;
            Ok(())
        };
        let end = r.finish().await;
        // A controller recipe's own error says most; else the hosts' recap.
        stopped.and(end)
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    res.map_err(|e| e.map_text(|t| reporter.redactor().redact(&signals::stopped_by(t))))
}
