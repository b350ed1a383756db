//! `recipe run --via slurm` on a real Slurm cluster (sandbox hosts master, w1, w2 built by
//! recipes/cluster.rhai from Debian's packages): the fan-out path gives the same steps and
//! outcomes as the SSH path for the same recipe (first run changes, second run changes
//! nothing, and the SSH path then finds nothing to change either), every node runs as its
//! own inventory host with its own variables, nothing is left behind in the staging folders,
//! and a node that is stopped and marked down in Slurm is reported on its own while the
//! other node finishes.
//!
//! Needs root and the sandbox tools, like tests/slurm_e2e.rs; the sandbox (`h5b`) is torn
//! down by a Drop guard, also when the test fails. About 3 minutes on 2 cores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NAME: &str = "h5b";

fn recipe_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_recipe"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The sandbox of this test: `recipe sandbox down` when dropped, even on panic.
struct Sandbox {
    dir: PathBuf,
    addrs: BTreeMap<String, String>,
}

impl Sandbox {
    fn up() -> Sandbox {
        let _ = recipe_cmd()
            .args(["sandbox", "down", "--name", NAME])
            .output();
        let out = recipe_cmd()
            .args(["sandbox", "up", "--name", NAME, "--hosts", "master,w1,w2"])
            .output()
            .expect("recipe sandbox up runs");
        // The guard exists before the check, so a half-made sandbox is removed too.
        let mut sb = Sandbox {
            dir: PathBuf::from(format!("/var/lib/recipe/sandbox/{NAME}")),
            addrs: BTreeMap::new(),
        };
        assert!(
            out.status.success(),
            "recipe sandbox up --name {NAME} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let inv: toml::Table =
            toml::from_str(&std::fs::read_to_string(sb.inv()).expect("sandbox inventory"))
                .expect("sandbox inventory is TOML");
        for (h, v) in inv["hosts"].as_table().expect("hosts") {
            sb.addrs
                .insert(h.clone(), v["address"].as_str().expect("address").into());
        }
        sb
    }

    fn inv(&self) -> PathBuf {
        self.dir.join("inventory.toml")
    }

    fn ssh(&self, host: &str, cmd: &str) -> Output {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(self.dir.join("id_ed25519"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            ))
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-l",
                "root",
            ])
            .arg(&self.addrs[host])
            .args(["--", cmd])
            .output()
            .expect("ssh runs")
    }

    fn ssh_ok(&self, host: &str, cmd: &str) -> String {
        let o = self.ssh(host, cmd);
        assert!(
            o.status.success(),
            "on {host}: `{cmd}` failed:\n{}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        match recipe_cmd()
            .args(["sandbox", "down", "--name", NAME])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("sandbox down --name {NAME} failed: {}", text(&o.stderr)),
            Err(e) => eprintln!("sandbox down --name {NAME} could not run: {e}"),
        }
    }
}

/// One `--json` run: exit status, each host's steps as `line op status`, and the recaps.
struct Run {
    code: i32,
    steps: BTreeMap<String, Vec<String>>,
    recaps: BTreeMap<String, serde_json::Value>,
    all: String,
}

fn run(inv: &Path, recipe: &Path, args: &[&str]) -> Run {
    let out = recipe_cmd()
        .arg("run")
        .arg(recipe)
        .arg("-i")
        .arg(inv)
        .args(["--group", "workers", "--json"])
        .args(args)
        .output()
        .expect("recipe run runs");
    let stdout = text(&out.stdout);
    let mut r = Run {
        code: out.status.code().unwrap_or(-1),
        steps: BTreeMap::new(),
        recaps: BTreeMap::new(),
        all: format!("{stdout}\n--- stderr ---\n{}", text(&out.stderr)),
    };
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{}", r.all));
        let host = v["host"].as_str().unwrap_or("?").to_string();
        match v["event"].as_str() {
            Some("step") => r
                .steps
                .entry(host)
                .or_default()
                .push(format!("{} {} {}", v["line"], v["op"], v["status"])),
            Some("recap") => {
                r.recaps.insert(host, v);
            }
            _ => panic!("unknown event: {line}"),
        }
    }
    r
}

fn changed(r: &Run) -> u64 {
    r.recaps
        .values()
        .map(|v| v["changed"].as_u64().unwrap_or(0))
        .sum()
}

/// A small recipe with a template: files whose content depends on the host and a variable.
fn write_recipe(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(
        dir.join("templates/greeting.j2"),
        "{{ greeting }} from {{ who }} ({{ role }})\n",
    )
    .expect("write template");
    let p = dir.join("fanout.rhai");
    std::fs::write(
        &p,
        "// Files that depend on the host, its variables and a template.\n\
         fn defaults() { #{ dir: \"/var/lib/fanout\", greeting: \"hello\", role: \"none\" } }\n\
         directory(vars.dir, #{mode: \"0755\"});\n\
         file(vars.dir + \"/host\", #{content: host_name() + \"\\n\", mode: \"0644\"});\n\
         template(vars.dir + \"/greeting\", \"templates/greeting.j2\", #{vars: #{who: host_name()}});\n",
    )
    .expect("write recipe");
    p
}

#[test]
fn fan_out_through_slurm_matches_the_ssh_path_and_reports_a_stopped_node() {
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "tests/via_slurm.rs boots sandbox hosts and needs root: run `cargo test --test via_slurm` as root"
    );
    let sb = Sandbox::up();
    let cluster = recipe_cmd()
        .args(["run", "cluster.rhai", "-i"])
        .arg(sb.inv())
        .args([
            "-q",
            "--var",
            "slurm_install=packages",
            "--var",
            "slurm_proctrack_type=proctrack/linuxproc",
            "--var",
            "slurm_task_plugin=task/none",
        ])
        .output()
        .expect("recipe run cluster.rhai runs");
    assert!(
        cluster.status.success(),
        "building the Slurm cluster failed:\n{}{}",
        text(&cluster.stdout),
        text(&cluster.stderr)
    );
    // Per-host variables, as a site would set them: the node-local run must see its own.
    let mut inv = std::fs::read_to_string(sb.inv()).expect("inventory");
    inv = inv.replace("[hosts.w1]\n", "[hosts.w1]\nvars = { role = \"first\" }\n");
    inv = inv.replace("[hosts.w2]\n", "[hosts.w2]\nvars = { role = \"second\" }\n");
    let tmp = tempfile::tempdir().expect("tempdir");
    let inv_path = tmp.path().join("inventory.toml");
    std::fs::write(&inv_path, inv).expect("write inventory");
    let recipe = write_recipe(&tmp.path().join("r"));
    let via = ["--via", "slurm:debug", "--login", "master"];

    // The same recipe, once over SSH and once through Slurm, each into its own folder.
    let ssh1 = run(&inv_path, &recipe, &["--var", "dir=/var/lib/fanout-ssh"]);
    let mut args = vec!["--var", "dir=/var/lib/fanout-slurm"];
    args.extend(via);
    let slurm1 = run(&inv_path, &recipe, &args);
    assert_eq!(ssh1.code, 0, "{}", ssh1.all);
    assert_eq!(slurm1.code, 0, "{}", slurm1.all);
    assert_eq!(
        slurm1.steps, ssh1.steps,
        "the fan-out path ran other steps or got other outcomes than the SSH path\nSSH:\n{}\nSlurm:\n{}",
        ssh1.all, slurm1.all
    );
    assert_eq!(changed(&slurm1), 6, "{}", slurm1.all);
    for (h, role) in [("w1", "first"), ("w2", "second")] {
        let made = sb.ssh_ok(
            h,
            "cat /var/lib/fanout-slurm/host /var/lib/fanout-slurm/greeting",
        );
        assert_eq!(made, format!("{h}\nhello from {h} ({role})\n"));
        let by_ssh = sb.ssh_ok(
            h,
            "cat /var/lib/fanout-ssh/host /var/lib/fanout-ssh/greeting",
        );
        assert_eq!(made, by_ssh);
    }

    // Second run through Slurm: nothing to change; the SSH path agrees.
    let slurm2 = run(&inv_path, &recipe, &args);
    assert_eq!(slurm2.code, 0, "{}", slurm2.all);
    assert_eq!(changed(&slurm2), 0, "{}", slurm2.all);
    let ssh2 = run(&inv_path, &recipe, &["--var", "dir=/var/lib/fanout-slurm"]);
    assert_eq!(changed(&ssh2), 0, "{}", ssh2.all);
    assert_eq!(slurm2.steps, ssh2.steps, "{}\n{}", slurm2.all, ssh2.all);

    // Nothing left behind: no staging folder on the login node, no bundle on the nodes.
    assert_eq!(
        sb.ssh_ok("master", "ls /tmp | grep -c recipe-via || true")
            .trim(),
        "0"
    );
    for h in ["w1", "w2"] {
        assert_eq!(
            sb.ssh_ok(h, "ls /tmp | grep -c recipe-node || true").trim(),
            "0"
        );
    }

    // w2 stopped: its slurmd ends and Slurm marks it down. w1 still runs and finishes.
    sb.ssh_ok("w2", "systemctl stop slurmd");
    sb.ssh_ok(
        "master",
        "scontrol update NodeName=w2 State=DOWN Reason='stopped by the test'",
    );
    let mut args = vec!["--var", "dir=/var/lib/fanout-slurm", "--var", "greeting=hi"];
    args.extend(via);
    let down = run(&inv_path, &recipe, &args);
    assert_eq!(
        down.code, 1,
        "a node that did not run must fail the run\n{}",
        down.all
    );
    let w1 = &down.recaps["w1"];
    assert_eq!(w1["changed"], 1, "{}", down.all);
    assert_eq!(w1["failed"], 0, "{}", down.all);
    let w2 = &down.recaps["w2"];
    assert_eq!(w2["unreachable"], true, "{}", down.all);
    let msg = w2["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("Slurm node w2 is down") && msg.contains("stopped by the test"),
        "{}",
        down.all
    );
    assert!(!down.steps.contains_key("w2"), "{}", down.all);
    assert_eq!(
        sb.ssh_ok("w1", "cat /var/lib/fanout-slurm/greeting"),
        "hi from w1 (first)\n"
    );
}
