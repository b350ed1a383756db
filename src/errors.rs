//! The one error type of a command, its exit status, and how recipe errors are shown
//! (message, `--> file:line:col`, the source line and a caret).

use rhai::{EvalAltResult, ParseError, Position};
use std::path::Path;

/// Exit statuses (docs/contracts.md): decided here, by [`Error::code`], and nowhere else.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Error {
    /// Bad input found before any host was touched: command line, inventory, variables, a
    /// recipe's `validate` (exit 2).
    Usage(String),
    /// A recipe or template that does not compile, with its place (exit 2).
    Recipe(Located),
    /// Errors already printed one by one (`recipe check` of several recipes): exit 2.
    Reported,
    /// Some hosts failed or were unreachable; the recap said which (exit 1).
    HostsFailed,
    /// The command got going and then failed: a controller recipe stopped, a file could
    /// not be written here, the runtime could not start (exit 1).
    Failed(String),
    /// A run aborted by a second Ctrl-C or SIGTERM, after its recap: 128 + the signal.
    Signal(i32),
}

impl Error {
    /// The process's exit status for this error.
    pub fn code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Recipe(_) | Error::Reported => EXIT_USAGE,
            Error::HostsFailed | Error::Failed(_) => EXIT_FAILED,
            Error::Signal(code) => *code,
        }
    }

    /// What to print on stderr (nothing when it was reported already). Every message gets its
    /// `error: ` here, once.
    pub fn render(&self) -> Option<String> {
        let line = |m: &str| {
            let m = m.strip_prefix("error: ").unwrap_or(m);
            format!("error: {}\n", m.trim_end())
        };
        match self {
            Error::Usage(m) | Error::Failed(m) => Some(line(m)),
            Error::Recipe(l) => Some(l.render()),
            Error::Reported | Error::HostsFailed | Error::Signal(_) => None,
        }
    }

    /// The same error with `f` applied to its text (secrets replaced before it is shown).
    pub fn map_text(self, f: impl Fn(&str) -> String) -> Error {
        match self {
            Error::Usage(m) => Error::Usage(f(&m)),
            Error::Failed(m) => Error::Failed(f(&m)),
            Error::Recipe(l) => Error::Recipe(Located {
                message: f(&l.message),
                ..l
            }),
            e => e,
        }
    }
}

/// Shorthand for a usage error (exit 2).
pub fn usage(m: impl std::fmt::Display) -> Error {
    Error::Usage(m.to_string())
}

/// Shorthand for a failure after the command got going (exit 1).
pub fn failed(m: impl std::fmt::Display) -> Error {
    Error::Failed(m.to_string())
}

/// A located error, ready to print.
#[derive(Debug, Clone, Default)]
pub struct Located {
    /// What is wrong. For runtime errors ([`locate_eval`]) it ends with the source line
    /// and a caret, from byte `excerpt_at` on, so that a one-line summary shows it too.
    pub message: String,
    pub source: Option<String>,
    pub line: usize,
    pub column: usize,
    /// Outer frames: "in function `f` called at file:line:col".
    pub notes: Vec<String>,
    /// Further errors found at the same time (`recipe check` reports them all).
    pub more: Vec<Located>,
    /// Where the source excerpt starts in `message`, if it carries one.
    pub excerpt_at: Option<u32>,
}

/// Where a file stops being UTF-8: 1-based line, column (in characters) and the byte.
pub fn first_invalid_utf8(bytes: &[u8]) -> Option<(usize, usize, u8)> {
    let e = std::str::from_utf8(bytes).err()?;
    let at = e.valid_up_to();
    let before = &bytes[..at];
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    // The prefix is valid UTF-8 by construction.
    let col = std::str::from_utf8(&before[line_start..]).map_or(0, |l| l.chars().count()) + 1;
    Some((line, col, bytes.get(at).copied().unwrap_or(0)))
}

impl Located {
    /// A file that could not be read because it is not UTF-8 gets the place of its first
    /// invalid byte, like any other error in it.
    fn with_encoding_place(&self) -> Option<Located> {
        if self.line != 0 {
            return None;
        }
        let src = self.source.as_ref()?;
        let bytes = std::fs::read(src).ok()?;
        let (line, column, byte) = first_invalid_utf8(&bytes)?;
        Some(Located {
            message: format!(
                "{src} is not UTF-8: byte 0x{byte:02x} at line {line}, column {column} \
                 (recipes are read as UTF-8; convert it, e.g. with iconv -t UTF-8)"
            ),
            source: Some(src.clone()),
            line,
            column,
            notes: self.notes.clone(),
            ..Default::default()
        })
    }

    pub fn render(&self) -> String {
        if let Some(fixed) = self.with_encoding_place() {
            return fixed.render();
        }
        let mut s = format!("error: {}\n", self.head());
        if let Some(src) = &self.source {
            if self.line > 0 {
                s.push_str(&format!("  --> {}:{}:{}\n", src, self.line, self.column));
                s.push_str(&show_line(src, self.line, self.column, ""));
            } else {
                s.push_str(&format!("  --> {src}\n"));
            }
        }
        for n in &self.notes {
            s.push_str(&format!("  = {n}\n"));
        }
        for m in &self.more {
            s.push_str(&m.render());
        }
        s
    }

    /// The same, as a warning (`warning: ...`): it does not stop anything.
    pub fn render_warning(&self) -> String {
        self.render().replacen("error: ", "warning: ", 1)
    }

    /// The message without its source excerpt.
    pub fn head(&self) -> &str {
        match self.excerpt_at {
            Some(i) if self.message.is_char_boundary(i as usize) => &self.message[..i as usize],
            _ => &self.message,
        }
    }

    /// `file:line:col`, for one-line summaries (recaps).
    pub fn place(&self) -> String {
        if let Some(fixed) = self.with_encoding_place() {
            return fixed.place();
        }
        match &self.source {
            Some(s) => format!("{}:{}:{}", s, self.line, self.column),
            None => format!("line {}, column {}", self.line, self.column),
        }
    }
}

/// At most this many characters of a source line are shown under an error.
const EXCERPT: usize = 120;

/// The part of `line` shown under an error, and the marker's 0-based character offset in it:
/// a long line (a 100 MB string, say) is cut to a window around column `col` (1-based),
/// with `…` where it was cut, so that the error still fits on a screen.
pub fn excerpt(line: &str, col: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    let at = col.saturating_sub(1).min(chars.len());
    if chars.len() <= EXCERPT {
        return (chars.iter().collect(), at);
    }
    let start = at.saturating_sub(EXCERPT / 2);
    let end = (start + EXCERPT).min(chars.len());
    let mut shown = String::new();
    let mut marker = at - start;
    if start > 0 {
        shown.push('…');
        marker += 1;
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    (shown, marker)
}

/// The source line under an error with a caret at `col`, each line prefixed by `indent`;
/// empty when the file cannot be read.
pub fn show_line(src: &str, line: usize, col: usize, indent: &str) -> String {
    let Some(text) = source_line(src, line) else {
        return String::new();
    };
    let num = line.to_string();
    let pad = " ".repeat(num.len());
    let (text, marker) = excerpt(&text, col);
    format!(
        "{indent}{pad} |\n{indent}{num} | {text}\n{indent}{pad} | {}^\n",
        " ".repeat(marker)
    )
}

fn source_line(src: &str, line: usize) -> Option<String> {
    let bytes = std::fs::read(Path::new(src)).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .nth(line.checked_sub(1)?)
        .map(|l| l.replace('\t', " "))
}

fn pos(p: Position) -> (usize, usize) {
    (p.line().unwrap_or(0), p.position().unwrap_or(0))
}

/// The message of an error without Rhai's "(line L, position C)" suffix.
fn bare(e: &EvalAltResult) -> String {
    match e {
        EvalAltResult::ErrorRuntime(v, _) => {
            if v.is_string() {
                v.clone().into_string().unwrap_or_default()
            } else {
                format!("runtime error: {v}")
            }
        }
        EvalAltResult::ErrorTerminated(v, _) => {
            let why = v.to_string();
            if why.is_empty() {
                "stopped".into()
            } else {
                format!("stopped: {why}")
            }
        }
        other => {
            let s = other.to_string();
            match s.rfind(" (line ") {
                Some(i) if s.ends_with(')') => s[..i].to_string(),
                _ => s,
            }
        }
    }
}

/// Walks nested function-call and module errors down to where it happened.
pub fn locate_eval(err: &EvalAltResult, top_source: &str) -> Located {
    let mut notes = Vec::new();
    let mut source = top_source.to_string();
    let mut e = err;
    loop {
        match e {
            EvalAltResult::ErrorInFunctionCall(name, src, inner, p) => {
                let (l, c) = pos(*p);
                notes.push(format!("in function `{name}` called at {source}:{l}:{c}"));
                if !src.is_empty() {
                    source = src.to_string();
                }
                e = inner;
            }
            EvalAltResult::ErrorInModule(name, inner, p) => {
                let (l, c) = match pos(*p) {
                    (0, _) => import_place(&module_path(&source, top_source), name),
                    lc => lc,
                };
                let at = module_path(&source, top_source);
                notes.push(format!("in module \"{name}\" imported at {at}:{l}:{c}"));
                // What went wrong in the module (a syntax error, its own top-level code, a
                // module it imports) is placed in the module's file.
                source = name.to_string();
                e = inner;
            }
            _ => break,
        }
    }
    notes.reverse();
    let (line, column) = pos(e.position());
    let src = module_path(&source, top_source);
    // The README promises the source line for every recipe error: runtime ones too.
    let mut message = bare(e);
    if let EvalAltResult::ErrorFunctionNotFound(sig, _) = e {
        if sig.contains("Secret") {
            message.push_str(
                " (a secret has no text functions, so that it never turns into text: join it \
                 with `+` (the result is a secret), give it to file content, `sh` or a \
                 template's `vars`, or compare its `sha256`)",
            );
        }
    }
    if let EvalAltResult::ErrorModuleNotFound(name, _) = e {
        if let Some(why) = module_not_utf8(name, &src) {
            message = why;
        }
    }
    let mut excerpt_at = None;
    let shown = if line > 0 {
        show_line(&module_path(&src, top_source), line, column, "  ")
    } else {
        String::new()
    };
    if !shown.is_empty() {
        excerpt_at = u32::try_from(message.len()).ok();
        message.push('\n');
        message.push_str(shown.trim_end());
    }
    Located {
        message,
        source: Some(src),
        line,
        column,
        notes,
        more: vec![],
        excerpt_at,
    }
}

/// Line and column of `import "name"` in `file` (Rhai gives no place when the import runs
/// inside a function call); (0, 0) when not found.
fn import_place(file: &str, name: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let quoted = format!("\"{name}\"");
    for (i, line) in text.lines().enumerate() {
        if let Some(at) = line.find(&quoted) {
            if line[..at].contains("import") {
                return (i + 1, line[..at].chars().count() + 1);
            }
        }
    }
    (0, 0)
}

/// A module's source is its import name (`"broken"`): its file, looked up the way the
/// engine does from the recipe's folder; any other source as it is.
fn module_path(src: &str, recipe: &str) -> String {
    if Path::new(src).is_file() {
        return src.to_string();
    }
    let dir = match Path::new(recipe).parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    crate::modules::module_paths(dir)
        .into_iter()
        .map(|d| d.join(format!("{src}.rhai")))
        .find(|p| p.is_file())
        .map(|p| p.strip_prefix(".").unwrap_or(&p).display().to_string())
        .unwrap_or_else(|| src.to_string())
}

/// Rhai reports a module file that is not UTF-8 as "not found": find it and say where it
/// stops being UTF-8.
fn module_not_utf8(name: &str, importer: &str) -> Option<String> {
    let dir = Path::new(importer).parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    crate::modules::module_paths(dir).into_iter().find_map(|d| {
        let p = d.join(format!("{name}.rhai"));
        let (line, column, byte) = first_invalid_utf8(&std::fs::read(&p).ok()?)?;
        Some(format!(
            "module \"{name}\" ({}:{line}:{column}) is not UTF-8: byte 0x{byte:02x} \
             (modules are read as UTF-8; convert it, e.g. with iconv -t UTF-8)",
            p.display()
        ))
    })
}

pub fn locate_parse(err: &ParseError, source: &str) -> Located {
    let (line, column) = pos(err.1);
    Located {
        message: format!("syntax error: {}", err.0),
        source: Some(source.to_string()),
        line,
        column,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variant_decides_the_exit_status_and_error_is_said_once() {
        let cases = [
            (usage("error: no hosts"), 2, Some("error: no hosts\n")),
            (usage("bad --var"), 2, Some("error: bad --var\n")),
            (Error::Reported, 2, None),
            (Error::HostsFailed, 1, None),
            (
                failed("cannot write x\n"),
                1,
                Some("error: cannot write x\n"),
            ),
        ];
        for (e, code, shown) in cases {
            assert_eq!(e.code(), code, "{e:?}");
            assert_eq!(e.render().as_deref(), shown, "{e:?}");
        }
        let l = Located {
            message: "syntax error: x".into(),
            source: Some("r.rhai".into()),
            line: 3,
            column: 2,
            ..Default::default()
        };
        let e = Error::Recipe(l);
        assert_eq!(e.code(), 2);
        let r = e.render().unwrap_or_default();
        assert!(
            r.starts_with("error: syntax error: x\n  --> r.rhai:3:2"),
            "{r}"
        );
        let hidden = usage("token abc123 refused").map_text(|t| t.replace("abc123", "***"));
        assert_eq!(
            hidden.render().as_deref(),
            Some("error: token *** refused\n")
        );
    }

    #[test]
    fn a_non_utf8_file_is_placed_at_its_first_bad_byte() {
        assert_eq!(first_invalid_utf8(b"ok\n"), None);
        assert_eq!(
            first_invalid_utf8(b"a\nb\xc3\xa9c\xff d\n"),
            Some((2, 4, 0xff))
        );
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("bad.rhai");
        std::fs::write(&p, b"// doc\nlet x = \"caf\xe9\";\n").expect("write");
        let e = Located {
            message: "cannot read recipe: stream did not contain valid UTF-8".into(),
            source: Some(p.display().to_string()),
            line: 0,
            column: 0,
            notes: vec![],
            ..Default::default()
        };
        let r = e.render();
        assert!(r.contains(&format!("{}:2:13", p.display())), "{r}");
        assert!(r.contains("byte 0xe9"), "{r}");
        assert!(e.place().ends_with("bad.rhai:2:13"), "{}", e.place());
    }
}
