//! Bounded fuzzing (proptest) of everything that reads user input before a host is touched:
//! the inventory loader, `--var` parsing and conversion, template rendering, error excerpts
//! and the redactor. The property is always the same: any input gives a value or an error,
//! never a panic. Case counts are small enough for every CI run (a few seconds in all);
//! `PROPTEST_CASES=100000 cargo test fuzz_` runs a longer campaign.

use proptest::prelude::*;
use std::path::Path;

/// Text that looks like TOML often enough to get past the tokenizer: known keys, tables,
/// arrays, strings with escapes, numbers, and random junk between them.
fn tomlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("known_hosts".to_string()),
        Just("address".to_string()),
        Just("user".to_string()),
        Just("port".to_string()),
        Just("key".to_string()),
        Just("jump".to_string()),
        Just("become".to_string()),
        Just("vars".to_string()),
        Just("hosts".to_string()),
        "[a-z_]{1,8}",
        "\"[^\"\\\\]{0,6}\"",
    ];
    let value = prop_oneof![
        "\"[^\"\\\\\\n]{0,12}\"",
        "-?[0-9]{1,20}",
        Just("true".to_string()),
        Just("[\"a\", \"b\"]".to_string()),
        Just("[\"w1\", \"ghost\", 3]".to_string()),
        Just("{ x = 1, y = \"z\" }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("\"\\u00e9\\t\\\\\"".to_string()),
        Just("99999999999999999999".to_string()),
        Just("\"~/.ssh/id_ed25519\"".to_string()),
        Just("\"u@h:22,v@w\"".to_string()),
        ".{0,8}",
    ];
    let line = prop_oneof![
        (key.clone(), value).prop_map(|(k, v)| format!("{k} = {v}")),
        "[a-z]{1,6}".prop_map(|h| format!("[hosts.{h}]")),
        "[a-z]{1,6}".prop_map(|g| format!("[groups.{g}]")),
        Just("[vars]".to_string()),
        Just("[[hosts]]".to_string()),
        Just("hosts = [\"a\", \"b\", \"nope\"]".to_string()),
        key.prop_map(|k| format!("[{k}")),
        ".{0,20}",
    ];
    prop::collection::vec(line, 0..14).prop_map(|l| l.join("\n"))
}

/// 400 cases per property, or `PROPTEST_CASES`.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_inventory_parse_never_panics(text in tomlish()) {
        match crate::inventory::parse(&text, Path::new("/fuzz/inventory.toml")) {
            Ok(inv) => {
                for g in inv.groups.keys() {
                    let _ = inv.group_members(g);
                }
                let _ = inv.group_members("all");
                let _ = inv.known_hosts_path();
            }
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(shown.starts_with("inventory error: "), "{}", shown);
                prop_assert!(shown.len() < 2000, "{}", shown);
            }
        }
    }

    #[test]
    fn fuzz_inventory_parse_arbitrary_text(text in "\\PC{0,200}") {
        let _ = crate::inventory::parse(&text, Path::new("/fuzz/i.toml")).map_err(|e| e.to_string());
    }

    #[test]
    fn fuzz_cli_vars_never_panic(arg in "\\PC{0,40}", raw in "\\PC{0,40}") {
        let _ = crate::vars::parse_cli_var(&arg);
        for default in [
            rhai::Dynamic::from(1_i64),
            rhai::Dynamic::from(1.5_f64),
            rhai::Dynamic::from(true),
            rhai::Dynamic::from("s".to_string()),
            rhai::Dynamic::from(rhai::Array::new()),
            rhai::Dynamic::from(rhai::Map::new()),
            rhai::Dynamic::UNIT,
        ] {
            let _ = crate::vars::from_cli("v", &default, &raw);
        }
    }

    #[test]
    fn fuzz_cli_vars_tomlish_values(raw in prop_oneof![
        "\\[[^\\]]{0,30}\\]?",
        "\\{[^}]{0,30}\\}?",
        "[0-9eE+\\-.]{0,20}",
        "[a-z, ]{0,30}",
    ]) {
        for default in [
            rhai::Dynamic::from(rhai::Array::new()),
            rhai::Dynamic::from(rhai::Map::new()),
            rhai::Dynamic::from(0_i64),
            rhai::Dynamic::from(0.0_f64),
        ] {
            let _ = crate::vars::from_cli("v", &default, &raw);
        }
    }

    #[test]
    fn fuzz_template_rendering_never_panics(text in prop::collection::vec(prop_oneof![
        Just("{{ a }}".to_string()),
        Just("{{ b.c }}".to_string()),
        Just("{{ missing }}".to_string()),
        Just("{% for x in items %}{{ x }}{% endfor %}".to_string()),
        Just("{% if a %}".to_string()),
        Just("{% endif %}".to_string()),
        Just("{% for %}".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{#".to_string()),
        Just("{% raw %}".to_string()),
        Just("{{ a | upper | join(',') }}".to_string()),
        Just("{{ items[7] }}".to_string()),
        Just("{{ 1 / 0 }}".to_string()),
        Just("{% set y = a %}{{ y }}".to_string()),
        Just("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}".to_string()),
        Just("\n".to_string()),
        "\\PC{0,10}",
    ], 0..12)) {
        let text = text.concat();
        let ctx = serde_json::json!({"a": "x", "b": {"c": 1}, "items": [1, 2, 3]});
        match crate::primitives::files::render("fuzz.j2", &text, &ctx) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.contains("fuzz.j2"), "error does not name the template: {}", e),
        }
    }

    #[test]
    fn fuzz_error_excerpts(line in "\\PC{0,400}", col in 0usize..500) {
        let (shown, marker) = crate::errors::excerpt(&line, col);
        prop_assert!(shown.chars().count() <= 122);
        prop_assert!(marker <= shown.chars().count());
    }

    /// Every secret is checked, UTF-8 or not: its text form (what a terminal shows, invalid
    /// bytes replaced) never survives redaction.
    #[test]
    fn fuzz_redactor(secret in prop_oneof![
        "\\PC{6,60}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 6..80),
    ], text in "\\PC{1,200}") {
        let r = crate::secrets::Redactor::default();
        r.add(&secret);
        let s = String::from_utf8_lossy(&secret).into_owned();
        let hay = format!("{text}{s}{text}");
        let out = r.redact(&hay);
        // The label itself must not be what is left behind.
        if !"<secret: bytes, sha256 0123456789abcdef>".contains(s.as_str()) {
            prop_assert!(!out.contains(&s), "{:?} still in {:?}", s, out);
        }
    }

    #[test]
    fn fuzz_redactor_short_or_empty_secrets_never_panic(secret in prop::collection::vec(any::<u8>(), 0..6), text in "\\PC{0,50}") {
        let r = crate::secrets::Redactor::default();
        r.add(&secret);
        let _ = r.redact(&text);
    }
}
