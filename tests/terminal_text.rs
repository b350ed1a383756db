//! What the operator reads: invisible and bidirectional characters from a host are spelt
//! out, a module that does not parse is placed in its own file (also for a recipe named
//! without a folder, and one module deep), a template's undefined name is named at run
//! time, completions offer no internal option and the man page points to no page it lacks.

mod common;
use common::*;

/// Bidi overrides and isolates, zero-width characters, line and paragraph separators, BOM.
const INVISIBLE: &[char] = &[
    '\u{202e}', '\u{202c}', '\u{202a}', '\u{2066}', '\u{2069}', '\u{200b}', '\u{200d}', '\u{200f}',
    '\u{2028}', '\u{2029}', '\u{2060}', '\u{feff}', '\u{ad}',
];

#[test]
fn invisible_characters_from_a_host_are_spelt_out() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("h", "");
    let dir = tempfile::tempdir().expect("tempdir");
    let printf: String = INVISIBLE
        .iter()
        .map(|c| {
            c.to_string()
                .bytes()
                .map(|b| format!("\\\\{b:03o}"))
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("x");
    let recipe = dir.path().join("bidi.rhai");
    std::fs::write(
        &recipe,
        format!(
            "let p = probe(\"printf 'a{printf}z'\");\nlog(\"out: \" + p.stdout);\n\
             sh(\"printf 'bad{printf}end' >&2; exit 3\");\n"
        ),
    )
    .expect("recipe");
    for extra in [&[][..], &["-v"], &["--json"]] {
        let out = run_all(&recipe, &inv).args(extra).run();
        assert_eq!(out.code, 1, "{}", out.show());
        let all = out.all();
        for c in INVISIBLE {
            assert!(
                !all.contains(*c),
                "{extra:?}: raw U+{:04X} in {all:?}",
                *c as u32
            );
        }
        if extra.is_empty() {
            assert!(all.contains("a\\u{202e}x\\u{202c}x"), "{all}");
            assert!(all.contains("bad\\u{202e}"), "{all}");
        }
        if extra == ["--json"] {
            // Escaped the JSON way, the events still carry the characters.
            assert!(out.stdout.contains("\\u202e"), "{}", out.stdout);
            let notes: String = out.events().iter().map(|e| e.to_string()).collect();
            assert!(
                notes.contains('\u{202e}') || notes.contains("\\u202e"),
                "{notes}"
            );
        }
    }
}

#[test]
fn a_module_that_does_not_parse_is_placed_in_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mods = dir.path().join("mods2");
    std::fs::create_dir_all(&mods).expect("mods2");
    std::fs::write(mods.join("bad.rhai"), "fn f() {\n  let x = ;\n}\n").expect("bad");
    std::fs::write(
        mods.join("mid.rhai"),
        "import \"mods2/bad\" as b;\nfn g() { 1 }\n",
    )
    .expect("mid");
    std::fs::write(mods.join("good.rhai"), "fn g() { 1 }\n").expect("good");
    std::fs::write(
        dir.path().join("r.rhai"),
        "import \"mods2/bad\" as b;\nlog(\"x\");\n",
    )
    .expect("r");
    std::fs::write(
        dir.path().join("r2.rhai"),
        "import \"mods2/mid\" as m;\nlog(\"x\");\n",
    )
    .expect("r2");
    std::fs::write(
        dir.path().join("ok.rhai"),
        "import \"mods2/good\" as g;\nlog(`x${g::g()}`);\n",
    )
    .expect("ok");
    // Named without a folder, from the recipe's folder: its modules are found.
    let out = Test::new()
        .args(["check", "ok.rhai"])
        .current_dir(dir.path())
        .run();
    assert_eq!(out.code, 0, "{}", out.show());
    for (recipe, places) in [
        (
            "r.rhai",
            &["mods2/bad.rhai:2:11", "imported at r.rhai:1:8"][..],
        ),
        (
            "r2.rhai",
            &[
                "mods2/bad.rhai:2:11",
                "imported at mods2/mid.rhai:1:8",
                "imported at r2.rhai:1:8",
            ],
        ),
    ] {
        let out = Test::new()
            .args(["check", recipe])
            .current_dir(dir.path())
            .run();
        assert_eq!(out.code, 2, "{}", out.show());
        let all = out.all();
        assert!(!all.contains("Module not found"), "{all}");
        assert!(all.contains("Syntax error"), "{all}");
        assert!(all.contains("let x = ;"), "{all}");
        for p in places {
            assert!(all.contains(p), "{recipe}: no {p:?} in {all}");
        }
    }
}

#[test]
fn a_template_error_at_run_time_names_what_is_undefined() {
    let sshd = Sshd::start();
    let inv = sshd.inventory("h", "");
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = sshd.path("out.conf");
    for (tpl, names) in [
        ("a={{ m.missing }}\n", &["t.j2:1:", "m.missing"][..]),
        ("x\n{{ nope | upper }}\n", &["t.j2:2:", "nope"]),
        (
            "{% for i in items %}{{ i.name }}{% endfor %}\n",
            &["t.j2:1:", "i.name"],
        ),
        ("{{ m.k + q }}\n", &["t.j2:1:", "`q`"]),
    ] {
        std::fs::write(dir.path().join("t.j2"), tpl).expect("template");
        // `vars` built at run time: nothing to check before the host.
        let recipe = dir.path().join("t.rhai");
        std::fs::write(
            &recipe,
            format!(
                "let v = #{{m: #{{k: 1}}, items: [#{{n: 1}}]}};\ntemplate(\"{}\", \"t.j2\", #{{vars: v}});\n",
                dest.display()
            ),
        )
        .expect("recipe");
        let out = run_all(&recipe, &inv).run();
        assert_eq!(out.code, 1, "{}", out.show());
        for n in names {
            assert!(out.all().contains(n), "{tpl:?}: no {n:?} in {}", out.show());
        }
    }
}

#[test]
fn completions_offer_no_internal_option_and_the_man_page_no_missing_page() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Test::new().args(["completions", shell]).run();
        assert_eq!(out.code, 0, "{}", out.show());
        for hidden in ["slurm-node", "slurm_node", "serve-files", "serve_files"] {
            assert!(!out.stdout.contains(hidden), "{shell} offers {hidden}");
        }
        for shown in ["dry-run", "via", "sandbox"] {
            assert!(out.stdout.contains(shown), "{shell} lacks {shown}");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Test::new().arg("man").arg("--dir").arg(dir.path()).run();
    assert_eq!(out.code, 0, "{}", out.show());
    let page = Test::new().arg("man").run().expect_success().stdout;
    // Every page the manual points to (`recipe\-run(1)`) is one `man --dir` writes.
    let mut seen = 0;
    for (i, _) in page.match_indices("recipe\\-") {
        let name: String = page[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '\\' || *c == '-')
            .collect::<String>()
            .replace('\\', "");
        if page[i + name.len() + name.matches('-').count()..].starts_with("(1)") {
            seen += 1;
            assert!(
                dir.path().join(format!("{name}.1")).is_file(),
                "the manual points to {name}(1), which `man --dir` does not write"
            );
        }
    }
    assert!(seen >= 5, "no page references found in:\n{page}");
}
