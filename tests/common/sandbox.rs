//! The sandbox end-to-end harness: throw-away systemd-nspawn hosts booted with
//! `recipe sandbox up` and torn down when the test ends (also when it panics), ssh into
//! them, the test's own inventory, `recipe run --json` on them and what its events say,
//! and fingerprints of the hosts (to prove a dry run changed nothing).
#![allow(dead_code)]

use super::pty::Terminal;
use super::{text, Output, Test};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one `recipe run` on sandbox hosts may take (a Slurm build is most of an hour on
/// a busy machine).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// How long `recipe sandbox up` may take (the first one builds the base image).
pub const UP_TIMEOUT: Duration = Duration::from_secs(3600);
const DOWN_TIMEOUT: Duration = Duration::from_secs(600);

/// Fails (not skips) without root: `tests/TEST.rs` boots sandbox hosts.
pub fn require_root(test: &str) {
    assert!(
        super::is_root(),
        "tests/{test}.rs boots systemd-nspawn hosts with `recipe sandbox` and needs root \
         (and debootstrap, systemd-container, tinyproxy): run `cargo test --test {test}` as root"
    );
}

/// `recipe sandbox down --name NAME` when dropped, even when the test panics.
pub struct Down(String);

impl Down {
    pub fn new(name: &str) -> Down {
        Down(name.to_string())
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        let name = &self.0;
        match Test::new()
            .args(["sandbox", "down", "--name", name])
            .timeout(DOWN_TIMEOUT)
            .try_run()
        {
            Ok(o) if o.success() => {}
            Ok(o) => eprintln!("sandbox down --name {name} failed:\n{}", o.show()),
            Err(e) => eprintln!("sandbox down --name {name} could not run: {e}"),
        }
    }
}

/// What `recipe sandbox up` is asked for: `Sandbox::up(name, hosts).release(..).start()`.
pub struct Up {
    name: String,
    hosts: Vec<String>,
    release: Option<String>,
    serve: Option<PathBuf>,
    packages: Vec<String>,
    minimal: bool,
}

impl Up {
    /// Debian release of the hosts (default: the CLI's, bookworm).
    pub fn release(mut self, r: &str) -> Up {
        self.release = Some(r.to_string());
        self
    }

    /// A folder served over HTTP to the hosts (`sandbox_files_url`).
    pub fn serve(mut self, dir: Option<&Path>) -> Up {
        self.serve = dir.map(Path::to_path_buf);
        self
    }

    /// Extra packages baked into the base image.
    pub fn packages(mut self, p: &[&str]) -> Up {
        self.packages = p.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The minimal image (`sandbox up --minimal`: no curl, wget, sudo, procps).
    pub fn minimal(mut self) -> Up {
        self.minimal = true;
        self
    }

    /// Boots the hosts (after removing what a killed earlier run may have left).
    pub fn start(self) -> Sandbox {
        let name = self.name.as_str();
        let _ = Test::new()
            .args(["sandbox", "down", "--name", name])
            .timeout(DOWN_TIMEOUT)
            .try_run();
        // The guard exists before the first assertion: a half-made sandbox is removed too.
        let down = Down::new(name);
        let mut t = Test::new()
            .args(["sandbox", "up", "--name", name, "--hosts"])
            .arg(self.hosts.join(","))
            .timeout(UP_TIMEOUT);
        if let Some(r) = &self.release {
            t = t.args(["--release", r]);
        }
        if let Some(s) = &self.serve {
            t = t.arg("--serve").arg(s);
        }
        if !self.packages.is_empty() {
            t = t.arg("--packages").arg(self.packages.join(","));
        }
        if self.minimal {
            t = t.arg("--minimal");
        }
        let out = t.run();
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut sb = Sandbox {
            name: name.to_string(),
            dir: recipe::sandbox::sandbox_dir(name),
            hosts: self.hosts.clone(),
            addrs: BTreeMap::new(),
            files_url: String::new(),
            inv: tmp.path().join("inventory.toml"),
            _tmp: tmp,
            _down: down,
        };
        assert!(
            out.success(),
            "recipe sandbox up --name {name} failed:\n{}",
            out.show()
        );
        let inv: toml::Table =
            toml::from_str(&std::fs::read_to_string(sb.inventory()).expect("sandbox inventory"))
                .expect("sandbox inventory is TOML");
        for (h, v) in inv["hosts"].as_table().expect("hosts") {
            sb.addrs
                .insert(h.clone(), v["address"].as_str().expect("address").into());
        }
        sb.files_url = inv["vars"]["sandbox_files_url"]
            .as_str()
            .expect("sandbox_files_url")
            .to_string();
        sb
    }
}

/// A sandbox owned by a test: `recipe sandbox down` when dropped, even on panic.
pub struct Sandbox {
    pub name: String,
    pub dir: PathBuf,
    /// The host names, in the order given.
    pub hosts: Vec<String>,
    pub addrs: BTreeMap<String, String>,
    pub files_url: String,
    /// The test's own inventory, written by [`Sandbox::write_inventory`].
    pub inv: PathBuf,
    _tmp: tempfile::TempDir,
    _down: Down,
}

impl Sandbox {
    pub fn up(name: &str, hosts: &[&str]) -> Up {
        Up {
            name: name.to_string(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            release: None,
            serve: None,
            packages: Vec::new(),
            minimal: false,
        }
    }

    /// The inventory `sandbox up` wrote: every host, the sandbox's key and known_hosts.
    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.toml")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// `host`'s root file system as the controller sees it.
    pub fn root(&self, host: &str) -> PathBuf {
        self.dir.join("hosts").join(host).join("root")
    }

    /// The N of the sandbox's 10.231.N.0/24 network (its bridge is rcpNbr, veths rcpNv*).
    pub fn octet(&self) -> u8 {
        let a = self.addrs.values().next().expect("a host");
        a.split('.')
            .nth(2)
            .and_then(|o| o.parse().ok())
            .unwrap_or_else(|| panic!("not a 10.231.N.x address: {a}"))
    }

    /// An inventory at `path` of this sandbox's hosts under names of the test's own, each
    /// `(name, sandbox host, login user, vars)`, with the sandbox's known_hosts, key and
    /// `[vars]`.
    pub fn inventory_with(
        &self,
        path: &Path,
        hosts: &[(&str, &str, &str, toml::Table)],
    ) -> PathBuf {
        let base: toml::Table =
            toml::from_str(&std::fs::read_to_string(self.inventory()).expect("read"))
                .expect("toml");
        let mut inv = toml::Table::new();
        for k in ["known_hosts", "vars"] {
            if let Some(v) = base.get(k) {
                inv.insert(k.into(), v.clone());
            }
        }
        let theirs = base.get("hosts").and_then(|h| h.as_table()).expect("hosts");
        let mut mine = toml::Table::new();
        for (name, host, user, vars) in hosts {
            let mut t = theirs
                .get(*host)
                .and_then(|t| t.as_table())
                .cloned()
                .unwrap_or_else(|| panic!("no sandbox host {host}"));
            t.insert("user".into(), (*user).into());
            t.insert("vars".into(), toml::Value::Table(vars.clone()));
            mine.insert(name.to_string(), toml::Value::Table(t));
        }
        inv.insert("hosts".into(), toml::Value::Table(mine));
        std::fs::write(path, toml::to_string(&inv).expect("toml")).expect("write inventory");
        path.to_path_buf()
    }

    /// Writes the test inventory [`Sandbox::inv`]: the sandbox's hosts, group `workers` as
    /// given, and `vars` added to its variables.
    pub fn write_inventory(&self, workers: &[&str], vars: &[(&str, toml::Value)]) {
        let mut inv: toml::Table =
            toml::from_str(&std::fs::read_to_string(self.inventory()).expect("read"))
                .expect("toml");
        let vt = inv
            .entry("vars")
            .or_insert(toml::Value::Table(Default::default()))
            .as_table_mut()
            .expect("vars table");
        for (k, v) in vars {
            vt.insert(k.to_string(), v.clone());
        }
        let mut g = toml::Table::new();
        g.insert(
            "hosts".into(),
            toml::Value::Array(workers.iter().map(|w| (*w).into()).collect()),
        );
        let mut groups = toml::Table::new();
        groups.insert("workers".into(), toml::Value::Table(g));
        inv.insert("groups".into(), toml::Value::Table(groups));
        std::fs::write(&self.inv, toml::to_string(&inv).expect("toml")).expect("write inventory");
    }

    /// `ssh root@HOST CMD` with the sandbox's key and known_hosts only (OpenSSH, so in the
    /// login's session).
    pub fn ssh(&self, host: &str, cmd: &str) -> std::process::Output {
        let addr = self
            .addrs
            .get(host)
            .unwrap_or_else(|| panic!("no host {host} in sandbox {}", self.name));
        ssh(&self.key(), &self.known_hosts(), addr, cmd)
    }

    /// [`Sandbox::ssh`] that must succeed; its stdout.
    pub fn ssh_ok(&self, host: &str, cmd: &str) -> String {
        let o = self.ssh(host, cmd);
        assert!(
            o.status.success(),
            "on {host}: `{cmd}` failed ({}):\n{}{}",
            o.status,
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// `recipe run RECIPE -i <the test inventory> --json ARGS...`.
    pub fn run(&self, recipe: &str, args: &[&str]) -> Output {
        self.run_in(None, recipe, args)
    }

    /// [`Sandbox::run`] from inside network namespace `netns` (see `netns::Outside`).
    pub fn run_in(&self, netns: Option<&str>, recipe: &str, args: &[&str]) -> Output {
        run_json_in(netns, &self.inv, recipe, args)
    }

    /// [`Sandbox::run`] that must succeed. On failure the message starts with what CI logs
    /// keep: the failed steps and, from every host, its failed units and their last lines.
    pub fn run_ok(&self, recipe: &str, args: &[&str]) -> Output {
        self.run_ok_in(None, recipe, args)
    }

    /// [`Sandbox::run_ok`] from inside network namespace `netns`.
    pub fn run_ok_in(&self, netns: Option<&str>, recipe: &str, args: &[&str]) -> Output {
        let r = self.run_in(netns, recipe, args);
        self.expect_ok(r, recipe, args, "")
    }

    /// [`Sandbox::run_ok`] with stderr on `term`, as on a person's terminal (colour allowed,
    /// so its status lines are drawn there); stdout is the `--json` events as ever.
    pub fn run_ok_on(&self, term: &mut Terminal, recipe: &str, args: &[&str]) -> Output {
        let r = Test::new()
            .env_remove("NO_COLOR")
            .env("TERM", "xterm")
            .stderr_to(term.stderr())
            .arg("run")
            .arg(recipe)
            .arg("-i")
            .arg(&self.inv)
            .arg("--json")
            .args(args)
            .timeout(RUN_TIMEOUT)
            .run();
        let shown = text(&term.settled());
        self.expect_ok(r, recipe, args, &format!("--- terminal ---\n{shown}"))
    }

    /// `r`, which must have succeeded; else a panic with what CI logs keep (and `more`).
    fn expect_ok(&self, r: Output, recipe: &str, args: &[&str], more: &str) -> Output {
        if !r.success() {
            let failed: Vec<String> = r
                .events()
                .iter()
                .filter(|v| v["status"] == "failed" || v["failed"].as_u64().unwrap_or(0) > 0)
                .map(|v| v.to_string())
                .collect();
            panic!(
                "recipe run {recipe} {args:?} failed (exit {})\n--- failed ---\n{}\n--- hosts ---\n{}\n{}\n{more}",
                r.code,
                failed.join("\n"),
                self.failed_units(),
                r.show()
            );
        }
        r
    }

    /// Each host's failed systemd units with their journal's last lines.
    pub fn failed_units(&self) -> String {
        let script = "systemctl --failed --no-legend --plain | awk '{print $1}' | while read -r u; do \
                      echo \"== $u\"; journalctl -u \"$u\" -n 12 --no-pager -o short-monotonic 2>&1; done";
        self.hosts
            .iter()
            .map(|h| {
                let o = self.ssh(h, script);
                format!("[{h}]\n{}{}", text(&o.stdout), text(&o.stderr))
            })
            .collect::<Vec<_>>()
            .join("")
    }

    /// Everything a dry run must not touch on `host`, read on the controller through its root
    /// (no login on the host, which would itself write): every entry under etc, opt, root,
    /// srv, tmp, usr and var with its path, type, size, mode, numeric owner and group, link
    /// target and (files) mtime, plus the sha256 of every regular file outside usr (where
    /// size and mtime stand in, to keep it fast). Packages (var/lib/dpkg), users (etc/passwd),
    /// enabled units (etc/systemd) and downloads (var/cache/apt/archives) are all files here.
    /// Left out is what the host writes by itself: the journal, systemd's and apt's state,
    /// the apt and man caches, and services' private tmp folders.
    pub fn root_fingerprint(&self, host: &str) -> String {
        fingerprint(&self.root(host))
    }

    /// [`Sandbox::root_fingerprint`] of each host.
    pub fn root_fingerprints(&self, hosts: &[&str]) -> BTreeMap<String, String> {
        hosts
            .iter()
            .map(|h| (h.to_string(), self.root_fingerprint(h)))
            .collect()
    }
}

/// The one fingerprint script of [`Sandbox::root_fingerprint`]: `sh -c FINGERPRINT sh ROOT`.
/// Directories show no time: a run's worker folder comes and goes in tmp.
const FINGERPRINT: &str = r#"set -e
cd "$1"
prune='( -path var/log/journal -o -path var/lib/systemd -o -path var/lib/apt/lists
  -o -path var/cache/man -o -path var/cache/apt/pkgcache.bin -o -path var/cache/apt/srcpkgcache.bin
  -o -path var/cache/debconf -o -path var/lib/logrotate -o -path var/backups -o -path root/.cache
  -o -path tmp/systemd-private-* -o -path var/tmp/systemd-private-* ) -prune'
set -f
{
  find etc opt root srv tmp usr var -xdev $prune -o -type d -printf '%p d %m %U %G\n'
  find etc opt root srv tmp usr var -xdev $prune -o ! -type d -printf '%p %y %s %m %U %G %T@ %l\n'
  find etc opt root srv tmp var usr/local -xdev $prune -o -type f -print0 | xargs -0 -r sha256sum
} | LC_ALL=C sort
"#;

/// [`Sandbox::root_fingerprint`] of the root file system at `root`.
pub fn fingerprint(root: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(FINGERPRINT)
        .arg("sh")
        .arg(root)
        .output()
        .expect("find");
    assert!(
        out.status.success(),
        "the fingerprint of {} failed: {}",
        root.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `ssh root@ADDR CMD` with this key and known_hosts only (the sandbox's own ssh command
/// line).
pub fn ssh(key: &Path, known_hosts: &Path, addr: &str, cmd: &str) -> std::process::Output {
    recipe::sandbox::ssh_command(key, known_hosts, addr, 10)
        .expect("ssh is installed")
        .args(["--", cmd])
        .output()
        .expect("ssh runs")
}

/// `recipe run RECIPE -i INV --json ARGS...`, with the sandbox runs' long timeout.
pub fn run_json(inv: &Path, recipe: impl AsRef<OsStr>, args: &[&str]) -> Output {
    run_json_in(None, inv, recipe, args)
}

/// [`run_json`] from inside network namespace `netns` (None: here).
pub fn run_json_in(
    netns: Option<&str>,
    inv: &Path,
    recipe: impl AsRef<OsStr>,
    args: &[&str],
) -> Output {
    Test::new()
        .netns(netns)
        .arg("run")
        .arg(recipe)
        .arg("-i")
        .arg(inv)
        .arg("--json")
        .args(args)
        .timeout(RUN_TIMEOUT)
        .run()
}

/// The run changed nothing.
pub fn assert_unchanged(r: &Output, what: &str) {
    let changed = r.changed();
    assert!(
        changed.is_empty(),
        "{what}: must change nothing, but these steps changed:\n  {}\n{}",
        changed.join("\n  "),
        r.show()
    );
}

/// Every host's fingerprint is the same after as before; else the lines that differ.
pub fn assert_same_hosts(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    what: &str,
) {
    for (h, b) in before {
        let a = after
            .get(h)
            .unwrap_or_else(|| panic!("{what}: no fingerprint of {h} after"));
        if a != b {
            let bl: BTreeSet<&str> = b.lines().collect();
            let al: BTreeSet<&str> = a.lines().collect();
            let gone: Vec<&&str> = bl.difference(&al).take(40).collect();
            let new: Vec<&&str> = al.difference(&bl).take(40).collect();
            panic!("{what} changed {h}:\n  before only: {gone:#?}\n  after only: {new:#?}");
        }
    }
}

/// What a `--json` run's events say, beyond [`Output::events`].
impl Output {
    /// The steps that changed, as `HOST RECIPE:LINE OP TARGET`, in order.
    pub fn changed(&self) -> Vec<String> {
        self.steps()
            .iter()
            .filter(|v| v["status"] == "changed")
            .map(|v| {
                format!(
                    "{} {}:{} {} {}",
                    v["host"].as_str().unwrap_or("?"),
                    v["recipe"].as_str().unwrap_or("?"),
                    v["line"],
                    v["op"].as_str().unwrap_or("?"),
                    v["target"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    /// The sum of the recaps' `changed` counts.
    pub fn changed_count(&self) -> u64 {
        self.recaps()
            .iter()
            .map(|v| v["changed"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Each host's steps as `LINE OP STATUS`, in order.
    pub fn steps_by_host(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in self.steps() {
            m.entry(v["host"].as_str().unwrap_or("?").to_string())
                .or_default()
                .push(format!("{} {} {}", v["line"], v["op"], v["status"]));
        }
        m
    }

    /// Each host's recap.
    pub fn recaps_by_host(&self) -> BTreeMap<String, serde_json::Value> {
        self.recaps()
            .into_iter()
            .map(|v| (v["host"].as_str().unwrap_or("?").to_string(), v))
            .collect()
    }

    /// The recipes in the order their steps ran, consecutive repeats folded.
    pub fn play_order(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in self.steps() {
            let rec = v["recipe"].as_str().unwrap_or("?").to_string();
            if out.last() != Some(&rec) {
                out.push(rec);
            }
        }
        out
    }

    /// Every event is of one of these kinds.
    pub fn expect_only_events(self, kinds: &[&str]) -> Output {
        for e in self.events() {
            assert!(
                kinds.iter().any(|k| e["event"] == *k),
                "unknown event: {e}\n{}",
                self.show()
            );
        }
        self
    }
}
