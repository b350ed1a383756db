//! A secret stays a secret through `+`, `+=`, `append`, `sh` (command and stdin) and template
//! `vars` (maps and lists too): on a real loopback sshd the files hold the real bytes, and no
//! output (human, `-v`, `-vv`, `--json`, `--diff`, dry run) holds the secret. Text made of a
//! secret's placeholder (`${s}`, `to_string`, a list turned to text) is refused before the host
//! gets it, and string functions on a secret are refused with a message that says what works.

mod common;
use common::*;
use std::path::{Path, PathBuf};

const PW: &str = "hunter2-Secret-5150";

/// A recipe (and its template) in a folder of its own; returns the recipe's path.
fn recipe(sshd: &Sshd, name: &str, body: &str) -> PathBuf {
    let dir = sshd.path(&format!("recipes-{name}"));
    std::fs::create_dir_all(&dir).expect("recipe folder");
    std::fs::write(
        dir.join("tpl.j2"),
        "password={{ pw }}\n{% for x in list %}item={{ x }}\n{% endfor %}k={{ m.k }}\n",
    )
    .expect("template");
    let text = format!(
        "fn defaults() {{ #{{ base: \"\" }} }}\nlet s = secret(\"{PW}\");\nlet b = vars.base;\n{body}\n"
    );
    let p = dir.join(format!("{name}.rhai"));
    std::fs::write(&p, text).expect("recipe");
    p
}

fn run(recipe: &Path, inv: &Path, base: &Path, extra: &[&str]) -> Output {
    Test::new()
        .arg("run")
        .arg(recipe)
        .args(["--group", "all", "-i"])
        .arg(inv)
        .args(["--var", &format!("base={}", base.display())])
        .args(extra)
        .run()
}

/// No output of `out` holds the secret, in any common spelling.
fn no_secret_in(out: &Output, what: &str) {
    let all = out.all();
    let hex = PW.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for needle in [PW, "hunter2", hex.as_str()] {
        assert!(
            !all.contains(needle),
            "{what}: output holds {needle:?}:\n{all}"
        );
    }
}

/// Every file below `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(files(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            v.push((p, b));
        }
    }
    v
}

const JOINS: &str = r#"
directory(b, #{});
file(b + "/plus.conf", #{content: "password=" + s + "\n"});
let t = "user=admin\n";
t += "password=";
t += s;
t += "\n";
file(b + "/append.conf", #{content: t});
let a = "x=";
a.append(s);
file(b + "/two.conf", #{content: s + ":" + s + 7 + '!' + a});
sh("printf '%s\n' " + s + " > " + b + "/sh.out", #{creates: b + "/sh.out"});
sh("cat > " + b + "/stdin.out", #{stdin: "pw=" + s, creates: b + "/stdin.out"});
template(b + "/tpl.conf", "tpl.j2", #{vars: #{pw: s, list: [s, "x"], m: #{k: "k=" + s}}});
let r = sh("echo " + s + "; echo " + s + " >&2");
log("joined: " + s);
log(r.stdout);
"#;

#[test]
fn a_secret_joined_into_text_reaches_the_host_as_itself_and_no_output() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("h", "");
    let base = sshd.path("out");
    let r = recipe(&sshd, "joins", JOINS);

    let dry = run(&r, &inv, &base, &["--dry-run", "--diff", "-vv"]);
    assert_eq!(dry.code, 0, "{}", dry.show());
    no_secret_in(&dry, "--dry-run --diff -vv");
    assert!(!base.exists(), "the dry run wrote {}", base.display());

    let first = run(&r, &inv, &base, &["--diff", "-vv"]);
    assert_eq!(first.code, 0, "{}", first.show());
    no_secret_in(&first, "--diff -vv");
    for (name, want) in [
        ("plus.conf", format!("password={PW}\n")),
        ("append.conf", format!("user=admin\npassword={PW}\n")),
        ("two.conf", format!("{PW}:{PW}7!x={PW}")),
        ("sh.out", format!("{PW}\n")),
        ("stdin.out", format!("pw={PW}")),
        (
            "tpl.conf",
            format!("password={PW}\nitem={PW}\nitem=x\nk=k={PW}\n"),
        ),
    ] {
        let got = std::fs::read_to_string(base.join(name)).unwrap_or_default();
        assert_eq!(got, want, "{name} on the host");
    }
    // The secret steps are shown by size and checksum, never as text.
    assert!(first.stdout.contains("<secret: "), "{}", first.show());

    for extra in [
        &["--json"][..],
        &["-v", "--diff"],
        &["-vvv"],
        &["--dry-run", "--diff", "--json"],
    ] {
        let again = run(&r, &inv, &base, extra);
        assert_eq!(again.code, 0, "{extra:?}: {}", again.show());
        no_secret_in(&again, &format!("{extra:?}"));
    }
    for (p, b) in files(&base) {
        assert!(
            !String::from_utf8_lossy(&b).contains("<secret"),
            "{} holds a placeholder",
            p.display()
        );
    }
}

#[test]
fn text_made_of_a_secret_is_refused_before_the_host_gets_it() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("h", "");
    let refused = "Join a secret with `+`";
    for (name, body, says) in [
        (
            "interpolated_file",
            "file(b + \"/x\", #{content: `password=${s}`});",
            refused,
        ),
        ("interpolated_sh", "sh(`echo ${s} > ${b}/x`);", refused),
        (
            "to_string",
            "file(b + \"/x\", #{content: \"pw=\" + s.to_string()});",
            refused,
        ),
        (
            "list_as_text",
            "file(b + \"/x\", #{content: \"pw=\" + [s]});",
            refused,
        ),
        (
            "map_as_text",
            "sh(\"echo \" + #{pw: s} + \" > \" + b + \"/x\");",
            refused,
        ),
        (
            "template_var_as_text",
            "template(b + \"/x\", \"tpl.j2\", #{vars: #{pw: `${s}`, list: [], m: #{k: 1}}});",
            refused,
        ),
        (
            "stdin_as_text",
            "sh(\"cat > \" + b + \"/x\", #{stdin: `${s}`});",
            refused,
        ),
        (
            "string_function",
            "file(b + \"/x\", #{content: s.replace(\"a\", \"b\")});",
            "a secret has no text functions",
        ),
        (
            "secret_env",
            "sh(\"echo $PW > \" + b + \"/x\", #{env: #{PW: s}});",
            "option `env` cannot take a secret",
        ),
        (
            "secret_path",
            "file(s, #{content: \"x\"});",
            "a secret has no text functions",
        ),
    ] {
        let base = sshd.path(&format!("out-{name}"));
        std::fs::create_dir_all(&base).expect("base");
        let r = recipe(&sshd, name, body);
        for extra in [&["--dry-run"][..], &["--json"], &[]] {
            let out = run(&r, &inv, &base, extra);
            assert_eq!(out.code, 1, "{name} {extra:?}: {}", out.show());
            assert!(out.all().contains(says), "{name} {extra:?}: {}", out.show());
            no_secret_in(&out, name);
            assert!(
                files(&base).is_empty(),
                "{name} {extra:?} wrote {:?}",
                files(&base)
            );
        }
    }
}

/// Secret-named variables (the names of docs/security.md) given on the command line, in the
/// inventory, or computed by a controller recipe at run time, are used in commands, files,
/// notes and errors: the host gets them, no output shows them.
#[test]
fn secret_named_variables_never_reach_output() {
    let sshd = Sshd::start();
    let base = sshd.path("vars-out");
    std::fs::create_dir_all(&base).expect("base");
    let inv = sshd.inventory(
        "h",
        "[vars]\npassphrase = \"PP-inventory-4471\"\nprivate_key = \"PK-inventory-9902\"\n",
    );
    let dir = sshd.path("vars-recipes");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("host.rhai"),
        "fn defaults() { #{ api_key: \"\", passphrase: \"\", private_key: \"\", join_tokens: [], base: \"\" } }\n\
         sh(\"echo \" + vars.api_key + \"; echo \" + vars.passphrase + \" >&2\");\n\
         file(vars.base + \"/k\", #{content: `key=${vars.api_key} pp=${vars.passphrase} pk=${vars.private_key} t=${vars.join_tokens[0]}` + \"\\n\"});\n\
         log(`key is ${vars.api_key}, tokens ${vars.join_tokens}`);\n\
         sh(\"echo \" + vars.private_key + \"; exit 3\");\n",
    )
    .expect("host recipe");
    std::fs::write(
        dir.join("ctl.rhai"),
        "fn defaults() { #{ base: \"\" } }\n\
         let k = \"AK\" + \"-computed-\" + (6000 + 1234);\n\
         play(\"host.rhai\", #{hosts: [\"h\"], vars: #{api_key: k, join_tokens: [\"JT-computed-\" + 5555], base: vars.base}});\n",
    )
    .expect("controller recipe");
    let values = [
        "PP-inventory-4471",
        "PK-inventory-9902",
        "AK-cli-3301",
        "AK-computed-7234",
        "JT-computed-5555",
        "JT-cli-8080",
    ];
    for (recipe, extra) in [
        (
            "host.rhai",
            &[
                "--var",
                "api_key=AK-cli-3301",
                "--var",
                "join_tokens=[\"JT-cli-8080\"]",
            ][..],
        ),
        ("ctl.rhai", &[][..]),
    ] {
        for mode in [
            &["-vv", "--diff"][..],
            &["--json"],
            &["--dry-run", "--diff"],
        ] {
            let _ = std::fs::remove_file(base.join("k"));
            let out = Test::new()
                .arg("run")
                .arg(dir.join(recipe))
                // A controller recipe names its hosts itself.
                .args(if recipe == "ctl.rhai" {
                    &["-i"][..]
                } else {
                    &["--group", "all", "-i"]
                })
                .arg(&inv)
                .args(["--var", &format!("base={}", base.display())])
                .args(extra)
                .args(mode)
                .run();
            // The last command fails (exit 3), except in a dry run, which does not run it.
            let code = if mode[0] == "--dry-run" { 0 } else { 1 };
            assert_eq!(out.code, code, "{recipe} {mode:?}: {}", out.show());
            for v in values {
                assert!(
                    !out.all().contains(v),
                    "{recipe} {mode:?} shows {v}:\n{}",
                    out.show()
                );
            }
            if mode[0] == "-vv" {
                let k = std::fs::read_to_string(base.join("k")).unwrap_or_default();
                let ak = if recipe == "ctl.rhai" {
                    "AK-computed-7234"
                } else {
                    "AK-cli-3301"
                };
                let jt = if recipe == "ctl.rhai" {
                    "JT-computed-5555"
                } else {
                    "JT-cli-8080"
                };
                assert_eq!(
                    k,
                    format!("key={ak} pp=PP-inventory-4471 pk=PK-inventory-9902 t={jt}\n"),
                    "{recipe}: {}",
                    out.show()
                );
            }
        }
    }
}
