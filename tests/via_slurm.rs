//! `recipe run --via slurm` on a real Slurm cluster (sandbox hosts master, w1, w2 built by
//! recipes/cluster.rhai from Debian's packages): the fan-out path gives the same steps and
//! outcomes as the SSH path for the same recipe (first run changes, second run changes
//! nothing, and the SSH path then finds nothing to change either), every node runs as its
//! own inventory host with its own variables and its `log()` notes reach the controller,
//! nothing is left behind in the staging folders, and a node that is stopped and marked down
//! in Slurm is reported on its own while the other node finishes.
//!
//! The hosts are made like a site's: Slurm's programs on the login node are not on PATH but
//! under the `slurm_prefix` the inventory names (/opt/hpc/slurm), and the nodes mount /tmp,
//! /var/tmp and /dev/shm `noexec` (CIS hardening). A node whose task is killed mid-run
//! (no recap) is reported failed, and the command it was running does not outlive it.
//!
//! Needs root and the sandbox tools, like tests/slurm_e2e.rs; the sandbox (`h5b`) is torn
//! down by a Drop guard (tests/common/sandbox.rs), also when the test fails. About 3 minutes on 2 cores.

mod common;
use common::sandbox::{self, Sandbox};
use common::*;

use std::path::{Path, PathBuf};

const NAME: &str = "h5b";

/// `recipe run RECIPE -i INV --group workers --json ARGS...`: it must print only step and
/// recap events.
fn run(inv: &Path, recipe: &Path, args: &[&str]) -> Output {
    let mut a = vec!["--group", "workers"];
    a.extend(args);
    sandbox::run_json(inv, recipe, &a).expect_only_events(&["step", "recap"])
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
         fn defaults() { #{ dir: \"/var/lib/fanout\", greeting: \"hello\", role: \"none\", pause: \"\" } }\n\
         directory(vars.dir, #{mode: \"0755\"});\n\
         log(`note from ${host_name()} (${vars.role})`);\n\
         if vars.pause != \"\" { sh(`sleep ${vars.pause}`); }\n\
         file(vars.dir + \"/host\", #{content: host_name() + \"\\n\", mode: \"0644\"});\n\
         template(vars.dir + \"/greeting\", \"templates/greeting.j2\", #{vars: #{who: host_name()}});\n",
    )
    .expect("write recipe");
    p
}

#[test]
fn fan_out_through_slurm_matches_the_ssh_path_and_reports_a_stopped_node() {
    sandbox::require_root("via_slurm");
    let sb = Sandbox::up(NAME, &["master", "w1", "w2"]).start();
    let cluster = Test::new()
        .args(["run", "cluster.rhai", "-i"])
        .arg(sb.inventory())
        .args([
            "-q",
            "--var",
            "slurm_install=packages",
            "--var",
            "slurm_proctrack_type=proctrack/linuxproc",
            "--var",
            "slurm_task_plugin=task/none",
        ])
        .timeout(sandbox::RUN_TIMEOUT)
        .run();
    assert!(
        cluster.success(),
        "building the Slurm cluster failed:\n{}",
        cluster.show()
    );
    // A site's layout: Slurm's client programs under a prefix, off PATH, on the login node;
    // temporary folders that allow no program to run on the nodes.
    sb.ssh_ok(
        "master",
        "mkdir -p /opt/hpc/slurm/bin && mv /usr/bin/sinfo /usr/bin/srun /opt/hpc/slurm/bin/ \
         && ! command -v sinfo && ! command -v srun",
    );
    for h in ["w1", "w2"] {
        sb.ssh_ok(
            h,
            "for d in /tmp /var/tmp /dev/shm; do mountpoint -q $d || mount --bind $d $d; \
             mount -o remount,bind,noexec $d && cp /bin/true $d/t && ! $d/t; rm -f $d/t; done",
        );
    }
    // Per-host variables, as a site would set them: the node-local run must see its own.
    let base = std::fs::read_to_string(sb.inventory()).expect("inventory");
    let mut inv = base.replace("[hosts.w1]\n", "[hosts.w1]\nvars = { role = \"first\" }\n");
    inv = inv.replace("[hosts.w2]\n", "[hosts.w2]\nvars = { role = \"second\" }\n");
    let tmp = tempfile::tempdir().expect("tempdir");
    // Without the prefix: the login node's PATH has no Slurm, and the run says what it tried.
    let no_prefix = tmp.path().join("no-prefix.toml");
    std::fs::write(&no_prefix, &inv).expect("write inventory");
    let inv_path = tmp.path().join("inventory.toml");
    let with_prefix = |inv: &str| {
        inv.replace(
            "[hosts.master]\n",
            "[hosts.master]\nvars = { slurm_prefix = \"/opt/hpc/slurm\" }\n",
        )
    };
    std::fs::write(&inv_path, with_prefix(&inv)).expect("write inventory");
    let recipe = write_recipe(&tmp.path().join("r"));
    let via = ["--via", "slurm:debug", "--login", "master"];

    let mut args = vec!["--var", "dir=/var/lib/fanout-slurm"];
    args.extend(via);
    let lost = run(&no_prefix, &recipe, &args);
    assert_eq!(lost.code, 1, "{}", lost.show());
    for h in ["w1", "w2"] {
        let msg = lost.recaps_by_host()[h]["msg"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            msg.contains("sinfo and srun not found on the login node master: tried /usr/local/bin")
                && msg.contains("slurm_prefix"),
            "{}",
            lost.show()
        );
    }

    // The same recipe, once over SSH and once through Slurm, each into its own folder.
    let ssh1 = run(&inv_path, &recipe, &["--var", "dir=/var/lib/fanout-ssh"]);
    let mut args = vec!["--var", "dir=/var/lib/fanout-slurm"];
    args.extend(via);
    let slurm1 = run(&inv_path, &recipe, &args);
    assert_eq!(ssh1.code, 0, "{}", ssh1.show());
    assert_eq!(slurm1.code, 0, "{}", slurm1.show());
    assert_eq!(
        slurm1.steps_by_host(), ssh1.steps_by_host(),
        "the fan-out path ran other steps or got other outcomes than the SSH path\nSSH:\n{}\nSlurm:\n{}",
        ssh1.show(), slurm1.show()
    );
    assert_eq!(slurm1.changed_count(), 6, "{}", slurm1.show());
    // The recipe's notes, each host's own, as the SSH path prints them.
    let notes = |o: &Output| {
        let mut v: Vec<String> = o
            .stderr
            .lines()
            .filter(|l| l.contains("note from"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        notes(&slurm1),
        ["w1 note from w1 (first)", "w2 note from w2 (second)"],
        "{}",
        slurm1.show()
    );
    assert_eq!(notes(&slurm1), notes(&ssh1));
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

    // Second run through Slurm, told where Slurm is: nothing to change; the SSH path agrees.
    let mut told = args.clone();
    told.extend(["--slurm-prefix", "/opt/hpc/slurm"]);
    let slurm2 = run(&no_prefix, &recipe, &told);
    assert_eq!(slurm2.code, 0, "{}", slurm2.show());
    assert_eq!(slurm2.changed_count(), 0, "{}", slurm2.show());
    let ssh2 = run(&inv_path, &recipe, &["--var", "dir=/var/lib/fanout-slurm"]);
    assert_eq!(ssh2.changed_count(), 0, "{}", ssh2.show());
    assert_eq!(
        slurm2.steps_by_host(),
        ssh2.steps_by_host(),
        "{}\n{}",
        slurm2.show(),
        ssh2.show()
    );

    // Nothing left behind: no staging folder on the login node, no bundle on the nodes.
    let leftovers = |h: &str, what: &str| {
        sb.ssh_ok(
            h,
            &format!("ls -a /tmp /var/tmp /dev/shm /root /run/user/0 2>/dev/null | grep -c {what} || true"),
        )
        .trim()
        .to_string()
    };
    assert_eq!(leftovers("master", "recipe-via"), "0");
    for h in ["w1", "w2"] {
        assert_eq!(leftovers(h, "recipe-node"), "0");
    }

    // w2's task is killed in the middle of its run: it sends no recap and is reported
    // failed while w1 finishes; the command it was running ends with it.
    let paused = inv.replace(
        "vars = { role = \"second\" }",
        "vars = { role = \"second\", pause = \"317\" }",
    );
    let paused_path = tmp.path().join("paused.toml");
    std::fs::write(&paused_path, with_prefix(&paused)).expect("write inventory");
    let child = Test::new()
        .arg("run")
        .arg(&recipe)
        .arg("-i")
        .arg(&paused_path)
        .args(["--json", "--group", "workers"])
        .args(&args)
        .timeout(sandbox::RUN_TIMEOUT)
        .spawn();
    let sleeping = || {
        sb.ssh("w2", "pgrep -f '^sleep 317$' >/dev/null")
            .status
            .success()
    };
    let started = std::time::Instant::now();
    while !sleeping() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(180),
            "w2 never started its pause"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    sb.ssh_ok("w2", "pkill -KILL -x recipe");
    let killed = child.finish();
    assert_eq!(killed.code, 1, "{}", killed.show());
    let recaps = killed.recaps_by_host();
    assert_eq!(recaps["w1"]["failed"], 0, "{}", killed.show());
    let w2 = &recaps["w2"];
    assert_eq!(w2["unreachable"], false, "{}", killed.show());
    assert_eq!(w2["failed"], 1, "{}", killed.show());
    assert!(
        w2["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("no report from Slurm node w2"),
        "{}",
        killed.show()
    );
    let started = std::time::Instant::now();
    while sleeping() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the killed task's command still runs on w2"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
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
        down.code,
        1,
        "a node that did not run must fail the run\n{}",
        down.show()
    );
    let recaps = down.recaps_by_host();
    let w1 = &recaps["w1"];
    assert_eq!(w1["changed"], 1, "{}", down.show());
    assert_eq!(w1["failed"], 0, "{}", down.show());
    let w2 = &recaps["w2"];
    assert_eq!(w2["unreachable"], true, "{}", down.show());
    let msg = w2["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("Slurm node w2 is down") && msg.contains("stopped by the test"),
        "{}",
        down.show()
    );
    assert!(!down.steps_by_host().contains_key("w2"), "{}", down.show());
    assert_eq!(
        sb.ssh_ok("w1", "cat /var/lib/fanout-slurm/greeting"),
        "hi from w1 (first)\n"
    );
}
