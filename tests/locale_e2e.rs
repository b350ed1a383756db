//! End to end: every primitive, run twice, on real Debian hosts whose login locale is not
//! English (`LANG` in /etc/default/locale, which sshd's PAM session applies), beside one whose
//! locale is English.
//!
//! A tester on a Japanese host saw `directory("/srv/x")` succeed once and then fail with
//! `/srv/x exists and is a ディレクトリ, not a directory`: checks parsed `stat %F`, which is
//! translated. Here four hosts of one sandbox get `LANG=en_US.UTF-8`, `ja_JP.UTF-8`,
//! `de_DE.UTF-8` and `zh_CN.UTF-8`; the test first proves that a command over ssh really
//! prints translated words there (`ls` errors; on Debian 12 `stat -c %F /` too: ディレクトリ,
//! Verzeichnis, 目录), then runs
//! one recipe that calls every primitive on all of them:
//!
//! - the first run changes the same steps on every host, with the same change lines;
//! - the second run reports 0 changed and 0 failed on every host;
//! - what the recipe reads back (`stat`, `exists`, `facts`, `probe`) is the same on every host,
//!   in both runs.
//!
//! Needs root and the sandbox tools (debootstrap, systemd-container, tinyproxy) and Debian's
//! archive through the sandbox proxy (for `locales`, `ed`, `tree`). Without root it fails with
//! that message. The sandbox is named `h4` and torn down by a Drop guard, also on failure.
//! `RECIPE_LOCALE_E2E_RELEASE=trixie` runs it on Debian 13 (default: bookworm).

mod common;
use common::sandbox::{self, Sandbox};
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const NAME: &str = "h4";
/// Host name, its login locale, and what `stat -c %F /` prints there.
const HOSTS: &[(&str, &str, &str)] = &[
    ("en", "en_US.UTF-8", "directory"),
    ("ja", "ja_JP.UTF-8", "ディレクトリ"),
    ("de", "de_DE.UTF-8", "Verzeichnis"),
    ("zh", "zh_CN.UTF-8", "目录"),
];

/// Locales, a package to remove, and the things the recipe removes or fixes, made by hand.
fn setup_host(sb: &Sandbox, host: &str, lang: &str) {
    let enable: String = HOSTS
        .iter()
        .map(|(_, l, _)| format!(" -e 's/^# *{l} UTF-8/{l} UTF-8/'"))
        .collect();
    sb.ssh_ok(
        host,
        &format!(
            "set -e; export DEBIAN_FRONTEND=noninteractive\n\
             apt-get -q update >/dev/null\n\
             apt-get -q -y install --no-install-recommends locales ed >/dev/null\n\
             sed -i{enable} /etc/locale.gen\n\
             locale-gen >/dev/null\n\
             echo 'LANG={lang}' > /etc/default/locale\n\
             groupadd h4gone; useradd --no-create-home h4old\n\
             mkdir -p /srv/h4gone/sub; echo old > /srv/h4old.txt; echo keep > /srv/h4attrs; chmod 0644 /srv/h4attrs\n\
             printf '[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/h4stop.service\n\
             systemctl daemon-reload; systemctl enable --now -q h4stop"
        ),
    );
}

const RECIPE: &str = r#"// Every primitive, for tests/locale_e2e.rs: the same result on every host whatever its locale.
fn defaults() {
    #{ url: "", sha: "" }
}
group("h4g", #{gid: 4242});
group("h4gone", #{state: "absent"});
user("h4u", #{uid: 4242, group: "h4g", groups: ["users"], home: "/home/h4u", shell: "/bin/bash", create_home: true, comment: "H4 Test"});
user("h4old", #{state: "absent"});
directory("/srv/x");
directory("/srv/h4", #{owner: "h4u", group: "h4g", mode: "0750"});
directory("/srv/h4gone", #{state: "absent"});
file("/srv/h4/plain.txt", #{content: "héllo wörld\n", owner: "h4u", mode: "0640"});
file("/srv/h4/empty", #{content: ""});
file("/srv/h4old.txt", #{state: "absent"});
file("/srv/h4attrs", #{mode: "0600"});
template("/srv/h4/conf.ini", "h4.j2", #{vars: #{who: "h4u"}});
download(`${vars.url}/payload.tar.gz`, "/srv/h4/payload.tar.gz", #{sha256: vars.sha, mode: "0644"});
unpack("/srv/h4/payload.tar.gz", "/srv/h4/unpacked", #{creates: "/srv/h4/unpacked/payload/hello.txt"});
packages(["tree"]);
packages(["ed"], #{state: "absent"});
file("/etc/systemd/system/h4demo.service", #{content: "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"});
service("h4demo", #{state: "started", enabled: true, daemon_reload: true});
service("h4stop", #{state: "stopped", enabled: false});
sh("ln -s plain.txt /srv/h4/link", #{creates: "/srv/h4/link"});
sh("mkfifo /srv/h4/fifo", #{unless: "test -p /srv/h4/fifo"});
sh("touch /srv/h4/ran", #{onlyif: "test ! -e /srv/h4/ran"});
// A guard that reads a message: the same decision everywhere (guards run with LC_ALL=C).
sh("touch /srv/h4/guard-ran", #{unless: "ls /nonexistent-h4 2>&1 | grep -q 'No such file'"});

let obs = #{};
for p in ["/srv/x", "/srv/h4", "/srv/h4/plain.txt", "/srv/h4/empty", "/srv/h4/link", "/srv/h4/fifo",
          "/srv/h4/conf.ini", "/srv/h4/payload.tar.gz", "/srv/h4/unpacked/payload/hello.txt",
          "/srv/h4attrs", "/srv/h4old.txt", "/srv/h4gone", "/home/h4u", "/dev/null", "/srv/h4/guard-ran"] {
    obs[p] = stat(p);
}
obs.exists_old = exists("/srv/h4old.txt");
obs.exists_plain = exists("/srv/h4/plain.txt");
obs.conf = read_file("/srv/h4/conf.ini");
let f = facts();
obs.facts = #{os_id: f.os_id, os_version: f.os_version, os_family: f.os_family, pkg_manager: f.pkg_manager,
              init: f.init, user: f.user, arch: f.arch, cpus: f.cpus, sockets: f.sockets,
              cores_per_socket: f.cores_per_socket, threads_per_core: f.threads_per_core};
obs.probe_kind = probe("stat -c %F /").stdout;
obs.probe_missing = probe("ls /nonexistent-h4").stderr;
log("OBS " + obs.to_json());
// Without LC_ALL the login's own locale shows: proof that this connection has it.
let login = probe("env -u LC_ALL stat -c %F /").stdout;
login.trim();
log("LOGIN " + login);
"#;

/// One step as every host must see it.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Step {
    line: u64,
    op: String,
    target: String,
    status: String,
    changes: Vec<String>,
}

/// What one run did on one host.
#[derive(Debug, Default)]
struct HostRun {
    steps: Vec<Step>,
    changed: u64,
    failed: u64,
    obs: String,
    login_kind: String,
}

fn run(dir: &Path, sb: &Sandbox, sha: &str) -> BTreeMap<String, HostRun> {
    let url = format!("url={}", sb.files_url);
    let sha = format!("sha={sha}");
    let out = sandbox::run_json(
        &sb.inventory(),
        dir.join("h4.rhai"),
        &["--group", "all", "--var", &url, "--var", &sha],
    );
    let all = out.show();
    assert!(out.success(), "recipe run failed:\n{all}");
    let mut hosts: BTreeMap<String, HostRun> = BTreeMap::new();
    for e in out.events() {
        let host = e["host"].as_str().unwrap_or_default().to_string();
        let r = hosts.entry(host).or_default();
        match e["event"].as_str() {
            Some("step") => r.steps.push(Step {
                line: e["line"].as_u64().unwrap_or(0),
                op: e["op"].as_str().unwrap_or_default().into(),
                target: e["target"].as_str().unwrap_or_default().into(),
                status: e["status"].as_str().unwrap_or_default().into(),
                changes: e["changes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|c| c.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some("recap") => {
                r.changed = e["changed"].as_u64().unwrap_or(u64::MAX);
                r.failed = e["failed"].as_u64().unwrap_or(u64::MAX);
            }
            _ => {}
        }
    }
    // Notes on stderr: "HOST       OBS {...}".
    for l in out.stderr.lines() {
        let Some((host, rest)) = l.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(r) = hosts.get_mut(host) {
            if let Some(o) = rest.strip_prefix("OBS ") {
                r.obs = o.to_string();
            } else if let Some(k) = rest.strip_prefix("LOGIN ") {
                r.login_kind = k.to_string();
            }
        }
    }
    assert_eq!(hosts.len(), HOSTS.len(), "a host is missing:\n{all}");
    for (h, r) in &hosts {
        assert!(!r.obs.is_empty(), "no OBS note from {h}:\n{all}");
    }
    hosts
}

/// Every host did what the English one did, step for step, and read back the same things.
fn assert_same_as_english(runs: &BTreeMap<String, HostRun>, which: &str) {
    let en = &runs["en"];
    for (h, r) in runs {
        assert_eq!(
            r.steps, en.steps,
            "{which} run: the steps of {h} differ from those of en"
        );
        assert_eq!(
            r.obs, en.obs,
            "{which} run: what the recipe read back on {h} differs from en"
        );
        assert_eq!(r.failed, 0, "{which} run: {h} failed: {:?}", r.steps);
    }
}

#[test]
fn every_primitive_twice_on_japanese_german_chinese_and_english_hosts() {
    sandbox::require_root("locale_e2e");
    let t0 = Instant::now();
    let release =
        std::env::var("RECIPE_LOCALE_E2E_RELEASE").unwrap_or_else(|_| "bookworm".to_string());
    let work = tempfile::tempdir().expect("tempdir");
    let serve = work.path().join("serve");
    std::fs::create_dir_all(serve.join("payload")).expect("mkdir");
    std::fs::write(serve.join("payload/hello.txt"), "hello\n").expect("write");
    let tar = Command::new("tar")
        .args(["-czf", "payload.tar.gz", "payload"])
        .current_dir(&serve)
        .status()
        .expect("tar runs");
    assert!(tar.success(), "tar failed");
    let sum = Command::new("sha256sum")
        .arg(serve.join("payload.tar.gz"))
        .output()
        .expect("sha256sum runs");
    let sha = text(&sum.stdout)
        .split_whitespace()
        .next()
        .expect("a checksum")
        .to_string();
    let dir = work.path().join("recipe");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("h4.rhai"), RECIPE).expect("write recipe");
    std::fs::write(dir.join("h4.j2"), "[h4]\nowner = {{ who }}\n").expect("write template");

    let names: Vec<&str> = HOSTS.iter().map(|h| h.0).collect();
    let sb = Sandbox::up(NAME, &names)
        .release(&release)
        .serve(Some(&serve))
        .start();
    log(t0, &format!("sandbox {NAME} up ({release})"));
    std::thread::scope(|s| {
        for (h, lang, _) in HOSTS {
            let sb = &sb;
            s.spawn(move || setup_host(sb, h, lang));
        }
    });
    log(t0, "locales generated, LANG set, fixtures made");

    // The premise: a command over ssh prints translated words on these hosts. Debian 13's
    // coreutils prints `stat %F` in English even in Japanese, so there only the messages count.
    let mut ssh_kind = BTreeMap::new();
    for (h, lang, kind) in HOSTS {
        let got = sb.ssh_ok(h, "echo \"$LANG\"; stat -c %F /");
        let (got_lang, got_kind) = got.split_once('\n').unwrap_or_default();
        assert_eq!(got_lang, *lang, "{h}: the login locale is not in effect");
        if release == "bookworm" || release == "12" {
            assert_eq!(
                got_kind,
                format!("{kind}\n"),
                "{h}: stat %F is not translated"
            );
        }
        ssh_kind.insert(h.to_string(), got_kind.trim().to_string());
    }
    let english = sb.ssh(HOSTS[0].0, "ls /nonexistent-h4");
    for (h, ..) in &HOSTS[1..] {
        let msg = text(&sb.ssh(h, "ls /nonexistent-h4").stderr);
        assert!(
            !msg.contains("No such file"),
            "{h}: ls speaks English ({msg:?}), so this test would prove nothing"
        );
    }
    assert!(text(&english.stderr).contains("No such file"));

    let first = run(&dir, &sb, &sha);
    log(t0, "first run done");
    assert_same_as_english(&first, "first");
    for (h, ..) in HOSTS {
        assert_eq!(
            first[*h].login_kind, ssh_kind[*h],
            "{h}: the recipe's own connection does not have the login locale"
        );
    }
    // Every state step changed the first time, but the guard that reads an English message.
    let en = &first["en"];
    let unchanged: Vec<&Step> = en.steps.iter().filter(|s| s.status != "changed").collect();
    assert!(
        unchanged.len() == 1 && unchanged[0].target == "touch /srv/h4/guard-ran",
        "first run: steps that did not change: {unchanged:#?}"
    );
    // A guard that says "no need" reports ok.
    assert_eq!(unchanged[0].status, "ok");
    assert!(en.obs.contains("\"kind\":\"directory\""), "{}", en.obs);
    assert!(en.obs.contains("\"kind\":\"fifo\""), "{}", en.obs);
    assert!(en.obs.contains("\"kind\":\"symbolic link\""), "{}", en.obs);
    assert!(
        en.obs.contains("\"kind\":\"regular empty file\""),
        "{}",
        en.obs
    );
    assert!(
        en.obs.contains("\"probe_kind\":\"directory\\n\""),
        "{}",
        en.obs
    );

    let second = run(&dir, &sb, &sha);
    log(t0, "second run done");
    assert_same_as_english(&second, "second");
    for (h, r) in &second {
        let changed: Vec<&Step> = r.steps.iter().filter(|s| s.status == "changed").collect();
        assert!(
            r.changed == 0 && changed.is_empty(),
            "second run on {h}: {changed:#?}"
        );
        assert_eq!(
            r.obs, first[h].obs,
            "{h}: read back differently the second time"
        );
    }
    log(t0, "done");
}
