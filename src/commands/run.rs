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

/// The flags of `recipe run`, defined once: clap reads them (flattened into the command
/// line), the run and its `--via` form use them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunConfig {
    /// Recipe path, or a bare name looked up in ./recipes/
    pub recipe: String,
    /// Target host (inventory name, or anything `ssh NAME` accepts); repeatable
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Target inventory group ("all" = every host); repeatable
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Inventory file (TOML)
    #[arg(short = 'i', long, value_name = "INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Set a declared variable; repeatable
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Check and report what would change; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Show unified diffs of file contents
    #[arg(long)]
    pub diff: bool,
    /// Hosts worked on at once
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub forks: usize,
    /// JSON Lines events on stdout, nothing else
    #[arg(long)]
    pub json: bool,
    /// More output (-v: timings and debug notes; -vv: diffs of changes too)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only failures and the recap (no line per step)
    #[arg(short, long)]
    pub quiet: bool,
    /// Default time limit of one command, in seconds
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub timeout: u64,
    /// Rolling run: N hosts (or P% of them) at a time, in inventory order, each drained
    /// before its change and resumed after it (stdlib/rolling.rhai; docs/rolling.md)
    #[arg(long, value_name = "N|P%")]
    pub serial: Option<run::rolling::Serial>,
    /// With --serial: stop the roll once K hosts failed (default 1: at the first)
    #[arg(long, value_name = "K", default_value_t = 1, requires = "serial",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_fail: u32,
    /// With --serial: the change needs a reboot of each node (Slurm's `scontrol reboot` where
    /// it has a RebootProgram)
    #[arg(long, requires = "serial")]
    pub reboot: bool,
    /// With --serial: longest wait for a node's jobs and pods to leave it, in seconds
    #[arg(long, default_value_t = 3600, value_name = "SECS", requires = "serial")]
    pub drain_timeout: u64,
    /// How to reach the hosts (set from the connection flags).
    #[arg(skip)]
    pub conn: ConnConfig,
    /// A task of --via slurm: the file of per-node hosts and variables
    #[arg(long, value_name = "FILE", hide = true)]
    pub slurm_node: Option<PathBuf>,
}

impl RunConfig {
    /// The reporter these flags ask for.
    pub fn reporter(&self, redactor: Redactor) -> Reporter {
        let mode = if self.slurm_node.is_some() {
            Mode::Node
        } else if self.json {
            Mode::Json
        } else {
            Mode::Human
        };
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
    let roll = match cfg.serial {
        None => None,
        Some(_) if !matches!(mode, RunsOn::Hosts) => {
            return Err(usage(
                "--serial needs hosts to roll over: give --host or --group (with -i INVENTORY)",
            ))
        }
        Some(serial) => {
            run::rolling::check_module(&prepared.dir)?;
            Some(Arc::new(run::rolling::Roll {
                serial,
                max_fail: cfg.max_fail as usize,
                reboot: cfg.reboot,
                drain_timeout: cfg.drain_timeout.max(1),
                when: run::rolling::utc_now(),
            }))
        }
    };
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
        roll,
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
    // A second signal: the recap is out and the connections are closed; its status.
    if let Some(code) = signals::abort_status() {
        return Err(Error::Signal(code));
    }
    res.map_err(|e| e.map_text(|t| reporter.redactor().redact(t)))
}
