//! `recipe run`: its flags, its modes (hosts, controller, a `--via slurm` node, `--via slurm`)
//! and the one pipeline they all go through.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::node::NodeEntry;
use super::via::Via;
use crate::context::RunCtx;
use crate::errors::{failed, usage, Error};
use crate::host::{ConnConfig, Hosts};
use crate::inventory::{self, Inventory, Target};
use crate::report::{self, Reporter};
use crate::run::{self, signals, Prepared, Run};
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
    /// With --json: a "progress" event for each running step every SECS seconds
    #[arg(long, value_name = "SECS", requires = "json")]
    pub json_progress: Option<u64>,
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
    /// With --serial: longest wait after the change for a node to pass its health gate
    /// (slurmd answers and registers, the Kubernetes node is Ready), in seconds
    #[arg(long, default_value_t = 120, value_name = "SECS", requires = "serial")]
    pub health_timeout: u64,
    /// With --reboot: longest wait for a rebooted node's sshd to answer from its new boot,
    /// in seconds
    #[arg(long, default_value_t = 900, value_name = "SECS", requires = "reboot")]
    pub reboot_timeout: u64,
    /// How to reach the hosts (set from the connection flags).
    #[arg(skip)]
    pub conn: ConnConfig,
    /// A task of --via slurm: the file of per-node hosts and variables
    #[arg(long, value_name = "FILE", hide = true)]
    pub slurm_node: Option<PathBuf>,
}

/// Who the recipe runs for, and how it reaches them. Every mode goes through the same
/// pipeline ([`run`]): targets, variables and the compiled recipe, the checks made before
/// any host, one reporter, the run and its end (recap, connections closed, exit status).
pub enum Mode {
    /// `--host`/`--group`/`--local`: on each target, over its own connection.
    Hosts,
    /// `-i` and no hosts: once here, orchestrating others with `play()`.
    Controller,
    /// A task of `--via slurm`: this machine, as the inventory host it stands for.
    Node(NodeEntry),
    /// `--via slurm`: on each target through srun, from one connection to a login node.
    Via(Via),
}

impl Mode {
    /// The mode the flags ask for; refuses flags that do not go together.
    pub fn of(cfg: &RunConfig, via: Option<Via>) -> Result<Mode, Error> {
        if via.is_some() && cfg.serial.is_some() {
            // A node cannot drain itself and go on running the change as a Slurm task.
            return Err(usage(
                "--serial cannot go with --via slurm: a task of a Slurm job cannot drain the \
                 node it runs on (docs/rolling.md); roll over SSH instead",
            ));
        }
        if let Some(v) = via {
            let targets = !(cfg.hosts.is_empty() && cfg.groups.is_empty());
            v.check(cfg.inventory.is_some(), targets, cfg.conn.local)?;
            return Ok(Mode::Via(v));
        }
        Ok(match &cfg.slurm_node {
            Some(f) => Mode::Node(super::node::node_entry(f).map_err(usage)?),
            None if cfg.hosts.is_empty() && cfg.groups.is_empty() && !cfg.conn.local => {
                Mode::Controller
            }
            None => Mode::Hosts,
        })
    }

    /// The inventory and the hosts the recipe is prepared for.
    fn targets(&self, cfg: &RunConfig) -> Result<(Inventory, Vec<Target>), Error> {
        match self {
            Mode::Node(e) => {
                // The variables the controller computed for that host.
                let inv = Inventory::empty();
                let mut t = run::this_machine(&e.host, &inv);
                t.vars = e.vars.clone();
                Ok((inv, vec![t]))
            }
            Mode::Controller => match &cfg.inventory {
                Some(p) => {
                    let inv = inventory::load(p).map_err(usage)?;
                    let me = run::this_machine("controller", &inv);
                    Ok((inv, vec![me]))
                }
                None => Err(usage("no hosts: give --host NAME, --group NAME (with -i INVENTORY), or --local; \
                                   with -i and no hosts the recipe runs on the controller (for play())")),
            },
            Mode::Hosts | Mode::Via(_) => {
                run::targets(&cfg.inventory, &cfg.hosts, &cfg.groups, cfg.conn.local)
            }
        }
    }

    /// What the mode checks once the recipe is prepared and before any host is touched,
    /// and the work it will do.
    fn plan(self, cfg: &RunConfig, inv: &Inventory, p: Prepared) -> Result<Work, Error> {
        match self {
            Mode::Hosts => {
                // A `--host` whose name does not resolve is a typo, not an outage: refuse it
                // before any connection. Group members are left to the run (one stale DNS
                // entry must not stop a thousand hosts) and reported unreachable there.
                if !cfg.conn.local {
                    let named: Vec<Target> = p
                        .per_host
                        .iter()
                        .map(|(t, _)| t)
                        .filter(|t| cfg.hosts.contains(&t.name))
                        .cloned()
                        .collect();
                    inventory::check_resolvable(&named).map_err(usage)?;
                }
                match cfg.serial {
                    Some(serial) => {
                        run::rolling::check_module(&p.dir)?;
                        let roll = run::rolling::Roll {
                            serial,
                            max_fail: cfg.max_fail as usize,
                            reboot: cfg.reboot,
                            drain_timeout: cfg.drain_timeout.max(1),
                            health_timeout: cfg.health_timeout.max(1),
                            reboot_timeout: cfg.reboot_timeout.max(1),
                            when: run::rolling::utc_now(),
                        };
                        Ok(Work::Rolling(p, Arc::new(roll)))
                    }
                    None => Ok(Work::OnHosts(p)),
                }
            }
            _ if cfg.serial.is_some() => Err(usage(
                "--serial needs hosts to roll over: give --host or --group (with -i INVENTORY)",
            )),
            Mode::Node(_) => Ok(Work::OnHosts(p)),
            Mode::Controller => Ok(Work::Controller(p)),
            Mode::Via(v) => {
                let flags = super::via::NodeFlags {
                    timeout: cfg.timeout,
                    dry_run: cfg.dry_run,
                    diff: cfg.diff,
                };
                Ok(Work::Via(Box::new(super::via::plan(flags, v, inv, &p)?)))
            }
        }
    }

    fn report_mode(&self, json: bool) -> report::Mode {
        match self {
            Mode::Node(_) => report::Mode::Node,
            _ if json => report::Mode::Json,
            _ => report::Mode::Human,
        }
    }
}

/// A mode's work, ready to run: everything in it was checked before any host.
enum Work {
    /// The recipe on each of its hosts, `--forks` at a time.
    OnHosts(Prepared),
    /// `--serial`: the recipe on its hosts batch after batch, each host drained around it.
    Rolling(Prepared, Arc<run::rolling::Roll>),
    /// The recipe once on the controller (its `play()`s run others through the same run).
    Controller(Prepared),
    /// The recipe on each host through srun.
    Via(Box<super::via::Job>),
}

impl Work {
    /// Hosts the recap will list, when known before the run (a controller's are not).
    fn hosts(&self) -> Option<usize> {
        match self {
            Work::OnHosts(p) | Work::Rolling(p, _) => Some(p.per_host.len()),
            Work::Controller(_) => None,
            Work::Via(j) => Some(j.hosts.len()),
        }
    }

    /// Runs it; Err when a controller recipe stopped (hosts' failures are in the recap).
    async fn drive(self, r: &Run) -> Result<(), Error> {
        match self {
            Work::OnHosts(p) => {
                r.execute(p).await;
                Ok(())
            }
            Work::Rolling(p, roll) => {
                r.execute_rolling(p, roll).await;
                Ok(())
            }
            Work::Controller(p) => {
                let b = r.clone();
                match tokio::task::spawn_blocking(move || crate::controller::run(b, p)).await {
                    Ok(res) => res,
                    Err(e) => Err(failed(format!("internal error: {e}"))),
                }
            }
            Work::Via(job) => {
                job.drive(r).await;
                Ok(())
            }
        }
    }
}

/// `recipe run` in every mode: prepare, check, connect, run, end.
pub fn run(cfg: RunConfig, via: Option<Via>) -> Result<(), Error> {
    let mode = Mode::of(&cfg, via)?;
    let (inv, targets) = mode.targets(&cfg)?;
    let redactor = Redactor::default();
    let hide = |e: Error| e.map_text(|t| redactor.redact(t));
    let cli = run::cli_vars(&cfg.vars, &redactor).map_err(hide)?;
    let prepared =
        run::prepare(&cfg.recipe, &targets, &cli, &rhai::Map::new(), &redactor).map_err(hide)?;
    let local = cfg.conn.local || matches!(mode, Mode::Node(_));
    let only = match &mode {
        Mode::Node(e) => Some(e.host.clone()),
        _ => None,
    };
    let report_mode = mode.report_mode(cfg.json);
    let keep_connections = matches!(mode, Mode::Controller);
    let work = mode.plan(&cfg, &inv, prepared).map_err(hide)?;

    let rt = run::runtime()?;
    let reporter = Reporter::new(report_mode, cfg.verbose, cfg.quiet, cfg.diff, redactor)
        .with_progress_every(cfg.json_progress.map(|s| Duration::from_secs(s.max(1))));
    let mut hosts = Hosts::new(Arc::new(inv), &cfg.conn, local);
    hosts.only = only;
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
        keep_connections,
    };
    if let Some(n) = work.hosts() {
        reporter.start(n);
    }
    let res = rt.block_on(async {
        tokio::spawn(signals::watch(r.ctx.interrupted.clone()));
        let stopped = work.drive(&r).await;
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
