//! Events of a run (steps, recaps) and how they are shown: JSON Lines or human lines.

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use crate::secrets::Redactor;

/// Characters a terminal obeys or hides instead of showing: controls (C0, DEL, C1) and the
/// invisible format characters: bidirectional overrides and isolates (U+202A..U+202E,
/// U+2066..U+2069, marks), zero-width ones (U+200B..U+200D, U+2060.., U+FEFF), the line and
/// paragraph separators U+2028/U+2029, soft hyphen, interlinear annotations and tags. A
/// target printing them could reorder or hide what the operator reads.
pub fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F
            | 0xFEFF | 0xFFF9..=0xFFFB | 0x1D173..=0x1D17A | 0xE0000..=0xE007F)
}

/// `s` with every unsafe character ([`unsafe_char`]) but newline and tab spelt visibly
/// (`\x1b`, `\r`, `\u{9b}`, `\u{202e}`): text from targets must not move the cursor, retitle or
/// clear the operator's terminal, nor reorder or hide text. Newlines and tabs are layout and stay.
pub fn printable(s: &str) -> String {
    if !s.chars().any(|c| unsafe_char(c) && c != '\n' && c != '\t') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A JSON line with DEL, the C1 controls and the invisible format characters (which serde
/// leaves raw and terminals obey) escaped as `\uXXXX`; they can only occur inside strings,
/// where that spelling is valid.
fn json_c1_escaped(line: &str) -> String {
    if !line.chars().any(unsafe_char) {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if unsafe_char(c) && c != '\n' {
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Skipped,
}

fn step_tag() -> &'static str {
    "step"
}
fn recap_tag() -> &'static str {
    "recap"
}

/// One step on one host: one `--json` event (read back from a `--via` node's output too).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StepEvent {
    #[serde(skip_deserializing, default = "step_tag")]
    pub event: &'static str,
    pub host: String,
    pub recipe: String,
    pub line: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub op: String,
    pub target: String,
    pub status: Status,
    pub dry_run: bool,
    pub ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// What changed or would change (package names, transitions, commands).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// One host's end: one `--json` event (read back from a `--via` node's output too).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Recap {
    #[serde(skip_deserializing, default = "recap_tag")]
    pub event: &'static str,
    pub host: String,
    pub ok: u64,
    pub changed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub unreachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// Where the host stopped (interrupted or failed): `recipe:line`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// Tries its connection took, when more than one (a reset or refused handshake retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_tries: Option<u32>,
    /// In a rolling run (`--serial`): the batch the host belongs to (1 = the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// In a rolling run: the host was never started because the roll stopped first.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_started: bool,
}

/// A batch of a rolling run (`--serial`), when it starts and when it ends: `--json` events.
#[derive(Debug, Clone, Serialize)]
pub struct BatchEvent {
    /// `batch` when it starts, `batch_end` when its hosts have ended.
    pub event: &'static str,
    pub batch: usize,
    pub batches: usize,
    pub hosts: Vec<String>,
    /// At the end: the hosts of the batch that failed or were unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<Vec<String>>,
    /// At the end, when the roll stops after this batch: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    pub dry_run: bool,
}

/// A recipe's `log()` line on a `--via` node, carried to the controller as an event.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NoteEvent {
    #[serde(skip_deserializing, default = "note_tag")]
    pub event: &'static str,
    pub host: String,
    pub msg: String,
}
fn note_tag() -> &'static str {
    "note"
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Json,
    Human,
    /// A task of `--via slurm`: JSON Lines for the controller, notes included.
    Node,
}

struct Inner {
    recaps: BTreeMap<String, Recap>,
    bar: Option<indicatif::ProgressBar>,
    /// A rolling run's ended batches, for the recap.
    batches: Vec<BatchEvent>,
}

/// Prints events as they come; shared by every host's thread.
#[derive(Clone)]
pub struct Reporter {
    mode: Mode,
    pub verbose: u8,
    pub quiet: bool,
    pub show_diff: bool,
    color: bool,
    redactor: Redactor,
    inner: Arc<Mutex<Inner>>,
}

impl Reporter {
    pub fn new(
        mode: Mode,
        verbose: u8,
        quiet: bool,
        show_diff: bool,
        redactor: Redactor,
    ) -> Reporter {
        let tty = std::io::stdout().is_terminal();
        let color = tty && std::env::var_os("NO_COLOR").is_none() && mode == Mode::Human;
        Reporter {
            mode,
            verbose,
            quiet,
            show_diff,
            color,
            redactor,
            inner: Arc::new(Mutex::new(Inner {
                recaps: BTreeMap::new(),
                bar: None,
                batches: Vec::new(),
            })),
        }
    }

    /// Progress bar over all hosts, on a terminal only.
    pub fn start(&self, hosts: usize) {
        if self.mode == Mode::Human && !self.quiet && std::io::stderr().is_terminal() && hosts > 1 {
            let bar = indicatif::ProgressBar::new(hosts as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {pos}/{len} hosts done {wide_msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            if let Ok(mut i) = self.inner.lock() {
                i.bar = Some(bar);
            }
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Whether steps should compute the diff of what they change (`--diff` or `-vv`).
    pub fn wants_diff(&self) -> bool {
        self.show_diff || self.verbose > 1
    }

    /// Prints one line (or several) on stdout, whatever stderr is: the progress line lives
    /// on stderr and is only hidden while stdout is written.
    fn out(&self, line: &str) {
        let mut line = self.redactor.redact(line);
        if self.mode != Mode::Human {
            line = json_c1_escaped(&line);
        }
        let write = || {
            let mut so = std::io::stdout().lock();
            let _ = writeln!(so, "{line}");
            let _ = so.flush();
        };
        let bar = self.inner.lock().ok().and_then(|i| i.bar.clone());
        match bar {
            Some(b) => b.suspend(write),
            None => write(),
        }
    }

    /// Text from a target or a recipe, ready for a terminal: secrets replaced first (a
    /// secret may hold control bytes), then control characters escaped.
    fn safe(&self, s: &str) -> String {
        printable(&self.redactor.redact(s))
    }

    fn paint(&self, s: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn step(&self, ev: StepEvent) {
        if let Ok(mut i) = self.inner.lock() {
            let r = i.recaps.entry(ev.host.clone()).or_insert_with(|| Recap {
                event: "recap",
                host: ev.host.clone(),
                ..Default::default()
            });
            match ev.status {
                Status::Ok => r.ok += 1,
                Status::Changed => r.changed += 1,
                Status::Failed => r.failed += 1,
                Status::Skipped => r.skipped += 1,
            }
        }
        match self.mode {
            Mode::Json | Mode::Node => {
                if let Ok(s) = serde_json::to_string(&ev) {
                    self.out(&s);
                }
            }
            Mode::Human => {
                if self.quiet && ev.status != Status::Failed {
                    return;
                }
                let status = match ev.status {
                    Status::Ok => self.paint("ok", "32"),
                    Status::Changed if ev.dry_run => self.paint("would change", "33"),
                    Status::Changed => self.paint("changed", "33"),
                    Status::Failed => self.paint("FAILED", "1;31"),
                    Status::Skipped => self.paint("skipped", "36"),
                };
                let place = match &ev.source {
                    Some(s) => format!("{}:{} (from {})", s, ev.line, ev.recipe),
                    None => format!("{}:{}", ev.recipe, ev.line),
                };
                let mut line = format!(
                    "{:<10} {:<22} {} {} {}",
                    self.safe(&ev.host),
                    self.safe(&place),
                    self.safe(&ev.op),
                    self.safe(&ev.target),
                    status
                );
                if self.verbose > 0 {
                    line.push_str(&format!(" ({} ms)", ev.ms));
                }
                for c in &ev.changes {
                    line.push_str(&format!("\n{:<10}   - {}", "", self.safe(c)));
                }
                if let Some(m) = &ev.msg {
                    for l in self.safe(m).lines() {
                        line.push_str(&format!("\n{:<10}   {}", "", l));
                    }
                }
                if self.show_diff {
                    if let Some(d) = &ev.diff {
                        line.push('\n');
                        line.push_str(self.safe(d).trim_end());
                    }
                }
                self.out(&line);
            }
        }
    }

    /// A note from a recipe (`log(..)`), shown at -v or always in human mode.
    pub fn note(&self, host: &str, msg: &str) {
        if self.mode == Mode::Node {
            // The controller decides how to show it (and whether, with -q).
            let ev = NoteEvent {
                event: "note",
                host: host.to_string(),
                msg: msg.to_string(),
            };
            if let Ok(s) = serde_json::to_string(&ev) {
                self.out(&s);
            }
            return;
        }
        if self.quiet {
            return;
        }
        // Every line carries the host, so interleaved output stays readable.
        let host = self.safe(host);
        let lines: Vec<String> = self
            .safe(msg.trim_end_matches('\n'))
            .lines()
            .map(|l| format!("{host:<10} {l}"))
            .collect();
        if self.mode == Mode::Human {
            self.out(&lines.join("\n"));
        } else {
            // stdout is JSON events only: notes go to stderr, as for humans watching.
            eprintln!("{}", lines.join("\n"));
        }
    }

    /// Records that `host`'s connection took `tries` tries (shown in its recap).
    pub fn connect_tries(&self, host: &str, tries: u32) {
        if let Ok(mut i) = self.inner.lock() {
            let r = i.recaps.entry(host.to_string()).or_insert_with(|| Recap {
                event: "recap",
                host: host.to_string(),
                ..Default::default()
            });
            r.connect_tries = Some(tries);
        }
    }

    /// A batch of a rolling run starts (`ev.event == "batch"`) or ends (`"batch_end"`).
    pub fn batch(&self, ev: BatchEvent) {
        if let Ok(mut i) = self.inner.lock() {
            for h in &ev.hosts {
                let r = i.recaps.entry(h.clone()).or_insert_with(|| Recap {
                    event: "recap",
                    host: h.clone(),
                    ..Default::default()
                });
                r.batch = Some(ev.batch);
            }
            if ev.event == "batch_end" {
                i.batches.push(ev.clone());
            }
        }
        match self.mode {
            Mode::Json | Mode::Node => {
                if let Ok(s) = serde_json::to_string(&ev) {
                    self.out(&s);
                }
            }
            Mode::Human if self.quiet && ev.stop.is_none() => {}
            Mode::Human => {
                let hosts = self.safe(&ev.hosts.join(", "));
                let mut line = if ev.event == "batch" {
                    format!("== batch {}/{}: {hosts}", ev.batch, ev.batches)
                } else {
                    match ev.failed.as_deref() {
                        Some(f) if !f.is_empty() => format!(
                            "== batch {}/{} ended: {} failed",
                            ev.batch,
                            ev.batches,
                            self.safe(&f.join(", "))
                        ),
                        _ => format!("== batch {}/{} ended: all ok", ev.batch, ev.batches),
                    }
                };
                if let Some(s) = &ev.stop {
                    line.push_str(&format!("; the roll stops: {}", self.safe(s)));
                }
                self.out(&line);
            }
        }
    }

    /// A host of a rolling run that the roll never reached (it stopped first).
    pub fn not_started(&self, host: &str, batch: usize, why: &str) {
        if let Ok(mut i) = self.inner.lock() {
            let r = i.recaps.entry(host.to_string()).or_insert_with(|| Recap {
                event: "recap",
                host: host.to_string(),
                ..Default::default()
            });
            r.not_started = true;
            r.batch = Some(batch);
            r.msg = Some(format!("not started: {why}"));
        }
    }

    /// Whether `host` has ended (has a recap with an outcome) already.
    pub fn has_recap(&self, host: &str) -> bool {
        self.inner
            .lock()
            .map(|i| {
                i.recaps.get(host).is_some_and(|r| {
                    r.unreachable || r.msg.is_some() || r.ok + r.changed + r.failed + r.skipped > 0
                })
            })
            .unwrap_or(false)
    }

    /// Ends a host: unreachable or failed hosts carry a message.
    pub fn finish_host(
        &self,
        host: &str,
        unreachable: bool,
        msg: Option<String>,
        stopped_at: Option<String>,
    ) {
        let bar = if let Ok(mut i) = self.inner.lock() {
            let r = i.recaps.entry(host.to_string()).or_insert_with(|| Recap {
                event: "recap",
                host: host.to_string(),
                ..Default::default()
            });
            r.unreachable = unreachable;
            if msg.is_some() && r.failed == 0 && !unreachable {
                r.failed += 1;
            }
            r.msg = msg.map(|m| self.redactor.redact(&m));
            r.stopped_at = stopped_at;
            i.bar.clone()
        } else {
            None
        };
        if let Some(b) = bar {
            b.inc(1);
        }
    }

    /// Prints the recaps (JSON events or a table) and returns whether all succeeded. After a
    /// dry run the table says that nothing was changed.
    pub fn finish(&self, dry_run: bool) -> bool {
        let (recaps, bar, batches) = match self.inner.lock() {
            Ok(mut i) => (
                i.recaps.values().cloned().collect::<Vec<_>>(),
                i.bar.take(),
                std::mem::take(&mut i.batches),
            ),
            Err(_) => return false,
        };
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let ok = recaps
            .iter()
            .all(|r| r.failed == 0 && !r.unreachable && !r.not_started);
        match self.mode {
            Mode::Json | Mode::Node => {
                for r in &recaps {
                    if let Ok(s) = serde_json::to_string(r) {
                        self.out(&s);
                    }
                }
            }
            Mode::Human => {
                let mut t = String::from(if dry_run {
                    "\nRECAP (dry run: nothing was changed; \"changed\" counts what would change)\n"
                } else {
                    "\nRECAP\n"
                });
                let mut said_by: BTreeMap<String, String> = BTreeMap::new();
                for r in &recaps {
                    let state = if r.not_started {
                        self.paint("not started", "33")
                    } else if r.unreachable {
                        self.paint("unreachable", "1;31")
                    } else if r.failed > 0 {
                        self.paint("failed", "1;31")
                    } else {
                        self.paint("ok", "32")
                    };
                    let batch = r.batch.map(|b| format!(" (batch {b})")).unwrap_or_default();
                    t.push_str(&format!(
                        "{:<12} ok={:<4} changed={:<4} failed={:<3} skipped={:<3} {}{batch}\n",
                        self.safe(&r.host),
                        r.ok,
                        r.changed,
                        r.failed,
                        r.skipped,
                        state
                    ));
                    if let Some(m) = &r.msg {
                        // Hosts that failed alike (all behind one jump host) say it once.
                        let own = format!("{}: ", r.host);
                        let body = m.strip_prefix(&own).unwrap_or(m);
                        match said_by.get(body) {
                            Some(first) => {
                                t.push_str(&format!("{:<12}   same as {}\n", "", self.safe(first)))
                            }
                            None => {
                                said_by.insert(body.to_string(), r.host.clone());
                                for l in self.safe(m).lines() {
                                    t.push_str(&format!("{:<12}   {}\n", "", l));
                                }
                            }
                        }
                    }
                    // A failed step's message starts with its place already.
                    let said = |s: &str| r.msg.as_deref().is_some_and(|m| m.contains(s));
                    if let Some(s) = r.stopped_at.as_ref().filter(|s| !said(s)) {
                        t.push_str(&format!("{:<12}   stopped at {}\n", "", self.safe(s)));
                    }
                }
                if let Some(last) = batches.last() {
                    t.push_str(&format!(
                        "ROLL: {} of {} batches run",
                        batches.len(),
                        last.batches
                    ));
                    match &last.stop {
                        Some(s) => t.push_str(&format!(
                            "; stopped after batch {}: {}\n",
                            last.batch,
                            self.safe(s)
                        )),
                        None => t.push('\n'),
                    }
                }
                self.out(t.trim_end());
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_spelt_out_but_layout_stays() {
        assert_eq!(printable("a\tb\nc"), "a\tb\nc");
        assert_eq!(
            printable("\x1b]0;title\x07\x1b[2J"),
            "\\x1b]0;title\\x07\\x1b[2J"
        );
        assert_eq!(printable("cr\rdel\x7f"), "cr\\rdel\\x7f");
        assert_eq!(printable("csi\u{9b}2J é✓"), "csi\\u{9b}2J é✓");
    }

    #[test]
    fn json_lines_carry_no_raw_c1_controls() {
        let line = serde_json::to_string(&"a\u{9b}2J\u{7f}\x1b").unwrap_or_default();
        let escaped = super::json_c1_escaped(&line);
        assert!(!escaped.chars().any(|c| c.is_control()), "{escaped}");
        let back: String = serde_json::from_str(&escaped).unwrap_or_default();
        assert_eq!(back, "a\u{9b}2J\u{7f}\x1b");
    }

    #[test]
    fn bidi_and_invisible_characters_are_spelt_out() {
        let raw = "a\u{202e}b\u{202c}c\u{200b}d\u{2028}e\u{2066}f\u{feff}g\u{e0041}h\u{ad}i";
        let shown = printable(raw);
        assert_eq!(
            shown,
            "a\\u{202e}b\\u{202c}c\\u{200b}d\\u{2028}e\\u{2066}f\\u{feff}g\\u{e0041}h\\u{ad}i"
        );
        // Letters of other scripts and emoji stay.
        assert_eq!(printable("日本語 Ünïcode ✓ 🙂"), "日本語 Ünïcode ✓ 🙂");
        let line = serde_json::to_string(&raw).unwrap_or_default();
        let escaped = super::json_c1_escaped(&line);
        assert!(!escaped.chars().any(super::unsafe_char), "{escaped}");
        let back: String = serde_json::from_str(&escaped).unwrap_or_default();
        assert_eq!(back, raw);
    }
}
