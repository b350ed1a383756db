//! Secrets never reach any output. A random binary key (standing in for the MUNGE key) is
//! read as a secret, copied between hosts and written to files; a `*_token` variable is used
//! in commands, a template and log lines; commands print both in raw, hex and base64 form
//! (wrapped and unwrapped); one run ends with a failing step that dumps them. Every run's
//! stdout and stderr (plain, -v, -vv, -vvv, --json, --dry-run --diff, a failure, a token
//! change with --diff), and the server's log, are scanned for every spelling of both
//! secrets: none may appear.

mod common;
use common::leaks::{assert_clean, random_bytes};
use common::loopback::{inventory, spec};
use common::sandbox::{self, Sandbox};
use common::*;

const RECIPE: &str = r#"// Secrets test recipe.
fn defaults() {
    #{
        base: "/tmp/recipe-secrets",
        key_src: "/tmp/key",
        api_token: "",
        fail: false,
        source_host: "s1",
    }
}

let key = read_file(vars.key_src, #{secret: true});
log(`key: ${key}`);
directory(vars.base, #{mode: "0700"});
file(`${vars.base}/copied.key`, #{from_host: vars.source_host, src: vars.key_src, secret: true, mode: "0400"});
file(`${vars.base}/content.key`, #{content: key, mode: "0400"});
template(`${vars.base}/token.conf`, "token.j2", #{mode: "0600"});
file(`${vars.base}/inline.conf`, #{content: `token = ${vars.api_token}\n`, mode: "0600"});
sh(`echo ${vars.api_token} > /dev/null`, #{creates: `${vars.base}/token.conf.done`});
let r = sh(`printf '%s\n' '${vars.api_token}'`);
log(`token: ${vars.api_token}; printed: ${r.stdout}`);
for cmd in [
    `cat ${vars.key_src}`,
    `base64 -w0 ${vars.key_src}`,
    `base64 ${vars.key_src}`,
    `openssl base64 -in ${vars.key_src} 2>/dev/null || base64 -w64 ${vars.key_src}`,
    `od -An -v -tx1 ${vars.key_src} | tr -d ' \n'`,
    `xxd -p ${vars.key_src} 2>/dev/null || od -An -v -tx1 ${vars.key_src} | tr -d ' \n' | fold -w60`,
    `printf %s '${vars.api_token}' | base64`,
    `printf %s '${vars.api_token}' | od -An -v -tx1 | tr -d ' \n'`,
] {
    let p = probe(cmd);
    log(`${cmd}: ${p.stdout}`);
    print(p.stdout);
    debug(p.stdout);
}
if vars.fail {
    sh(`cat ${vars.key_src}; echo 'token ${vars.api_token}' >&2; base64 ${vars.key_src} >&2; exit 3`);
}
"#;

struct Setup {
    sshd: Sshd,
    recipe: std::path::PathBuf,
    inv: std::path::PathBuf,
    key: Vec<u8>,
}

fn setup() -> Setup {
    let sshd = Sshd::start();
    let dir = sshd.dir.path();
    // Random bytes, plus one line of printable text (munge keys are binary; some keys are not).
    let mut key = random_bytes(1024);
    key.extend_from_slice(b"\nprintable-part-of-the-key-0123456789\n");
    std::fs::write(dir.join("munge.key"), &key).expect("key");
    let recipe = dir.join("secrets.rhai");
    std::fs::write(&recipe, RECIPE).expect("recipe");
    std::fs::write(dir.join("token.j2"), "# test\ntoken = {{ api_token }}\n").expect("tpl");
    let k = dir.join("munge.key");
    let vars = |base: &str| {
        format!(
            "base = \"{}\", key_src = \"{}\"",
            dir.join(base).display(),
            k.display()
        )
    };
    let inv = inventory(
        dir,
        &[spec("s1", &sshd, vars("b1")), spec("s2", &sshd, vars("b2"))],
    );
    Setup {
        sshd,
        recipe,
        inv,
        key,
    }
}

fn token() -> String {
    // Letters and digits, 32 of them, like an API token.
    random_bytes(32)
        .iter()
        .map(|b| {
            let cs = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            cs[*b as usize % cs.len()] as char
        })
        .collect()
}

/// The secrets recipe on both hosts, with `tok` as the token.
fn secrets_run(s: &Setup, tok: &str) -> Test {
    Test::new()
        .arg("run")
        .arg(&s.recipe)
        .args(["--group", "all", "-i"])
        .arg(&s.inv)
        .args(["--var", &format!("api_token={tok}")])
}

#[test]
fn secrets_never_appear_in_any_output() {
    let s = setup();
    let tok = token();
    let secrets = |t: &str| -> Vec<(String, Vec<u8>)> {
        vec![
            ("munge key".into(), s.key.clone()),
            ("api_token".into(), t.as_bytes().to_vec()),
        ]
    };
    let check = |what: &str, out: &[u8], t: &str| {
        let sec = secrets(t);
        let refs: Vec<(&str, &[u8])> = sec.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
        assert_clean(what, out, &refs);
    };

    // A dry run on fresh hosts, with diffs: shows what would be written, never the content.
    // (Secrets are described.)
    let out = secrets_run(&s, &tok)
        .args(["--dry-run", "--diff", "-v"])
        .run()
        .expect_success()
        .expect_contains(&["<secret:"]);
    check("--dry-run --diff -v", &out.all_bytes(), &tok);
    // The real runs, at every verbosity and as JSON.
    for extra in [
        &["-v"][..],
        &[][..],
        &["-vv", "--diff"][..],
        &["-vvv"][..],
        &["--json"][..],
        &["--json", "--diff", "-vv"][..],
    ] {
        let out = secrets_run(&s, &tok).args(extra).run().expect_success();
        check(&format!("{extra:?}"), &out.all_bytes(), &tok);
    }
    let b1 = s.sshd.path("b1");
    assert_eq!(
        std::fs::read(b1.join("content.key")).expect("written"),
        s.key
    );
    assert_eq!(
        std::fs::read(s.sshd.path("b2/copied.key")).expect("copied"),
        s.key
    );

    // A new token: the diff of the files holding it must show neither the old nor the new.
    let tok2 = token();
    for extra in [
        &["--dry-run", "--diff"][..],
        &["--diff", "-vv", "--json"][..],
    ] {
        let out = secrets_run(&s, &tok2).args(extra).run().expect_success();
        check(&format!("new token {extra:?}"), &out.all_bytes(), &tok);
        check(&format!("new token {extra:?}"), &out.all_bytes(), &tok2);
    }

    // A failing step that prints both secrets, in human and JSON output.
    for extra in [&["-v"][..], &["--json"][..]] {
        let mut e = extra.to_vec();
        e.extend(["--var", "fail=true"]);
        let out = secrets_run(&s, &tok2)
            .args(&e)
            .run()
            .expect_code(1)
            .expect_contains(&["exit status 3"]);
        check(&format!("failure {extra:?}"), &out.all_bytes(), &tok2);
    }
    check("sshd log", s.sshd.log().as_bytes(), &tok2);
}

/// The shipped MUNGE recipe on two sandbox hosts: the real key, made on the first host and
/// copied to the second through the controller, never appears in `-vv --diff`, `--json`,
/// `--dry-run --diff` output, nor in a failing run's.
#[test]
fn the_munge_key_never_appears() {
    if !require_root("booting sandbox hosts") {
        return;
    }
    assert!(
        project().join("recipes/munge.rhai").exists(),
        "recipes/munge.rhai is shipped and must be tested"
    );
    let sb = Sandbox::up("secrets", &["k1", "k2"]).start();
    let run_munge = |extra: &[&str]| {
        Test::new()
            .args(["run", "munge.rhai", "-i"])
            .arg(sb.inventory())
            .args(["--var", "master=k1"])
            .args(extra)
            .timeout(sandbox::RUN_TIMEOUT)
            .run()
    };
    let mut outputs = Vec::new();
    // The master first (it makes the key), then every host; then the same again as JSON,
    // as a dry run, and a run that fails on the second host after reading the key.
    for extra in [
        &["--host", "k1", "-vv", "--diff"][..],
        &["--group", "all", "-vv", "--diff"][..],
        &["--group", "all", "--json", "-vv", "--diff"][..],
        &["--group", "all", "--dry-run", "--diff", "-v"][..],
    ] {
        let out = run_munge(extra).expect_success();
        outputs.push((format!("{extra:?}"), out.all_bytes()));
    }
    // A failure: the second host's copy of the key cannot be written (a folder is in the
    // way), after the key was read from the master.
    let k2_key = sb.root("k2").join("etc/munge/munge.key");
    std::fs::remove_file(&k2_key).expect("rm key");
    std::fs::create_dir(&k2_key).expect("a folder in the way");
    let out = run_munge(&["--group", "all", "-vv", "--diff"])
        .expect_code(1)
        .expect_contains(&["munge.key"]);
    outputs.push(("failure".into(), out.all_bytes()));
    let key = std::fs::read(sb.root("k1").join("etc/munge/munge.key")).expect("key");
    assert!(key.len() >= 32, "a real key: {} bytes", key.len());
    for (what, out) in &outputs {
        assert_clean(what, out, &[("munge key", &key[..])]);
    }
}
