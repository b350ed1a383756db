//! Events of a run (steps, recaps) and how they are shown: JSON Lines or human lines.

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::secrets::Redactor;
use crate::transport::Meter;

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
fn progress_tag() -> &'static str {
    "progress"
}

/// How often a `--via` node tells the controller about its running step.
pub const NODE_PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A step still running, every `--json-progress` seconds (never in the default `--json`);
/// a `--via` node sends them to the controller, which shows them as its own.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ProgressEvent {
    #[serde(skip_deserializing, default = "progress_tag")]
    pub event: &'static str,
    pub host: String,
    pub recipe: String,
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub op: String,
    pub target: String,
    /// Milliseconds since the step started.
    pub ms: u64,
    /// Bytes the step has moved so far (transfers; 0 for the others).
    pub bytes: u64,
    /// The transfer's size, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// A step under way, for the live status line and `--json-progress`.
struct LiveStep {
    host: String,
    recipe: String,
    line: usize,
    source: Option<String>,
    op: String,
    target: String,
    started: Instant,
    meter: Arc<Meter>,
}

/// A step's place in the live display; dropping it takes the step off the display (before
/// the step's own line is printed).
pub struct Running {
    rep: Reporter,
    id: u64,
    meter: Arc<Meter>,
}

impl Running {
    /// What the step moves and prints is counted here.
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.rep.stopped(self.id);
    }
}

/// A running step as the status line shows it: text already redacted and escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveView {
    pub host: String,
    pub place: String,
    pub what: String,
    pub elapsed: Duration,
    pub bytes: (u64, Option<u64>),
    pub last: Option<String>,
}

/// Steps shown on lines of their own; with more running, the first line names the slowest.
const LIVE_LINES: usize = 6;
/// A step joins the status lines once it has run this long (short steps never flicker there).
const LIVE_AFTER: Duration = Duration::from_secs(1);
/// How often the status lines are redrawn.
const TICK: Duration = Duration::from_millis(200);

/// `7s`, `3m04s`, `1h02m`.
fn elapsed_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `48.00 MiB/100.00 MiB 4.00 MiB/s`: bytes moved, the total when known, the mean rate.
fn bytes_text((done, total): (u64, Option<u64>), elapsed: Duration) -> Option<String> {
    use indicatif::HumanBytes;
    if done == 0 && total.is_none() {
        return None;
    }
    let mut t = format!("{}", HumanBytes(done));
    if let Some(n) = total {
        t.push_str(&format!("/{}", HumanBytes(n)));
    }
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        t.push_str(&format!(" {}/s", HumanBytes((done as f64 / secs) as u64)));
    }
    Some(t)
}

/// A command's output line for the status line: runs of blanks made one, ends trimmed
/// (`  CC       log.lo` reads `CC log.lo`), so that more of it fits the terminal's width.
/// Applied after redaction: a secret with blanks in it is replaced before they change.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One running step: host, place, elapsed, bytes, what it is, and its command's last line.
fn live_line(v: &LiveView) -> String {
    let mut l = format!(
        "{:<10} {:<22} {:>6}",
        v.host,
        v.place,
        elapsed_text(v.elapsed)
    );
    if let Some(b) = bytes_text(v.bytes, v.elapsed) {
        l.push_str("  ");
        l.push_str(&b);
    }
    l.push_str("  ");
    l.push_str(&v.what);
    if let Some(last) = &v.last {
        l.push_str("  | ");
        l.push_str(last);
    }
    l
}

/// The status lines: with several hosts first the count of those done (and, with more steps
/// running than fit, the slowest of them), then a line per running step, oldest first.
/// `views` are the steps that have run for [`LIVE_AFTER`] at least.
pub fn status_lines(hosts: usize, done: usize, mut views: Vec<LiveView>, tick: u64) -> Vec<String> {
    views.sort_by_key(|v| std::cmp::Reverse(v.elapsed));
    let mut lines = Vec::new();
    let many = views.len() > LIVE_LINES;
    if hosts > 1 || many {
        const SPIN: [char; 4] = ['|', '/', '-', '\\'];
        let mut head = format!("{} ", SPIN[(tick % 4) as usize]);
        if hosts > 1 {
            head.push_str(&format!("{done}/{hosts} hosts done"));
        }
        if many {
            if hosts > 1 {
                head.push_str(", ");
            }
            head.push_str(&format!("{} steps running; slowest:", views.len()));
            lines.push(head);
            lines.push(live_line(&views[0]));
            return lines;
        }
        lines.push(head);
    }
    lines.extend(views.iter().map(live_line));
    lines
}

/// The terminal's status lines (stderr), drawn by indicatif one bar per line.
/// The status lines on screen, if any: log lines (tracing) are written with them taken off
/// the screen, as the reporter's own lines are, instead of through them.
static LIVE_DISPLAY: std::sync::Mutex<Option<indicatif::MultiProgress>> =
    std::sync::Mutex::new(None);

/// stderr for log lines: one event's text, written when the event is done, with the status
/// lines (if any) taken off the screen meanwhile.
pub struct LogWriter(Vec<u8>);

impl LogWriter {
    pub fn make() -> LogWriter {
        LogWriter(Vec::new())
    }
}

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        let multi = LIVE_DISPLAY.lock().ok().and_then(|d| d.clone());
        match multi {
            Some(m) => m.suspend(write),
            None => write(),
        }
    }
}

struct Display {
    multi: indicatif::MultiProgress,
    bars: Vec<indicatif::ProgressBar>,
    tick: u64,
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
    /// A rolling run's ended batches, for the recap.
    batches: Vec<BatchEvent>,
    live: BTreeMap<u64, LiveStep>,
    /// Steps running on `--via` nodes, by host, from their `progress` events.
    remote: BTreeMap<String, LiveStep>,
    next_id: u64,
    /// Hosts of the run (from [`Reporter::start`]) and how many have ended.
    hosts: usize,
    done: usize,
    display: Option<Display>,
    /// The thread that redraws the status lines and writes `--json-progress` events.
    ticker: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

/// Prints events as they come; shared by every host's thread.
#[derive(Clone)]
pub struct Reporter {
    mode: Mode,
    pub verbose: u8,
    pub quiet: bool,
    pub show_diff: bool,
    color: bool,
    /// Status lines on stderr: a terminal, not `-q`, not `NO_COLOR`, not `TERM=dumb`.
    live_tty: bool,
    /// `--json-progress`: how often running steps are reported.
    progress_every: Option<Duration>,
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
        let plain = std::env::var_os("NO_COLOR").is_some();
        let color = tty && !plain && mode == Mode::Human;
        // With --json too: the events stay alone on stdout, the status lines go to stderr.
        let live_tty = mode != Mode::Node
            && !quiet
            && !plain
            && std::io::stderr().is_terminal()
            && std::env::var("TERM").map_or(true, |t| t != "dumb");
        Reporter {
            mode,
            verbose,
            quiet,
            show_diff,
            color,
            live_tty,
            progress_every: None,
            redactor,
            inner: Arc::new(Mutex::new(Inner {
                recaps: BTreeMap::new(),
                batches: Vec::new(),
                live: BTreeMap::new(),
                remote: BTreeMap::new(),
                next_id: 0,
                hosts: 0,
                done: 0,
                display: None,
                ticker: None,
            })),
        }
    }

    /// With `--json`: a `progress` event for each running step every `every`; a `--via`
    /// node always sends them, every [`NODE_PROGRESS_EVERY`].
    pub fn with_progress_every(mut self, every: Option<Duration>) -> Reporter {
        self.progress_every = match self.mode {
            Mode::Json => every,
            Mode::Node => Some(NODE_PROGRESS_EVERY),
            Mode::Human => None,
        };
        self
    }

    /// A `--via` node's step still running: shown like a step of this process until the
    /// host's next step event (or its end).
    pub fn remote_running(&self, p: ProgressEvent) {
        let meter = Arc::new(Meter::default());
        meter.add(p.bytes);
        if let Some(t) = p.total {
            meter.set_total(t);
        }
        let now = Instant::now();
        if let Ok(mut i) = self.inner.lock() {
            i.remote.insert(
                p.host.clone(),
                LiveStep {
                    started: now.checked_sub(Duration::from_millis(p.ms)).unwrap_or(now),
                    host: p.host,
                    recipe: p.recipe,
                    line: p.line,
                    source: p.source,
                    op: p.op,
                    target: self.redactor.redact(&p.target),
                    meter,
                },
            );
        }
        self.ensure_ticker();
    }

    /// The steps under way here and on `--via` nodes.
    fn all_live(i: &Inner) -> impl Iterator<Item = &LiveStep> {
        i.live.values().chain(i.remote.values())
    }

    /// The hosts of a run (or of one `play()`): on a terminal, with several, the status
    /// shows how many of them are done.
    pub fn start(&self, hosts: usize) {
        if let Ok(mut i) = self.inner.lock() {
            i.hosts = hosts;
            i.done = 0;
        }
        self.ensure_ticker();
    }

    /// A step starts on `host`; it is shown (after [`LIVE_AFTER`]) until the handle is
    /// dropped.
    pub fn running(
        &self,
        host: &str,
        recipe: &str,
        line: usize,
        source: Option<String>,
        op: &str,
        target: &str,
    ) -> Running {
        let meter = Arc::new(Meter::default());
        let mut id = 0;
        if let Ok(mut i) = self.inner.lock() {
            i.next_id += 1;
            id = i.next_id;
            i.live.insert(
                id,
                LiveStep {
                    host: host.to_string(),
                    recipe: recipe.to_string(),
                    line,
                    source,
                    op: op.to_string(),
                    target: self.redactor.redact(target),
                    started: Instant::now(),
                    meter: meter.clone(),
                },
            );
        }
        self.ensure_ticker();
        Running {
            rep: self.clone(),
            id,
            meter,
        }
    }

    /// A step ended: off the status lines at once, so its own line never follows a stale one.
    fn stopped(&self, id: u64) {
        if let Ok(mut i) = self.inner.lock() {
            if i.live.remove(&id).is_some() && i.display.is_some() {
                self.redraw(&mut i, false);
            }
        }
    }

    /// Starts the thread behind the status lines and `--json-progress`, once, when wanted.
    fn ensure_ticker(&self) {
        if !self.live_tty && self.progress_every.is_none() {
            return;
        }
        let Ok(mut i) = self.inner.lock() else { return };
        if i.ticker.is_some() {
            return;
        }
        if self.live_tty {
            let multi =
                indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
            if let Ok(mut d) = LIVE_DISPLAY.lock() {
                *d = Some(multi.clone());
            }
            i.display = Some(Display {
                multi,
                bars: Vec::new(),
                tick: 0,
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (me, halt) = (self.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("status".into())
            .spawn(move || me.tick_until(&halt));
        if let Ok(t) = spawned {
            i.ticker = Some((stop, t));
        }
    }

    fn tick_until(&self, stop: &AtomicBool) {
        let mut next_json = self.progress_every.map(|e| Instant::now() + e);
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if self.live_tty {
                if let Ok(mut i) = self.inner.lock() {
                    self.redraw(&mut i, true);
                }
            }
            if let (Some(at), Some(every)) = (next_json, self.progress_every) {
                if Instant::now() >= at {
                    self.progress_events();
                    next_json = Some(Instant::now() + every);
                }
            }
        }
    }

    /// Writes a `progress` event per running step (`--json-progress`).
    fn progress_events(&self) {
        let events: Vec<ProgressEvent> = match self.inner.lock() {
            Ok(i) => Self::all_live(&i)
                .map(|s| {
                    let (bytes, total) = s.meter.bytes();
                    ProgressEvent {
                        event: "progress",
                        host: s.host.clone(),
                        recipe: s.recipe.clone(),
                        line: s.line,
                        source: s.source.clone(),
                        op: s.op.clone(),
                        target: s.target.clone(),
                        ms: s.started.elapsed().as_millis() as u64,
                        bytes,
                        total,
                    }
                })
                .collect(),
            Err(_) => return,
        };
        for e in events {
            if let Ok(s) = serde_json::to_string(&e) {
                self.out(&s);
            }
        }
    }

    /// Recomputes the status lines from the running steps (`tick`: the spinner moves).
    fn redraw(&self, i: &mut Inner, tick: bool) {
        let now = Instant::now();
        let views: Vec<LiveView> = Self::all_live(i)
            .filter(|s| now.duration_since(s.started) >= LIVE_AFTER)
            .map(|s| LiveView {
                host: self.safe(&s.host),
                place: self.safe(&format!(
                    "{}:{}",
                    s.source.as_deref().unwrap_or(&s.recipe),
                    s.line
                )),
                what: self.safe(&format!("{} {}", s.op, s.target)),
                elapsed: now.duration_since(s.started),
                bytes: s.meter.bytes(),
                last: s.meter.last_line().map(|l| one_line(&self.safe(&l))),
            })
            .collect();
        let (hosts, done) = (i.hosts, i.done);
        let Some(d) = i.display.as_mut() else { return };
        if tick {
            d.tick += 1;
        }
        let lines = status_lines(hosts, done, views, d.tick);
        while d.bars.len() > lines.len() {
            if let Some(b) = d.bars.pop() {
                b.finish_and_clear();
                d.multi.remove(&b);
            }
        }
        while d.bars.len() < lines.len() {
            let b = d.multi.add(indicatif::ProgressBar::new_spinner());
            b.set_style(
                indicatif::ProgressStyle::with_template("{wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            d.bars.push(b);
        }
        for (b, l) in d.bars.iter().zip(lines) {
            // One line each: a line break would throw indicatif's count of lines off.
            b.set_message(l.replace(['\n', '\t'], " "));
        }
    }

    /// Takes the status lines off the terminal for good.
    fn end_display(&self) {
        let (ticker, display) = match self.inner.lock() {
            Ok(mut i) => (i.ticker.take(), i.display.take()),
            Err(_) => return,
        };
        if let Some((stop, t)) = ticker {
            stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
        if let Some(d) = display {
            if let Ok(mut live) = LIVE_DISPLAY.lock() {
                *live = None;
            }
            for b in &d.bars {
                b.finish_and_clear();
                d.multi.remove(b);
            }
            let _ = d.multi.clear();
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
        match self.multi() {
            Some(m) => m.suspend(write),
            None => write(),
        }
    }

    /// The status lines' drawer, while they are shown.
    fn multi(&self) -> Option<indicatif::MultiProgress> {
        self.inner
            .lock()
            .ok()
            .and_then(|i| i.display.as_ref().map(|d| d.multi.clone()))
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
            // A --via node's step ended: off the status lines before its line.
            if i.remote.remove(&ev.host).is_some() && i.display.is_some() {
                self.redraw(&mut i, false);
            }
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
            // stdout is JSON events only: notes go to stderr, as for humans watching (with
            // the status lines there taken off while they are written).
            let write = || eprintln!("{}", lines.join("\n"));
            match self.multi() {
                Some(m) => m.suspend(write),
                None => write(),
            }
        }
    }

    /// A warning the operator must see (an unverified download): a note, even with `-q`.
    pub fn warning(&self, host: &str, msg: &str) {
        let loud = Reporter {
            quiet: false,
            ..self.clone()
        };
        loud.note(host, msg);
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
        if let Ok(mut i) = self.inner.lock() {
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
            i.remote.remove(host);
            i.done += 1;
            if i.display.is_some() {
                self.redraw(&mut i, false);
            }
        }
    }

    /// Prints the recaps (JSON events or a table) and returns whether all succeeded. After a
    /// dry run the table says that nothing was changed.
    pub fn finish(&self, dry_run: bool) -> bool {
        self.end_display();
        let (recaps, batches) = match self.inner.lock() {
            Ok(mut i) => (
                i.recaps.values().cloned().collect::<Vec<_>>(),
                std::mem::take(&mut i.batches),
            ),
            Err(_) => return false,
        };
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

    fn view(host: &str, secs: u64, bytes: (u64, Option<u64>)) -> super::LiveView {
        super::LiveView {
            host: host.into(),
            place: "r.rhai:3".into(),
            what: "sh make".into(),
            elapsed: std::time::Duration::from_secs(secs),
            bytes,
            last: None,
        }
    }

    #[test]
    fn status_lines_name_host_place_elapsed_and_bytes() {
        let one = super::status_lines(1, 0, vec![view("m", 65, (0, None))], 0);
        assert_eq!(one.len(), 1, "{one:?}");
        assert!(one[0].starts_with("m          r.rhai:3"), "{one:?}");
        assert!(one[0].contains(" 1m05s  sh make"), "{one:?}");
        let copy = super::status_lines(1, 0, vec![view("w", 2, (2 << 20, Some(8 << 20)))], 0);
        assert!(
            copy[0].contains("2.00 MiB/8.00 MiB 1.00 MiB/s  sh make"),
            "{copy:?}"
        );
        // Several hosts: the count first, then the slowest step first.
        let many = super::status_lines(
            3,
            1,
            vec![view("a", 2, (0, None)), view("b", 9, (0, None))],
            0,
        );
        assert_eq!(many.len(), 3, "{many:?}");
        assert!(many[0].ends_with("1/3 hosts done"), "{many:?}");
        assert!(
            many[1].starts_with('b') && many[2].starts_with('a'),
            "{many:?}"
        );
        // More running than fit: the count and the slowest only.
        let views = (0..20)
            .map(|i| view(&format!("n{i}"), i, (0, None)))
            .collect();
        let lots = super::status_lines(100, 40, views, 0);
        assert_eq!(lots.len(), 2, "{lots:?}");
        assert!(
            lots[0].contains("40/100 hosts done, 20 steps running; slowest:"),
            "{lots:?}"
        );
        assert!(lots[1].starts_with("n19 "), "{lots:?}");
    }

    /// A `--via` node's `progress` event shows its step on the controller (elapsed from the
    /// node's clock, its bytes) until the host's step event or its end.
    #[test]
    fn a_via_nodes_running_step_is_shown_until_its_step_ends() {
        use super::*;
        let r = Reporter::new(Mode::Human, 0, true, false, Redactor::default());
        let ev = |host: &str| ProgressEvent {
            event: "progress",
            host: host.into(),
            recipe: "r.rhai".into(),
            line: 3,
            source: None,
            op: "sh".into(),
            target: "make".into(),
            ms: 5000,
            bytes: 10,
            total: Some(20),
        };
        r.remote_running(ev("n1"));
        r.remote_running(ev("n2"));
        {
            let i = r.inner.lock().expect("lock");
            let s = &i.remote["n1"];
            assert!(s.started.elapsed() >= Duration::from_secs(5));
            assert_eq!(s.meter.bytes(), (10, Some(20)));
            assert_eq!(Reporter::all_live(&i).count(), 2);
        }
        r.step(StepEvent {
            event: "step",
            host: "n1".into(),
            recipe: "r.rhai".into(),
            line: 3,
            source: None,
            op: "sh".into(),
            target: "make".into(),
            status: Status::Changed,
            dry_run: false,
            ms: 6000,
            msg: None,
            changes: Vec::new(),
            diff: None,
        });
        r.finish_host("n2", false, None, None);
        assert!(r.inner.lock().expect("lock").remote.is_empty());
    }

    /// A running step's last line is redacted first, then its blanks squeezed: a secret with
    /// blanks in it is still found.
    #[test]
    fn a_last_line_is_redacted_then_made_one_line() {
        use super::*;
        let red = Redactor::default();
        red.add(b"tok  en-1234");
        let r = Reporter::new(Mode::Human, 0, false, false, red);
        let shown = one_line(&r.safe("  key tok  en-1234\t ok  "));
        assert!(
            shown.starts_with("key ") && shown.ends_with(" ok"),
            "{shown}"
        );
        assert!(!shown.contains("tok") && !shown.contains("  "), "{shown}");
        assert_eq!(one_line("  CC       log.lo"), "CC log.lo");
    }

    #[test]
    fn elapsed_time_reads_at_a_glance() {
        let t = |s| super::elapsed_text(std::time::Duration::from_secs(s));
        assert_eq!(
            (t(7), t(184), t(3720)),
            ("7s".into(), "3m04s".into(), "1h02m".into())
        );
    }

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
