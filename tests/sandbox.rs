//! Integration test of `recipe sandbox`: two real systemd hosts (systemd-nspawn), the example
//! recipe run on both through the generated inventory, name resolution between them, a
//! host that reboots and comes back, and a `down` (in the middle of a second reboot) that
//! leaves nothing behind. Needs root (it fails otherwise); the first run on
//! a machine builds the base image with debootstrap (a couple of minutes).

mod common;
use common::sandbox::ssh;
use common::*;

use std::path::PathBuf;
use std::time::{Duration, Instant};

const NAME: &str = "itest";

fn netns_names() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn link_names() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (not zombie) processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() || name == std::process::id().to_string() {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        if matches!(state, None | Some('Z') | Some('X')) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|b| text(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        let ours = [
            "systemd-nspawn",
            "tinyproxy",
            "serve-files",
            "host-supervisor",
        ]
        .iter()
        .any(|p| cmd.contains(p));
        if ours && (cmd.contains(needle) || cwd.to_string_lossy().contains(needle)) {
            found.push(format!("{name}: {cmd}"));
        }
    }
    found
}

#[test]
fn sandbox_up_run_reach_down() {
    if !require_root("`recipe sandbox`") {
        return;
    }
    let _guard = common::sandbox::Down::new(NAME);
    let dir: PathBuf = recipe::sandbox::sandbox_dir(NAME);

    // Up: two hosts.
    let started = Instant::now();
    let out = Test::new()
        .args(["sandbox", "up", "--name", NAME, "--hosts", "master,w1"])
        .timeout(Duration::from_secs(900))
        .run();
    assert!(out.success(), "sandbox up failed:\n{}", out.show());
    eprintln!("sandbox up took {:.1} s", started.elapsed().as_secs_f64());
    let inventory = dir.join("inventory.toml");
    let stdout = &out.stdout;
    assert!(
        stdout.contains(&inventory.display().to_string()),
        "usage hint names the inventory: {stdout}"
    );

    // The inventory: both hosts, root, the sandbox key and known_hosts.
    let inv: toml::Value =
        toml::from_str(&std::fs::read_to_string(&inventory).expect("inventory written"))
            .expect("inventory is TOML");
    let known_hosts = PathBuf::from(inv["known_hosts"].as_str().expect("known_hosts"));
    let addr = |h: &str| {
        inv["hosts"][h]["address"]
            .as_str()
            .expect("address")
            .to_string()
    };
    let (master, w1) = (addr("master"), addr("w1"));
    let key = PathBuf::from(inv["hosts"]["master"]["key"].as_str().expect("key"));
    assert_eq!(inv["hosts"]["w1"]["user"].as_str(), Some("root"));
    assert!(known_hosts.is_file() && key.is_file());
    let files_url = inv["vars"]["sandbox_files_url"]
        .as_str()
        .expect("sandbox_files_url")
        .to_string();
    assert!(inv["vars"]["sandbox_proxy"].as_str().is_some());
    let octet: u8 = master
        .split('.')
        .nth(2)
        .and_then(|o| o.parse().ok())
        .expect("10.231.N.x address");

    // Status lists both hosts as running.
    let st = Test::new()
        .args(["sandbox", "status", "--name", NAME])
        .run()
        .stdout;
    assert!(st.contains(&master) && st.contains(&w1), "{st}");
    assert!(st.matches("running").count() >= 2, "{st}");
    // Each host's release, read from the host itself (the default release is Debian 12).
    assert!(st.matches("Debian 12 (bookworm)").count() >= 2, "{st}");

    // The engine's example recipe on both hosts through the generated inventory.
    let run = Test::new()
        .args(["run", "recipes/example.rhai", "-i"])
        .arg(&inventory)
        .args(["--group", "all", "--json"])
        .timeout(Duration::from_secs(300))
        .run();
    assert!(run.success(), "recipe run failed:\n{}", run.show());
    for h in ["master", "w1"] {
        let r = run.recap(h);
        assert_eq!(r["failed"], 0, "{r}");
        assert_eq!(r["unreachable"], false, "{r}");
    }

    // From master, w1 resolves by name and its sshd answers; hostnames are the node names.
    let o = ssh(&key, &known_hosts, &master, "hostname; getent hosts w1");
    assert!(o.status.success(), "ssh master: {}", text(&o.stderr));
    let o_text = text(&o.stdout);
    assert!(o_text.starts_with("master\n"), "{o_text}");
    assert!(o_text.contains(&w1) && o_text.contains("w1"), "{o_text}");
    let o = ssh(&key, &known_hosts, &master, "bash -c '</dev/tcp/w1/22'");
    assert!(
        o.status.success(),
        "master cannot reach w1:22 by name: {}",
        text(&o.stderr)
    );
    let o = ssh(
        &key,
        &known_hosts,
        &w1,
        "hostname; bash -c '</dev/tcp/master/22'",
    );
    assert!(
        o.status.success(),
        "w1 cannot reach master:22: {}",
        text(&o.stderr)
    );
    assert_eq!(text(&o.stdout), "w1\n");

    // The file server shows the sandbox's files/ folder to the hosts.
    std::fs::write(dir.join("files/probe.txt"), "served\n").expect("write into files/");
    let o = ssh(
        &key,
        &known_hosts,
        &w1,
        &format!("curl -sf {files_url}/probe.txt"),
    );
    assert_eq!(text(&o.stdout), "served\n", "{}", text(&o.stderr));

    // A reboot inside a host: its supervisor boots it again, as a machine comes back, with a
    // new boot id (nspawn gives each start of a container a random one) and a new PID 1:
    // what a rolling run's `--reboot` watches for (src/run/rolling.rs BootMark).
    let mark = || {
        let o = ssh(
            &key,
            &known_hosts,
            &w1,
            "cat /proc/sys/kernel/random/boot_id; cut -d' ' -f22 /proc/1/stat",
        );
        o.status.success().then(|| text(&o.stdout))
    };
    let console = dir.join("hosts/w1/console.log");
    let rebooted = || {
        std::fs::read_to_string(&console)
            .unwrap_or_default()
            .matches("the host rebooted")
            .count()
    };
    let first = mark().expect("w1's boot");
    let _ = ssh(&key, &known_hosts, &w1, "systemctl reboot");
    let deadline = Instant::now() + Duration::from_secs(180);
    let second = loop {
        if let Some(m) = mark().filter(|m| *m != first) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "w1 did not come back from its reboot; console:\n{}",
            std::fs::read_to_string(&console).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (a, b): (Vec<&str>, Vec<&str>) = (first.lines().collect(), second.lines().collect());
    assert!(
        a.len() == 2 && b.len() == 2 && a[0] != b[0] && a[1] != b[1],
        "boot id and PID 1's start time both new: {a:?} then {b:?}"
    );
    assert_eq!(rebooted(), 1, "the supervisor saw one reboot");
    let o = ssh(
        &key,
        &known_hosts,
        &w1,
        "systemctl is-system-running --wait; hostname",
    );
    let up = text(&o.stdout);
    assert!(
        up == "running\nw1\n" || up == "degraded\nw1\n",
        "w1 after its reboot: {up}{}",
        text(&o.stderr)
    );
    let st = Test::new()
        .args(["sandbox", "status", "--name", NAME])
        .run()
        .stdout;
    assert!(st.matches("running").count() >= 2, "{st}");
    eprintln!("w1 rebooted and came back");

    // Down in the middle of a reboot (nspawn gone, its supervisor about to start it again):
    // everything still goes (checked below).
    let _ = ssh(&key, &known_hosts, &w1, "systemctl reboot");
    let deadline = Instant::now() + Duration::from_secs(120);
    while rebooted() < 2 {
        assert!(Instant::now() < deadline, "w1's second reboot never came");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Down, and nothing is left.
    Test::new()
        .args(["sandbox", "down", "--name", NAME])
        .timeout(Duration::from_secs(120))
        .run()
        .expect_success();
    let ns_prefix = format!("rcp{octet}-");
    let left_ns: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with(&ns_prefix))
        .collect();
    assert!(left_ns.is_empty(), "network namespaces left: {left_ns:?}");
    let br = format!("rcp{octet}br");
    let veth = format!("rcp{octet}v");
    let left_links: Vec<String> = link_names()
        .into_iter()
        .filter(|l| *l == br || l.starts_with(&veth))
        .collect();
    assert!(left_links.is_empty(), "links left: {left_links:?}");
    // With no other sandbox on the machine, no rcp* namespace or link may exist at all.
    let others = std::fs::read_dir(dir.parent().expect("sandbox root"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    if others == 0 {
        let ns: Vec<String> = netns_names()
            .into_iter()
            .filter(|n| n.starts_with("rcp"))
            .collect();
        let links: Vec<String> = link_names()
            .into_iter()
            .filter(|n| n.starts_with("rcp"))
            .collect();
        assert!(ns.is_empty() && links.is_empty(), "left: {ns:?} {links:?}");
    }
    // Processes: none of this sandbox's nspawn, tinyproxy or file server (zombies may take a
    // moment to be reaped by init).
    let needle = dir.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left: {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains(&needle), "mounts left under {needle}");

    // Down again is fine.
    Test::new()
        .args(["sandbox", "down", "--name", NAME])
        .run()
        .expect_success();
}
