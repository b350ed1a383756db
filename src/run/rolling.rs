//! Rolling runs (`--serial`): the hosts in batches, one batch after the other, each host
//! drained before its change and resumed after it by the editable `rolling` module
//! (stdlib/rolling.rhai); the roll stops after `--max-fail` failed hosts.

use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope, AST};

use super::{Prepared, Run};
use crate::context::HostCtx;
use crate::inventory::Target;
use crate::report::BatchEvent;

/// `--serial`: hosts per batch, as a count or a share of the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serial {
    Count(usize),
    /// 1..=100 per cent of the hosts, rounded down, at least one host.
    Percent(u32),
}

impl FromStr for Serial {
    type Err = String;
    fn from_str(s: &str) -> Result<Serial, String> {
        let bad = || {
            format!("--serial {s:?}: expected a number of hosts (1, 2, ...) or a percentage of them (25%)")
        };
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => Ok(Serial::Percent(n)),
                _ => Err(bad()),
            },
            None => match s.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Serial::Count(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Serial::Count(n) => write!(f, "{n}"),
            Serial::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serial {
    /// Hosts per batch out of `hosts`: a percentage rounds down (as Ansible's `serial`
    /// does) but is never less than one host.
    pub fn size(self, hosts: usize) -> usize {
        match self {
            Serial::Count(n) => n,
            Serial::Percent(p) => (hosts * p as usize / 100).max(1),
        }
    }
}

/// The batches of `hosts` hosts, in inventory order: index ranges, every host in exactly one.
pub fn batches(hosts: usize, serial: Serial) -> Vec<Range<usize>> {
    let size = serial.size(hosts).max(1);
    (0..hosts)
        .step_by(size)
        .map(|start| start..(start + size).min(hosts))
        .collect()
}

/// What a roll does after a batch: go on with the next one, or stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Go,
    /// The message says why (failed hosts reached `--max-fail`, or the run was interrupted).
    Stop(String),
}

/// After a batch: stop once `failed` hosts (over the whole roll) reach `max_fail`.
pub fn after_batch(failed: &[String], max_fail: usize, interrupted: bool) -> Next {
    if interrupted {
        return Next::Stop("the run was interrupted".into());
    }
    let max = max_fail.max(1);
    if failed.len() >= max {
        let who = failed.join(", ");
        let hosts = if failed.len() == 1 { "host" } else { "hosts" };
        return Next::Stop(format!(
            "{} failed {hosts} ({who}) reached --max-fail {max}",
            failed.len()
        ));
    }
    Next::Go
}

/// One rolling run's settings, as handed to the `rolling` module (`roll` in its calls).
#[derive(Debug, Clone)]
pub struct Roll {
    pub serial: Serial,
    pub max_fail: usize,
    /// `--reboot`: the change needs a reboot of the node.
    pub reboot: bool,
    /// `--drain-timeout`: longest wait for a node's jobs and pods to leave it.
    pub drain_timeout: u64,
    /// `--health-timeout`: longest wait for a node to pass its health gate after the change.
    pub health_timeout: u64,
    /// `--reboot-timeout`: longest wait for a rebooted node's sshd to answer from a new boot.
    pub reboot_timeout: u64,
    /// When the roll started (UTC, for the drain reason).
    pub when: String,
}

impl Roll {
    /// The map the module's functions receive for `host`.
    pub fn map(&self, recipe: &str, host: &str, batch: usize, batches: usize) -> rhai::Map {
        let mut m = rhai::Map::new();
        m.insert("recipe".into(), recipe.into());
        m.insert("host".into(), host.into());
        m.insert("when".into(), self.when.clone().into());
        m.insert("reboot".into(), self.reboot.into());
        m.insert("drain_timeout".into(), (self.drain_timeout as i64).into());
        m.insert("health_timeout".into(), (self.health_timeout as i64).into());
        m.insert("reboot_timeout".into(), (self.reboot_timeout as i64).into());
        m.insert("batch".into(), (batch as i64).into());
        m.insert("batches".into(), (batches as i64).into());
        m
    }
}

impl Run {
    /// Runs `p` batch after batch; after each, stops the roll once `--max-fail` hosts
    /// failed (the hosts never reached are reported as not started). Returns the failed hosts.
    pub async fn execute_rolling(&self, p: Prepared, roll: Arc<Roll>) -> Vec<String> {
        let ranges = batches(p.per_host.len(), roll.serial);
        self.ctx.reporter.start(p.per_host.len());
        let of = ranges.len();
        let rep = self.ctx.reporter.clone();
        let dry_run = self.ctx.dry_run;
        let mut rest = p.per_host.into_iter();
        let mut failed = Vec::new();
        for (i, range) in ranges.iter().enumerate() {
            let hosts: Vec<(Target, rhai::Map)> = rest.by_ref().take(range.len()).collect();
            let names: Vec<String> = hosts.iter().map(|(t, _)| t.name.clone()).collect();
            let event = |event, failed, stop| BatchEvent {
                event,
                batch: i + 1,
                batches: of,
                hosts: names.clone(),
                failed,
                stop,
                dry_run,
            };
            rep.batch(event("batch", None, None));
            let sub = Prepared {
                name: p.name.clone(),
                source: p.source.clone(),
                dir: p.dir.clone(),
                ast: p.ast.clone(),
                per_host: hosts,
            };
            let here = self
                .execute_batch(sub, Some((roll.clone(), (i + 1, of))))
                .await;
            failed.extend(here.iter().cloned());
            let interrupted = self
                .ctx
                .interrupted
                .load(std::sync::atomic::Ordering::Relaxed);
            let stop = match after_batch(&failed, roll.max_fail, interrupted) {
                Next::Stop(why) if i + 1 < of => Some(why),
                _ => None,
            };
            rep.batch(event("batch_end", Some(here), stop.clone()));
            if let Some(why) = stop {
                let msg = format!("the roll stopped after batch {}: {why}", i + 1);
                for (k, r) in ranges.iter().enumerate().skip(i + 1) {
                    for (t, _) in rest.by_ref().take(r.len()) {
                        rep.not_started(&t.name, k + 1, &msg);
                    }
                }
                break;
            }
        }
        failed
    }
}

/// The `rolling` module a rolling run of a recipe in `recipe_dir` uses (the first
/// `rolling.rhai` where `import` looks) compiles: checked before any host is touched (exit
/// 2, with its file:line:col).
pub fn check_module(recipe_dir: &std::path::Path) -> Result<(), crate::errors::Error> {
    let dirs = crate::modules::module_paths(recipe_dir);
    let Some(path) = dirs
        .iter()
        .map(|d| d.join("rolling.rhai"))
        .find(|p| p.is_file())
    else {
        return Err(crate::errors::usage(
            "--serial drains nodes with the module `rolling` (stdlib/rolling.rhai), and none was \
             found beside the recipe nor in ./stdlib: run from the project's folder or set RECIPE_STDLIB",
        ));
    };
    let e = crate::engine::build(recipe_dir, None);
    let shown = path.display().to_string();
    let src = std::fs::read_to_string(&path)
        .map_err(|err| crate::errors::usage(format!("cannot read {shown}: {err}")))?;
    match e.compile(&src) {
        Ok(_) => Ok(()),
        Err(err) => {
            let mut l = crate::errors::locate_parse(&err, &shown);
            l.notes
                .push("--serial drains nodes with this module".into());
            Err(crate::errors::Error::Recipe(l))
        }
    }
}

/// One host of a rolling run: the module's `before`, the recipe, then `after` (with
/// `reboot` and a reconnection first when asked), or `failed` when the recipe failed.
#[allow(clippy::too_many_arguments)]
pub(super) fn around(
    e: &mut Engine,
    scope: &mut Scope,
    ast: &AST,
    ctx: &Arc<HostCtx>,
    t: &Target,
    roll: &Roll,
    (batch, of): (usize, usize),
    describe: &dyn Fn(&EvalAltResult) -> (String, String),
) -> Result<(), Box<EvalAltResult>> {
    let module = e
        .module_resolver()
        .resolve(e, None, "rolling", Position::NONE)?;
    e.register_static_module("rolling", module);
    scope.push_constant(
        "rolling_args",
        roll.map(&ctx.recipe.name, &ctx.name, batch, of),
    );
    let st: Dynamic = e.eval_with_scope(scope, "rolling::before(rolling_args)")?;
    // Not a constant: reboot() may return it updated (what it saw just before the reboot).
    scope.push("rolling_state", st);
    if let Err(err) = e.run_ast_with_scope(scope, ast) {
        scope.push_constant("rolling_what", describe(&err).0);
        // The node stays drained; a failure of that call is shown beside the recipe's.
        let keep = "rolling::failed(rolling_args, rolling_state, rolling_what)";
        if let Err(e2) = e.eval_with_scope::<Dynamic>(scope, keep) {
            let why = describe(&e2).0;
            ctx.run.reporter.note(&ctx.name, &format!("rolling: {why}"));
        }
        return Err(err);
    }
    if roll.reboot {
        let before = match ctx.run.dry_run {
            true => None,
            false => Some(boot_mark(ctx).map_err(|e| {
                format!("{}: cannot read its boot before the reboot: {e}", ctx.name)
            })?),
        };
        e.run_with_scope(
            scope,
            "let st = rolling::reboot(rolling_args, rolling_state); \
             if type_of(st) == \"map\" { rolling_state = st; }",
        )?;
        if let Some(before) = before {
            reconnect(e, ctx, t, &before, Duration::from_secs(roll.reboot_timeout))?;
        }
    }
    e.run_with_scope(scope, "rolling::after(rolling_args, rolling_state);")?;
    Ok(())
}

/// Which boot of a host answers: the boot id and the start time of PID 1. The boot id alone
/// tells a machine's reboot (and a systemd-nspawn container's: nspawn mounts a random one
/// over it at each start); in other containers (LXC, Docker) it is the host kernel's and
/// stays, while PID 1 (the container's init) starts again. Where /proc/1/stat cannot be read
/// (hidepid), only the boot id counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootMark {
    pub boot_id: String,
    /// PID 1's `starttime` (field 22 of /proc/1/stat, clock ticks after the kernel booted).
    pub init_start: Option<u64>,
}

/// One command, one round trip: the boot id, then PID 1's stat line (if readable).
const BOOT_MARK: &str =
    "cat /proc/sys/kernel/random/boot_id && { cat /proc/1/stat 2>/dev/null || true; }";

impl BootMark {
    /// Reads what [`BOOT_MARK`] printed; None when there is no boot id.
    pub fn parse(out: &str) -> Option<BootMark> {
        let mut lines = out.lines();
        let boot_id = lines.next()?.trim().to_string();
        if boot_id.is_empty() {
            return None;
        }
        // "1 (systemd) S 0 1 ...": the name may hold spaces and parentheses; the fields
        // after the last ')' start with the state (field 3), so starttime is the 20th.
        let init_start = lines.next().and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().nth(19)?.parse::<u64>().ok()
        });
        Some(BootMark {
            boot_id,
            init_start,
        })
    }

    /// Whether `self` is a later boot than `before`: another boot id, or the same kernel
    /// with another PID 1 (a container's reboot).
    pub fn is_new_boot(&self, before: &BootMark) -> bool {
        if self.boot_id != before.boot_id {
            return true;
        }
        matches!((self.init_start, before.init_start), (Some(a), Some(b)) if a != b)
    }
}

fn boot_mark(ctx: &HostCtx) -> Result<BootMark, String> {
    let out = ctx
        .exec_bounded(BOOT_MARK, Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    BootMark::parse(&out.stdout_str()).ok_or_else(|| {
        format!(
            "no boot id in /proc/sys/kernel/random/boot_id ({})",
            out.stdout_str().trim()
        )
    })
}

/// After a reboot: a new connection once sshd answers from a new boot (see [`BootMark`]),
/// and the engine's steps use it from then on. The old connection is dropped first: it
/// went down with the old boot.
fn reconnect(
    e: &mut Engine,
    ctx: &Arc<HostCtx>,
    t: &Target,
    before: &BootMark,
    wait: Duration,
) -> Result<(), Box<EvalAltResult>> {
    let run = &ctx.run;
    let started = Instant::now();
    let deadline = started + wait;
    loop {
        run.rt.block_on(run.hosts.forget(&ctx.name));
        std::thread::sleep(Duration::from_secs(5));
        let last = match run.rt.block_on(run.hosts.connection(t)) {
            Ok(conn) => {
                let new = Arc::new(HostCtx {
                    name: ctx.name.clone(),
                    conn,
                    run: run.clone(),
                    recipe: ctx.recipe.clone(),
                    vars: ctx.vars.clone(),
                    prefetch: Default::default(),
                });
                match boot_mark(&new) {
                    Ok(now) if now.is_new_boot(before) => {
                        e.set_default_tag(Dynamic::from(new));
                        let secs = started.elapsed().as_secs();
                        run.reporter.note(
                            &ctx.name,
                            &format!("rebooted: a new boot answered after {secs} s"),
                        );
                        return Ok(());
                    }
                    Ok(_) => "sshd still answered from the boot before the reboot".to_string(),
                    Err(err) => err,
                }
            }
            Err(err) => err.to_string(),
        };
        if Instant::now() > deadline || run.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(format!(
                "{}: no new boot answered within {} s of the reboot (last: {last}); \
                 it stays drained",
                ctx.name,
                wait.as_secs()
            )
            .into());
        }
    }
}

/// The time now in UTC as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc(secs)
}

fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(hosts: usize, s: &str) -> Vec<usize> {
        batches(hosts, s.parse().expect("serial"))
            .iter()
            .map(|r| r.len())
            .collect()
    }

    #[test]
    fn counts_split_in_order_and_the_last_batch_takes_the_rest() {
        assert_eq!(batches(5, Serial::Count(2)), vec![0..2, 2..4, 4..5]);
        assert_eq!(sizes(2, "1"), vec![1, 1]);
        assert_eq!(sizes(3, "3"), vec![3]);
        assert_eq!(sizes(2, "10"), vec![2]);
        assert_eq!(sizes(0, "1"), Vec::<usize>::new());
    }

    #[test]
    fn percentages_round_down_but_never_below_one_host() {
        assert_eq!(sizes(10, "25%"), vec![2, 2, 2, 2, 2]);
        assert_eq!(sizes(10, "30%"), vec![3, 3, 3, 1]);
        assert_eq!(sizes(3, "50%"), vec![1, 1, 1]);
        assert_eq!(sizes(3, "10%"), vec![1, 1, 1]);
        assert_eq!(sizes(4, "100%"), vec![4]);
        assert_eq!(sizes(1000, "1%"), vec![10; 100]);
    }

    #[test]
    fn every_host_is_in_exactly_one_batch() {
        for hosts in 0..40 {
            for s in ["1", "2", "7", "1%", "33%", "50%", "99%", "100%"] {
                let all: Vec<usize> = batches(hosts, s.parse().expect("serial"))
                    .into_iter()
                    .flatten()
                    .collect();
                assert_eq!(all, (0..hosts).collect::<Vec<_>>(), "{hosts} hosts, {s}");
            }
        }
    }

    #[test]
    fn bad_serials_say_what_is_expected() {
        for s in ["0", "0%", "101%", "-1", "x", "", "2.5", "%"] {
            let e = s.parse::<Serial>().expect_err(s);
            assert!(e.contains("percentage"), "{s}: {e}");
        }
        assert_eq!(" 3 ".parse::<Serial>(), Ok(Serial::Count(3)));
        assert_eq!("25%".parse::<Serial>(), Ok(Serial::Percent(25)));
    }

    #[test]
    fn the_roll_stops_when_failures_reach_max_fail() {
        let f = |n: usize| (1..=n).map(|i| format!("w{i}")).collect::<Vec<_>>();
        // Default 1: the first failure stops the roll.
        assert_eq!(after_batch(&f(0), 1, false), Next::Go);
        assert_eq!(
            after_batch(&f(1), 1, false),
            Next::Stop("1 failed host (w1) reached --max-fail 1".into())
        );
        assert_eq!(after_batch(&f(1), 2, false), Next::Go);
        assert_eq!(
            after_batch(&f(3), 2, false),
            Next::Stop("3 failed hosts (w1, w2, w3) reached --max-fail 2".into())
        );
        // 0 is read as 1: a roll never goes on past a failure it was not told to allow.
        assert!(matches!(after_batch(&f(1), 0, false), Next::Stop(_)));
        assert_eq!(
            after_batch(&f(0), 5, true),
            Next::Stop("the run was interrupted".into())
        );
    }

    fn mark(id: &str, start: Option<u64>) -> BootMark {
        BootMark {
            boot_id: id.into(),
            init_start: start,
        }
    }

    #[test]
    fn boot_marks_read_the_boot_id_and_pid_1s_start() {
        let id = "3f0e0c1e-6f5a-4b7e-9d2a-1c2b3d4e5f60";
        // A container's PID 1 (started 4 h after the kernel: 1440000 ticks).
        let stat = "1 (systemd) S 0 1 1 0 -1 4194560 9611 190254 106 1086 21 12 314 273 20 0 1 0 1440000 23068672 2935 18446744073709551615 1 1 0 0 0 0 671173123 4096 1260 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0";
        assert_eq!(
            BootMark::parse(&format!("{id}\n{stat}\n")),
            Some(mark(id, Some(1_440_000)))
        );
        // A process name with spaces and parentheses does not shift the fields.
        let odd = "1 (my (init) x) S 0 1 1 0 -1 4194560 1 1 1 1 1 1 1 1 20 0 1 0 77 1 1";
        assert_eq!(
            BootMark::parse(&format!("{id}\n{odd}\n")).and_then(|m| m.init_start),
            Some(77)
        );
        // /proc/1/stat hidden (hidepid): the boot id only.
        assert_eq!(BootMark::parse(&format!("{id}\n")), Some(mark(id, None)));
        assert_eq!(
            BootMark::parse(&format!("{id}\ngarbage\n")),
            Some(mark(id, None))
        );
        assert_eq!(BootMark::parse(""), None);
        assert_eq!(BootMark::parse("\n1 (systemd) S"), None);
    }

    #[test]
    fn a_new_boot_is_a_new_kernel_or_a_new_pid_1() {
        let before = mark("a", Some(100));
        // A machine's reboot: a new boot id (PID 1 may start at the same tick as before).
        assert!(mark("b", Some(100)).is_new_boot(&before));
        // A container's reboot: the host kernel's boot id stays, PID 1 is another.
        assert!(mark("a", Some(5000)).is_new_boot(&before));
        // sshd still answering from the old boot.
        assert!(!mark("a", Some(100)).is_new_boot(&before));
        // Without PID 1's start time only the boot id can tell.
        assert!(!mark("a", None).is_new_boot(&before));
        assert!(!mark("a", Some(5000)).is_new_boot(&mark("a", None)));
        assert!(mark("b", None).is_new_boot(&mark("a", None)));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_300_677), "2026-12-03T12:24:37Z");
    }
}
