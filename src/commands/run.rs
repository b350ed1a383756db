//! `recipe run`: its flags, its modes (hosts, controller, a `--via slurm` node, `--via slurm`)
//! and the one pipeline they all go through.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use super::flags::RunConfig;
use super::node::NodeEntry;
use super::via::Via;
use crate::context::RunCtx;
use crate::errors::{failed, usage, Error};
use crate::host::Hosts;
use crate::inventory::{self, Inventory, Target};
use crate::report::{self, Reporter};
use crate::run::{self, signals, Prepared, Run};
use crate::secrets::Redactor;

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
        if let Some(v) = via {
            v.check(cfg)?;
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
                Ok(Work::OnHosts(p))
            }
            Mode::Node(_) => Ok(Work::OnHosts(p)),
            Mode::Controller => Ok(Work::Controller(p)),
            Mode::Via(v) => Ok(Work::Via(Box::new(super::via::plan(cfg, v, inv, &p)?))),
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
    /// The recipe once on the controller (its `play()`s run others through the same run).
    Controller(Prepared),
    /// The recipe on each host through srun.
    Via(Box<super::via::Job>),
}

impl Work {
    /// Hosts the recap will list, when known before the run (a controller's are not).
    fn hosts(&self) -> Option<usize> {
        match self {
            Work::OnHosts(p) => Some(p.per_host.len()),
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
    let reporter = Reporter::new(report_mode, cfg.verbose, cfg.quiet, cfg.diff, redactor);
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
