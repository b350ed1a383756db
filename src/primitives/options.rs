//! Options maps, typed once: each primitive's options struct (declared with `options!`) is the
//! one list of its keys and their types. The run reads a map through it (key and type checks,
//! then serde), and `recipe check` checks literal maps against the same list.

use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext};
use serde::de::DeserializeOwned;

/// What an option's value must be.
#[derive(Clone, Copy)]
pub enum Kind {
    Str,
    /// A whole number, 0 or more.
    Int,
    Bool,
    /// An octal mode written as a string ("0644").
    Mode,
    /// One word of a list; the function accepts the word (aliases included) or says why not.
    Choice(&'static [&'static str], fn(&str) -> Result<(), String>),
    StrList,
    /// A map whose values are strings (`env`).
    StrMap,
    /// A map of anything (`vars`).
    Map,
    /// Anything the primitive sorts out itself (`content`: a string, a blob or a secret).
    Any,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Choice(w, _) => write!(f, "Choice({w:?})"),
            Kind::Str => write!(f, "Str"),
            Kind::Int => write!(f, "Int"),
            Kind::Bool => write!(f, "Bool"),
            Kind::Mode => write!(f, "Mode"),
            Kind::StrList => write!(f, "StrList"),
            Kind::StrMap => write!(f, "StrMap"),
            Kind::Map => write!(f, "Map"),
            Kind::Any => write!(f, "Any"),
        }
    }
}

/// The [`Kind`] of a Rust type used as an option.
pub trait OptType {
    const KIND: Kind;
}

impl OptType for String {
    const KIND: Kind = Kind::Str;
}
impl OptType for u64 {
    const KIND: Kind = Kind::Int;
}
impl OptType for u32 {
    const KIND: Kind = Kind::Int;
}
impl OptType for bool {
    const KIND: Kind = Kind::Bool;
}
impl OptType for Vec<String> {
    const KIND: Kind = Kind::StrList;
}
impl OptType for std::collections::BTreeMap<String, String> {
    const KIND: Kind = Kind::StrMap;
}
impl OptType for Map {
    const KIND: Kind = Kind::Map;
}
impl OptType for Dynamic {
    const KIND: Kind = Kind::Any;
}
impl<T: OptType> OptType for Option<T> {
    const KIND: Kind = T::KIND;
}

/// One option: its key and type.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub key: &'static str,
    pub kind: Kind,
}

/// An options struct: the primitive it belongs to and its fields.
pub trait Options: DeserializeOwned {
    /// The primitive, as recipes call it ("" for a group of fields shared by several).
    const WHAT: &'static str;
    fn fields(out: &mut Vec<Field>);
    fn spec() -> Vec<Field> {
        let mut v = Vec::new();
        Self::fields(&mut v);
        v
    }
}

/// Declares an options struct: every field optional (serde default), `..name: Type` for a
/// group of fields shared with other primitives, flattened. Fields marked `#[serde(skip)]`
/// are taken out of the map by the primitive before it is read, but are options all the same.
macro_rules! options {
    ($(#[$m:meta])* pub struct $name:ident for $what:literal {
        $( $(#[$fm:meta])* $f:ident : $t:ty, )*
        $( ..$ff:ident : $ft:ty $(,)? )?
    }) => {
        $(#[$m])*
        #[derive(Debug, Default, Clone, serde::Deserialize)]
        pub struct $name {
            $( $(#[$fm])* #[serde(default)] pub $f: $t, )*
            $( #[serde(flatten)] pub $ff: $ft, )?
        }
        impl $crate::primitives::options::Options for $name {
            const WHAT: &'static str = $what;
            fn fields(out: &mut Vec<$crate::primitives::options::Field>) {
                $( out.push($crate::primitives::options::Field {
                    key: stringify!($f),
                    kind: <$t as $crate::primitives::options::OptType>::KIND,
                }); )*
                $( <$ft as $crate::primitives::options::Options>::fields(out); )?
            }
        }
    };
}

pub(crate) use options;

/// `state "abesnt" is not one of "present", "absent" (did you mean "absent"?)`.
pub fn bad_choice(field: &str, got: &str, words: &[&str]) -> String {
    let hint = crate::hints::did_you_mean(got, words.iter().copied())
        .map(|w| format!(" (did you mean {w:?}?)"))
        .unwrap_or_default();
    let list = words
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{field} {got:?} is not one of {list}{hint}")
}

choice!(
    /// `state` of file, directory, packages, user and group.
    Presence, "state", ["present" => Present, "absent" => Absent]
);

/// Reads an options map into `T` (see [`parse`]). A bad option fails the step: a
/// failed step event is reported before the error is returned.
pub fn opts<T: Options>(ctx: &NativeCallContext, m: Map) -> Result<T, Box<EvalAltResult>> {
    parse::<T>(m).map_err(|msg| {
        super::step::failed_options_step(ctx, T::WHAT, &msg);
        super::err_at(msg, ctx.call_position())
    })
}

/// Checks an option a primitive takes out of its map itself (see [`check_key`]).
pub fn opt_value<T: Options>(
    ctx: &NativeCallContext,
    key: &str,
    v: &Dynamic,
) -> Result<(), Box<EvalAltResult>> {
    check_key::<T>(key, v).map_err(|msg| {
        super::step::failed_options_step(ctx, T::WHAT, &msg);
        super::err_at(msg, ctx.call_position())
    })
}

/// Every primitive that takes an options map, with its options: the table `recipe check` reads.
pub fn all() -> Vec<(&'static str, Vec<Field>)> {
    use crate::primitives::{command, files, packages, services, users};
    fn one<T: Options>() -> (&'static str, Vec<Field>) {
        (T::WHAT, T::spec())
    }
    vec![
        one::<command::ShOpts>(),
        one::<command::WaitOpts>(),
        one::<files::FileOpts>(),
        one::<files::DirOpts>(),
        one::<files::TemplateOpts>(),
        one::<super::download::DownloadOpts>(),
        one::<files::UnpackOpts>(),
        one::<files::ReadOpts>(),
        one::<packages::PkgOpts>(),
        one::<services::ServiceOpts>(),
        one::<users::UserOpts>(),
        one::<users::GroupOpts>(),
        one::<crate::controller::PlayOpts>(),
    ]
}

/// The options `what` takes, if it takes an options map.
pub fn of(what: &str) -> Option<Vec<Field>> {
    all().into_iter().find(|(n, _)| *n == what).map(|(_, f)| f)
}

/// `creates` (string), `timeout` (integer), ...: for the reference.
pub fn describe(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| {
            let t = match f.kind {
                Kind::Str => "string".to_string(),
                Kind::Int => "integer".into(),
                Kind::Bool => "bool".into(),
                Kind::Mode => "octal string such as \"0644\"".into(),
                Kind::Choice(w, _) => format!("one of {}", quoted(w)),
                Kind::StrList => "array of strings".into(),
                Kind::StrMap => "map of strings".into(),
                Kind::Map => "map".into(),
                Kind::Any => "string, blob or secret".into(),
            };
            format!("`{}` ({t})", f.key)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// "file: unknown option `mdoe` (did you mean `mode`?); valid options: ...".
pub fn unknown_option(what: &str, key: &str, fields: &[Field]) -> String {
    let valid: Vec<&str> = fields.iter().map(|f| f.key).collect();
    let hint = crate::hints::did_you_mean(key, valid.iter().copied())
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default();
    format!(
        "{what}: unknown option `{key}`{hint}; valid options: {}",
        valid.join(", ")
    )
}

/// What a value is, in a message: `the integer 644`, `the string "yes"`.
fn shown(v: &Dynamic) -> String {
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        let s = s.as_str();
        if s.chars().count() > 40 {
            return "a string".into();
        }
        return format!("the string {s:?}");
    }
    if v.is_int() {
        return format!("the integer {v}");
    }
    if v.is_bool() || v.is_float() {
        return format!("the {} {v}", v.type_name());
    }
    match v.type_name() {
        "array" => "an array".into(),
        "map" => "a map".into(),
        "()" => "()".into(),
        t => format!("a value of type {}", crate::engine::short_type(t)),
    }
}

/// Checks one option's value against its type: the same check for a literal in `recipe check`
/// and for a value a run computes (at the call, before the step touches the host).
pub fn check_value(what: &str, f: &Field, v: &Dynamic) -> Result<(), String> {
    let key = f.key;
    let bad = |want: &str, how: String| {
        Err(format!(
            "{what}: option `{key}` must be {want}, not {}{how}",
            shown(v)
        ))
    };
    if v.is_unit() {
        return Ok(()); // as if not given
    }
    match f.kind {
        Kind::Any => Ok(()),
        Kind::Str if v.is_string() => Ok(()),
        Kind::Str if v.is_int() || v.is_bool() => bad("a string", format!(": write \"{v}\"")),
        Kind::Str => bad("a string", String::new()),
        Kind::Int => match v.as_int() {
            Ok(i) if i >= 0 => Ok(()),
            Ok(_) => bad("a whole number, 0 or more", String::new()),
            Err(_) => match v.read_lock::<rhai::ImmutableString>() {
                Some(s) if s.trim().parse::<u64>().is_ok() => {
                    bad("a number", format!(": write {} without quotes", s.trim()))
                }
                _ => bad("a whole number", String::new()),
            },
        },
        Kind::Bool if v.is_bool() => Ok(()),
        Kind::Bool => bad("true or false", String::new()),
        Kind::Mode => {
            if let Ok(i) = v.as_int() {
                return Err(format!("{what}: {}", int_mode(i)));
            }
            match v.read_lock::<rhai::ImmutableString>() {
                Some(s) => parse_mode(&s)
                    .map(|_| ())
                    .map_err(|e| format!("{what}: {e}")),
                None => bad("an octal mode as a string, like \"0644\"", String::new()),
            }
        }
        Kind::Choice(words, parse) => match v.read_lock::<rhai::ImmutableString>() {
            Some(s) => parse(&s).map_err(|e| format!("{what}: {e}")),
            None => bad(&format!("one of {}", quoted(words)), String::new()),
        },
        Kind::StrList => match v.read_lock::<rhai::Array>() {
            Some(a) => match a.iter().find(|x| !x.is_string()) {
                None => Ok(()),
                Some(x) => Err(format!(
                    "{what}: option `{key}` must be an array of strings; it holds {}",
                    shown(x)
                )),
            },
            None if v.is_string() => bad("an array of strings", format!(": write [{v:?}]")),
            None => bad("an array of strings", String::new()),
        },
        Kind::StrMap => match v.read_lock::<Map>() {
            Some(m) => match m.iter().find(|(_, x)| !x.is_string()) {
                None => Ok(()),
                Some((k, x)) => Err(format!(
                    "{what}: option `{key}`: the value of `{k}` must be a string, not {}{}",
                    shown(x),
                    if x.is_int() || x.is_bool() {
                        format!(": write \"{x}\"")
                    } else {
                        String::new()
                    }
                )),
            },
            None => bad("a map of strings", String::new()),
        },
        Kind::Map if v.is_map() => Ok(()),
        Kind::Map => bad("a map", String::new()),
    }
}

/// Why an integer is not a mode: 644 is octal 01204, not rw-r--r--.
pub fn int_mode(i: i64) -> String {
    format!(
        "option `mode` must be a string: write \"{i:04}\" (the integer {i} is the mode {}, an integer is never read as octal digits)",
        if (0..=0o7777).contains(&i) { format!("0{i:o}") } else { "out of range".into() }
    )
}

fn quoted(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An octal mode string: "0644", "644", "0o644", "4755"; at most 0o7777.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(format!("mode {s:?} is not an octal mode like \"0644\""));
    }
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("mode {s:?} is out of range (at most \"7777\")"))
}

/// Checks the value of one option of `T` that its primitive takes out of the map itself
/// (`vars`, `content`: values serde cannot carry, such as secrets).
pub fn check_key<T: Options>(key: &str, v: &Dynamic) -> Result<(), String> {
    let fields = T::spec();
    match fields.iter().find(|f| f.key == key) {
        Some(f) => check_value(T::WHAT, f, v),
        None => Err(unknown_option(T::WHAT, key, &fields)),
    }
}

/// Whether `v` is a secret or holds one (in a map or list).
pub fn holds_secret(v: &Dynamic) -> bool {
    if v.is::<crate::secrets::Secret>() {
        return true;
    }
    if let Some(m) = v.read_lock::<Map>() {
        return m.values().any(holds_secret);
    }
    if let Some(a) = v.read_lock::<rhai::Array>() {
        return a.iter().any(holds_secret);
    }
    false
}

/// Reads an options map into `T`: unknown keys and mistyped values are refused with the
/// primitive's name, the key and what to write instead.
pub fn parse<T: Options>(m: Map) -> Result<T, String> {
    let fields = T::spec();
    for (k, v) in &m {
        let Some(f) = fields.iter().find(|f| f.key == k.as_str()) else {
            return Err(unknown_option(T::WHAT, k, &fields));
        };
        if holds_secret(v) {
            return Err(format!(
                "{}: option `{k}` cannot take a secret (a secret goes to a host only as \
                 `file` content, `sh` command or `stdin`, or in a template's `vars`)",
                T::WHAT
            ));
        }
        check_value(T::WHAT, f, v)?;
    }
    // Unit values stand for "not given".
    let m: Map = m.into_iter().filter(|(_, v)| !v.is_unit()).collect();
    rhai::serde::from_dynamic::<T>(&Dynamic::from_map(m)).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.split(" (line").next().unwrap_or(&msg);
        // Rhai files our own messages (a bad `state`, a bad `mode`) as syntax errors.
        let msg = msg.strip_prefix("Syntax error: ").unwrap_or(msg);
        format!("{}: bad options: {msg}", T::WHAT)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitives::{command, files, services, users};

    fn map(pairs: &[(&str, Dynamic)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect()
    }
    fn err<T: Options + std::fmt::Debug>(pairs: &[(&str, Dynamic)]) -> String {
        parse::<T>(map(pairs)).expect_err("refused")
    }
    fn s(x: &str) -> Dynamic {
        Dynamic::from(x.to_string())
    }

    #[test]
    fn a_misspelt_choice_names_the_allowed_words() {
        assert_eq!(Presence::parse("absent"), Ok(Presence::Absent));
        let e = Presence::parse("abesnt").unwrap_err();
        assert_eq!(
            e,
            "state \"abesnt\" is not one of \"present\", \"absent\" (did you mean \"absent\"?)"
        );
        let e = Presence::parse("Present").unwrap_err();
        assert!(e.contains("did you mean \"present\"?"), "{e}");
        // Through serde, the way options maps are read.
        let m: Map = [("state".into(), Dynamic::from("gone".to_string()))]
            .into_iter()
            .collect();
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct O {
            state: Option<Presence>,
        }
        let e = rhai::serde::from_dynamic::<O>(&Dynamic::from_map(m)).unwrap_err();
        assert!(
            e.to_string().contains("state \"gone\" is not one of"),
            "{e}"
        );
    }

    #[test]
    fn every_option_type_is_checked_before_serde() {
        // mode: an integer is refused, saying what to write.
        let e = err::<files::FileOpts>(&[("mode", Dynamic::from(644_i64))]);
        assert!(e.contains("write \"0644\"") && e.contains("01204"), "{e}");
        let e = err::<files::DirOpts>(&[("mode", s("0999"))]);
        assert!(e.contains("not an octal mode"), "{e}");
        let o = parse::<files::DirOpts>(map(&[("mode", s("0644"))])).expect("ok");
        assert_eq!(o.attrs.mode.map(|m| m.0), Some(0o644));
        // bool
        let e = err::<services::ServiceOpts>(&[("enabled", s("yes"))]);
        assert!(e.contains("`enabled` must be true or false"), "{e}");
        // int
        let e = err::<command::ShOpts>(&[("timeout", s("10"))]);
        assert!(e.contains("write 10 without quotes"), "{e}");
        let e = err::<users::UserOpts>(&[("uid", Dynamic::from(-1_i64))]);
        assert!(e.contains("0 or more"), "{e}");
        // enum
        let e = err::<users::UserOpts>(&[("state", s("abesnt"))]);
        assert!(e.contains("did you mean \"absent\""), "{e}");
        // string
        let e = err::<users::UserOpts>(&[("shell", Dynamic::from(1_i64))]);
        assert!(e.contains("`shell` must be a string"), "{e}");
        // array of strings
        let e = err::<users::UserOpts>(&[("groups", s("wheel"))]);
        assert!(e.contains("write [\"wheel\"]"), "{e}");
        // map of strings
        let env = map(&[("N", Dynamic::from(4_i64))]);
        let e = err::<command::ShOpts>(&[("env", Dynamic::from_map(env))]);
        assert!(e.contains("the value of `N` must be a string"), "{e}");
        // unknown key
        let e = err::<files::FileOpts>(&[("mdoe", s("0644"))]);
        assert!(e.contains("did you mean `mode`"), "{e}");
    }

    #[test]
    fn every_primitive_taking_options_is_in_the_table() {
        let mut missing = Vec::new();
        for m in crate::engine::api_modules() {
            let json = crate::engine::module_metadata(m);
            for f in json["functions"].as_array().into_iter().flatten() {
                let (Some(name), Some(sig)) = (f["name"].as_str(), f["signature"].as_str()) else {
                    continue;
                };
                if crate::engine::short_type(sig).contains("opts: Map") && of(name).is_none() {
                    missing.push(name.to_string());
                }
            }
        }
        assert!(missing.is_empty(), "no options table for {missing:?}");
    }

    #[test]
    fn every_struct_field_is_in_the_table_once() {
        for (what, fields) in all() {
            let mut keys: Vec<&str> = fields.iter().map(|f| f.key).collect();
            let n = keys.len();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), n, "{what}: a key twice");
            assert!(!what.is_empty());
        }
    }
}
